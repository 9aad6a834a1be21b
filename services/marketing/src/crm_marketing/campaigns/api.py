"""/campaigns: create, schedule, cancel, read (also as of a time), history, results, recipients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.marketing_campaigns import Channel
from crm_marketing.campaigns import views
from crm_marketing.campaigns.application import CampaignHandlers
from crm_marketing.campaigns.domain import Campaign
from crm_marketing.campaigns.http import (
    AnyRole,
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    Marketer,
    after_of,
    history,
    next_cursor,
)
from crm_marketing.settings import now as service_now
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
from crm_runtime.http.inputs import ClientAwareTime, Name
from crm_runtime.http.pagination import Page

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

Status = Literal["draft", "scheduled", "sending", "sent", "cancelled"]
RecipientStatus = Literal[
    "queued",
    "sending",
    "sent",
    "delivered",
    "bounced",
    "opened",
    "clicked",
    "unsubscribed",
    "skipped",
]
Id = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class NewCampaign(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Spring phones",
                    "template_id": "tpl-spring",
                    "segment_id": "seg-phone-lovers",
                    "channel": "email",
                }
            ]
        },
    )

    name: Name
    template_id: Id
    segment_id: Id
    channel: Channel


class ScheduleIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"send_at": "2026-04-01T09:00:00Z"}, {}]}
    )

    send_at: ClientAwareTime | None = Field(
        default=None,
        description="when to start sending (ISO 8601 with zone, in 1900 to 2200); omitted (or no"
        " body): now; more than 5 minutes in the past: 422",
    )


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class CampaignOut(BaseModel):
    id: str
    name: str
    template_id: str
    segment_id: str
    channel: Channel
    status: Status
    send_at: datetime | None
    members: int | None = Field(description="segment members when sending started")
    version: int
    created_by: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Results(BaseModel):
    campaign_id: str
    status: Status
    recipients: int
    by_status: dict[str, int] = Field(description="each recipient at its furthest status")
    skipped: dict[str, int] = Field(description="recipients skipped, by reason")
    sent: int = Field(description="handed to the mail server or provider (incl. bounced)")
    delivered: int
    bounced: int
    opened: int
    clicked: int
    unsubscribed: int
    open_rate: float | None = Field(
        description="opened / sent and not bounced; null while nothing was sent"
    )
    click_rate: float | None = Field(
        description="clicked / sent and not bounced; null while nothing was sent"
    )
    click_to_open_rate: float | None = Field(
        description="clicked / opened; null while nothing was opened"
    )
    deferred: int = Field(
        description="queued recipients not due yet: waiting for the end of their quiet hours"
        " (or for a retry after a temporary delivery failure)"
    )
    next_send_at: datetime | None = Field(
        description="when the first deferred recipient becomes due (null: none deferred)"
    )


class CampaignDetail(CampaignOut):
    deferred: int | None = Field(
        default=None,
        description="queued recipients not due yet (quiet hours or a retry's back-off);"
        " null with as_of",
    )
    next_send_at: datetime | None = Field(
        default=None, description="when the first deferred recipient becomes due"
    )


class Recipient(BaseModel):
    message_id: str
    customer_id: str
    status: RecipientStatus
    skip_reason: str | None
    due_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    bounced_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    unsubscribed_at: datetime | None
    created_at: datetime


def from_row(r: dict[str, Any]) -> CampaignOut:
    return CampaignOut(
        id=r["campaign_id"],
        name=r["name"],
        template_id=r["template_id"],
        segment_id=r["segment_id"],
        channel=r["channel"],
        status=r["status"],
        send_at=r["send_at"],
        members=r["members"],
        version=r["version"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def from_aggregate(c: Campaign) -> CampaignOut:
    return CampaignOut(
        id=c.id,
        name=c.name,
        template_id=c.template_id,
        segment_id=c.segment_id,
        channel=c.channel,
        status=c.status,
        send_at=c.send_at,
        members=c.members,
        version=c.version,
    )


async def _row(conn: Conn, campaign_id: str) -> dict[str, Any]:
    row = await views.get(conn, campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return row


@router.post(
    "",
    status_code=201,
    response_model=CampaignOut,
    summary="Draft a campaign: one template to one segment over one channel",
)
async def create_campaign(
    body: NewCampaign, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = CampaignHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        now = datetime.now(UTC)
        c = await handlers.create(
            conn,
            name=body.name,
            template_id=body.template_id,
            segment_id=body.segment_id,
            channel=body.channel,
            metadata=metadata_for(user),
            now=now,
        )
        out = from_row(await _row(conn, c.id))
        return CommandResult(201, out, {"ETag": etag(c.version), "Location": f"/campaigns/{c.id}"})

    return await run_command(ctx, user, idempotency_key, body, command)


@router.get("", response_model=Page[CampaignOut], summary="Campaigns, newest first")
async def list_campaigns(
    ctx: CtxDep,
    user: AnyRole,
    status: Status | None = None,
    channel: Channel | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[CampaignOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM campaigns WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::text IS NULL OR channel = $2)"
            " AND ($3::timestamptz IS NULL OR (created_at, campaign_id) < ($3, $4))"
            " ORDER BY created_at DESC, campaign_id DESC LIMIT $5",
            status,
            channel,
            after[0] if after else None,
            after[1] if after else "",
            limit + 1,
        )
    items = [dict(r) for r in rows]
    return Page(
        items=[from_row(r) for r in items[:limit]],
        next_cursor=next_cursor(items, limit, "created_at", "campaign_id"),
    )


@router.get(
    "/{campaign_id}", response_model=CampaignDetail, summary="A campaign (as_of: in the past)"
)
async def get_campaign(
    campaign_id: str,
    ctx: CtxDep,
    user: AnyRole,
    response: Response,
    as_of: Annotated[ClientAwareTime | None, Query(description="ISO 8601 time with zone")] = None,
) -> CampaignDetail:
    if as_of is not None:
        c = await CampaignHandlers(ctx.store).campaigns.load(campaign_id, as_of=as_of)
        response.headers["ETag"] = etag(c.version)
        return CampaignDetail(**from_aggregate(c).model_dump())
    async with ctx.pool.acquire() as conn:
        row = await _row(conn, campaign_id)
        deferred, next_send_at = await views.deferred(conn, campaign_id, service_now(ctx))
    response.headers["ETag"] = etag(row["version"])
    return CampaignDetail(
        **from_row(row).model_dump(), deferred=deferred, next_send_at=next_send_at
    )


@router.get(
    "/{campaign_id}/history", response_model=list[HistoryEntry], summary="A campaign's events"
)
async def campaign_history(campaign_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await CampaignHandlers(ctx.store).campaigns.history(campaign_id))


async def _change(
    ctx: CtxDep, user: Marketer, campaign_id: str, if_match: str | None, action: Any
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        c: Campaign = await action(conn, datetime.now(UTC), expected_version(if_match))
        return CommandResult(200, from_row(await _row(conn, c.id)), {"ETag": etag(c.version)})

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{campaign_id}/schedule",
    response_model=CampaignOut,
    summary="Schedule sending now or at a time (a draft, or reschedule a scheduled campaign)",
    responses={409: {"description": "the campaign is sending, sent or cancelled"}},
)
async def schedule_campaign(
    campaign_id: str,
    ctx: CtxDep,
    user: Marketer,
    body: ScheduleIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = CampaignHandlers(ctx.store)
    send_at = body.send_at if body is not None else None

    async def action(conn: Conn, now: datetime, expected: int | None) -> Campaign:
        return await handlers.schedule(
            conn,
            campaign_id,
            send_at or now,
            expected=expected,
            metadata=metadata_for(user),
            now=now,
        )

    return await _change(ctx, user, campaign_id, if_match, action)


@router.post(
    "/{campaign_id}/cancel",
    response_model=CampaignOut,
    summary="Cancel: recipients not yet sent to get nothing",
    responses={409: {"description": "the campaign was sent or cancelled already"}},
)
async def cancel_campaign(
    campaign_id: str,
    ctx: CtxDep,
    user: Marketer,
    body: CancelIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = CampaignHandlers(ctx.store)

    async def action(conn: Conn, now: datetime, expected: int | None) -> Campaign:
        return await handlers.cancel(
            conn,
            campaign_id,
            body.reason if body else None,
            expected=expected,
            metadata=metadata_for(user),
            now=now,
        )

    return await _change(ctx, user, campaign_id, if_match, action)


@router.get(
    "/{campaign_id}/results",
    response_model=Results,
    summary="Counts per status and open/click rates (every role may read them)",
)
async def campaign_results(campaign_id: str, ctx: CtxDep, user: AnyRole) -> Results:
    async with ctx.pool.acquire() as conn:
        row = await _row(conn, campaign_id)
        counts = await views.results(conn, campaign_id)
        deferred, next_send_at = await views.deferred(conn, campaign_id, service_now(ctx))
    return Results(
        campaign_id=campaign_id,
        status=row["status"],
        deferred=deferred,
        next_send_at=next_send_at,
        **counts,
    )


@router.get(
    "/{campaign_id}/recipients",
    response_model=Page[Recipient],
    summary="Per-recipient status (no addresses), filterable by status",
)
async def campaign_recipients(
    campaign_id: str,
    ctx: CtxDep,
    user: Marketer,
    status: RecipientStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[Recipient]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        await _row(conn, campaign_id)
        rows = await conn.fetch(
            "SELECT message_id, customer_id, status, skip_reason, due_at, sent_at, delivered_at,"
            " bounced_at, opened_at, clicked_at, unsubscribed_at, created_at FROM messages"
            " WHERE campaign_id = $1 AND ($2::text IS NULL OR status = $2)"
            " AND ($3::timestamptz IS NULL OR (created_at, message_id::text) > ($3, $4))"
            " ORDER BY created_at, message_id::text LIMIT $5",
            campaign_id,
            status,
            after[0] if after else None,
            after[1] if after else "",
            limit + 1,
        )
    items = [{**dict(r), "message_id": str(r["message_id"])} for r in rows]
    return Page(
        items=[Recipient(**r) for r in items[:limit]],
        next_cursor=next_cursor(items, limit, "created_at", "message_id"),
    )
