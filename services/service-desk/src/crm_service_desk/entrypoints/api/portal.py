"""What customers reach without a token: the public portal form, their ticket through a signed
link, and the satisfaction survey through its signed link.

The portal form (``POST /portal/tickets``) needs a known site key (``X-Site-Key``) and one of
that site's allowed origins (``Origin``); it is rate limited per site and client address (429,
counted in PostgreSQL so every replica shares the limit), refuses bodies over the limit (413),
and quietly drops submissions whose honeypot field is filled.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from crm_events.schemas.service import ProductReturn
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, CrmError, Forbidden
from crm_runtime.eventstore import Metadata
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import CommandResult, run_command
from crm_runtime.logs import correlation_id
from crm_service_desk.adapters import tickets_view
from crm_service_desk.application.tickets import OpenTicket
from crm_service_desk.config import DeskSettings
from crm_service_desk.domain.ticket import Ticket
from crm_service_desk.entrypoints.api.tickets import DeskDep, flush_mail, handlers_for
from crm_service_desk.entrypoints.api.tickets_schemas import (
    CommentOut,
    CustomerReplyIn,
    CustomerTicketOut,
    PortalAccepted,
    PortalTicketIn,
    RatingIn,
    SurveyOut,
)

portal_router = APIRouter(prefix="/portal", tags=["portal (public)"])
customer_router = APIRouter(tags=["customer links (public)"])

CUSTOMER = Principal("customer-link", frozenset())
# The form is parsed by hand (after the size check); its schema, for /docs, refers to
# ReturnIn in the components (where TicketCreate puts it).
_FORM_SCHEMA = {
    k: v
    for k, v in PortalTicketIn.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ).items()
    if k != "$defs"
}


class TooLarge(CrmError):
    status = 413
    title = "Content Too Large"


class TooManyRequests(CrmError):
    status = 429
    title = "Too Many Requests"


def _meta(actor: str) -> Metadata:
    return Metadata(actor=actor, correlation_id=correlation_id.get())


# --- the portal form ----------------------------------------------------------------------------


def _site_origins(desk: DeskSettings, site_key: str | None) -> list[str]:
    if not site_key or site_key not in desk.portal_sites:
        raise Forbidden("unknown site key (X-Site-Key)")
    return desk.portal_sites[site_key]


def _check_origin(origins: list[str], origin: str | None) -> str:
    if not origin or origin.rstrip("/") not in {o.rstrip("/") for o in origins}:
        raise Forbidden("this site key may not be used from this origin")
    return origin


def client_ip(request: Request, desk: DeskSettings) -> str:
    """The client's address: the peer's, or behind a trusted proxy (``portal_trust_forwarded_for``)
    the right-most X-Forwarded-For entry, the one that proxy appended (the left ones are the
    client's to choose)."""
    if desk.portal_trust_forwarded_for:
        entries = [
            e.strip()
            for header in request.headers.getlist("x-forwarded-for")
            for e in header.split(",")
        ]
        entries = [e for e in entries if e]
        if entries:
            return entries[-1]
    return request.client.host if request.client else "unknown"


def rate_bucket(secret: str, site_key: str, client: str) -> str:
    """The rate-limit bucket of a site and client: keyed (HMAC), so the stored value does not
    give the address away (an unkeyed hash of an IPv4 address is reversed by trying them all)."""
    message = f"portal-rate-limit\x00{site_key}\x00{client}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


async def _count_hit(ctx: ServiceContext, desk: DeskSettings, site_key: str, client: str) -> None:
    """Fixed-window rate limit per site and client, shared by every replica (429 over it)."""
    now = datetime.now(UTC)
    window = desk.portal_rate_window_seconds
    start = datetime.fromtimestamp(int(now.timestamp()) // window * window, UTC)
    bucket = rate_bucket(desk.link_secret or ctx.settings.jwt_secret, site_key, client)
    async with ctx.pool.acquire() as conn:
        hits = await conn.fetchval(
            "INSERT INTO portal_hits (bucket, window_start, hits) VALUES ($1, $2, 1)"
            " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = portal_hits.hits + 1"
            " RETURNING hits",
            bucket,
            start,
        )
        if hits == 1:  # the first hit of a window tidies up the old ones
            await conn.execute(
                "DELETE FROM portal_hits WHERE window_start < $1", start - timedelta(days=1)
            )
    if hits > desk.portal_rate_limit:
        retry = int((start + timedelta(seconds=window) - now).total_seconds()) + 1
        raise TooManyRequests(
            f"too many submissions from this client; try again in {retry} seconds",
            retry_after=retry,
        )


@portal_router.options("/tickets", include_in_schema=False)
async def portal_preflight(
    desk: DeskDep,
    origin: Annotated[str | None, Header()] = None,
) -> Response:
    allowed = {o.rstrip("/") for origins in desk.portal_sites.values() for o in origins}
    if not origin or origin.rstrip("/") not in allowed:
        return Response(status_code=403)
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, X-Site-Key",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


@portal_router.post(
    "/tickets",
    status_code=202,
    response_model=PortalAccepted,
    summary="The public web form: a customer opens a ticket (no token; a site key)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _FORM_SCHEMA}},
        }
    },
    responses={
        403: {"description": "unknown site key, or an origin the site does not allow"},
        413: {"description": "the body is over the size limit"},
        429: {"description": "too many submissions from this client (Retry-After)"},
    },
)
async def portal_ticket(
    request: Request,
    ctx: CtxDep,
    desk: DeskDep,
    x_site_key: Annotated[str | None, Header()] = None,
    origin: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > desk.portal_max_bytes:
        raise TooLarge(f"the form may be at most {desk.portal_max_bytes} bytes")
    origins = _site_origins(desk, x_site_key)
    allowed_origin = _check_origin(origins, origin)
    assert x_site_key is not None
    client = client_ip(request, desk)
    try:
        await _count_hit(ctx, desk, x_site_key, client)
    except TooManyRequests as exc:
        retry = str(exc.extra.get("retry_after", 60))
        return JSONResponse(
            {"type": "about:blank", "title": exc.title, "status": 429, "detail": exc.detail},
            status_code=429,
            media_type="application/problem+json",
            headers={"Retry-After": retry, "Access-Control-Allow-Origin": allowed_origin},
        )
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > desk.portal_max_bytes:
            raise TooLarge(f"the form may be at most {desk.portal_max_bytes} bytes")
    try:
        form = PortalTicketIn.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    cors = {"Access-Control-Allow-Origin": allowed_origin, "Vary": "Origin"}
    if form.website:  # the honeypot: a bot; it is told nothing
        return JSONResponse(PortalAccepted(ticket_ref=None).model_dump(), 202, headers=cors)
    handlers = handlers_for(ctx, desk)
    cmd = OpenTicket(
        kind=form.kind,
        subject=form.subject,
        description=form.message,
        channel="portal",
        customer_email=str(form.email),
        customer_name=form.name,
        product=form.product,
        language=form.language.lower() if form.language else None,
        product_return=(
            ProductReturn(**form.product_return.model_dump()) if form.product_return else None
        ),
        source_detail=f"portal:{x_site_key}"[:200],
    )
    async with ctx.pool.acquire() as conn, conn.transaction():
        ticket = await handlers.open(conn, cmd, _meta("portal"), datetime.now(UTC))
    await flush_mail(ctx, desk, ticket.id)
    return JSONResponse(PortalAccepted(ticket_ref=ticket.id).model_dump(), 202, headers=cors)


# --- the customer's ticket link -----------------------------------------------------------------


async def _conversation(ctx: ServiceContext, ticket: Ticket) -> CustomerTicketOut:
    async with ctx.pool.acquire() as conn:
        rows = await tickets_view.comments(conn, ticket.id, public_only=True)
    return CustomerTicketOut(
        id=ticket.id,
        subject=ticket.title,
        status=ticket.status,
        kind=ticket.kind,
        return_status=ticket.return_status,
        merged_into=ticket.merged_into,
        conversation=[CommentOut(id=r.pop("comment_id"), **r) for r in rows],
    )


@customer_router.get(
    "/customer/tickets/{link}",
    response_model=CustomerTicketOut,
    summary="The customer's own ticket and its public conversation (signed link)",
    responses={403: {"description": "a forged, expired or misused link"}},
)
async def customer_ticket(link: str, ctx: CtxDep, desk: DeskDep) -> CustomerTicketOut:
    handlers = handlers_for(ctx, desk)
    ticket_id = handlers.links.verify(link, "ticket")
    return await _conversation(ctx, await handlers.tickets.load(ticket_id))


@customer_router.post(
    "/customer/tickets/{link}/replies",
    response_model=CustomerTicketOut,
    summary="The customer answers on its ticket (signed link); a resolved ticket reopens",
    responses={
        403: {"description": "a forged, expired or misused link"},
        409: {"description": "the ticket is closed"},
    },
)
async def customer_reply(
    link: str, body: CustomerReplyIn, ctx: CtxDep, desk: DeskDep
) -> JSONResponse:
    handlers = handlers_for(ctx, desk)
    ticket_id = handlers.links.verify(link, "ticket")

    async def command(conn: Conn) -> CommandResult:
        ticket = await handlers.load(conn, ticket_id)
        survivor = await handlers.survivor(conn, ticket)
        if survivor.customer_id != ticket.customer_id:
            raise Conflict(f"ticket {ticket.id} was merged; write to us by e-mail")
        survivor, _ = await handlers.customer_reply(
            conn, survivor, body.body, "link", _meta("customer-link"), datetime.now(UTC)
        )
        return CommandResult(200, {"ticket_id": survivor.id})

    await run_command(ctx, CUSTOMER, None, None, command)
    return JSONResponse(
        (await _conversation(ctx, await handlers.tickets.load(ticket_id))).model_dump(mode="json")
    )


# --- the satisfaction survey --------------------------------------------------------------------


@customer_router.get(
    "/survey/{link}",
    response_model=SurveyOut,
    summary="The satisfaction survey of a resolved ticket (signed link from the e-mail)",
    responses={403: {"description": "a forged, expired or misused link"}},
)
async def survey(link: str, ctx: CtxDep, desk: DeskDep) -> SurveyOut:
    handlers = handlers_for(ctx, desk)
    ticket = await handlers.tickets.load(handlers.links.verify(link, "survey"))
    return SurveyOut(
        ticket_id=ticket.id,
        subject=ticket.title,
        rated=ticket.score is not None,
        score=ticket.score,
    )


@customer_router.post(
    "/survey/{link}",
    response_model=SurveyOut,
    status_code=201,
    summary="Rate the service (1-5) and comment; once per ticket",
    responses={
        403: {"description": "a forged, expired or misused link"},
        409: {"description": "this ticket was rated already"},
    },
)
async def rate(link: str, body: RatingIn, ctx: CtxDep, desk: DeskDep) -> JSONResponse:
    handlers = handlers_for(ctx, desk)
    ticket_id = handlers.links.verify(link, "survey")

    async def command(conn: Conn) -> CommandResult:
        ticket = await handlers.load(conn, ticket_id)
        await handlers.rate(
            conn, ticket, body.score, body.comment, _meta("customer-survey"), datetime.now(UTC)
        )
        out = SurveyOut(ticket_id=ticket.id, subject=ticket.title, rated=True, score=ticket.score)
        return CommandResult(201, out)

    return await run_command(ctx, CUSTOMER, None, None, command)
