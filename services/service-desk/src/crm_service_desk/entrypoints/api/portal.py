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
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
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
from crm_service_desk.entrypoints.api import customer_pages as pages
from crm_service_desk.entrypoints.api.customer_pages import TooLarge
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


async def _ticket_page(
    ctx: ServiceContext, ticket: Ticket, reply_action: str, **kw: Any
) -> HTMLResponse:
    """The ticket as a page: the customer's first message, then the public conversation."""
    async with ctx.pool.acquire() as conn:
        rows = await tickets_view.comments(conn, ticket.id, public_only=True)
        opened_at = await conn.fetchval(
            "SELECT created_at FROM tickets WHERE ticket_id = $1", ticket.id
        )
    return pages.ticket_page(
        ticket_id=ticket.id,
        subject=ticket.title,
        status=ticket.status,
        description=ticket.description,
        opened_at=opened_at,
        conversation=rows,
        reply_action=reply_action,
        **kw,
    )


@customer_router.get(
    "/customer/tickets/{link}",
    response_model=CustomerTicketOut,
    summary="The customer's own ticket and its public conversation (signed link)",
    description="JSON, or an HTML page with a reply form for a browser (`Accept: text/html`).",
    responses={
        200: {"content": {"text/html": {}}},
        403: {"description": "a forged, expired or misused link"},
    },
)
async def customer_ticket(link: str, request: Request, ctx: CtxDep, desk: DeskDep) -> Response:
    handlers = handlers_for(ctx, desk)
    html = pages.wants_html(request)
    try:
        ticket = await handlers.tickets.load(handlers.links.verify(link, "ticket"))
    except CrmError as exc:
        if html:
            return pages.error_page(exc)
        raise
    if html:  # the form posts to <link>/replies, relative to /customer/tickets/<link>
        return await _ticket_page(ctx, ticket, f"{link}/replies")
    out = await _conversation(ctx, ticket)
    return JSONResponse(out.model_dump(mode="json"), headers={"Vary": "Accept"})


_REPLY_ERRORS = {"body": "Please write your reply (at most 20,000 characters)."}


@customer_router.post(
    "/customer/tickets/{link}/replies",
    response_model=CustomerTicketOut,
    summary="The customer answers on its ticket (signed link); a resolved ticket reopens",
    description="JSON or a form (`application/x-www-form-urlencoded`, field `body`); a browser"
    " (`Accept: text/html`) gets the ticket page back.",
    openapi_extra=pages.form_schema(CustomerReplyIn),
    responses={
        403: {"description": "a forged, expired or misused link"},
        409: {"description": "the ticket is closed"},
    },
)
async def customer_reply(link: str, request: Request, ctx: CtxDep, desk: DeskDep) -> Response:
    handlers = handlers_for(ctx, desk)
    html = pages.wants_html(request)
    # the page answering a post to <link>/replies: its form posts to "replies" again
    action = "replies"
    try:
        ticket_id = handlers.links.verify(link, "ticket")
        try:
            body = await pages.read_input(request, CustomerReplyIn)
        except RequestValidationError as exc:
            if not html:
                raise
            return await _ticket_page(
                ctx,
                await handlers.tickets.load(ticket_id),
                action,
                error=_first_error(exc, _REPLY_ERRORS),
                http_status=422,
            )

        async def command(conn: Conn) -> CommandResult:
            ticket = await handlers.load(conn, ticket_id)
            survivor = await handlers.survivor(conn, ticket)
            if survivor.customer_id != ticket.customer_id:
                raise Conflict(f"ticket {ticket.id} was merged; write to us by e-mail")
            survivor, _ = await handlers.customer_reply(
                conn, survivor, body.body, "link", _meta("customer-link"), datetime.now(UTC)
            )
            return CommandResult(200, {"ticket_id": survivor.id})

        try:
            await run_command(ctx, CUSTOMER, None, None, command)
        except Conflict as exc:
            if not html:
                raise
            return await _ticket_page(
                ctx,
                await handlers.tickets.load(ticket_id),
                action,
                error=f"Your reply could not be added: {exc.detail}",
                draft=body.body,
                http_status=409,
            )
    except CrmError as exc:
        if html:
            return pages.error_page(exc)
        raise
    ticket = await handlers.tickets.load(ticket_id)
    if html:
        return await _ticket_page(
            ctx, ticket, action, notice="Thank you, your reply was added to your request."
        )
    return JSONResponse((await _conversation(ctx, ticket)).model_dump(mode="json"))


