"""What the sales routers share: role sets, headers, history and list helpers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header

from crm_runtime.eventstore import StoredEvent
from crm_runtime.http.auth import Principal, require
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


def after_of(cursor: str | None) -> tuple[datetime, str] | None:
    after = decode_cursor(cursor)
    return (datetime.fromisoformat(after["t"]), after["id"]) if after else None


def next_cursor(rows: list[dict[str, Any]], limit: int, key: str) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor({"t": last["created_at"].isoformat(), "id": last[key]})
