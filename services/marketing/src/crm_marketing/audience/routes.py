"""The /audience resource: profiles, marketing attributes, consent, push devices (marketers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_marketing.access import Marketer
from crm_marketing.api_common import HistoryEntry, IfMatch, after_of, history, next_cursor
from crm_marketing.audience.commands import AudienceCommands
from crm_marketing.audience.confirmations import send_confirmations
from crm_marketing.audience.domain import ATTRIBUTES, Profile
from crm_marketing.audience.profiles import Profiles, canonical
from crm_marketing.inputs import OrderedBand, TimeZoneName
from crm_runtime.db import Conn
from crm_runtime.errors import NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime, NotBlank
from crm_runtime.http.pagination import Page

router = APIRouter(prefix="/audience", tags=["audience"])

ChannelName = Literal["email", "sms", "push"]
Text = Annotated[str, Field(min_length=1, max_length=100), NotBlank]
Token = Annotated[str, Field(min_length=1, max_length=4096), NotBlank]
AgeBand = Annotated[str, Field(pattern=r"^([0-9]{1,3}-[0-9]{1,3}|[0-9]{1,3}\+)$"), OrderedBand]
CompanySize = Annotated[str, Field(pattern=r"^([0-9]{1,7}-[0-9]{1,7}|[0-9]{1,7}\+)$"), OrderedBand]


class ConsentOut(BaseModel):
    status: Literal["pending", "granted", "withdrawn"]
    address: str | None = Field(
        default=None,
        description="e-mail: the confirmed address; SMS: the number it was given for (digits, +)",
    )
    source: str | None = None


class DeviceOut(BaseModel):
    token: str
    platform: str


class ProfileOut(BaseModel):
    customer_id: str
    version: int
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    country: str | None = None
    city: str | None = None
    language: str | None = None
    age_band: str | None = None
    industry: str | None = None
    company_size: str | None = None
    timezone: str | None = None
    consents: dict[str, ConsentOut]
    push_devices: list[DeviceOut]
    merged_into: str | None = None

    @classmethod
    def of(cls, p: Profile) -> ProfileOut:
        return cls(
            customer_id=p.id,
            version=p.version,
            **{k: p.values.get(k) for k in ATTRIBUTES},
            consents={
                ch: ConsentOut(status=c.status, address=c.address, source=c.source)
                for ch, c in sorted(p.consents.items())
            },
            push_devices=[DeviceOut(token=t, platform=pf) for t, pf in sorted(p.devices.items())],
            merged_into=p.merged_into,
        )


class ProfileSummary(BaseModel):
    customer_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    country: str | None
    language: str | None
    created_at: datetime
    updated_at: datetime


class AttributesPatch(BaseModel):
    """Marketing's own attributes; null clears one. Contact data comes from sales."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"country": "DE", "language": "de", "age_band": "25-34"}]},
    )

    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1")
    city: Text | None = None
    language: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47"
    )
    age_band: AgeBand | None = None
    industry: Text | None = None
    company_size: CompanySize | None = Field(default=None, description="e.g. 11-50")
    timezone: TimeZoneName | None = Field(default=None, description="IANA zone, e.g. Europe/Berlin")


class ConsentRequestOut(BaseModel):
    status: Literal["pending", "granted"]
    detail: str


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=200), NotBlank] = "api"


class OptInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(default=None, max_length=200, description="e.g. sms keyword, app")


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    platform: Literal["ios", "android", "web"]


class DeviceRemove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    reason: str | None = Field(default=None, max_length=200)


class ConsentHistoryEntry(BaseModel):
    channel: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class ConsentsOut(BaseModel):
    customer_id: str
    current: dict[str, ConsentOut]
    history: list[ConsentHistoryEntry]


class ActivityOut(BaseModel):
    event_id: str
    visitor_id: str
    customer_id: str | None
    kind: str
    url: str | None
    product_id: str | None
    category: str | None
    query: str | None
    occurred_at: datetime


class PurchaseOut(BaseModel):
    purchase_id: str
    product_id: str
    product_name: str | None
    category: str | None
    amount_minor: int | None
    currency: str | None
    occurred_at: datetime


