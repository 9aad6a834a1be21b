"""Helpers routes use to run a command: Idempotency-Key replay, If-Match versions, metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from crm_runtime import db
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import ConcurrencyError, Conflict, InvalidInput, PreconditionFailed
from crm_runtime.eventstore import Metadata
from crm_runtime.http.auth import Principal
from crm_runtime.logs import correlation_id
from crm_runtime.repository import check_version as check_version
from crm_runtime.unit_of_work import CommandConnection

# How often a command is run when others keep changing its record under it (after the first
# loss it queues for the record behind the other losers, so only fresh commands can still win).
COMMAND_ATTEMPTS = 5
QUEUE_WAIT = 5.0  # seconds a command that lost waits for its turn at the record


@dataclass
class CommandResult:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def metadata_for(user: Principal) -> Metadata:
    return Metadata(actor=user.user_id, correlation_id=correlation_id.get())


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The stream version a client based its change on, from ``If-Match: "<version>"``."""
    if if_match is None:
        return None
    value = if_match.strip()
    if value.startswith("W/"):
        raise PreconditionFailed("If-Match needs a strong ETag, as returned in the ETag header")
    value = value.strip('"')
    if not value.isdigit():
        raise PreconditionFailed(f"If-Match {if_match!r} does not match the current version")
    return int(value)


async def run_command(
    ctx: ServiceContext,
    user: Principal,
    idempotency_key: str | None,
    request_fingerprint: Any,
    command: Callable[[Conn], Awaitable[CommandResult]],
) -> JSONResponse:
    """Run ``command`` in one transaction; with a key, a retry replays the first response.

    The command gets a :class:`CommandConnection`: the transaction begins at its first statement,
    and a command whose only statement is a final append runs it alone (one round trip). Once
    committed, the relay is woken (see ``crm_runtime.unit_of_work``).
    """
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key", "must be 1 to 200 characters")
    contended: str | None = None  # the stream another command changed under this one
    for attempt in range(1, COMMAND_ATTEMPTS + 1):
        unchanged = None
        try:
            async with ctx.pool.acquire() as raw:
                try:
                    async with CommandConnection(raw, ctx.store.notifier) as conn:
                        if contended is not None:
                            await _take_turn(conn, contended)
                        return await _run(conn, user, idempotency_key, request_fingerprint, command)
                finally:
                    # A command only reaches the database through `conn`, inside its
                    # transaction (no SET, LISTEN, session lock or cursor outlives it): no
                    # reset on release.
                    unchanged = db.session_unchanged(raw)
        except ConcurrencyError as exc:
            # Another command changed the record between this one's read and its append, and
            # this one rolled back. A client's If-Match was checked against what was read
            # (repository.check_version), so this is no answer to the client's precondition:
            # run the command again on the new state, where If-Match is checked afresh.
            if attempt == COMMAND_ATTEMPTS:
                raise Conflict(
                    "the record kept changing while this change was applied; nothing was"
                    " recorded, try again",
                    current_version=exc.extra.get("current_version"),
                ) from None
            contended = exc.stream_id
        finally:
            if unchanged is not None:
                db.reset_session_unchanged(unchanged)
    raise AssertionError("unreachable")  # pragma: no cover


async def _take_turn(conn: CommandConnection, stream_id: str) -> None:
    """Commands that lost a race for ``stream_id`` take turns from now on: each reads it once
    the one before has committed. A command waits at most ``QUEUE_WAIT`` seconds (holding a
    pool connection while it waits), then ends in a 409; the command itself runs with the
    session's own ``lock_timeout``."""
    before = await conn.fetchval("SELECT current_setting('lock_timeout')")
    try:
        await conn.execute(
            "SELECT set_config('lock_timeout', $2, true),"
            " pg_advisory_xact_lock(hashtextextended($1, 11))",
            stream_id,
            f"{int(QUEUE_WAIT * 1000)}ms",
        )
    except asyncpg.LockNotAvailableError:
        raise Conflict(
            "the record is being changed by many others at once; nothing was recorded, try again"
        ) from None
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", before)


async def _run(
    conn: CommandConnection,
    user: Principal,
    idempotency_key: str | None,
    request_fingerprint: Any,
    command: Callable[[Conn], Awaitable[CommandResult]],
) -> JSONResponse:
    if idempotency_key is None:
        result = await command(conn)
        return _response(result)
    # (a pydantic body is dumped here, only when a key needs it: as model_dump(mode="json"))
    digest = request_digest(request_fingerprint)
    # Two concurrent requests with one key: the second waits here, then replays.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key_lock(user, idempotency_key)
    )
    replayed = await stored_response(conn, user, idempotency_key, digest)
    if replayed is not None:
        return replayed
    result = await command(conn)
    body = _encode(result.body)
    await store_response(conn, user, idempotency_key, digest, result, body)
    return JSONResponse(body, status_code=result.status, headers=result.headers)


# The Idempotency-Key protocol, for run_command and for a command that cannot run in one
# transaction (it holds the key's lock as a session lock instead): one table, one request hash,
# one lock per (principal, key), so a key means the same for every command.


def request_digest(request_fingerprint: Any) -> str:
    return hashlib.sha256(
        json.dumps(_encode(request_fingerprint), sort_keys=True).encode()
    ).hexdigest()


def key_lock(user: Principal, idempotency_key: str) -> str:
    """The advisory lock's name for a key (hashed with ``hashtextextended``)."""
    return f"{len(user.user_id)}:{user.user_id}:{idempotency_key}"


async def stored_response(
    conn: Conn, user: Principal, idempotency_key: str, digest: str
) -> JSONResponse | None:
    """The first response to this key, replayed; None if the key is new. A key used with
    another request body is a 422."""
    stored = await conn.fetchrow(
        "SELECT request_hash, status_code, response, headers FROM idempotency_keys"
        " WHERE principal = $1 AND key = $2",
        user.user_id,
        idempotency_key,
    )
    if stored is None:
        return None
    if stored["request_hash"] != digest:
        raise InvalidInput("Idempotency-Key", "was already used with a different request body")
    headers = json.loads(stored["headers"])
    headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        json.loads(stored["response"]), status_code=stored["status_code"], headers=headers
    )


async def store_response(
    conn: Conn,
    user: Principal,
    idempotency_key: str,
    digest: str,
    result: CommandResult,
    body: Any,
) -> None:
    """Keep the response (``body``: ``result.body`` JSON-ready) for the key's retries."""
    await conn.execute(
        "INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response,"
        " headers) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)",
        user.user_id,
        idempotency_key,
        digest,
        result.status,
        json.dumps(body),
        json.dumps(result.headers),
    )


def _encode(body: Any) -> Any:
    """JSON-ready body; pydantic models take their own (much cheaper) path."""
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json")
    return jsonable_encoder(body)


class _EncodedJSON(JSONResponse):
    """A JSON response whose body arrives already encoded (bytes)."""

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else super().render(content)


def _response(result: CommandResult) -> JSONResponse:
    if isinstance(result.body, BaseModel):
        # pydantic writes the JSON itself: no dict, no json.dumps (same document)
        body = result.body.model_dump_json().encode()
        return _EncodedJSON(body, status_code=result.status, headers=result.headers)
    return JSONResponse(_encode(result.body), status_code=result.status, headers=result.headers)
