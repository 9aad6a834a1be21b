"""Site keys, forms, form submissions and website activity (command handlers and read models)."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.marketing import (
    AddedToCart,
    FormConsent,
    FormField,
    FormSubmitted,
    PageViewed,
    ProductViewed,
    Searched,
)
from crm_marketing.audience import consent_mail
from crm_marketing.audience.api import customer_of_visitor, identify_visitor
from crm_marketing.audience.commands import AudienceCommands
from crm_marketing.audience.profiles import canonical
from crm_marketing.inputs import EMAIL_REASON, PHONE_REASON, is_email, is_phone
from crm_marketing.web.domain import Form, SiteKey
from crm_runtime import people
from crm_runtime.db import Conn
from crm_runtime.errors import CrmError, InvalidInput
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_runtime.http.inputs import NotBlank
from crm_runtime.http.params import Instant
from crm_runtime.repository import Repository, check_version

VISITOR_ID = r"^[A-Za-z0-9_-]{8,64}$"
_VISITOR = re.compile(VISITOR_ID)
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
ATTRIBUTION_KEYS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
)
ACTIVITY_NS = uuid.UUID("6b3f7c1e-2d4a-4e8b-9c0d-1f2e3a4b5c6d")
CLIENT_CLOCK_PAST = timedelta(hours=24)
CLIENT_CLOCK_FUTURE = timedelta(minutes=5)


class FieldErrors(CrmError):
    """422 naming every field that failed, and why."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        super().__init__(f"invalid submission: {summary}", errors=errors)


# --- site keys and forms (marketer API) ---------------------------------------------------------


def new_site_key_id() -> str:
    return "pk_" + secrets.token_hex(12)


class WebAdmin:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.keys = Repository(store, SiteKey)
        self.forms = Repository(store, Form)

    async def create_key(
        self, conn: Conn, name: str, origins: list[str], rate: int, meta: Metadata
    ) -> SiteKey:
        key = SiteKey.create(new_site_key_id(), name, origins, rate)
        await self.keys.save(conn, key, meta)
        await _project_key(conn, key)
        return key

    async def change_key(
        self,
        conn: Conn,
        key_id: str,
        meta: Metadata,
        *,
        expected_version: int | None,
        name: str | None = None,
        origins: list[str] | None = None,
        rate: int | None = None,
        revoke: bool = False,
        reason: str | None = None,
    ) -> SiteKey:
        key = await self.keys.load(key_id, conn=conn)
        check_version(expected_version, key.version)
        if revoke:
            key.revoke(reason)
        else:
            key.update(name=name, origins=origins, rate_limit_per_minute=rate)
        await self.keys.save(conn, key, meta)
        await _project_key(conn, key)
        return key

    async def create_form(
        self,
        conn: Conn,
        site_key_id: str,
        name: str,
        fields: list[FormField],
        consents: list[FormConsent],
        honeypot_field: str,
        meta: Metadata,
    ) -> Form:
        key = await conn.fetchval(
            "SELECT revoked FROM site_keys WHERE site_key_id = $1", site_key_id
        )
        if key is None:
            raise InvalidInput("site_key_id", "no such site key")
        form = Form.create(str(uuid.uuid4()), site_key_id, name, fields, consents, honeypot_field)
        await self.forms.save(conn, form, meta)
        await _project_form(conn, form)
        return form

    async def change_form(
        self,
        conn: Conn,
        form_id: str,
        meta: Metadata,
        *,
        expected_version: int | None,
        archive: bool = False,
        **changes: Any,
    ) -> Form:
        form = await self.forms.load(form_id, conn=conn)
        check_version(expected_version, form.version)
        if archive:
            form.archive()
        else:
            form.update(**changes)
        await self.forms.save(conn, form, meta)
        await _project_form(conn, form)
        return form


async def _project_key(conn: Conn, key: SiteKey) -> None:
    await conn.execute(
        "INSERT INTO site_keys (site_key_id, name, allowed_origins, rate_limit_per_minute,"
        " revoked, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now(), now())"
        " ON CONFLICT (site_key_id) DO UPDATE SET name = EXCLUDED.name,"
        " allowed_origins = EXCLUDED.allowed_origins,"
        " rate_limit_per_minute = EXCLUDED.rate_limit_per_minute, revoked = EXCLUDED.revoked,"
        " version = EXCLUDED.version, updated_at = now()",
        key.id,
        key.name,
        key.allowed_origins,
        key.rate_limit_per_minute,
        key.revoked,
        key.version,
    )


