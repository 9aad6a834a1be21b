"""Public endpoints websites call without a user token (a site key admits them).

Every request passes, in order: the site key (``?key=``, live) and the ``Origin`` (one of the
key's allowed origins; CORS preflights are answered for those only) → 403; the rate limit per
site key, endpoint and client IP → 429 with ``Retry-After``; the body size → 413; the body's
shape → 422 naming each field. A form whose honeypot field is filled answers 202 like any other
and stores nothing. Answers never depend on whether an e-mail address is known.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError

from crm_marketing.audience import consent_mail
from crm_marketing.audience.commands import AudienceCommands
from crm_marketing.audience.confirmations import send_confirmations
from crm_marketing.settings import marketing_settings, now
from crm_marketing.web import ratelimit
from crm_marketing.web.application import (
    ActivityBatch,
    FieldErrors,
    LiveSite,
    ingest_activity,
    is_honeypot_filled,
    live_form,
    live_site,
    submit_form,
    validate_submission,
)
from crm_runtime.context import ServiceContext
from crm_runtime.errors import CrmError, DomainError, Forbidden, InvalidInput, NotFound
from crm_runtime.eventstore import Metadata
from crm_runtime.http.app import CtxDep
from crm_runtime.http.problems import problem
from crm_runtime.logs import correlation_id

log = logging.getLogger(__name__)

router = APIRouter(prefix="/public", tags=["public (websites)"])

SiteKeyParam = Annotated[
    str | None, Query(alias="key", description="the site key (public; in the site's script)")
]
ACCEPTED = {"status": "accepted"}


class TooLarge(CrmError):
    status = 413
    title = "Content Too Large"


class TooMany(CrmError):
    status = 429
    title = "Too Many Requests"


def _meta(site_key_id: str) -> Metadata:
    return Metadata(actor=f"site:{site_key_id}", correlation_id=correlation_id.get())


def client_ip(request: Request, trust_forwarded_for: bool) -> str:
    """The client's IP: behind a trusted proxy the right-most ``X-Forwarded-For`` entry (the one
    the proxy appended; entries left of it are whatever the client sent), else the peer."""
    if trust_forwarded_for:
        entries = [
            e.strip() for h in request.headers.getlist("x-forwarded-for") for e in h.split(",")
        ]
        entries = [e for e in entries if e]
        if entries:
            return entries[-1]
    return request.client.host if request.client else "unknown"


def _cors(origin: str | None) -> dict[str, str]:
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


async def _admit(ctx: ServiceContext, request: Request, key: str | None) -> tuple[LiveSite, str]:
    """The live site key and the request's allowed origin, or 403."""
    if not key:
        raise Forbidden("a site key is required (?key=)")
    async with ctx.pool.acquire() as conn:
        site = await live_site(conn, key)
    if site is None:
        raise Forbidden("unknown or revoked site key")
    origin = request.headers.get("origin")
    if not origin or origin.rstrip("/").lower() not in site.allowed_origins:
        raise Forbidden("this origin may not use the site key")
    return site, origin


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(request: Request, raw: bytes, allow_form: bool) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if allow_form and kind == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidInput("body", "not UTF-8") from None
    if kind not in ("application/json", "text/plain", ""):
        raise InvalidInput("body", f"send JSON (Content-Type: application/json), not {kind}")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("body", "not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("body", "must be a JSON object")
    return value


async def _guarded(
    ctx: ServiceContext,
    request: Request,
    key: str | None,
    endpoint: str,
    max_bytes: int,
    handle: Callable[[LiveSite, bytes], Awaitable[JSONResponse]],
) -> Response:
    origin: str | None = None
    try:
        site, origin = await _admit(ctx, request, key)
        settings = marketing_settings(ctx)
        bucket = ratelimit.bucket(
            ctx.settings.jwt_secret,
            site.site_key_id,
            endpoint,
            client_ip(request, settings.trust_forwarded_for),
        )
        async with ctx.pool.acquire() as conn:
            wait = await ratelimit.hit(conn, bucket, site.rate_limit_per_minute, now(ctx))
        if wait is not None:
            raise TooMany(
                f"at most {site.rate_limit_per_minute} requests a minute", retry_after=wait
            )
        raw = await _read_body(request, max_bytes)
        response = await handle(site, raw)
    except CrmError as exc:
        headers = _cors(origin)
        if isinstance(exc, TooMany):
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return problem(exc.status, exc.detail, title=exc.title, headers=headers, **exc.extra)
    response.headers.update(_cors(origin))
    return response


async def _preflight(ctx: ServiceContext, request: Request, key: str | None) -> Response:
    try:
        _, origin = await _admit(ctx, request, key)
    except CrmError as exc:
        return problem(exc.status, exc.detail, title=exc.title)
    return Response(
        status_code=204,
        headers={
            **_cors(origin),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "content-type",
            "Access-Control-Max-Age": "600",
        },
    )


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (OpenAPI has no local ``$defs``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {
                k: {"propertyName": v["propertyName"]} if k == "discriminator" else resolve(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_FORM_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "the form's fields by name, its consent checkboxes, and "
                    "optionally visitor_id, utm_source, utm_medium, utm_campaign, utm_term, "
                    "utm_content, referrer; the honeypot field must stay empty",
                    "additionalProperties": True,
                }
            },
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        }
    }
}


