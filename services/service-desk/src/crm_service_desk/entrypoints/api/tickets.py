"""The /tickets resource: open, list, read (as of a time), history, change, converse, resolve."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from crm_events.schemas.service import ProductReturn, TicketKind, TicketPriority, TicketStatus
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden, InvalidInput
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.mail import Mailer
from crm_runtime.repository import check_version
from crm_service_desk import access
from crm_service_desk.access import Reader, Worker
from crm_service_desk.adapters import tickets_view
from crm_service_desk.application import routing, tickets_mail
from crm_service_desk.application.tickets import OpenTicket, TicketHandlers
from crm_service_desk.application.tickets_links import Links
from crm_service_desk.config import DeskSettings
from crm_service_desk.domain.ticket import Details, Ticket
from crm_service_desk.entrypoints.api.tickets_schemas import (
    AssignIn,
    CommentOut,
    HistoryEntry,
    LinkOut,
    MergeIn,
    MergeOut,
    NoteIn,
    ReasonIn,
    ReplyIn,
    ResolveIn,
    ReturnMoveIn,
    StatusIn,
    TicketCreate,
    TicketOut,
    TicketPatch,
    TicketSummary,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/tickets", tags=["tickets"])

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="retry-safe creation")
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]
CONFLICTS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such ticket"},
    409: {"description": "the ticket's state does not allow it (e.g. closed or merged)"},
    412: {"description": "stale If-Match"},
}


# --- wiring shared with the portal --------------------------------------------------------------


async def get_desk(request: Request) -> DeskSettings:
    desk: DeskSettings = request.app.state.desk
    return desk


DeskDep = Annotated[DeskSettings, Depends(get_desk)]


def handlers_for(ctx: ServiceContext, desk: DeskSettings) -> TicketHandlers:
    return TicketHandlers(ctx.store, desk, Links.of(ctx.settings, desk))


async def flush_mail(ctx: ServiceContext, desk: DeskSettings, ticket_id: str) -> None:
    """Send the mail a committed command wrote (a failure waits for the scheduler's retry)."""
    mailer = Mailer(ctx.settings.smtp_url, desk.support_address)
    try:
        await tickets_mail.send_pending(ctx.pool, mailer, datetime.now(UTC), ticket_id=ticket_id)
    except Exception as exc:
        log.warning("ticket mail flush failed", extra={"error": type(exc).__name__})


def ticket_result(ticket: Ticket, status: int = 200) -> CommandResult:
    return CommandResult(
        status,
        TicketOut.of(ticket),
        {"ETag": etag(ticket.version), "Location": f"/tickets/{ticket.id}"},
    )


# --- opening and reading ------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=TicketOut,
    summary="Open a ticket for a customer (routed to a queue and an agent)",
)
async def open_ticket(
    body: TicketCreate,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = handlers_for(ctx, desk)
    cmd = OpenTicket(
        kind=body.kind,
        subject=body.subject,
        description=body.description,
        channel="api",
        customer_email=str(body.customer_email),
        customer_id=body.customer_id,
        customer_name=body.customer_name,
        priority=body.priority,
        product=body.product,
        language=body.language.lower() if body.language else None,
        region=body.region,
        customer_tier=body.customer_tier,
        opened_by=user.user_id,
        product_return=(
            ProductReturn(**body.product_return.model_dump()) if body.product_return else None
        ),
        source_detail="service-desk:api",
    )

    async def command(conn: Conn) -> CommandResult:
        ticket = await handlers.open(conn, cmd, metadata_for(user), datetime.now(UTC))
        return ticket_result(ticket, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@router.get("", response_model=Page[TicketSummary], summary="List tickets, newest first")
async def list_tickets(
    ctx: CtxDep,
    user: Reader,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: TicketStatus | None = None,
    kind: TicketKind | None = None,
    priority: TicketPriority | None = None,
    queue_id: str | None = None,
    assignee_id: str | None = None,
    customer_id: str | None = None,
    product: str | None = None,
) -> Page[TicketSummary]:
    after = decode_cursor(cursor)
    try:
        key = (datetime.fromisoformat(after["t"]), str(after["id"])) if after else None
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("cursor", "is not a cursor returned by this list") from None
    filters = {
        "status": status,
        "kind": kind,
        "priority": priority,
        "queue_id": queue_id,
        "assignee_id": assignee_id,
        "customer_id": customer_id,
        "product": product,
    }
    async with ctx.pool.acquire() as conn:
        rows = await tickets_view.list_tickets(conn, limit=limit + 1, after=key, filters=filters)
    items = [TicketSummary(id=r.pop("ticket_id"), **r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": last.id})
    return Page[TicketSummary](items=items, next_cursor=next_cursor)


@router.get(
    "/{ticket_id}",
    response_model=TicketOut,
    summary="Read a ticket (optionally as of a time)",
    responses={404: {"description": "no such ticket"}},
)
async def get_ticket(
    ticket_id: str,
    ctx: CtxDep,
    desk: DeskDep,
    user: Reader,
    response: Response,
    as_of: Annotated[ClientTime | None, Query(description="ISO 8601 time with zone")] = None,
) -> TicketOut:
    ticket = await handlers_for(ctx, desk).tickets.load(ticket_id, as_of=as_of)
    response.headers["ETag"] = etag(ticket.version)
    return TicketOut.of(ticket)


@router.get("/{ticket_id}/history", response_model=list[HistoryEntry], summary="A ticket's events")
async def ticket_history(
    ticket_id: str, ctx: CtxDep, desk: DeskDep, user: Reader
) -> list[HistoryEntry]:
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
        for e in await handlers_for(ctx, desk).tickets.history(ticket_id)
    ]


@router.get(
    "/{ticket_id}/comments",
    response_model=list[CommentOut],
    summary="The conversation: public replies, customer messages and internal notes",
)
async def ticket_comments(
    ticket_id: str, ctx: CtxDep, desk: DeskDep, user: Reader
) -> list[CommentOut]:
    await handlers_for(ctx, desk).tickets.load(ticket_id)  # 404 for an unknown ticket
    async with ctx.pool.acquire() as conn:
        rows = await tickets_view.comments(conn, ticket_id, public_only=False)
    return [CommentOut(id=r.pop("comment_id"), **r) for r in rows]


@router.get(
    "/{ticket_id}/customer-link",
    response_model=LinkOut,
    summary="A signed link through which the customer sees and answers this ticket",
)
async def customer_link(ticket_id: str, ctx: CtxDep, desk: DeskDep, user: Worker) -> LinkOut:
    handlers = handlers_for(ctx, desk)
    ticket = await handlers.tickets.load(ticket_id)
    async with ctx.pool.acquire() as conn:
        await access.check_work(conn, user, ticket.queue_id, ticket.assignee_id)
    tok = handlers.links.sign(ticket.id, "ticket")
    return LinkOut(url=f"{handlers.links.base_url}/customer/tickets/{tok}", token=tok)


# --- changing -----------------------------------------------------------------------------------

Change = Callable[[Conn, TicketHandlers, Ticket, datetime], Awaitable[Ticket]]


async def _change(
    ctx: ServiceContext,
    desk: DeskSettings,
    user: Principal,
    ticket_id: str,
    if_match: str | None,
    change: Change,
    *,
    mail: bool = False,
) -> JSONResponse:
    """Load, check the caller may work the ticket and the version, change, save; send mail."""
    handlers = handlers_for(ctx, desk)
    expected = expected_version(if_match)

    async def command(conn: Conn) -> CommandResult:
        ticket = await handlers.load(conn, ticket_id)
        await access.check_work(conn, user, ticket.queue_id, ticket.assignee_id)
        check_version(expected, ticket.version)
        changed = await change(conn, handlers, ticket, datetime.now(UTC))
        return ticket_result(changed)

    response = await run_command(ctx, user, None, None, command)
    if mail and response.status_code < 300:
        await flush_mail(ctx, desk, ticket_id)
    return response


@router.patch(
    "/{ticket_id}", response_model=TicketOut, summary="Change ticket details", responses=CONFLICTS
)
async def patch_ticket(
    ticket_id: str,
    body: TicketPatch,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    given = body.model_dump(exclude_unset=True)

    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        current = t.details()
        details = Details(
            subject=given.get("subject", current.subject),
            priority=given.get("priority", current.priority),
            product=given.get("product", current.product),
            language=(given["language"].lower() if given.get("language") else None)
            if "language" in given
            else current.language,
            region=given.get("region", current.region),
            customer_tier=given.get("customer_tier", current.customer_tier),
        )
        return await h.update(conn, t, details, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/assign",
    response_model=TicketOut,
    summary="Reassign by hand: a manager moves it anywhere; an agent takes it for itself",
    responses=CONFLICTS,
)
async def assign_ticket(
    ticket_id: str,
    body: AssignIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    given = body.model_dump(exclude_unset=True)

    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        queue = given.get("queue_id", t.queue_id)
        assignee = given.get("assignee_id", t.assignee_id)
        if not access.manages(user) and (assignee != user.user_id or queue != t.queue_id):
            raise Forbidden("an agent may only take a ticket of its queues for itself")
        if queue is not None and queue != t.queue_id:
            await _check_queue(conn, queue)
        if assignee is not None and assignee != t.assignee_id:
            routed = await _reassign(conn, ctx, t, assignee, user)
            if routed is not None and "queue_id" not in given:
                queue = routed
        return await h.assign(conn, t, queue, assignee, metadata_for(user), now, body.reason)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


async def _check_queue(conn: Conn, queue_id: str) -> None:
    """422 (field ``queue_id``) for a queue routing does not know, as ``PUT /agents`` and
    ``PUT /routing-rules`` answer."""
    await routing.check_queue(conn, queue_id, "queue_id")


async def _reassign(
    conn: Conn, ctx: ServiceContext, ticket: Ticket, assignee: str, user: Principal
) -> str | None:
    """Routing validates and records a manual reassignment; returns the queue it puts the
    ticket in."""
    decision = await routing.reassign(
        conn,
        ctx.store,
        ticket_id=ticket.id,
        agent_id=assignee,
        by=user.user_id,
        metadata=metadata_for(user),
        field="assignee_id",
    )
    return decision.queue_id


@router.post(
    "/{ticket_id}/status",
    response_model=TicketOut,
    summary="Start work, or wait on the customer",
    responses=CONFLICTS,
)
async def set_status(
    ticket_id: str,
    body: StatusIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        return await h.change_status(conn, t, body.status, body.reason, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/replies",
    response_model=TicketOut,
    summary="Reply to the customer (sent by e-mail with the ticket token)",
    responses=CONFLICTS,
)
async def reply(
    ticket_id: str,
    body: ReplyIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        ticket, _ = await h.reply(
            conn, t, user.user_id, body.body, metadata_for(user), now,
            wait_on_customer=body.wait_on_customer,
        )  # fmt: skip
        return ticket

    return await _change(ctx, desk, user, ticket_id, if_match, change, mail=True)


@router.post(
    "/{ticket_id}/notes",
    response_model=TicketOut,
    summary="Add an internal note (never sent)",
    responses=CONFLICTS,
)
async def add_note(
    ticket_id: str, body: NoteIn, ctx: CtxDep, desk: DeskDep, user: Worker, if_match: IfMatch = None
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        ticket, _ = await h.add_note(conn, t, user.user_id, body.body, metadata_for(user), now)
        return ticket

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/resolve",
    response_model=TicketOut,
    summary="Resolve (the customer gets a satisfaction survey by e-mail)",
    responses=CONFLICTS,
)
async def resolve(
    ticket_id: str,
    body: ResolveIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        return await h.resolve(conn, t, body.resolution, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change, mail=True)


@router.post(
    "/{ticket_id}/reopen",
    response_model=TicketOut,
    summary="Reopen a resolved ticket",
    responses=CONFLICTS,
)
async def reopen(
    ticket_id: str,
    body: ReasonIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        return await h.reopen(conn, t, body.reason, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/close",
    response_model=TicketOut,
    summary="Close a resolved ticket",
    responses=CONFLICTS,
)
async def close(
    ticket_id: str,
    body: ReasonIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        return await h.close(conn, t, body.reason, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/return",
    response_model=TicketOut,
    summary="Move a product return on: approved, received, refunded or replaced",
    responses=CONFLICTS,
)
async def move_return(
    ticket_id: str,
    body: ReturnMoveIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def change(conn: Conn, h: TicketHandlers, t: Ticket, now: datetime) -> Ticket:
        return await h.move_return(conn, t, body.status, body.note, metadata_for(user), now)

    return await _change(ctx, desk, user, ticket_id, if_match, change)


@router.post(
    "/{ticket_id}/merge",
    response_model=MergeOut,
    summary="Merge this duplicate into another ticket (its later mail goes there)",
    responses=CONFLICTS,
)
async def merge(
    ticket_id: str,
    body: MergeIn,
    ctx: CtxDep,
    desk: DeskDep,
    user: Worker,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = handlers_for(ctx, desk)
    expected = expected_version(if_match)

    async def command(conn: Conn) -> CommandResult:
        duplicate = await handlers.load(conn, ticket_id)
        check_version(expected, duplicate.version)
        await access.check_work(conn, user, duplicate.queue_id, duplicate.assignee_id)
        survivor_row = await conn.fetchrow(
            "SELECT queue_id, assignee_id FROM tickets WHERE ticket_id = $1", body.into
        )
        if survivor_row is not None:
            await access.check_work(
                conn, user, survivor_row["queue_id"], survivor_row["assignee_id"]
            )
        dup, surv = await handlers.merge(
            conn, duplicate, body.into, metadata_for(user), datetime.now(UTC)
        )
        return CommandResult(
            200,
            MergeOut(duplicate=TicketOut.of(dup), survivor=TicketOut.of(surv)),
            {"ETag": etag(dup.version)},
        )

    return await run_command(ctx, user, None, None, command)