def form_definition(form: Form) -> dict[str, Any]:
    return {
        "fields": [f.model_dump(mode="json") for f in form.fields],
        "consents": [c.model_dump(mode="json") for c in form.consents],
        "honeypot_field": form.honeypot_field,
    }


async def _project_form(conn: Conn, form: Form) -> None:
    await conn.execute(
        "INSERT INTO forms (form_id, site_key_id, name, definition, archived, version,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, now(), now())"
        " ON CONFLICT (form_id) DO UPDATE SET name = EXCLUDED.name,"
        " definition = EXCLUDED.definition, archived = EXCLUDED.archived,"
        " version = EXCLUDED.version, updated_at = now()",
        form.id,
        form.site_key_id,
        form.name,
        json.dumps(form_definition(form)),
        form.archived,
        form.version,
    )


@dataclass(frozen=True)
class LiveSite:
    site_key_id: str
    allowed_origins: list[str]
    rate_limit_per_minute: int


async def live_site(conn: Conn, site_key_id: str) -> LiveSite | None:
    row = await conn.fetchrow(
        "SELECT site_key_id, allowed_origins, rate_limit_per_minute FROM site_keys"
        " WHERE site_key_id = $1 AND NOT revoked",
        site_key_id,
    )
    if row is None:
        return None
    return LiveSite(row["site_key_id"], list(row["allowed_origins"]), row["rate_limit_per_minute"])


@dataclass(frozen=True)
class LiveForm:
    form_id: str
    site_key_id: str
    fields: list[FormField]
    consents: list[FormConsent]
    honeypot_field: str


async def live_form(conn: Conn, form_id: str, site_key_id: str) -> LiveForm | None:
    row = await conn.fetchrow(
        "SELECT form_id, site_key_id, definition FROM forms"
        " WHERE form_id = $1 AND site_key_id = $2 AND NOT archived",
        form_id,
        site_key_id,
    )
    if row is None:
        return None
    d = row["definition"]
    d = json.loads(d) if isinstance(d, str) else d
    return LiveForm(
        row["form_id"],
        row["site_key_id"],
        [FormField(**f) for f in d["fields"]],
        [FormConsent(**c) for c in d["consents"]],
        d["honeypot_field"],
    )


# --- form submissions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    answers: dict[str, str]
    profile_values: dict[str, str]
    consents: list[Literal["email", "sms"]]
    visitor_id: str | None
    attribution: dict[str, str] | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    raise TypeError


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("1", "true", "on", "yes")


def is_honeypot_filled(form: LiveForm, body: dict[str, Any]) -> bool:
    value = body.get(form.honeypot_field)
    return value not in (None, "", False)


def validate_submission(form: LiveForm, body: dict[str, Any]) -> Submission:
    """The answers of a submission, or FieldErrors naming each bad field (never the others')."""
    errors: list[dict[str, str]] = []
    answers: dict[str, str] = {}
    mapped: dict[str, str] = {}
    for f in form.fields:
        try:
            value = _text(body.get(f.name))
        except TypeError:
            errors.append({"field": f.name, "reason": "must be text"})
            continue
        if f.type == "checkbox":
            value = "true" if _truthy(body.get(f.name)) else "false"
        if not value:
            if f.required:
                errors.append({"field": f.name, "reason": "is required"})
            continue
        if len(value) > f.max_length:
            errors.append({"field": f.name, "reason": f"at most {f.max_length} characters"})
            continue
        reason = _check(f, value)
        if reason:
            errors.append({"field": f.name, "reason": reason})
            continue
        answers[f.name] = value
        if f.maps_to:
            mapped[f.maps_to] = value.upper() if f.maps_to == "country" else value
    visitor = body.get("visitor_id")
    if visitor is not None and not (isinstance(visitor, str) and _VISITOR.match(visitor)):
        errors.append({"field": "visitor_id", "reason": "8-64 letters, digits, - or _"})
        visitor = None
    attribution: dict[str, str] = {}
    for k in ATTRIBUTION_KEYS:
        v = body.get(k)
        if v in (None, ""):
            continue
        if not isinstance(v, str) or len(v) > 300:
            errors.append({"field": k, "reason": "text of at most 300 characters"})
        else:
            attribution[k] = v.strip()
    if errors:
        raise FieldErrors(errors)
    consents = [c.channel for c in form.consents if _truthy(body.get(c.field))]
    return Submission(answers, mapped, consents, visitor, attribution or None)