def _result(p: Profile, status: int = 200) -> CommandResult:
    return CommandResult(
        status, ProfileOut.of(p), {"ETag": etag(p.version), "Location": f"/audience/{p.id}"}
    )


@router.get("", response_model=Page[ProfileSummary], summary="List profiles, newest first")
async def list_profiles(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    country: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
    language: str | None = None,
    consent: Annotated[
        ChannelName | None, Query(description="only profiles with this channel granted")
    ] = None,
) -> Page[ProfileSummary]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM profiles p WHERE ($1::timestamptz IS NULL OR (created_at, customer_id)"
            " < ($1, $2)) AND ($3::text IS NULL OR country = upper($3))"
            " AND ($4::text IS NULL OR language = $4)"
            " AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM consents c WHERE"
            " c.customer_id = p.customer_id AND c.channel = $5 AND c.status = 'granted'))"
            " ORDER BY created_at DESC, customer_id DESC LIMIT $6",
            after[0] if after else None,
            after[1] if after else None,
            country,
            language,
            consent,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[
            ProfileSummary(**{k: r[k] for k in ProfileSummary.model_fields}) for r in found[:limit]
        ],
        next_cursor=next_cursor(found, limit, "created_at", "customer_id"),
    )


@router.get(
    "/{customer_id}",
    response_model=ProfileOut,
    summary="A customer's profile (also as of a past time; a merged id shows its survivor)",
)
async def get_profile(
    customer_id: str, ctx: CtxDep, user: Marketer, as_of: ClientTime | None = None
) -> JSONResponse:
    profiles = Profiles(ctx.store)
    async with ctx.pool.acquire() as conn:
        cid = customer_id if as_of else await canonical(conn, customer_id)
        if as_of is None:
            profile = await profiles.get(conn, cid)
        else:
            profile = await profiles.repo.load(cid, as_of=as_of, conn=conn)
    if not profile.exists:
        raise NotFound(f"there is no audience profile for customer {customer_id}")
    return JSONResponse(
        ProfileOut.of(profile).model_dump(mode="json"), headers={"ETag": etag(profile.version)}
    )


@router.get("/{customer_id}/history", response_model=list[HistoryEntry], summary="Its events")
async def profile_history(customer_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await Profiles(ctx.store).repo.history(customer_id))


