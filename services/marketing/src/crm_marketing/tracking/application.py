"""What an open, a click or an unsubscribe does to a message (and to the customer's consent).

A message's first open and the first click on each of its links are events; repeats change
nothing. A click implies an open (images are often blocked). Only messages that went out
count; a token of anything else is treated like no token at all.
"""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import asyncpg

from crm_events import EventPayload
from crm_events.schemas.marketing_campaigns import (
    MessageClicked,
    MessageOpened,
    MessageUnsubscribed,
)
from crm_marketing.delivery import messages, ports
from crm_marketing.delivery.messages import MessageKey, advanced
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata

WENT_OUT = ("sent", "delivered", "opened", "clicked", "unsubscribed")


async def _locked(conn: Conn, message_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT message_id, customer_id, channel, campaign_id, trigger_id, status, version, links,"
        " opened_at, clicked_links, unsubscribed_at FROM messages"
        " WHERE message_id = $1 AND status = ANY($2::text[]) FOR UPDATE",
        message_id,
        list(WENT_OUT),
    )


def _links(row: asyncpg.Record) -> list[str]:
    raw = row["links"]
    links = json.loads(raw) if isinstance(raw, str) else raw
    return [str(u) for u in links] if isinstance(links, list) else []


async def record_open(
    conn: Conn, store: EventStore, message_id: UUID, now: datetime, metadata: Metadata
) -> bool:
    row = await _locked(conn, message_id)
    if row is None or row["opened_at"] is not None:
        return False
    key = MessageKey.of(row)
    version = await messages.append(
        conn,
        store,
        key,
        row["version"],
        [MessageOpened(**key.ref())],
        metadata,
    )
    await conn.execute(
        "UPDATE messages SET opened_at = $2, status = $3, version = $4 WHERE message_id = $1",
        message_id,
        now,
        advanced(row["status"], "opened"),
        version,
    )
    return True


async def record_click(
    conn: Conn, store: EventStore, message_id: UUID, index: int, now: datetime, metadata: Metadata
) -> tuple[str, str] | None:
    """The link's URL and the customer, or None when the message had no such link."""
    row = await _locked(conn, message_id)
    if row is None:
        return None
    links = _links(row)
    if index >= len(links):
        return None
    url = links[index]
    key = MessageKey.of(row)
    events: list[EventPayload] = []
    status = row["status"]
    if row["opened_at"] is None:
        events.append(MessageOpened(**key.ref()))
        status = advanced(status, "opened")
    first_click = index not in (row["clicked_links"] or [])
    if first_click:
        events.append(MessageClicked(**key.ref(), link_index=index, url=url))
        status = advanced(status, "clicked")
    if events:
        version = await messages.append(conn, store, key, row["version"], events, metadata)
        await conn.execute(
            "UPDATE messages SET opened_at = coalesce(opened_at, $2),"
            " clicked_at = coalesce(clicked_at, $2), status = $3, version = $4,"
            " clicked_links = CASE WHEN $5 THEN array_append(clicked_links, $6)"
            " ELSE clicked_links END"
            " WHERE message_id = $1",
            message_id,
            now,
            status,
            version,
            first_click,
            index,
        )
    return url, key.customer_id


async def unsubscribe(
    conn: Conn, store: EventStore, message_id: UUID, now: datetime, metadata: Metadata
) -> bool:
    """Withdraw the customer's consent for the message's channel; True if the token was good."""
    row = await _locked(conn, message_id)
    if row is None:
        return False
    key = MessageKey.of(row)
    await ports.withdraw_consent(
        conn, store, key.customer_id, key.channel, reason="unsubscribe_link", metadata=metadata
    )
    if row["unsubscribed_at"] is None:
        version = await messages.append(
            conn,
            store,
            key,
            row["version"],
            [MessageUnsubscribed(**key.ref())],
            metadata,
        )
        await conn.execute(
            "UPDATE messages SET unsubscribed_at = $2, status = $3, version = $4"
            " WHERE message_id = $1",
            message_id,
            now,
            advanced(row["status"], "unsubscribed"),
            version,
        )
    return True
