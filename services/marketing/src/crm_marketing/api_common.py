"""What the marketing routers share: headers, the history entry shape, keyset cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel

from crm_runtime.errors import InvalidInput
from crm_runtime.eventstore import StoredEvent
from crm_runtime.http.pagination import decode_cursor, encode_cursor

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="retry-safe creation")
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]


class HistoryEntry(BaseModel):
    version: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    correlation_id: str | None
    data: dict[str, Any]


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


def after_of(cursor: str | None) -> tuple[datetime, str] | None:
    """``(time, id)`` of the last row of the previous page, from its cursor."""
    after = decode_cursor(cursor)
    if after is None:
        return None
    try:
        return datetime.fromisoformat(str(after["t"])), str(after["id"])
    except (KeyError, ValueError):
        raise InvalidInput("cursor", "is not a cursor returned by this list") from None


def next_cursor(rows: list[dict[str, Any]], limit: int, time_key: str, id_key: str) -> str | None:
    """The cursor after ``rows[limit - 1]`` if the query returned more than ``limit`` rows."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor({"t": last[time_key].isoformat(), "id": str(last[id_key])})