@router.patch("/{customer_id}", response_model=ProfileOut, summary="Set marketing's attributes")
async def patch_profile(
    customer_id: str, body: AttributesPatch, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    values = body.model_dump(exclude_unset=True)
    cmds = AudienceCommands(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        p = await cmds.update_attributes(
            conn,
            customer_id,
            values,
            metadata_for(user),
            expected_version=expected_version(if_match),
        )
        return _result(p)

    return await run_command(ctx, user, None, None, command)


@router.get("/{customer_id}/consents", response_model=ConsentsOut, summary="Consent and history")
async def consents(customer_id: str, ctx: CtxDep, user: Marketer) -> ConsentsOut:
    async with ctx.pool.acquire() as conn:
        cid = await canonical(conn, customer_id)
        profile = await Profiles(ctx.store).get(conn, cid)
    if not profile.exists:
        raise NotFound(f"there is no audience profile for customer {customer_id}")
    events = await ctx.store.read_stream(f"profile-{cid}")
    return ConsentsOut(
        customer_id=cid,
        current={
            ch: ConsentOut(status=c.status, address=c.address, source=c.source)
            for ch, c in sorted(profile.consents.items())
        },
        history=[
            ConsentHistoryEntry(
                channel=e.data["channel"], type=e.type, occurred_at=e.occurred_at, data=e.data
            )
            for e in events
            if e.type.startswith("crm.marketing.consent.")
        ],
    )


@router.post(
    "/{customer_id}/consents/email/request",
    status_code=202,
    response_model=ConsentRequestOut,
    summary="Start e-mail double opt-in: a confirmation mail with a signed link goes out",
)
async def request_email(customer_id: str, ctx: CtxDep, user: Marketer) -> JSONResponse:
    cmds = AudienceCommands(ctx.store)
    async with ctx.pool.acquire() as conn, conn.transaction():
        request_id = await cmds.request_email_consent(conn, customer_id, "api", metadata_for(user))
    if request_id is None:
        body = ConsentRequestOut(status="granted", detail="the address is already confirmed")
        return JSONResponse(body.model_dump(), status_code=200)
    await send_confirmations(ctx, [request_id])
    body = ConsentRequestOut(status="pending", detail="a confirmation mail was sent")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post(
    "/{customer_id}/consents/{channel}/opt-in",
    response_model=ProfileOut,
    summary="Record an SMS or push opt-in (e-mail needs double opt-in: 409)",
)
async def opt_in(
    customer_id: str, channel: ChannelName, body: OptInIn, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    cmds = AudienceCommands(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        p = await cmds.opt_in(conn, customer_id, channel, body.source or "api", metadata_for(user))
        return _result(p)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{customer_id}/consents/{channel}/withdraw",
    response_model=ProfileOut,
    summary="Withdraw consent for a channel (or cancel a pending e-mail opt-in)",
)
async def withdraw(
    customer_id: str, channel: ChannelName, body: WithdrawIn, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    cmds = AudienceCommands(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        p = await cmds.withdraw(conn, customer_id, channel, body.reason, "api", metadata_for(user))
        return _result(p)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{customer_id}/devices", response_model=ProfileOut, summary="Register a push device token"
)
async def register_device(
    customer_id: str, body: DeviceIn, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    cmds = AudienceCommands(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        p = await cmds.register_device(
            conn, customer_id, body.token, body.platform, metadata_for(user)
        )
        return _result(p)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{customer_id}/devices/unregister",
    response_model=ProfileOut,
    summary="Remove a push device token (the token goes in the body, not the URL)",
)
async def unregister_device(
    customer_id: str, body: DeviceRemove, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    cmds = AudienceCommands(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        p = await cmds.unregister_device(
            conn, customer_id, body.token, body.reason, metadata_for(user)
        )
        return _result(p)

    return await run_command(ctx, user, None, None, command)


@router.get(
    "/{customer_id}/activity",
    response_model=Page[ActivityOut],
    summary="The customer's website activity (identified visits), newest first",
)
async def customer_activity(
    customer_id: str,
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    kind: Literal["page_view", "product_view", "search", "add_to_cart"] | None = None,
) -> Page[ActivityOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        cid = await canonical(conn, customer_id)
        rows = await conn.fetch(
            "SELECT * FROM web_activity WHERE customer_id = $1"
            " AND ($2::timestamptz IS NULL OR (occurred_at, event_id::text) < ($2, $3))"
            " AND ($4::text IS NULL OR kind = $4)"
            " ORDER BY occurred_at DESC, event_id::text DESC LIMIT $5",
            cid,
            after[0] if after else None,
            after[1] if after else None,
            kind,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[activity_out(r) for r in found[:limit]],
        next_cursor=next_cursor(found, limit, "occurred_at", "event_id"),
    )


def activity_out(r: dict[str, Any]) -> ActivityOut:
    return ActivityOut(
        event_id=str(r["event_id"]),
        visitor_id=r["visitor_id"],
        customer_id=r["customer_id"],
        kind=r["kind"],
        url=r["url"],
        product_id=r["product_id"],
        category=r["category"],
        query=r["query"],
        occurred_at=r["occurred_at"],
    )


@router.get(
    "/{customer_id}/purchases",
    response_model=Page[PurchaseOut],
    summary="What the customer bought (won deals, paid invoices), newest first",
)
async def purchases(
    customer_id: str,
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[PurchaseOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        cid = await canonical(conn, customer_id)
        rows = await conn.fetch(
            "SELECT * FROM purchases WHERE customer_id = $1"
            " AND ($2::timestamptz IS NULL OR (occurred_at, purchase_id) < ($2, $3))"
            " ORDER BY occurred_at DESC, purchase_id DESC LIMIT $4",
            cid,
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[PurchaseOut(**{k: r[k] for k in PurchaseOut.model_fields}) for r in found[:limit]],
        next_cursor=next_cursor(found, limit, "occurred_at", "purchase_id"),
    )
