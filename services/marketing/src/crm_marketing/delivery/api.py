"""/delivery/outbox: what the local SMS and push provider was given (newest first)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from crm_marketing.campaigns.http import Marketer
from crm_runtime.errors import InvalidInput
from crm_runtime.http.app import CtxDep
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/delivery", tags=["delivery"])


class OutboxItem(BaseModel):
    id: int
    channel: Literal["sms", "push"]
    message_id: str
    recipient: str
    title: str | None
    body: str
    recorded_at: datetime


@router.get(
    "/outbox",
    response_model=Page[OutboxItem],
    summary="Messages the local SMS/push provider recorded, newest first",
)
async def list_outbox(
    ctx: CtxDep,
    user: Marketer,
    channel: Literal["sms", "push"] | None = None,
    message_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[OutboxItem]:
    after = decode_cursor(cursor)
    before = after.get("id") if after else None
    if after is not None and not isinstance(before, int):
        raise InvalidInput("cursor", "is not a cursor returned by this list")
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT outbox_id, channel, message_id::text AS message_id, recipient, title, body,"
            " recorded_at FROM provider_outbox"
            " WHERE ($1::text IS NULL OR channel = $1) AND ($2::bigint IS NULL OR outbox_id < $2)"
            " AND ($3::text IS NULL OR message_id::text = $3)"
            " ORDER BY outbox_id DESC LIMIT $4",
            channel,
            before,
            message_id,
            limit + 1,
        )
    items = [OutboxItem(id=r["outbox_id"], **_without_id(dict(r))) for r in rows]
    more = len(items) > limit
    return Page(
        items=items[:limit],
        next_cursor=encode_cursor({"id": items[limit - 1].id}) if more else None,
    )


def _without_id(row: dict[str, object]) -> dict[str, object]:
    row.pop("outbox_id", None)
    return row
