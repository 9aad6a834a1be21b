"""Public tracking endpoints (no user token; the signed token is the authority).

- ``GET /t/o/{token}.gif``: the open pixel; always the same GIF, whatever the token.
- ``GET /t/c/{token}``: 302 to the link that was in the message, nowhere else; a click also
  identifies the browser's visitor id (the ``crm_vid`` cookie only: a link's query can be
  forwarded) as the customer, unless that visitor is already someone else.
- ``GET /t/u/{token}``: a page asking to confirm; ``POST``: unsubscribe (RFC 8058 one-click).
- ``GET /t/v/{token}``: the message in the browser.

A bad, tampered or unknown token gets the same plain 404 as a message that never existed, and
no page ever shows an address: nothing here tells whether an e-mail exists.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crm_marketing.delivery import ports
from crm_marketing.delivery.compose import Tracker, compose
from crm_marketing.delivery.settings import delivery_settings
from crm_marketing.settings import now as clock_now
from crm_marketing.tracking import application, tokens
from crm_marketing.web.application import VISITOR_ID
from crm_runtime.context import ServiceContext
from crm_runtime.eventstore import Metadata
from crm_runtime.http.app import CtxDep
from crm_runtime.http.ratelimit import limit_per_client
from crm_runtime.logs import correlation_id

log = logging.getLogger(__name__)

# Public (no token): a flood from one client is cut off at 600 requests a minute per process.
router = APIRouter(
    prefix="/t",
    tags=["tracking (public)"],
    dependencies=[Depends(limit_per_client(600))],
    responses={429: {"description": "too many requests from this client; see Retry-After"}},
)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
_VISITOR = re.compile(VISITOR_ID)


def _key(ctx: ServiceContext) -> bytes:
    return delivery_settings(ctx).tracking_key(ctx.settings)


def _metadata() -> Metadata:
    return Metadata(actor="recipient", correlation_id=correlation_id.get())


def _not_found() -> HTMLResponse:
    return HTMLResponse(_page("Not found", "This link is not valid."), 404, headers=_NO_STORE)


def _page(title: str, body_html: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )


@router.get("/o/{token}.gif", summary="Open pixel", response_class=Response)
async def open_pixel(token: str, ctx: CtxDep) -> Response:
    found = tokens.verify(_key(ctx), "o", token)
    if found is not None:
        try:
            async with ctx.pool.acquire() as conn, conn.transaction():
                await application.record_open(
                    conn, ctx.store, found[0], clock_now(ctx), _metadata()
                )
        except Exception:  # the pixel is always served; a failed record is only logged
            log.exception("open not recorded")
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


@router.get(
    "/c/{token}",
    summary="Click redirect to a link of the message",
    response_class=RedirectResponse,
    status_code=302,
    responses={404: {"description": "not a link of any message"}},
)
async def click(
    token: str,
    ctx: CtxDep,
    crm_vid: Annotated[str | None, Cookie()] = None,
) -> Response:
    found = tokens.verify(_key(ctx), "c", token)
    if found is None:
        return _not_found()
    message_id, index = found
    # Only the browser's own cookie: a visitor id in the URL would travel with a forwarded mail.
    visitor = crm_vid if crm_vid and _VISITOR.match(crm_vid) else None
    async with ctx.pool.acquire() as conn, conn.transaction():
        hit = await application.record_click(
            conn, ctx.store, message_id, index, clock_now(ctx), _metadata()
        )
        if hit is None:
            return _not_found()
        url, customer_id = hit
        if visitor:  # never re-links a visitor identified as another customer
            await ports.identify_visitor(
                conn, ctx.store, visitor_id=visitor, customer_id=customer_id, metadata=_metadata()
            )
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


@router.get("/u/{token}", summary="Unsubscribe: confirmation page", response_class=HTMLResponse)
async def unsubscribe_page(token: str, ctx: CtxDep, request: Request) -> HTMLResponse:
    if tokens.verify(_key(ctx), "u", token) is None:
        return _not_found()
    action = html.escape(str(request.url.path))
    form = (
        "<p>Do you want to stop receiving these messages?</p>"
        f"<form method='post' action='{action}'>"
        "<button type='submit'>Unsubscribe</button></form>"
    )
    return HTMLResponse(_page("Unsubscribe", form), headers=_NO_STORE)


@router.post(
    "/u/{token}", summary="Unsubscribe (also RFC 8058 one-click)", response_class=HTMLResponse
)
async def unsubscribe(token: str, ctx: CtxDep) -> HTMLResponse:
    found = tokens.verify(_key(ctx), "u", token)
    if found is None:
        return _not_found()
    async with ctx.pool.acquire() as conn, conn.transaction():
        done = await application.unsubscribe(conn, ctx.store, found[0], clock_now(ctx), _metadata())
    if not done:
        return _not_found()
    return HTMLResponse(
        _page("Unsubscribed", "<p>You will not receive these messages any more.</p>"),
        headers=_NO_STORE,
    )


@router.get("/v/{token}", summary="The message in the browser", response_class=HTMLResponse)
async def view_in_browser(token: str, ctx: CtxDep) -> HTMLResponse:
    found = tokens.verify(_key(ctx), "v", token)
    if found is None:
        return _not_found()
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT customer_id, template_id, channel FROM messages WHERE message_id = $1"
            " AND status = ANY($2::text[]) AND channel = 'email'",
            found[0],
            list(application.WENT_OUT),
        )
        if row is None:
            return _not_found()
        cfg = delivery_settings(ctx)
        try:
            composed = await compose(
                conn,
                Tracker(cfg.base_url(ctx.settings), _key(ctx)),
                message_id=found[0],
                customer_id=row["customer_id"],
                template_id=row["template_id"],
                channel="email",
            )
        except Exception:
            log.exception("message not rendered for the browser")
            return _not_found()
    body = composed.html or f"<pre>{html.escape(composed.text)}</pre>"
    return HTMLResponse(body, headers=_NO_STORE)
