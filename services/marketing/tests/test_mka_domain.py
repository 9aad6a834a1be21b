"""The Profile aggregate's consent rules and merges, and the site-key/form rules (no I/O)."""

from __future__ import annotations

import pytest

from crm_events.schemas.marketing import FormConsent, FormField
from crm_marketing.audience.domain import Profile
from crm_marketing.web.domain import Form, SiteKey, normalise_origin
from crm_runtime.errors import DomainError, InvalidInput


def ada() -> Profile:
    return Profile.start("c-1", "form", {"email": " Ada@Example.com ", "country": "gb"})


def test_values_are_normalised_and_updates_record_only_changes() -> None:
    p = ada()
    assert (p.values["email"], p.values["country"]) == ("ada@example.com", "GB")
    assert p.update("api", {"country": "GB", "city": "London"}) == ["city"]
    assert p.update("api", {"city": "London"}) == []
    assert p.update("sales", {"city": "Paris"}, only_empty=True) == []
    with pytest.raises(ValueError, match="unknown profile attribute"):
        p.update("api", {"shoe_size": "42"})


def test_email_consent_needs_the_latest_requests_confirmation() -> None:
    p = ada()
    with pytest.raises(DomainError, match="double opt-in"):
        p.opt_in("email", "api")
    assert p.request_email_consent("r-1", "form:f")
    assert not p.email_consented()
    assert p.request_email_consent("r-2", "api")  # asked again: only the new link counts
    with pytest.raises(DomainError):
        p.confirm_email_consent("r-1")
    assert p.confirm_email_consent("r-2")
    assert p.email_consented()
    assert not p.confirm_email_consent("r-2")  # the same link twice: nothing new
    assert not p.request_email_consent("r-3", "api")  # already confirmed
    p.update("api", {"email": "ada@new.example"})
    assert not p.email_consented()  # another address needs its own confirmation
    assert p.withdraw("email", "unsubscribe_link", None)
    assert not p.withdraw("email", "unsubscribe_link", None)
    with pytest.raises(DomainError):
        p.confirm_email_consent("r-2")


def test_a_profile_without_an_address_cannot_start_double_opt_in() -> None:
    p = Profile.start("c-2", "sales", {"last_name": "Nobody"})
    with pytest.raises(DomainError, match="no e-mail"):
        p.request_email_consent("r", None)


def test_sms_and_push_opt_in_and_devices() -> None:
    p = ada()
    with pytest.raises(DomainError, match="no phone number"):
        p.opt_in("sms", "keyword")
    p.update("api", {"phone": "+44 20 7946 0000"})
    assert p.opt_in("sms", "keyword")
    assert not p.opt_in("sms", "keyword")
    assert p.consents["sms"].address == "+442079460000"
    assert p.opt_in("push", "app") and not p.opt_in("push", "app")
    assert p.register_device("t", "ios") and not p.register_device("t", "ios")
    assert p.unregister_device("t", None) and not p.unregister_device("t", None)


def test_sms_consent_is_for_the_number_it_was_given_for() -> None:
    p = ada()
    p.update("api", {"phone": "+49 30 1234567"})
    # a number that is not the profile's records nothing
    assert not p.opt_in("sms", "form:f", phone="+1 555 0100")
    assert "sms" not in p.consents
    assert p.opt_in("sms", "form:f", phone="+49 (30) 123-4567")  # the same number, spelt so
    assert p.consents["sms"].address == "+49301234567" and p.sms_consented()
    p.update("sales", {"phone": "+1 555 0100"})
    assert not p.sms_consented()  # a new number needs a new opt-in
    assert p.opt_in("sms", "api")
    assert p.consents["sms"].address == "+15550100" and p.sms_consented()


def test_a_form_only_fills_the_empty_fields_of_a_known_profile() -> None:
    p = ada()
    p.update("sales", {"first_name": "Ada", "phone": "+44 1"})
    changed = p.update(
        "form",
        {"first_name": "Mallory", "phone": "+1 666", "email": "m@evil.example", "city": "Rome"},
        only_empty=True,
    )
    assert changed == ["city"]
    assert (p.values["first_name"], p.values["phone"], p.values["email"]) == (
        "Ada",
        "+44 1",
        "ada@example.com",
    )


def test_absorb_takes_over_what_the_survivor_lacks() -> None:
    survivor = Profile.start("s", "sales", {"email": "s@example.com"})
    merged = Profile.start("m", "form", {"email": "m@example.com", "phone": "+1 555"})
    merged.opt_in("sms", "form")
    merged.register_device("tok", "android")
    survivor.absorb(merged, "merge-1")
    merged.fold_into("s", "merge-1")
    assert survivor.values["email"] == "s@example.com"
    assert survivor.values["phone"] == "+1 555"
    assert survivor.consents["sms"].status == "granted"
    assert survivor.devices == {"tok": "android"}
    assert merged.merged_into == "s"
    with pytest.raises(DomainError, match="merged"):
        merged.update("api", {"city": "Rome"})
    assert merged.restore("merge-1") and merged.merged_into is None


def test_site_key_origins_are_exact_origins() -> None:
    assert normalise_origin("HTTPS://Shop.Example.com:8443/") == "https://shop.example.com:8443"
    for bad in ("shop.example.com", "https://*.example.com", "https://a.example/x", "ftp://a.b"):
        with pytest.raises(InvalidInput):
            normalise_origin(bad)
    key = SiteKey.create("pk_1", "shop", ["https://a.example", "https://A.example/"], 10)
    assert key.allowed_origins == ["https://a.example"]
    assert key.update(rate_limit_per_minute=10) == []
    assert key.revoke(None)
    with pytest.raises(DomainError):
        key.update(name="x")


def test_a_form_needs_one_required_email_field_and_unique_names() -> None:
    email = FormField(name="email", label="E-mail", required=True, maps_to="email")
    Form.create("f", "pk", "ok", [email], [], "website")
    with pytest.raises(InvalidInput, match="e-mail"):
        Form.create("f", "pk", "x", [FormField(name="email", label="E", maps_to="email")], [], "w")
    with pytest.raises(InvalidInput, match="unique"):
        Form.create(
            "f", "pk", "x", [email], [FormConsent(field="email", channel="email", label="x")], "w"
        )
    with pytest.raises(InvalidInput, match="reserved"):
        Form.create("f", "pk", "x", [email, FormField(name="website", label="W")], [], "website")
    with pytest.raises(InvalidInput, match="choices"):
        Form.create("f", "pk", "x", [email, FormField(name="c", label="C", type="select")], [], "w")
