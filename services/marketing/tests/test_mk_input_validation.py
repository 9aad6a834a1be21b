"""Input checks through the API (``crm_runtime.http.inputs`` and ``crm_marketing.inputs``):
blank required text, implausible times, misshapen addresses, numbers, time zones and bands are a
422 problem naming the field and the reason, on create and on update, and change nothing;
required text is stored trimmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mkb_support import Mkb, mkb  # noqa: F401

from crm_runtime.testing import assert_refused as refused

pytestmark = pytest.mark.integration

# empty, spaces, a tab and a line break, a no-break space and a zero-width space
BLANKS = ("", "   ", " \t\n ", "\u00a0\u200b")
OUT_OF_RANGE = ("1899-12-31T23:59:59Z", "2201-01-01T00:00:00Z", "0100-01-01T00:00:00Z")
YEARS = "between 1900-01-01 and 2200-12-31"
EMAIL_TEMPLATE = {
    "name": "Welcome",
    "channel": "email",
    "content": {"subject": "Hi {{ first_name }}", "html": "<p>Welcome</p>"},
}
TRIGGER_RULE = {
    "category": "phones",
    "min_views": 3,
    "within_seconds": 86400,
    "template_id": "tpl-1",
    "channel": "email",
}


async def count(mkb: Mkb, table: str, where: str = "TRUE") -> int:  # noqa: F811
    return int(await mkb.ctx.pool.fetchval(f"SELECT count(*) FROM {table} WHERE {where}"))


async def events(mkb: Mkb, pattern: str) -> int:  # noqa: F811
    return int(
        await mkb.ctx.pool.fetchval("SELECT count(*) FROM events WHERE event_type LIKE $1", pattern)
    )


async def template(mkb: Mkb) -> str:  # noqa: F811
    r = await mkb.marketer.post("/templates", json=EMAIL_TEMPLATE)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def segment(mkb: Mkb) -> str:  # noqa: F811
    r = await mkb.marketer.post("/segments", json={"name": "VIPs", "kind": "static"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def person(mkb: Mkb, key: str, form_id: str, email: str = "ada@example.com") -> str:  # noqa: F811
    assert (await mkb.submit(key, form_id, {"email": email})).status_code == 202
    return str(
        await mkb.ctx.pool.fetchval(
            "SELECT customer_id FROM profiles WHERE lower(email) = $1", email
        )
    )


# --- blank required text ------------------------------------------------------------------------


async def test_blank_names_of_segments_templates_campaigns_and_triggers_are_refused(
    mkb: Mkb,  # noqa: F811
) -> None:
    m = mkb.marketer
    for value in BLANKS:
        refused(await m.post("/segments", json={"name": value, "kind": "static"}), "name", "")
        refused(await m.post("/templates", json={**EMAIL_TEMPLATE, "name": value}), "name", "")
        trigger = {"name": value, "rule": TRIGGER_RULE}
        refused(await m.post("/triggers", json=trigger), "name", "")
    refused(await m.post("/segments", json={"name": "\u200b", "kind": "static"}), "name", "blank")
    assert await events(mkb, "crm.marketing.%") == 0

    seg, tpl = await segment(mkb), await template(mkb)
    campaign = {"template_id": tpl, "segment_id": seg, "channel": "email"}
    for value in BLANKS:
        refused(await m.post("/campaigns", json={**campaign, "name": value}), "name", "")
    refused(await m.post("/campaigns", json={**campaign, "name": " \t"}), "name", "blank")
    assert await count(mkb, "campaigns") == 0

    # on update: nothing changes
    refused(await m.patch(f"/segments/{seg}", json={"name": "  "}), "name", "blank")
    after = await m.get(f"/segments/{seg}")
    assert after.json()["name"] == "VIPs" and after.headers["ETag"] == '"1"'
    refused(await m.patch(f"/templates/{tpl}", json={"name": "\u00a0"}), "name", "blank")
    after = await m.get(f"/templates/{tpl}")
    assert (after.json()["name"], after.json()["revision"]) == ("Welcome", 1)
    assert after.headers["ETag"] == '"1"'

    t = await m.post("/triggers", json={"name": "Phones", "rule": TRIGGER_RULE})
    assert t.status_code == 201, t.text
    # names are stored trimmed
    renamed = await m.patch(f"/segments/{seg}", json={"name": " Top VIPs\n"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Top VIPs", renamed.text
    tid = t.json()["id"]
    r = await m.put(f"/triggers/{tid}", json={"name": "\n", "rule": TRIGGER_RULE})
    refused(r, "name", "blank")
    assert (await m.get(f"/triggers/{tid}")).json()["version"] == 1


async def test_blank_template_parts_are_refused_invisible_characters_too(mkb: Mkb) -> None:  # noqa: F811
    m = mkb.marketer
    content = {"subject": "\u200b\u00a0", "html": "<p>Welcome</p>"}
    r = await m.post("/templates", json={**EMAIL_TEMPLATE, "content": content})
    refused(r, "content.subject", "needs a subject")
    sms = {"name": "Text", "channel": "sms", "content": {"text": "\u2028\u200b"}}
    refused(await m.post("/templates", json=sms), "content.text", "needs a text")
    assert await count(mkb, "templates") == 0

    tpl = await template(mkb)
    r = await m.patch(f"/templates/{tpl}", json={"content": content})
    refused(r, "content.subject", "needs a subject")
    assert (await m.get(f"/templates/{tpl}")).json()["revision"] == 1


async def test_blank_site_key_and_form_names_labels_and_choices_are_refused(
    mkb: Mkb,  # noqa: F811
) -> None:
    m = mkb.marketer
    origins = ["https://shop.example.com"]
    r = await m.post("/site-keys", json={"name": " ", "allowed_origins": origins})
    refused(r, "name", "blank")
    assert await count(mkb, "site_keys") == 0
    key = await mkb.site()
    refused(await m.patch(f"/site-keys/{key}", json={"name": "\t"}), "name", "blank")
    assert (await m.get(f"/site-keys/{key}")).json()["name"] == "shop"

    email = {"name": "email", "label": "E-mail", "type": "email", "required": True}
    email["maps_to"] = "email"
    form: dict[str, Any] = {"site_key_id": key, "name": "Newsletter", "fields": [email]}
    refused(await m.post("/forms", json={**form, "name": "  "}), "name", "blank")
    size = {"name": "size", "label": "Size", "type": "select", "choices": ["S", " "]}
    r = await m.post("/forms", json={**form, "fields": [email, size]})
    refused(r, "fields.1.choices.1", "blank")
    r = await m.post(
        "/forms", json={**form, "fields": [email, {**size, "label": "\u3000", "choices": ["S"]}]}
    )
    refused(r, "fields.1.label", "blank")
    consent = {"field": "news", "channel": "email", "label": " \n"}
    refused(await m.post("/forms", json={**form, "consents": [consent]}), "consents.0.label", "")
    assert await count(mkb, "forms") == 0

    form_id = await mkb.form(key)
    r = await m.patch(f"/forms/{form_id}", json={"fields": [{**email, "label": ""}]})
    refused(r, "fields.0.label", "")
    refused(await m.patch(f"/forms/{form_id}", json={"name": "\u200b"}), "name", "blank")
    after = await m.get(f"/forms/{form_id}")
    assert after.json()["name"] == "Newsletter" and after.json()["version"] == 1


async def test_blank_members_attributes_tokens_and_trigger_categories_are_refused(
    mkb: Mkb,  # noqa: F811
) -> None:
    m = mkb.marketer
    seg = await segment(mkb)
    r = await m.post(f"/segments/{seg}/members", json={"customer_ids": ["c-1", "  "]})
    refused(r, "customer_ids.1", "blank")
    assert await count(mkb, "segment_members") == 0

    key = await mkb.site()
    cid = await person(mkb, key, await mkb.form(key))
    version = (await m.get(f"/audience/{cid}")).json()["version"]
    for field in ("city", "industry"):
        refused(await m.patch(f"/audience/{cid}", json={field: " "}), field, "blank")
    r = await m.post(f"/audience/{cid}/devices", json={"token": "\t", "platform": "ios"})
    refused(r, "token", "blank")
    r = await m.post(f"/audience/{cid}/consents/sms/withdraw", json={"reason": "  "})
    refused(r, "reason", "blank")
    profile = (await m.get(f"/audience/{cid}")).json()
    assert profile["version"] == version and profile["city"] is None
    assert profile["push_devices"] == []

    for field in ("category", "template_id"):
        rule = {**TRIGGER_RULE, field: "  "}
        refused(await m.post("/triggers", json={"name": "x", "rule": rule}), f"rule.{field}", "")
    # negative or absurd delays and cooldowns are refused too
    for field, value in (("delay_seconds", -1), ("cooldown_seconds", -60)):
        rule = {**TRIGGER_RULE, field: value}
        r = await m.post("/triggers", json={"name": "x", "rule": rule})
        refused(r, f"rule.{field}", "greater than or equal to 0")
    assert await count(mkb, "triggers") == 0


# --- times --------------------------------------------------------------------------------------


async def test_as_of_outside_1900_to_2200_is_refused_on_every_read(mkb: Mkb) -> None:  # noqa: F811
    m = mkb.marketer
    key = await mkb.site()
    form_id = await mkb.form(key)
    cid = await person(mkb, key, form_id)
    seg, tpl = await segment(mkb), await template(mkb)
    campaign = {"name": "Spring", "template_id": tpl, "segment_id": seg, "channel": "email"}
    c = (await m.post("/campaigns", json=campaign)).json()["id"]
    t = (await m.post("/triggers", json={"name": "Phones", "rule": TRIGGER_RULE})).json()["id"]
    readers = [
        f"/site-keys/{key}",
        f"/forms/{form_id}",
        f"/audience/{cid}",
        f"/segments/{seg}",
        f"/templates/{tpl}",
        f"/campaigns/{c}",
        f"/triggers/{t}",
    ]
    for value in OUT_OF_RANGE:
        for path in readers:
            refused(await m.get(path, params={"as_of": value}), "as_of", YEARS)
    # the bounds themselves are accepted
    for value in ("1900-01-01T00:00:00Z", "2200-12-31T00:00:00Z"):
        for path in readers:
            r = await m.get(path, params={"as_of": value})
            assert r.status_code != 422, (path, r.text)


async def test_send_at_must_be_plausible_and_not_in_the_past(mkb: Mkb) -> None:  # noqa: F811
    m = mkb.marketer
    seg, tpl = await segment(mkb), await template(mkb)
    body = {"name": "Spring", "template_id": tpl, "segment_id": seg, "channel": "email"}
    c = (await m.post("/campaigns", json=body)).json()["id"]
    for value in ("2300-04-01T09:00:00Z", "1850-04-01T09:00:00+01:00"):
        r = await m.post(f"/campaigns/{c}/schedule", json={"send_at": value})
        refused(r, "send_at", YEARS)
    # a time in the past is refused (not sent at once: a typo in the year would send now)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = await m.post(f"/campaigns/{c}/schedule", json={"send_at": yesterday})
    refused(r, "send_at", "in the past")
    after = await m.get(f"/campaigns/{c}")
    assert (after.json()["status"], after.json()["send_at"], after.headers["ETag"]) == (
        "draft",
        None,
        '"1"',
    )
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await m.post(f"/campaigns/{c}/schedule", json={"send_at": later})
    assert r.status_code == 200 and r.json()["status"] == "scheduled", r.text


async def test_a_visitors_wrong_clock_is_replaced_not_refused(mkb: Mkb) -> None:  # noqa: F811
    """Website activity carries the browser's time: a wrong one (another century, days ahead,
    no offset) is stored at the server's time, and the batch's other events are kept."""
    key = await mkb.site()
    now = mkb.clock.now()
    page = {"type": "page_view", "url": "https://shop.example.com/"}
    wrong = [
        *OUT_OF_RANGE,
        (now + timedelta(days=1, minutes=5)).isoformat(),
        (now + timedelta(days=3)).replace(tzinfo=None).isoformat(),
        (now + timedelta(hours=20)).isoformat(),
    ]
    batch = [page] + [{**page, "occurred_at": value} for value in wrong]
    r = await mkb.activity(key, "v-visitor-0001", batch)
    assert r.status_code == 202, r.text
    stored = await mkb.ctx.pool.fetch("SELECT occurred_at FROM web_activity")
    assert len(stored) == len(batch) and {row["occurred_at"] for row in stored} == {now}
    assert await events(mkb, "crm.marketing.web.%") == len(batch)


async def test_blank_web_activity_values_are_refused(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "page_view", "url": "  "}, "events.0.page_view.url"),
        ({"type": "search", "query": "\t"}, "events.0.search.query"),
        ({"type": "product_view", "product_id": " "}, "events.0.product_view.product_id"),
        (
            {"type": "add_to_cart", "product_id": "p-1", "category": "\u00a0"},
            "events.0.add_to_cart.category",
        ),
    ]
    for event, field in cases:
        refused(await mkb.activity(key, "v-visitor-0001", [event]), field, "blank")
    assert await count(mkb, "web_activity") == 0


# --- shapes -------------------------------------------------------------------------------------


async def test_misshapen_addresses_and_numbers_in_submissions_are_refused(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    fields = [
        {"name": "email", "label": "E-mail", "type": "email", "required": True},
        {"name": "phone", "label": "Phone", "type": "tel", "maps_to": "phone"},
    ]
    fields[0]["maps_to"] = "email"
    r = await mkb.marketer.post(
        "/forms", json={"site_key_id": key, "name": "Callback", "fields": fields}
    )
    assert r.status_code == 201, r.text
    form_id = r.json()["form_id"]
    for address in (
        "ada..lovelace@example.com",
        ".ada@example.com",
        "ada@example",
        "ada@-example.com",
        "ada@example..com",
        "ada@example.c",
        "ada@example.123",
        "<ada>@example.com",
        "ada,grace@example.com",
    ):
        r = await mkb.submit(key, form_id, {"email": address})
        refused(r, "email", "is not an e-mail address")
    for number in ("-----", "(((())))", "+1", "12 34", "1234567890123456789012"):
        r = await mkb.submit(key, form_id, {"email": "ada@example.com", "phone": number})
        refused(r, "phone", "is not a phone number")
    assert await count(mkb, "profiles") == 0
    assert await count(mkb, "form_submissions") == 0

    ok = {"email": "jörg.o'neil+news@bücher.example.de", "phone": "+49 (0)30 1234-567"}
    assert (await mkb.submit(key, form_id, ok)).status_code == 202
    assert await count(mkb, "profiles") == 1


async def test_unknown_time_zones_and_reversed_bands_are_refused(mkb: Mkb) -> None:  # noqa: F811
    m = mkb.marketer
    key = await mkb.site()
    cid = await person(mkb, key, await mkb.form(key))
    version = (await m.get(f"/audience/{cid}")).json()["version"]
    for zone in ("Europe/Berln", "CEST", "../etc/passwd"):
        r = await m.patch(f"/audience/{cid}", json={"timezone": zone})
        refused(r, "timezone", "not a known IANA time zone")
    refused(await m.patch(f"/audience/{cid}", json={"age_band": "44-35"}), "age_band", "lower")
    r = await m.patch(f"/audience/{cid}", json={"company_size": "50-11"})
    refused(r, "company_size", "lower")
    profile = (await m.get(f"/audience/{cid}")).json()
    assert profile["version"] == version
    assert (profile["timezone"], profile["age_band"], profile["company_size"]) == (None,) * 3

    good = {"timezone": "Europe/Berlin", "age_band": "35-44", "company_size": "500+"}
    r = await m.patch(f"/audience/{cid}", json=good)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in good} == good
    cleared = await m.patch(f"/audience/{cid}", json={"timezone": None})
    assert cleared.status_code == 200 and cleared.json()["timezone"] is None