@router.post(
    "/forms/{form_id}/submissions",
    status_code=202,
    summary="Submit a web form (creates or updates the person)",
    openapi_extra=_FORM_BODY,
    responses={
        202: {"description": "accepted (the same answer whether or not the person was known)"},
        403: {"description": "unknown site key, or an origin it does not allow"},
        404: {"description": "no such form for this site key"},
        413: {"description": "body too large"},
        429: {"description": "too many requests; see Retry-After"},
    },
)
async def submit(form_id: str, request: Request, ctx: CtxDep, key: SiteKeyParam = None) -> Response:
    async def handle(site: LiveSite, raw: bytes) -> JSONResponse:
        body = _parse(request, raw, allow_form=True)
        async with ctx.pool.acquire() as conn:
            form = await live_form(conn, form_id, site.site_key_id)
        if form is None:
            raise NotFound("no such form for this site key")
        if is_honeypot_filled(form, body):
            log.info("form honeypot filled; submission dropped", extra={"form_id": form_id})
            return JSONResponse(ACCEPTED, status_code=202)
        sub = validate_submission(form, body)
        async with ctx.pool.acquire() as conn, conn.transaction():
            _, mails = await submit_form(conn, ctx.store, form, sub, _meta(site.site_key_id))
        await send_confirmations(ctx, mails)
        return JSONResponse(ACCEPTED, status_code=202)

    return await _guarded(
        ctx, request, key, "form", marketing_settings(ctx).public_form_max_bytes, handle
    )


@router.options("/forms/{form_id}/submissions", include_in_schema=False)
async def submit_preflight(
    form_id: str, request: Request, ctx: CtxDep, key: SiteKeyParam = None
) -> Response:
    return await _preflight(ctx, request, key)


@router.post(
    "/activity",
    status_code=202,
    summary="Record website activity of a visitor (a batch of events)",
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": inline_schema(ActivityBatch)}}}
    },
    responses={
        202: {"description": "accepted; `accepted` counts the new events"},
        403: {"description": "unknown site key, or an origin it does not allow"},
        413: {"description": "body too large"},
        429: {"description": "too many requests; see Retry-After"},
    },
)
async def activity(request: Request, ctx: CtxDep, key: SiteKeyParam = None) -> Response:
    settings = marketing_settings(ctx)

    async def handle(site: LiveSite, raw: bytes) -> JSONResponse:
        body = _parse(request, raw, allow_form=False)
        try:
            batch = ActivityBatch.model_validate(body)
        except ValidationError as exc:
            raise FieldErrors(
                [
                    {"field": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
                    for e in exc.errors()
                ]
            ) from None
        if len(batch.events) > settings.activity_max_events:
            raise InvalidInput("events", f"at most {settings.activity_max_events} per batch")
        for attempt in (1, 2):
            try:
                async with ctx.pool.acquire() as conn, conn.transaction():
                    n = await ingest_activity(
                        conn, ctx.store, site.site_key_id, batch, _meta(site.site_key_id), now(ctx)
                    )
                break
            except asyncpg.UniqueViolationError:
                if attempt == 2:  # the same retried batch raced itself: it is stored once
                    raise
        return JSONResponse({"accepted": n}, status_code=202)

    return await _guarded(ctx, request, key, "activity", settings.public_activity_max_bytes, handle)


@router.options("/activity", include_in_schema=False)
async def activity_preflight(request: Request, ctx: CtxDep, key: SiteKeyParam = None) -> Response:
    return await _preflight(ctx, request, key)


# --- e-mail double opt-in confirmation ----------------------------------------------------------

_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>"
    "<body style='font-family:sans-serif;max-width:36em;margin:3em auto'>{body}</body></html>"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


_INVALID = "This link is not valid any more. If you still want our e-mails, sign up again."


@router.get(
    "/consent/confirm",
    response_class=HTMLResponse,
    summary="The page a confirmation link opens (asks to confirm; changes nothing itself)",
)
async def confirm_page(ctx: CtxDep, token: str = "") -> HTMLResponse:
    try:
        consent_mail.verify(ctx.settings.jwt_secret, token, now(ctx))
    except consent_mail.InvalidLink:
        return _page("Link not valid", f"<p>{_INVALID}</p>", 400)
    # Mail scanners open links: the change needs the button (a POST), not the GET.
    return _page(
        "Confirm your subscription",
        "<p>Please confirm that you want to receive e-mail from us.</p>"
        "<form method=post action='/public/consent/confirm'>"
        f"<input type=hidden name=token value='{html.escape(token, quote=True)}'>"
        "<button type=submit>Yes, subscribe me</button></form>",
    )


@router.post(
    "/consent/confirm",
    response_class=HTMLResponse,
    summary="Confirm e-mail consent (double opt-in) with the link's token",
    description="The token comes from the confirmation page's form (`token` in the"
    " form-encoded body) or, when the body has none, from the mailed link's query: a POST to"
    " the mailed URL itself confirms.",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {"token": {"type": "string"}}}
                }
            },
        }
    },
)
async def confirm(
    request: Request,
    ctx: CtxDep,
    token: Annotated[str, Query(description="the mailed link's token")] = "",
) -> HTMLResponse:
    try:
        raw = await _read_body(request, 4096)
        # the form's field, else the token of the URL POSTed to (the mailed link itself)
        token = dict(parse_qsl(raw.decode(errors="replace"))).get("token") or token
        claims = consent_mail.verify(ctx.settings.jwt_secret, token, now(ctx))
        async with ctx.pool.acquire() as conn, conn.transaction():
            await AudienceCommands(ctx.store).confirm_email_consent(
                conn,
                claims,
                Metadata(actor="public:consent-link", correlation_id=correlation_id.get()),
            )
    except (consent_mail.InvalidLink, DomainError, TooLarge):
        return _page("Link not valid", f"<p>{_INVALID}</p>", 400)
    return _page("Subscribed", "<p>Thank you — your subscription is confirmed.</p>")
