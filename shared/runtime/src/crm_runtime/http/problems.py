"""RFC 9457 problem details: every error response, with the field and the reason for 422."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:  # Starlette's scope key for the body limit in force (pinned; without it: no number given)
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
except ImportError:  # pragma: no cover
    MAX_BODY_SIZE_SCOPE_KEY = "starlette.max_body_size"

from crm_runtime.errors import CrmError
from crm_runtime.http.correlation import correlation_id_of
from crm_runtime.logs import correlation_id

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# RFC 9110 names; Python's HTTPStatus still has the older phrase for 422
TITLES = {422: "Unprocessable Content", 413: "Content Too Large"}
UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)
OUT_OF_RANGE = (
    OverflowError,  # a time shifted past year 9999, an int beyond int64, ...
    asyncpg.exceptions.DataError,  # asyncpg could not encode an argument (see _out_of_range)
    asyncpg.exceptions.DatetimeFieldOverflowError,
    asyncpg.exceptions.NumericValueOutOfRangeError,
)


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or TITLES.get(status) or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    cid = correlation_id.get()
    if cid:
        body["correlation_id"] = cid
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _error(e: dict[str, Any]) -> dict[str, str]:
    loc = tuple(e.get("loc", ()))
    if e.get("type") == "json_invalid":  # loc is (body, <character offset>)
        offset = loc[1] if len(loc) > 1 else "?"
        why = e.get("ctx", {}).get("error", "")
        reason = f"not valid JSON (at character {offset})" + (f": {why}" if why else "")
        return {"field": "body", "in": "body", "reason": reason}
    return {
        "field": _field(loc),
        "in": str(loc[0]) if loc else "body",
        "reason": e.get("msg", "invalid"),
    }


def _not_json(request: Request, errors: Sequence[Any]) -> str | None:
    """Why a body the route reads as JSON was not JSON, if that is why it failed validation:
    it came as another media type, or without a Content-Type, and FastAPI (strict about the
    type) handed validation the raw bytes, which then fail as a whole. None: it was JSON,
    nothing was sent, or the route read the body itself (a form) and named a field."""
    if not any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing" for e in errors):
        return None
    content_type = request.headers.get("content-type")
    if not content_type:
        return "no Content-Type was given"
    media = content_type.split(";", 1)[0].strip().lower()
    is_json = media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
    return None if is_json else f"not {media}"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        why = _not_json(request, exc.errors())
        if why is not None:
            # "Input should be a valid dictionary" would not tell the client what is wrong.
            return problem(
                415, f"the request body must be JSON (Content-Type: application/json): {why}"
            )
        errors = [_error(e) for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(422, f"invalid request: {summary}", errors=errors)

    @app.exception_handler(CrmError)
    async def _crm(_: Request, exc: CrmError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="crm"'} if exc.status == 401 else None
        if exc.status == 429 and "retry_after" in exc.extra:
            headers = {"Retry-After": str(exc.extra["retry_after"])}
        return problem(exc.status, exc.detail, title=exc.title, headers=headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        detail = str(exc.detail) if exc.detail else None
        if exc.status_code == 413 and detail == "Content Too Large":
            detail = _too_large(request.scope)
        return problem(exc.status_code, detail, headers=headers)

    async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
        # The statement failed, so its transaction rolled back: nothing changed.
        return _whole_request(
            "a text value contains a character that cannot be stored (such as NUL, U+0000)"
        )

    for cls in UNSTORABLE_TEXT:
        app.add_exception_handler(cls, _unstorable)

    async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
        # A value that reached the database layer or a computation without a check of its own
        # (times are checked where they come in: crm_runtime.http.params). It is the request's
        # value that does not fit; any transaction rolled back, so nothing changed. asyncpg
        # reports a query argument it cannot encode as DataError, caused by the OverflowError;
        # a DataError for any other reason is a bug (a wrong type passed): the 500.
        if isinstance(exc, asyncpg.exceptions.DataError) and not isinstance(
            exc.__cause__, OverflowError
        ):
            return unexpected(exc)
        # With the traceback (no values in it): an overflow in our own code stays traceable.
        log.warning("a value out of range", extra={"error": type(exc).__name__}, exc_info=exc)
        return _whole_request(
            "a value holds a date, time or number out of the range that can be stored"
        )

    for overflow in OUT_OF_RANGE:
        app.add_exception_handler(overflow, _out_of_range)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected(exc)


def unexpected(exc: BaseException) -> JSONResponse:
    """The 500 for a bug: logged with the correlation id, which the body and header carry."""
    log.error("unhandled error", exc_info=exc)
    cid = correlation_id.get()
    return problem(
        500,
        "an unexpected error occurred; quote the correlation id",
        headers={"X-Correlation-ID": cid} if cid else None,
    )


def _whole_request(reason: str) -> JSONResponse:
    """A 422 for a value the request holds somewhere, found only where it could not be stored."""
    return problem(
        422,
        f"invalid request: {reason}",
        errors=[{"field": "body", "in": "request", "reason": reason}],
    )


def _too_large(scope: Scope) -> str:
    limit = scope.get(MAX_BODY_SIZE_SCOPE_KEY)
    if isinstance(limit, int):
        return f"the request body is larger than this endpoint takes ({limit:,} bytes)"
    return "the request body is larger than this endpoint takes"


class BodyLimitProblems:
    """Outermost ASGI wrapper: the 413 Starlette's body limit answers by itself (plain text
    "Content Too Large", when a request declares a Content-Length over the limit) goes out as a
    problem, like every other error. Every other answer passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # a plain-text 413's start, until its body shows whose it is

        async def send_problems(message: Message) -> None:
            nonlocal held
            if held is not None:
                start, held = held, None
                if (
                    message["type"] == "http.response.body"
                    and message.get("body") == _LIMIT_TEXT
                    and not message.get("more_body")
                ):
                    # Answered before the correlation middleware ran: give it an id here.
                    cid = correlation_id_of(scope)
                    token = correlation_id.set(cid)
                    try:
                        answer = problem(413, _too_large(scope), headers={"X-Correlation-ID": cid})
                    finally:
                        correlation_id.reset(token)
                    await answer(scope, receive, send)
                    return
                await send(start)
            elif message["type"] == "http.response.start" and message["status"] == 413:
                types = [v for k, v in message.get("headers", ()) if k.lower() == b"content-type"]
                if types and types[0].startswith(b"text/plain"):
                    held = message
                    return
            await send(message)

        await self.app(scope, receive, send_problems)


_LIMIT_TEXT = b"Content Too Large"  # Starlette's RequestBodyLimitResponder answer
