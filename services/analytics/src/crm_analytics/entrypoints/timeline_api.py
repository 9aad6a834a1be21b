"""GET /customers/{id}/timeline: every touchpoint from every context, in time order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from crm_analytics.timeline import customer_ids
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal, require
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor

router = APIRouter(tags=["timeline"])

Reader = Annotated[
    Principal,
    Depends(
        require(
            "analyst",
            "sales_rep",
            "sales_manager",
            "marketer",
            "service_agent",
            "service_manager",
        )
    ),
]


class TimelineEntry(BaseModel):
    event_id: str
    customer_id: str = Field(description="the id the event was recorded under")
    occurred_at: datetime
    context: str
    type: str
    summary: str
    link: str | None
    stream_id: str
    stream_version: int
    data: dict[str, Any]


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=Page[TimelineEntry],
    summary="The customer's touchpoints from every context, oldest first",
    description="Merged customers share one timeline: asking for either id returns the events of "
    "both (X-Customer-Id names the id that stands, X-Customer-Ids every id included). An undone "
    "merge separates them again.",
)
async def customer_timeline(
    customer_id: str,
    ctx: CtxDep,
    _: Reader,
    response: Response,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    context: Annotated[list[str] | None, Query(description="sales, marketing, service")] = None,
    type: Annotated[list[str] | None, Query(description="event types to include")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[TimelineEntry]:
    after = decode_cursor(cursor)
    async with ctx.pool.acquire() as conn:
        root, ids = await customer_ids(conn, customer_id)
        rows = await conn.fetch(
            """
            SELECT event_id, customer_id, occurred_at, context, event_type, summary, link,
                   stream_id, stream_version, data
            FROM timeline
            WHERE customer_id = ANY($1::text[])
              AND ($2::timestamptz IS NULL OR (occurred_at, event_id) > ($2, $3::uuid))
              AND ($4::text[] IS NULL OR context = ANY($4))
              AND ($5::text[] IS NULL OR event_type = ANY($5))
              AND ($6::timestamptz IS NULL OR occurred_at >= $6)
              AND ($7::timestamptz IS NULL OR occurred_at < $7)
            ORDER BY occurred_at, event_id
            LIMIT $8
            """,
            ids,
            datetime.fromisoformat(after["t"]) if after else None,
            after["id"] if after else None,
            context,
            type,
            since,
            until,
            limit + 1,
        )
    items = [
        TimelineEntry(
            event_id=str(r["event_id"]),
            customer_id=r["customer_id"],
            occurred_at=r["occurred_at"],
            context=r["context"],
            type=r["event_type"],
            summary=r["summary"],
            link=r["link"],
            stream_id=r["stream_id"],
            stream_version=r["stream_version"],
            data=json.loads(r["data"]),
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor({"t": last.occurred_at.isoformat(), "id": last.event_id})
    response.headers["X-Customer-Id"] = root
    response.headers["X-Customer-Ids"] = ",".join(ids)
    return Page[TimelineEntry](items=items, next_cursor=next_cursor)
