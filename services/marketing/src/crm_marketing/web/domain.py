"""Site keys and forms: what a website may post, and what a form asks."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from crm_events.schemas.marketing import (
    FormArchived,
    FormConsent,
    FormCreated,
    FormField,
    FormUpdated,
    SiteKeyCreated,
    SiteKeyRevoked,
    SiteKeyUpdated,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput

RESERVED_FIELDS = frozenset(
    {
        "visitor_id",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "referrer",
    }
)
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


def normalise_origin(origin: str, field: str = "allowed_origins") -> str:
    """``scheme://host[:port]`` in lower case; anything else (paths, wildcards) is refused."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, f"{origin!r} is not an origin like https://shop.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidInput(field, f"{origin!r}: an origin has no path, query or user")
    if not _HOST.match(parts.hostname):
        raise InvalidInput(field, f"{origin!r}: invalid host")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


class SiteKey(Aggregate):
    stream_type = "site_key"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.allowed_origins: list[str] = []
        self.rate_limit_per_minute = 0
        self.revoked = False

    @classmethod
    def create(
        cls, site_key_id: str, name: str, origins: list[str], rate_limit_per_minute: int
    ) -> SiteKey:
        key = cls(site_key_id)
        key.record(
            SiteKeyCreated(
                site_key_id=site_key_id,
                name=name,
                allowed_origins=_origins(origins),
                rate_limit_per_minute=rate_limit_per_minute,
            )
        )
        return key

    def update(
        self,
        *,
        name: str | None = None,
        origins: list[str] | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> list[str]:
        if self.revoked:
            raise DomainError("the site key is revoked")
        changed: list[str] = []
        clean = _origins(origins) if origins is not None else None
        if name is not None and name != self.name:
            changed.append("name")
        if clean is not None and clean != self.allowed_origins:
            changed.append("allowed_origins")
        if (
            rate_limit_per_minute is not None
            and rate_limit_per_minute != self.rate_limit_per_minute
        ):
            changed.append("rate_limit_per_minute")
        if changed:
            self.record(
                SiteKeyUpdated(
                    site_key_id=self.id,
                    changed=changed,
                    name=name if "name" in changed else None,
                    allowed_origins=clean if "allowed_origins" in changed else None,
                    rate_limit_per_minute=rate_limit_per_minute
                    if "rate_limit_per_minute" in changed
                    else None,
                )
            )
        return changed

    def revoke(self, reason: str | None) -> bool:
        if self.revoked:
            return False
        self.record(SiteKeyRevoked(site_key_id=self.id, reason=reason))
        return True

    @applies(SiteKeyCreated)
    def _created(self, e: SiteKeyCreated) -> None:
        self.name = e.name
        self.allowed_origins = list(e.allowed_origins)
        self.rate_limit_per_minute = e.rate_limit_per_minute

    @applies(SiteKeyUpdated)
    def _updated(self, e: SiteKeyUpdated) -> None:
        if e.name is not None:
            self.name = e.name
        if e.allowed_origins is not None:
            self.allowed_origins = list(e.allowed_origins)
        if e.rate_limit_per_minute is not None:
            self.rate_limit_per_minute = e.rate_limit_per_minute

    @applies(SiteKeyRevoked)
    def _revoked(self, e: SiteKeyRevoked) -> None:
        self.revoked = True


def _origins(origins: list[str]) -> list[str]:
    if not origins:
        raise InvalidInput("allowed_origins", "name at least one origin")
    return list(dict.fromkeys(normalise_origin(o) for o in origins))


def check_definition(
    fields: list[FormField], consents: list[FormConsent], honeypot_field: str
) -> None:
    """A form needs a required e-mail field mapped to the profile's e-mail; names are unique."""
    names = [f.name for f in fields] + [c.field for c in consents]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput("fields", f"field names must be unique: {', '.join(dupes)}")
    reserved = sorted(set(names) & (RESERVED_FIELDS | {honeypot_field}))
    if reserved:
        raise InvalidInput("fields", f"reserved names (visitor id, utm, honeypot): {reserved}")
    emails = [f for f in fields if f.maps_to == "email"]
    if len(emails) != 1 or not emails[0].required:
        raise InvalidInput("fields", "exactly one required field must map to the e-mail address")
    mapped = [f.maps_to for f in fields if f.maps_to]
    if len(mapped) != len(set(mapped)):
        raise InvalidInput("fields", "two fields map to the same profile attribute")
    for f in fields:
        if f.type == "select" and not f.choices:
            raise InvalidInput(f"fields.{f.name}.choices", "a select field needs choices")
    if len({c.channel for c in consents}) != len(consents):
        raise InvalidInput("consents", "one checkbox per channel")


class Form(Aggregate):
    stream_type = "form"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.site_key_id = ""
        self.name = ""
        self.fields: list[FormField] = []
        self.consents: list[FormConsent] = []
        self.honeypot_field = "website"
        self.archived = False

    @classmethod
    def create(
        cls,
        form_id: str,
        site_key_id: str,
        name: str,
        fields: list[FormField],
        consents: list[FormConsent],
        honeypot_field: str,
    ) -> Form:
        check_definition(fields, consents, honeypot_field)
        form = cls(form_id)
        form.record(
            FormCreated(
                form_id=form_id,
                site_key_id=site_key_id,
                name=name,
                fields=fields,
                consents=consents,
                honeypot_field=honeypot_field,
            )
        )
        return form

    def update(
        self,
        *,
        name: str | None = None,
        fields: list[FormField] | None = None,
        consents: list[FormConsent] | None = None,
        honeypot_field: str | None = None,
    ) -> list[str]:
        if self.archived:
            raise DomainError("the form is archived")
        check_definition(
            fields if fields is not None else self.fields,
            consents if consents is not None else self.consents,
            honeypot_field or self.honeypot_field,
        )
        changed: list[str] = []
        if name is not None and name != self.name:
            changed.append("name")
        if fields is not None and fields != self.fields:
            changed.append("fields")
        if consents is not None and consents != self.consents:
            changed.append("consents")
        if honeypot_field is not None and honeypot_field != self.honeypot_field:
            changed.append("honeypot_field")
        if changed:
            self.record(
                FormUpdated(
                    form_id=self.id,
                    changed=changed,
                    name=name if "name" in changed else None,
                    fields=fields if "fields" in changed else None,
                    consents=consents if "consents" in changed else None,
                    honeypot_field=honeypot_field if "honeypot_field" in changed else None,
                )
            )
        return changed

    def archive(self) -> bool:
        if self.archived:
            return False
        self.record(FormArchived(form_id=self.id))
        return True

    @applies(FormCreated)
    def _created(self, e: FormCreated) -> None:
        self.site_key_id = e.site_key_id
        self.name = e.name
        self.fields = list(e.fields)
        self.consents = list(e.consents)
        self.honeypot_field = e.honeypot_field

    @applies(FormUpdated)
    def _updated(self, e: FormUpdated) -> None:
        if e.name is not None:
            self.name = e.name
        if e.fields is not None:
            self.fields = list(e.fields)
        if e.consents is not None:
            self.consents = list(e.consents)
        if e.honeypot_field is not None:
            self.honeypot_field = e.honeypot_field

    @applies(FormArchived)
    def _archived(self, e: FormArchived) -> None:
        self.archived = True