def _check(f: FormField, value: str) -> str | None:
    is_address = f.type == "email" or f.maps_to == "email"
    if is_address and not is_email(value):
        return EMAIL_REASON
    if (f.type == "tel" or f.maps_to == "phone") and not is_phone(value):
        return PHONE_REASON
    if f.type == "select" and value not in f.choices:
        return f"must be one of: {', '.join(f.choices)}"
    if f.maps_to == "country" and not _COUNTRY.match(value):
        return "must be a two-letter country code (ISO 3166-1)"
    return None


async def submit_form(
    conn: Conn, store: EventStore, form: LiveForm, sub: Submission, meta: Metadata
) -> tuple[str, list[str]]:
    """Create the person or fill in their empty fields; returns their customer id and the
    opt-in mails to send."""
    email = sub.profile_values["email"]
    cid, minted = await people.resolve_or_mint(conn, email)
    cid = await canonical(conn, cid)
    if minted:
        await people.record_sighting(
            conn,
            store,
            context="marketing",
            customer_id=cid,
            email=email,
            first_name=sub.profile_values.get("first_name"),
            last_name=sub.profile_values.get("last_name"),
            company=sub.profile_values.get("company"),
            phone=sub.profile_values.get("phone"),
            sighted_as="prospect",
            source_detail=form.form_id,
            attribution=sub.attribution,
            metadata=meta,
        )
    audience = AudienceCommands(store)
    await audience.upsert_person(conn, cid, sub.profile_values, meta)
    mails: list[str] = []
    source = f"form:{form.form_id}"
    for channel in sub.consents:
        if channel == "email":
            try:
                request_id = await audience.request_email_consent(conn, cid, source, meta)
            except consent_mail.TooManyConfirmations:
                request_id = None  # accepted like any other; no further mail this hour
            if request_id:
                mails.append(request_id)
        elif sub.profile_values.get("phone"):
            # SMS consent only for the number given here, and only if it is the profile's
            # (a known customer's number is never replaced by a form).
            await audience.opt_in(
                conn, cid, channel, source, meta, phone=sub.profile_values["phone"]
            )
    if sub.visitor_id:
        await identify_visitor(
            conn, store, visitor_id=sub.visitor_id, customer_id=cid, metadata=meta, via="form"
        )
    submission_id = str(uuid.uuid4())
    payload = FormSubmitted(
        form_id=form.form_id,
        submission_id=submission_id,
        customer_id=cid,
        new_person=minted,
        visitor_id=sub.visitor_id,
        values=sub.answers,
        consents_requested=sub.consents,
        attribution=sub.attribution,
    )
    await store.append(
        conn,
        f"submission-{submission_id}",
        "submission",
        0,
        [
            NewEvent(
                type="crm.marketing.form.submitted",
                data=payload.model_dump(mode="json"),
                subject=cid,
            )
        ],
        meta,
    )
    await conn.execute(
        "INSERT INTO form_submissions (submission_id, form_id, customer_id, visitor_id,"
        " new_person, submitted_at) VALUES ($1, $2, $3, $4, $5, now())",
        submission_id,
        form.form_id,
        cid,
        sub.visitor_id,
        minted,
    )
    return cid, mails


# --- website activity ---------------------------------------------------------------------------


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None, min_length=1, max_length=64, description="client id: a retry is stored once"
    )
    occurred_at: Instant | None = Field(
        default=None,
        description="the browser's time; one outside the last 24 h to 5 minutes ahead of the"
        " server's clock is replaced by the server's time (a visitor's clock is not refused:"
        " the batch's other events would be lost with it)",
    )
    url: str | None = Field(default=None, max_length=2000)


Text = Annotated[str, Field(min_length=1, max_length=100), NotBlank]


class PageViewIn(_Item):
    type: Literal["page_view"]
    url: Annotated[str, Field(min_length=1, max_length=2000), NotBlank]
    title: str | None = Field(default=None, max_length=300)


