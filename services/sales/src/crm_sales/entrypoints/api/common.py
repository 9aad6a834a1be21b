"""What the sales routers share: role sets, headers, history, list and idempotency helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from crm_runtime.db import Conn
from crm_runtime.errors import InvalidInput
from crm_runtime.eventstore import StoredEvent
from crm_runtime.http.auth import Principal, require
from crm_runtime.http.commands import (
    CommandResult,
    key_lock,
    request_digest,
    store_response,
    stored_response,
)
from crm_runtime.http.pagination import decode_cursor, encode_cursor
from crm_sales.entrypoints.api.schemas import HistoryEntry

SalesUser = Annotated[Principal, Depends(require("sales_rep", "sales_manager"))]
DirectoryReader = Annotated[
    Principal,
    Depends(require("sales_rep", "sales_manager", "marketer", "service_agent", "analyst")),
]
Manager = Annotated[Principal, Depends(require("sales_manager"))]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="retry-safe creation")
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]


def history(events: list[StoredEvent]) -> list[HistoryEntry]:
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
        for e in events
    ]


class KeyedCommand:
    """Idempotency-Key for a command that cannot run in one transaction (an e-mail goes out
    between reading and recording): ``crm_runtime.http.commands``' key protocol (table, request
    hash, lock), with the key's lock held as a session lock, so no transaction stays open.

    ``async with KeyedCommand.hold(conn, user, key, fingerprint) as keyed``: the lock is held
    until the block ends; ``replay()`` is the first response when the key was used already;
    ``remember(result)`` stores it, in the transaction that records the command."""

    def __init__(self, conn: Conn, user: Principal, key: str, fingerprint: Any) -> None:
        self.conn, self.user, self.key = conn, user, key
        self.digest = request_digest(fingerprint)

    @classmethod
    @asynccontextmanager
    async def hold(
        cls, conn: Conn, user: Principal, key: str | None, fingerprint: Any
    ) -> AsyncIterator[KeyedCommand | None]:
        if key is None:
            yield None
            return
        if not 0 < len(key) <= 200:
            raise InvalidInput("Idempotency-Key", "must be 1 to 200 characters")
        lock = key_lock(user, key)
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
        try:
            yield cls(conn, user, key, fingerprint)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)

    async def replay(self) -> JSONResponse | None:
        return await stored_response(self.conn, self.user, self.key, self.digest)

    async def remember(self, result: CommandResult) -> None:
        body = jsonable_encoder(result.body)
        await store_response(self.conn, self.user, self.key, self.digest, result, body)


def refuse_nulls(body: BaseModel, *fields: str) -> None:
    """A PATCH that sends null for a field that must have a value is a 422 naming the field
    (leaving the field out keeps its value)."""
    for field in fields:
        if field in body.model_fields_set and getattr(body, field) is None:
            raise InvalidInput(field, "cannot be cleared (null); leave it out to keep it")


def list_item(row: dict[str, Any], key: str) -> dict[str, Any]:
    """A list row as the API shows it: ``key`` (``deal_id``…) as ``id``. A copy: the row itself
    keeps its key for ``next_cursor``."""
    out = {k: v for k, v in row.items() if k != key}
    out["id"] = row[key]
    return out


def after_of(cursor: str | None) -> tuple[datetime, str] | None:
    after = decode_cursor(cursor)
    return (datetime.fromisoformat(after["t"]), after["id"]) if after else None


def next_cursor(rows: list[dict[str, Any]], limit: int, key: str) -> str | None:
    """The cursor after the page's last row (``rows`` as read: ``limit`` + 1 of them when there
    is a next page, each still under its ``key`` column: see ``list_item``)."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor({"t": last["created_at"].isoformat(), "id": last[key]})
