"""Read models of SLAs (plain SQL): calendars, policies, SLA state per ticket, escalations.

The SLA clock reads SD-A's ``tickets`` and ``ticket_status_spans`` (migration 0001); both are
read defensively (missing tables: nothing to evaluate; no spans: derived from the ticket row).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_events.schemas.service_routing import CalendarSet, SlaPolicySet
from crm_runtime.db import Conn
from crm_service_desk.adapters.routing_view import has_table
from crm_service_desk.domain.calendar import BusinessCalendar, Calendar, CalendarError
from crm_service_desk.domain.sla import STOPPED, Span, TicketTimeline


async def upsert_calendar(conn: Conn, calendar: Calendar, now: datetime) -> None:
    d = calendar.definition
    assert d is not None
    await conn.execute(
        """
        INSERT INTO calendars (calendar_id, name, timezone, definition, version, updated_at)
        VALUES ($1, $2, $3, $4::jsonb, $5, $6)
        ON CONFLICT (calendar_id) DO UPDATE SET
            name = EXCLUDED.name, timezone = EXCLUDED.timezone,
            definition = EXCLUDED.definition, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        calendar.id,
        d.name,
        d.timezone,
        d.model_dump_json(),
        calendar.version,
        now,
    )


async def upsert_policy(conn: Conn, policy: SlaPolicySet, version: int, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO sla_policies (priority, calendar_id, first_response_minutes,
                                  resolution_minutes, at_risk_percent, version, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (priority) DO UPDATE SET
            calendar_id = EXCLUDED.calendar_id,
            first_response_minutes = EXCLUDED.first_response_minutes,
            resolution_minutes = EXCLUDED.resolution_minutes,
            at_risk_percent = EXCLUDED.at_risk_percent, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        policy.priority,
        policy.calendar_id,
        policy.first_response_minutes,
        policy.resolution_minutes,
        policy.at_risk_percent,
        version,
        now,
    )


async def calendar_exists(conn: Conn, calendar_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM calendars WHERE calendar_id = $1", calendar_id))


async def policies(conn: Conn) -> dict[str, SlaPolicySet]:
    rows = await conn.fetch(
        "SELECT priority, calendar_id, first_response_minutes, resolution_minutes,"
        " at_risk_percent FROM sla_policies"
    )
    return {r["priority"]: SlaPolicySet.model_validate(dict(r)) for r in rows}


async def calendars(conn: Conn, only: str | None = None) -> dict[str, BusinessCalendar]:
    """The calendars (``only``: that one, if it exists), by id."""
    out: dict[str, BusinessCalendar] = {}
    rows = await conn.fetch(
        "SELECT calendar_id, definition FROM calendars WHERE $1::text IS NULL OR calendar_id = $1",
        only,
    )
    for r in rows:
        raw = r["definition"]
        d = CalendarSet.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
        try:
            out[r["calendar_id"]] = BusinessCalendar.of(d.timezone, d.hours, d.holidays)
        except CalendarError:  # e.g. a zone this host's tz database lacks
            continue
    return out


@dataclass(frozen=True)
class TicketRow:
    ticket_id: str
    customer_id: str | None
    status: str
    priority: str
    customer_tier: str | None
    queue_id: str | None
    assignee_id: str | None
    subject: str | None
    created_at: datetime
    first_response_at: datetime | None
    last_customer_message_at: datetime | None
    last_agent_reply_at: datetime | None
    waiting_since: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None

    def fallback_spans(self) -> tuple[Span, ...]:
        """Spans from the row alone, for tickets without recorded status spans."""
        if self.status == "waiting_on_customer" and self.waiting_since:
            return (
                Span("new", self.created_at, self.waiting_since),
                Span(self.status, self.waiting_since),
            )
        if self.status in STOPPED:
            end = self.resolved_at or self.closed_at or self.created_at
            return (Span("new", self.created_at, end), Span(self.status, end))
        return (Span(self.status, self.created_at),)


_TICKET_COLUMNS = (
    "t.ticket_id, t.customer_id, t.status, t.priority, t.customer_tier, t.queue_id,"
    " t.assignee_id, t.subject, t.created_at, t.first_response_at, t.last_customer_message_at,"
    " t.last_agent_reply_at, t.waiting_since, t.resolved_at, t.closed_at"
)


def _ticket(r: Any) -> TicketRow:
    return TicketRow(**{k: r[k] for k in TicketRow.__dataclass_fields__})


async def tickets_to_evaluate(conn: Conn, priorities: Sequence[str]) -> list[TicketRow]:
    """Open tickets with a policy, and closed ones whose SLA state is not final yet."""
    if not priorities or not await has_table(conn, "tickets"):
        return []
    rows = await conn.fetch(
        f"""
        SELECT {_TICKET_COLUMNS} FROM tickets t
        WHERE t.priority = ANY($1::text[]) AND (
            t.status <> ALL($2::text[])
            OR NOT EXISTS (SELECT 1 FROM sla_states s WHERE s.ticket_id = t.ticket_id)
            OR EXISTS (SELECT 1 FROM sla_states s
                       WHERE s.ticket_id = t.ticket_id AND s.stopped_at IS NULL))
        ORDER BY t.created_at, t.ticket_id
        """,
        list(priorities),
        list(STOPPED),
    )
    return [_ticket(r) for r in rows]


async def open_tickets(conn: Conn) -> list[TicketRow]:
    if not await has_table(conn, "tickets"):
        return []
    rows = await conn.fetch(
        f"SELECT {_TICKET_COLUMNS} FROM tickets t WHERE t.status <> ALL($1::text[])"
        " ORDER BY t.created_at, t.ticket_id",
        [*STOPPED, "waiting_on_customer"],
    )
    return [_ticket(r) for r in rows]


async def ticket(conn: Conn, ticket_id: str) -> TicketRow | None:
    if not await has_table(conn, "tickets"):
        return None
    r = await conn.fetchrow(
        f"SELECT {_TICKET_COLUMNS} FROM tickets t WHERE t.ticket_id = $1", ticket_id
    )
    return _ticket(r) if r else None


async def timelines(conn: Conn, tickets: Sequence[TicketRow]) -> dict[str, TicketTimeline]:
    spans: dict[str, list[Span]] = {}
    if tickets and await has_table(conn, "ticket_status_spans"):
        rows = await conn.fetch(
            "SELECT ticket_id, status, started_at, ended_at FROM ticket_status_spans"
            " WHERE ticket_id = ANY($1::text[]) ORDER BY ticket_id, started_at",
            [t.ticket_id for t in tickets],
        )
        for r in rows:
            spans.setdefault(r["ticket_id"], []).append(
                Span(r["status"], r["started_at"], r["ended_at"])
            )
    return {
        t.ticket_id: TicketTimeline(
            created_at=t.created_at,
            spans=tuple(spans.get(t.ticket_id) or t.fallback_spans()),
            first_response_at=t.first_response_at,
        )
        for t in tickets
    }


async def states_of(conn: Conn, ticket_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM sla_states WHERE ticket_id = $1", ticket_id)
    return {(r["target"], r["episode"]): dict(r) for r in rows}


async def upsert_state(conn: Conn, row: dict[str, Any]) -> None:
    """Insert or update one target's state; a row evaluated later than ``row`` stays as it is
    (an older evaluation never overwrites a newer one)."""
    await conn.execute(
        """
        INSERT INTO sla_states (ticket_id, target, episode, priority, status, started_at,
                                stopped_at, elapsed_minutes, target_minutes, at_risk_percent,
                                due_at, at_risk_at, breached_at, evaluated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (ticket_id, target, episode) DO UPDATE SET
            priority = EXCLUDED.priority, status = EXCLUDED.status,
            started_at = EXCLUDED.started_at, stopped_at = EXCLUDED.stopped_at,
            elapsed_minutes = EXCLUDED.elapsed_minutes,
            target_minutes = EXCLUDED.target_minutes,
            at_risk_percent = EXCLUDED.at_risk_percent, due_at = EXCLUDED.due_at,
            at_risk_at = EXCLUDED.at_risk_at, breached_at = EXCLUDED.breached_at,
            evaluated_at = EXCLUDED.evaluated_at
        WHERE sla_states.evaluated_at <= EXCLUDED.evaluated_at
        """,
        row["ticket_id"],
        row["target"],
        row["episode"],
        row["priority"],
        row["status"],
        row["started_at"],
        row["stopped_at"],
        row["elapsed_minutes"],
        row["target_minutes"],
        row["at_risk_percent"],
        row["due_at"],
        row["at_risk_at"],
        row["breached_at"],
        row["evaluated_at"],
    )


async def states_for_ticket(conn: Conn, ticket_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM sla_states WHERE ticket_id = $1 ORDER BY target, episode", ticket_id
    )
    return [dict(r) for r in rows]


async def at_risk(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str, str] | None,
    queue_id: str | None,
    assignee_id: str | None,
    include_breached: bool,
) -> list[dict[str, Any]]:
    """Running SLA targets of open tickets at risk (and breached ones, if asked), soonest due
    first; ``limit + 1`` rows at most (one more tells that a page follows).

    What both ``GET /sla/at-risk`` and ``GET /views/at-risk`` read, so they list the same.
    Keyset order: ``(sort_at, ticket_id, target)`` where ``sort_at`` is when the target
    breaches (or breached). ``after`` is that key of the previous page's last row.
    """
    if not await has_table(conn, "tickets"):
        return []
    statuses = ["at_risk", "breached"] if include_breached else ["at_risk"]
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT s.*, coalesce(s.due_at, s.breached_at, s.evaluated_at) AS sort_at,
                   t.subject, t.queue_id, t.assignee_id, t.customer_id, t.status AS ticket_status,
                   t.priority AS ticket_priority
            FROM sla_states s JOIN tickets t ON t.ticket_id = s.ticket_id
            WHERE s.status = ANY($1::text[]) AND s.stopped_at IS NULL
              AND t.status <> ALL($2::text[])
              AND ($3::text IS NULL OR t.queue_id = $3)
              AND ($4::text IS NULL OR t.assignee_id = $4)
        ) x
        WHERE $5::timestamptz IS NULL OR (sort_at, ticket_id, target) > ($5, $6, $7)
        ORDER BY sort_at, ticket_id, target
        LIMIT $8
        """,
        statuses,
        list(STOPPED),
        queue_id,
        assignee_id,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit + 1,
    )
    return [dict(r) for r in rows]


# --- escalations ----------------------------------------------------------------------------


async def claim_escalation(
    conn: Conn,
    *,
    escalation_id: str,
    ticket_id: str,
    rule_id: str,
    episode: str,
    kind: str,
    customer_id: str | None,
    reason: str,
    recipients: list[str],
    now: datetime,
    max_attempts: int,
) -> bool:
    """Insert the escalation unless this rule already fired for this episode."""
    claimed = await conn.fetchval(
        """
        INSERT INTO escalations (escalation_id, ticket_id, rule_id, episode, kind, customer_id,
                                 reason, recipients, escalated_at, mail_error, attempts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                CASE WHEN cardinality($8::text[]) = 0 THEN 'the rule names no e-mail' END,
                CASE WHEN cardinality($8::text[]) = 0 THEN $10 ELSE 0 END)
        ON CONFLICT (ticket_id, rule_id, episode) DO NOTHING
        RETURNING escalation_id
        """,
        escalation_id,
        ticket_id,
        rule_id,
        episode,
        kind,
        customer_id,
        reason,
        recipients,
        now,
        max_attempts,
    )
    return claimed is not None


async def pending_mail(conn: Conn, max_attempts: int, limit: int = 100) -> list[dict[str, Any]]:
    subject = ", t.subject, t.priority, t.queue_id, t.assignee_id"
    has_tickets = await has_table(conn, "tickets")
    rows = await conn.fetch(
        f"""
        SELECT e.*{subject if has_tickets else ""} FROM escalations e
        {"LEFT JOIN tickets t ON t.ticket_id = e.ticket_id" if has_tickets else ""}
        WHERE e.mailed_at IS NULL AND e.attempts < $1
        ORDER BY e.escalated_at, e.escalation_id LIMIT $2
        """,
        max_attempts,
        limit,
    )
    return [dict(r) for r in rows]


async def mark_mail(
    conn: Conn, escalation_id: str, mailed_at: datetime | None, error: str | None
) -> None:
    await conn.execute(
        "UPDATE escalations SET mailed_at = $2, mail_error = $3, attempts = attempts + 1"
        " WHERE escalation_id = $1",
        escalation_id,
        mailed_at,
        error,
    )


async def list_escalations(
    conn: Conn, *, ticket_id: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT * FROM escalations
        WHERE ($1::text IS NULL OR ticket_id = $1)
          AND ($2::timestamptz IS NULL OR (escalated_at, escalation_id) > ($2, $3))
        ORDER BY escalated_at, escalation_id LIMIT $4
        """,
        ticket_id,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return [{k: (list(v) if isinstance(v, list) else v) for k, v in dict(r).items()} for r in rows]
