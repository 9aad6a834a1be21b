"""The ticket read models (``tickets``, ``ticket_status_spans``, ``ticket_comments``,
``ticket_mail_ids``), written from a ticket's new events in the transaction that saves them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crm_events import EventPayload
from crm_events.schemas.service import (
    TicketAssigned,
    TicketClosed,
    TicketCustomerReplied,
    TicketMergedInto,
    TicketNoteAdded,
    TicketOpened,
    TicketReopened,
    TicketReplied,
    TicketResolved,
    TicketStatusChanged,
)
from crm_runtime.db import Conn
from crm_service_desk.domain.ticket import Ticket


def new_status(e: EventPayload) -> str | None:
    """The status an event moves the ticket to, if it moves it."""
    if isinstance(e, TicketOpened):
        return "new"
    if isinstance(e, TicketAssigned):
        return e.to_status if e.to_status != e.from_status else None
    if isinstance(e, TicketStatusChanged | TicketReopened):
        return e.to_status
    if isinstance(e, TicketResolved):
        return "resolved"
    if isinstance(e, TicketClosed):
        return "closed"
    if isinstance(e, TicketMergedInto):
        return "merged"
    return None


async def project(
    conn: Conn, ticket: Ticket, events: Sequence[EventPayload], now: datetime
) -> None:
    """Fold the events just saved (the state after them is ``ticket``) into the views."""
    await conn.execute(
        """
        INSERT INTO tickets (ticket_id, customer_id, customer_email, kind, status, priority,
                             product, language, region, customer_tier, queue_id, assignee_id,
                             subject, channel, return_status, merged_into, score, created_at,
                             updated_at, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $18, $19)
        ON CONFLICT (ticket_id) DO UPDATE SET
            status = EXCLUDED.status, priority = EXCLUDED.priority, product = EXCLUDED.product,
            language = EXCLUDED.language, region = EXCLUDED.region,
            customer_tier = EXCLUDED.customer_tier, queue_id = EXCLUDED.queue_id,
            assignee_id = EXCLUDED.assignee_id, subject = EXCLUDED.subject,
            return_status = EXCLUDED.return_status, merged_into = EXCLUDED.merged_into,
            score = EXCLUDED.score, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
        """,
        ticket.id,
        ticket.customer_id,
        ticket.customer_email,
        ticket.kind,
        ticket.status,
        ticket.priority,
        ticket.product,
        ticket.language,
        ticket.region,
        ticket.customer_tier,
        ticket.queue_id,
        ticket.assignee_id,
        ticket.title,
        ticket.channel,
        ticket.return_status,
        ticket.merged_into,
        ticket.score,
        now,
        ticket.version,
    )
    for e in events:
        status = new_status(e)
        if status is not None:
            await _enter(conn, ticket.id, status, now)
        if isinstance(e, TicketOpened) and e.channel != "api":
            await _touch(conn, ticket.id, "last_customer_message_at", now)
        elif isinstance(e, TicketReplied):
            await conn.execute(
                "UPDATE tickets SET last_agent_reply_at = $2,"
                " first_response_at = coalesce(first_response_at, $2) WHERE ticket_id = $1",
                ticket.id,
                now,
            )
            await _comment(conn, e.comment_id, ticket.id, "agent", e.author_id, True, e.body, now)
        elif isinstance(e, TicketCustomerReplied):
            await _touch(conn, ticket.id, "last_customer_message_at", now)
            await _comment(conn, e.comment_id, ticket.id, "customer", None, True, e.body, now)
        elif isinstance(e, TicketNoteAdded):
            await _comment(conn, e.note_id, ticket.id, "agent", e.author_id, False, e.body, now)


async def _enter(conn: Conn, ticket_id: str, status: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE ticket_status_spans SET ended_at = $2 WHERE ticket_id = $1 AND ended_at IS NULL",
        ticket_id,
        now,
    )
    await conn.execute(
        "INSERT INTO ticket_status_spans (ticket_id, status, started_at) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        ticket_id,
        status,
        now,
    )
    await conn.execute(
        """
        UPDATE tickets SET
            waiting_since = CASE WHEN $2 = 'waiting_on_customer' THEN $3::timestamptz END,
            resolved_at = CASE WHEN $2 = 'resolved' THEN $3::timestamptz
                               WHEN $2 IN ('closed', 'merged') THEN resolved_at END,
            closed_at = CASE WHEN $2 = 'closed' THEN $3::timestamptz END
        WHERE ticket_id = $1
        """,
        ticket_id,
        status,
        now,
    )


async def _touch(conn: Conn, ticket_id: str, column: str, now: datetime) -> None:
    await conn.execute(f"UPDATE tickets SET {column} = $2 WHERE ticket_id = $1", ticket_id, now)


async def _comment(
    conn: Conn,
    comment_id: str,
    ticket_id: str,
    author_kind: str,
    author_id: str | None,
    public: bool,
    body: str,
    now: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO ticket_comments (comment_id, ticket_id, author_kind, author_id, public, body,"
        " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        comment_id,
        ticket_id,
        author_kind,
        author_id,
        public,
        body,
        now,
    )


async def remember_message(conn: Conn, message_id: str, ticket_id: str, direction: str) -> bool:
    """Record a Message-ID; False if it was known already (a message delivered twice)."""
    done = await conn.fetchval(
        "INSERT INTO ticket_mail_ids (message_id, ticket_id, direction) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        message_id,
        ticket_id,
        direction,
    )
    return bool(done)


async def ticket_of_messages(conn: Conn, message_ids: Sequence[str]) -> str | None:
    """The ticket one of these Message-IDs (In-Reply-To, References) belongs to."""
    if not message_ids:
        return None
    value = await conn.fetchval(
        "SELECT ticket_id FROM ticket_mail_ids WHERE message_id = ANY($1::text[])"
        " ORDER BY recorded_at DESC LIMIT 1",
        list(message_ids),
    )
    return None if value is None else str(value)


async def last_inbound_message(conn: Conn, ticket_id: str) -> str | None:
    value = await conn.fetchval(
        "SELECT message_id FROM ticket_mail_ids WHERE ticket_id = $1 AND direction = 'in'"
        " ORDER BY recorded_at DESC LIMIT 1",
        ticket_id,
    )
    return None if value is None else str(value)


async def comments(conn: Conn, ticket_id: str, *, public_only: bool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT comment_id, author_kind, author_id, public, body, created_at FROM ticket_comments"
        " WHERE ticket_id = $1 AND (public OR NOT $2) ORDER BY created_at, comment_id",
        ticket_id,
        public_only,
    )
    return [dict(r) for r in rows]


LIST_FILTERS = ("status", "kind", "priority", "queue_id", "assignee_id", "customer_id", "product")


async def list_tickets(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    filters: dict[str, Any],
) -> list[dict[str, Any]]:
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    where = ["($1::timestamptz IS NULL OR (created_at, ticket_id) < ($1, $2))"]
    for column in LIST_FILTERS:
        value = filters.get(column)
        if value is None:
            continue
        params.append(value)
        where.append(f"{column} = ${len(params)}")
    params.append(limit)
    rows = await conn.fetch(
        "SELECT ticket_id, customer_id, kind, status, priority, product, language, region,"
        " customer_tier, queue_id, assignee_id, subject, channel, return_status, merged_into,"
        " score, created_at, updated_at, first_response_at, last_customer_message_at,"
        " last_agent_reply_at, waiting_since, resolved_at, closed_at, version"
        f" FROM tickets WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, ticket_id DESC LIMIT ${len(params)}",
        *params,
    )
    return [dict(r) for r in rows]


async def resolved_before(conn: Conn, cutoff: datetime, limit: int = 200) -> list[str]:
    rows = await conn.fetch(
        "SELECT ticket_id FROM tickets WHERE status = 'resolved' AND resolved_at < $1"
        " ORDER BY resolved_at LIMIT $2",
        cutoff,
        limit,
    )
    return [str(r["ticket_id"]) for r in rows]