class ProductViewIn(_Item):
    type: Literal["product_view"]
    product_id: Text
    category: Text | None = None


class SearchIn(_Item):
    type: Literal["search"]
    query: Annotated[str, Field(min_length=1, max_length=300), NotBlank]


class AddToCartIn(_Item):
    type: Literal["add_to_cart"]
    product_id: Text
    category: Text | None = None
    quantity: int = Field(default=1, ge=1, le=10_000)


ActivityItem = Annotated[
    PageViewIn | ProductViewIn | SearchIn | AddToCartIn, Field(discriminator="type")
]


class ActivityBatch(BaseModel):
    """What a site's script posts: its visitor id and a batch of events."""

    model_config = ConfigDict(extra="forbid")

    visitor_id: str = Field(pattern=VISITOR_ID, description="the script's random visitor id")
    events: list[ActivityItem] = Field(min_length=1)


_KINDS: dict[str, tuple[str, str, type[Any]]] = {
    "page_view": ("page_view", "crm.marketing.web.page_viewed", PageViewed),
    "product_view": ("product_view", "crm.marketing.web.product_viewed", ProductViewed),
    "search": ("search", "crm.marketing.web.searched", Searched),
    "add_to_cart": ("add_to_cart", "crm.marketing.web.added_to_cart", AddedToCart),
}


async def ingest_activity(
    conn: Conn,
    store: EventStore,
    site_key_id: str,
    batch: ActivityBatch,
    meta: Metadata,
    now: datetime | None = None,
) -> int:
    """Store a batch of activity as events and rows. Returns how many were new."""
    now = now or datetime.now(UTC)
    vid = batch.visitor_id
    # Shared with other batches of the visitor, exclusive against its identification.
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", f"visitor:{vid}"
    )
    cid = await customer_of_visitor(conn, vid)
    items = [
        (
            uuid.uuid5(ACTIVITY_NS, f"{site_key_id}:{vid}:{item.id}") if item.id else uuid.uuid4(),
            item,
        )
        for item in batch.events
    ]
    seen = {
        r["event_id"]
        for r in await conn.fetch(
            "SELECT event_id FROM web_activity WHERE event_id = ANY($1::uuid[])",
            [i for i, _ in items],
        )
    }
    fresh: list[tuple[uuid.UUID, Any]] = []
    for event_id, item in items:
        if event_id not in seen:
            seen.add(event_id)
            fresh.append((event_id, item))
    if not fresh:
        return 0
    events: list[NewEvent] = []
    rows: list[tuple[Any, ...]] = []
    for event_id, item in fresh:
        kind, type_, model = _KINDS[item.type]
        at = item.occurred_at
        if (
            at is None
            or at.tzinfo is None
            or not (now - CLIENT_CLOCK_PAST <= at <= now + CLIENT_CLOCK_FUTURE)
        ):
            at = now
        fields = item.model_dump(exclude={"id", "occurred_at", "type"}, exclude_none=True)
        payload = model(site_key_id=site_key_id, visitor_id=vid, customer_id=cid, **fields)
        events.append(
            NewEvent(
                type=type_,
                data=payload.model_dump(mode="json"),
                subject=cid,
                event_id=event_id,
                occurred_at=at,
            )
        )
        rows.append(
            (
                event_id,
                vid,
                cid,
                kind,
                fields.get("url"),
                fields.get("product_id"),
                fields.get("category"),
                fields.get("query"),
                at,
            )
        )
    await store.append(conn, f"web-{uuid.uuid4()}", "web_activity", 0, events, meta)
    await conn.executemany(
        "INSERT INTO web_activity (event_id, visitor_id, customer_id, kind, url, product_id,"
        " category, query, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        rows,
    )
    categories = {r[5]: (r[6], r[8]) for r in rows if r[5] and r[6]}
    for product_id, (category, at) in sorted(categories.items()):
        await conn.execute(
            "INSERT INTO product_categories (product_id, category, seen_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (product_id) DO UPDATE SET category = EXCLUDED.category,"
            " seen_at = EXCLUDED.seen_at WHERE product_categories.seen_at <= EXCLUDED.seen_at",
            product_id,
            category,
            at,
        )
    return len(fresh)
