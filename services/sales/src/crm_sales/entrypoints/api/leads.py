"""The /leads resource: capture, read (also as of a time), history, qualify, disqualify, list."""

from __future__ import annotations

import contextlib
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal, require
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.http.params import Instant
from crm_runtime.http.routing import CommandRoute
from crm_sales import access
from crm_sales.adapters import lead_view
from crm_sales.application.deals import DealHandlers
from crm_sales.application.directory import AccountHandlers, ContactHandlers
from crm_sales.application.leads import (
    CaptureLead,
    ConvertLead,
    DealSpec,
    DisqualifyLead,
    LeadHandlers,
    QualifyLead,
    convert_lead,
)
from crm_sales.domain.lead import Lead
from crm_sales.entrypoints.api.schemas import (
    ConversionOut,
    HistoryEntry,
    LeadAssign,
    LeadConvert,
    LeadCreate,
    LeadDisqualify,
    LeadPublic,
    LeadQualify,
    LeadSummary,
)

router = APIRouter(prefix="/leads", tags=["leads"], route_class=CommandRoute)

SalesUser = Annotated[Principal, Depends(require("sales_rep", "sales_manager"))]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="retry-safe creation")
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]


def _visible(user: Principal, lead: Lead) -> None:
    access.check_read(user, "lead", lead.owner_id, lead.team_id)


def _changeable(user: Principal, lead: Lead) -> None:
    access.check_change(user, "lead", lead.owner_id, lead.team_id)


def _lead_response(lead: Lead, status: int = 200) -> CommandResult:
    return CommandResult(
        status,
        LeadPublic.of(lead),
        {"ETag": etag(lead.version), "Location": f"/leads/{lead.id}"},
    )