def _first_error(exc: RequestValidationError, messages: dict[str, str]) -> str:
    errors = pages.field_errors(exc)
    for field, message in messages.items():
        if field in errors:
            return message
    return "Please check the form: " + "; ".join(f"{k}: {v}" if k else v for k, v in errors.items())


# --- the satisfaction survey --------------------------------------------------------------------


def _survey_out(ticket: Ticket) -> SurveyOut:
    return SurveyOut(
        ticket_id=ticket.id,
        subject=ticket.title,
        rated=ticket.score is not None,
        score=ticket.score,
    )


@customer_router.get(
    "/survey/{link}",
    response_model=SurveyOut,
    summary="The satisfaction survey of a resolved ticket (signed link from the e-mail)",
    description="JSON, or for a browser (`Accept: text/html`) an HTML page with the survey form"
    " (or a note that the ticket was rated already).",
    responses={
        200: {"content": {"text/html": {}}},
        403: {"description": "a forged, expired or misused link"},
    },
)
async def survey(link: str, request: Request, ctx: CtxDep, desk: DeskDep) -> Response:
    handlers = handlers_for(ctx, desk)
    html = pages.wants_html(request)
    try:
        ticket = await handlers.tickets.load(handlers.links.verify(link, "survey"))
    except CrmError as exc:
        if html:
            return pages.error_page(exc)
        raise
    if not html:
        return JSONResponse(_survey_out(ticket).model_dump(mode="json"), headers={"Vary": "Accept"})
    if ticket.score is not None:
        return pages.survey_done_page(ticket.title, ticket.score)
    return pages.survey_page(subject=ticket.title)


_RATING_ERRORS = {
    "score": "Please choose a score from 1 to 5.",
    "comment": "The comment may be at most 5,000 characters.",
}


@customer_router.post(
    "/survey/{link}",
    response_model=SurveyOut,
    status_code=201,
    summary="Rate the service (1-5) and comment; once per ticket",
    description="JSON or a form (`application/x-www-form-urlencoded`, fields `score`,"
    " `comment`); a browser (`Accept: text/html`) gets a thank-you page.",
    openapi_extra=pages.form_schema(RatingIn),
    responses={
        403: {"description": "a forged, expired or misused link"},
        409: {"description": "this ticket was rated already"},
    },
)
async def rate(link: str, request: Request, ctx: CtxDep, desk: DeskDep) -> Response:
    handlers = handlers_for(ctx, desk)
    html = pages.wants_html(request)
    try:
        ticket_id = handlers.links.verify(link, "survey")
        try:
            body = await pages.read_input(request, RatingIn)
        except RequestValidationError as exc:
            if not html:
                raise
            ticket = await handlers.tickets.load(ticket_id)
            if ticket.score is not None:
                return pages.survey_done_page(ticket.title, ticket.score, 409)
            return pages.survey_page(
                subject=ticket.title, error=_first_error(exc, _RATING_ERRORS), http_status=422
            )

        async def command(conn: Conn) -> CommandResult:
            ticket = await handlers.load(conn, ticket_id)
            await handlers.rate(
                conn, ticket, body.score, body.comment, _meta("customer-survey"), datetime.now(UTC)
            )
            out = SurveyOut(
                ticket_id=ticket.id, subject=ticket.title, rated=True, score=ticket.score
            )
            return CommandResult(201, out)

        try:
            response = await run_command(ctx, CUSTOMER, None, None, command)
        except Conflict:
            if not html:
                raise
            ticket = await handlers.tickets.load(ticket_id)
            if ticket.score is None:
                raise
            return pages.survey_done_page(ticket.title, ticket.score, 409)
    except CrmError as exc:
        if html:
            return pages.error_page(exc)
        raise
    if html:
        ticket = await handlers.tickets.load(ticket_id)
        return pages.survey_thanks_page(ticket.title, ticket.score)
    return response