@router.post(
    "",
    status_code=201,
    response_model=LeadPublic,
    summary="Capture a lead",
    responses={422: {"description": "invalid field"}},
)
async def capture_lead(
    body: LeadCreate, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    owner = body.owner_id
    if not user.has("sales_manager"):
        if owner not in (None, user.user_id):
            raise Forbidden("a sales rep captures leads for itself; a manager assigns them")
        owner = user.user_id  # a rep's own lead
    cmd = CaptureLead(
        name=body.name,
        source=body.source,
        email=str(body.email) if body.email else None,
        phone=body.phone,
        company=body.company,
        source_detail=body.source_detail,
        owner_id=owner,
        team_id=user.team,
        region=body.region,
        product_line=body.product_line,
    )
    handlers = LeadHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        lead = await handlers.capture(conn, cmd, metadata_for(user), final=True)
        return _lead_response(lead, 201)

    return await run_command(ctx, user, idempotency_key, body, command)


@router.get("", response_model=Page[LeadSummary], summary="List leads, newest first")
async def list_leads(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Literal["new", "qualified", "disqualified", "converted"] | None = None,
    source: str | None = None,
    owner_id: str | None = None,
) -> Page[LeadSummary]:
    after = decode_cursor(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await lead_view.list_leads(
            conn,
            limit=limit + 1,
            after=(datetime.fromisoformat(after["t"]), after["id"]) if after else None,
            status=status,
            source=source,
            owner_id=owner_id,
            see_all=access.sees_all(user, "lead"),
            user_id=user.user_id,
            team=user.team,
            unassigned_visible="sales_manager" in user.roles,
        )
    items = [LeadSummary(id=r.pop("lead_id"), **r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": last.id})
    return Page[LeadSummary](items=items, next_cursor=next_cursor)


@router.get(
    "/{lead_id}", response_model=LeadPublic, summary="Read a lead (optionally as of a time)"
)
async def get_lead(
    lead_id: str,
    ctx: CtxDep,
    user: SalesUser,
    response: Response,
    as_of: Annotated[Instant | None, Query(description="ISO 8601 time with zone")] = None,
) -> LeadPublic:
    lead = await LeadHandlers(ctx.store).leads.load(lead_id, as_of=as_of)
    _visible(user, lead)
    response.headers["ETag"] = etag(lead.version)
    return LeadPublic.of(lead)


@router.get("/{lead_id}/history", response_model=list[HistoryEntry], summary="A lead's events")
async def lead_history(lead_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = LeadHandlers(ctx.store)
    _visible(user, await handlers.leads.load(lead_id))
    return [
        HistoryEntry(
            version=e.version,
            event_id=str(e.event_id),
            type=e.type,
            schema_version=e.schema_version,
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            actor=e.metadata.get("actor"),
            correlation_id=e.metadata.get("correlation_id"),
            data=e.data,
        )
        for e in await handlers.leads.history(lead_id)
    ]


@router.post("/{lead_id}/qualify", response_model=LeadPublic, summary="Qualify a lead")
async def qualify_lead(
    lead_id: str, body: LeadQualify, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = LeadHandlers(ctx.store)
    _changeable(user, await _existing(handlers, lead_id))  # 404/403 before any transaction
    changeable = partial(_changeable, user)  # and again on the state the command changes
    cmd = QualifyLead(lead_id, body.score, body.notes, expected_version(if_match))

    async def command(conn: Conn) -> CommandResult:
        return _lead_response(
            await handlers.qualify(conn, cmd, metadata_for(user), authorize=changeable)
        )

    return await run_command(ctx, user, None, None, command)


@router.post("/{lead_id}/disqualify", response_model=LeadPublic, summary="Disqualify a lead")
async def disqualify_lead(
    lead_id: str, body: LeadDisqualify, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = LeadHandlers(ctx.store)
    _changeable(user, await _existing(handlers, lead_id))  # 404/403 before any transaction
    changeable = partial(_changeable, user)  # and again on the state the command changes
    cmd = DisqualifyLead(lead_id, body.reason, expected_version(if_match))

    async def command(conn: Conn) -> CommandResult:
        return _lead_response(
            await handlers.disqualify(conn, cmd, metadata_for(user), authorize=changeable)
        )

    return await run_command(ctx, user, None, None, command)


async def _existing(handlers: LeadHandlers, lead_id: str) -> Lead:
    try:
        return await handlers.leads.load(lead_id)
    except NotFound:
        raise NotFound(f"lead {lead_id} does not exist") from None


@router.post(
    "/{lead_id}/convert",
    response_model=ConversionOut,
    summary="Convert a lead into a contact, an account and a deal (all or nothing)",
    responses={
        409: {"description": "already converted, disqualified, or a duplicate contact/account"},
        412: {"description": "stale If-Match"},
        422: {"description": "invalid field (e.g. no exchange rate for the deal's currency)"},
    },
)
async def convert(
    lead_id: str, body: LeadConvert, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = LeadHandlers(ctx.store)
    _changeable(user, await _existing(handlers, lead_id))  # 404/403 before any transaction
    changeable = partial(_changeable, user)  # and again on the state the command changes
    if body.owner_id not in (None, user.user_id) and not user.has("sales_manager"):
        raise Forbidden("a sales rep converts leads for itself; a manager assigns them")
    cmd = ConvertLead(
        lead_id=lead_id,
        expected_version=expected_version(if_match),
        contact_id=body.contact_id,
        account_id=body.account_id,
        account_name=body.account_name,
        account_domain=body.account_domain,
        create_account=body.create_account,
        deal=DealSpec(**body.deal.model_dump()) if body.deal else None,
        owner_id=body.owner_id,
        team_id=user.team,
    )

    async def command(conn: Conn) -> CommandResult:
        await _check_attached(conn, ctx, user, body.contact_id, body.account_id)
        done = await convert_lead(
            conn,
            cmd,
            metadata_for(user),
            leads=handlers,
            contacts=ContactHandlers(ctx.store),
            accounts=AccountHandlers(ctx.store),
            deals=DealHandlers(ctx.store, ctx.settings.base_currency),
            authorize=changeable,
        )
        body_out = ConversionOut(
            lead_id=done.lead.id,
            customer_id=done.contact.customer_id,
            contact_id=done.contact.id,
            account_id=done.account.id if done.account else None,
            deal_id=done.deal.id if done.deal else None,
        )
        return CommandResult(200, body_out, {"ETag": etag(done.lead.version)})

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{lead_id}/assign",
    response_model=LeadPublic,
    summary="Assign a lead to a rep by hand (managers), or take it back to the queue",
)
async def assign_lead(
    lead_id: str,
    body: LeadAssign,
    ctx: CtxDep,
    user: Annotated[Principal, Depends(require("sales_manager"))],
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = LeadHandlers(ctx.store)
    _changeable(user, await _existing(handlers, lead_id))  # 404/403 before any transaction
    changeable = partial(_changeable, user)  # and again on the state the command changes
    team = body.team_id

    async def command(conn: Conn) -> CommandResult:
        lead = await handlers.assign(
            conn,
            lead_id,
            body.owner_id,
            team,
            metadata_for(user),
            expected_version(if_match),
            authorize=changeable,
        )
        return _lead_response(lead)

    return await run_command(ctx, user, None, None, command)


async def _check_attached(
    conn: Conn, ctx: Any, user: Principal, contact_id: str | None, account_id: str | None
) -> None:
    """Converting onto an existing contact or account needs the right to read it."""
    if contact_id is not None:
        with contextlib.suppress(NotFound):  # a missing one is reported by the command
            c = await ContactHandlers(ctx.store).contacts.load(contact_id, conn=conn)
            access.check_record_read(user, c)
    if account_id is not None:
        with contextlib.suppress(NotFound):
            a = await AccountHandlers(ctx.store).accounts.load(account_id, conn=conn)
            access.check_record_read(user, a)
