"""The analytical service CRM: ticket facts from the service-desk events, and the queries over
them (tickets per product against their trailing baseline with spikes flagged, first-response
and resolution time percentiles, SLA breach rate, CSAT by agent or product over time)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from crm_events import CloudEvent, EventPayload
from crm_runtime.db import Conn

TICKET_TYPES = frozenset(
    {
        "crm.service.ticket.opened",
        "crm.service.ticket.assigned",
        "crm.service.ticket.status_changed",
        "crm.service.ticket.updated",
        "crm.service.ticket.replied",
        "crm.service.ticket.resolved",
        "crm.service.ticket.reopened",
        "crm.service.ticket.closed",
        "crm.service.ticket.merged_into",
        "crm.service.ticket.rated",
        "crm.service.sla.breached",
    }
)
OPEN_STATUSES = ("new", "assigned", "in_progress", "waiting_on_customer")


class ServiceAnalyticsProjection:
    name = "analytics.service"

    def handles(self, event_type: str) -> bool:
        return event_type in TICKET_TYPES

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        d, at, t = event.data, event.time, event.type
        ticket = d["ticket_id"]
        if t == "crm.service.ticket.opened":
            await conn.execute(
                """
                INSERT INTO ticket_facts (ticket_id, customer_id, kind, priority, product,
                    channel, status, opened_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, 'new', $7, $7)
                ON CONFLICT (ticket_id) DO NOTHING
                """,
                ticket,
                d["customer_id"],
                d["kind"],
                d.get("priority") or "normal",
                d.get("product"),
                d.get("channel"),
                at,
            )
        elif t == "crm.service.ticket.assigned":
            await _set(
                conn,
                ticket,
                at,
                status=d.get("to_status"),
                queue_id=d.get("queue_id"),
                assignee_id=d.get("assignee_id"),
            )
        elif t == "crm.service.ticket.status_changed":
            await _set(conn, ticket, at, status=d["to_status"])
        elif t == "crm.service.ticket.updated":
            await _set(conn, ticket, at, priority=d.get("priority"), product=d.get("product"))
        elif t == "crm.service.ticket.replied":
            await conn.execute(
                "UPDATE ticket_facts SET first_response_at = LEAST(COALESCE(first_response_at,"
                " $2), $2), updated_at = $2 WHERE ticket_id = $1",
                ticket,
                at,
            )
        elif t == "crm.service.ticket.resolved":
            await _set(conn, ticket, at, status="resolved", resolved_at=at)
        elif t == "crm.service.ticket.reopened":
            await conn.execute(
                "UPDATE ticket_facts SET status = $3, resolved_at = NULL, updated_at = $2"
                " WHERE ticket_id = $1",
                ticket,
                at,
                d.get("to_status") or "in_progress",
            )
        elif t == "crm.service.ticket.closed":
            await _set(conn, ticket, at, status="closed", closed_at=at)
        elif t == "crm.service.ticket.merged_into":
            await _set(conn, ticket, at, status="merged")
        elif t == "crm.service.ticket.rated":
            await conn.execute(
                "UPDATE ticket_facts SET csat_score = $3, csat_at = $2, csat_agent_id ="
                " assignee_id, updated_at = $2 WHERE ticket_id = $1 AND csat_score IS NULL",
                ticket,
                at,
                d["score"],
            )
        elif t == "crm.service.sla.breached":
            await conn.execute(
                "INSERT INTO ticket_breaches (ticket_id, target, episode, breached_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                ticket,
                d["target"],
                d["episode"],
                at,
            )


COLUMNS = frozenset(
    {"status", "queue_id", "assignee_id", "priority", "product", "resolved_at", "closed_at"}
)


async def _set(conn: Conn, ticket: str, at: datetime, **values: Any) -> None:
    fields = {k: v for k, v in values.items() if v is not None and k in COLUMNS}
    if not fields:
        return
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, start=3))
    await conn.execute(
        f"UPDATE ticket_facts SET {sets}, updated_at = $2 WHERE ticket_id = $1",
        ticket,
        at,
        *fields.values(),
    )


# --- queries ---------------------------------------------------------------------------------


def spike_flags(
    counts: list[int], baseline_days: int, min_count: int, sigmas: float
) -> list[dict[str, Any]]:
    """Per day: the trailing baseline (mean and standard deviation of the previous
    ``baseline_days`` days) and whether the day's count is a spike: at least ``min_count`` and
    above mean + ``sigmas`` * sd (sd at least 1, so a flat history needs a real jump)."""
    out: list[dict[str, Any]] = []
    for i, n in enumerate(counts):
        window = counts[max(0, i - baseline_days) : i]
        if len(window) < baseline_days:
            out.append({"count": n, "baseline": None, "spike": False})
            continue
        mean = sum(window) / len(window)
        sd = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))
        threshold = mean + sigmas * max(sd, 1.0)
        out.append(
            {
                "count": n,
                "baseline": round(mean, 2),
                "threshold": round(threshold, 2),
                "spike": n >= min_count and n > threshold,
            }
        )
    return out


async def ticket_spikes(
    conn: Conn,
    start: date,
    end: date,
    *,
    baseline_days: int = 28,
    min_count: int = 5,
    sigmas: float = 3.0,
    product: str | None = None,
) -> list[dict[str, Any]]:
    """Tickets opened per product per day from ``start`` to ``end``, each day against its
    trailing baseline; only days in [start, end] are returned, the baseline reaches back."""
    first = start - timedelta(days=baseline_days)
    rows = await conn.fetch(
        """
        SELECT COALESCE(product, '(none)') AS product, (opened_at AT TIME ZONE 'UTC')::date AS day,
               count(*) AS n
        FROM ticket_facts
        WHERE opened_at >= $1 AND opened_at < $2 AND ($3::text IS NULL OR product = $3)
        GROUP BY 1, 2
        """,
        datetime.combine(first, time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
        product,
    )
    by_product: dict[str, dict[date, int]] = {}
    for r in rows:
        by_product.setdefault(r["product"], {})[r["day"]] = int(r["n"])
    days = [first + timedelta(days=i) for i in range((end - first).days + 1)]
    result = []
    for name in sorted(by_product):
        counts = [by_product[name].get(day, 0) for day in days]
        flags = spike_flags(counts, baseline_days, min_count, sigmas)
        series = [
            {"day": day.isoformat(), **f}
            for day, f in zip(days, flags, strict=True)
            if day >= start
        ]
        result.append(
            {"product": name, "days": series, "spikes": [s["day"] for s in series if s["spike"]]}
        )
    return result


async def response_times(
    conn: Conn, since: datetime | None, until: datetime | None, priority: str | None
) -> dict[str, Any]:
    """Percentiles (p50, p90, p95) of first-response and resolution time, in hours (wall
    clock; the SLA reports count business time)."""
    row = await conn.fetchrow(
        """
        SELECT
          count(*) AS tickets,
          count(first_response_at) AS responded,
          count(resolved_at) AS resolved,
          percentile_cont(ARRAY[0.5, 0.9, 0.95]) WITHIN GROUP (ORDER BY
            extract(epoch FROM first_response_at - opened_at) / 3600) AS first_response,
          (SELECT percentile_cont(ARRAY[0.5, 0.9, 0.95]) WITHIN GROUP (ORDER BY
            extract(epoch FROM f.resolved_at - f.opened_at) / 3600)
           FROM ticket_facts f
           WHERE f.resolved_at IS NOT NULL
             AND ($1::timestamptz IS NULL OR f.opened_at >= $1)
             AND ($2::timestamptz IS NULL OR f.opened_at < $2)
             AND ($3::text IS NULL OR f.priority = $3)) AS resolution
        FROM ticket_facts
        WHERE ($1::timestamptz IS NULL OR opened_at >= $1)
          AND ($2::timestamptz IS NULL OR opened_at < $2)
          AND ($3::text IS NULL OR priority = $3)
        """,
        since,
        until,
        priority,
    )
    assert row is not None

    def pct(values: list[float] | None) -> dict[str, float | None]:
        vals: list[float | None] = list(values) if values else [None, None, None]
        return {
            k: (round(float(v), 2) if v is not None else None)
            for k, v in zip(("p50", "p90", "p95"), vals, strict=True)
        }

    return {
        "tickets": row["tickets"],
        "responded": row["responded"],
        "resolved": row["resolved"],
        "unit": "hours",
        "first_response": pct(row["first_response"] if row["responded"] else None),
        "resolution": pct(row["resolution"] if row["resolved"] else None),
    }


async def breach_rate(conn: Conn, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """Share of the tickets opened in the period that breached an SLA target (any target)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS tickets,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ticket_breaches b
                                              WHERE b.ticket_id = f.ticket_id)) AS breached,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ticket_breaches b
                   WHERE b.ticket_id = f.ticket_id AND b.target = 'first_response'))
                   AS first_response_breached,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ticket_breaches b
                   WHERE b.ticket_id = f.ticket_id AND b.target = 'resolution'))
                   AS resolution_breached
        FROM ticket_facts f
        WHERE ($1::timestamptz IS NULL OR opened_at >= $1)
          AND ($2::timestamptz IS NULL OR opened_at < $2)
        """,
        since,
        until,
    )
    assert row is not None
    n = row["tickets"]
    return {
        "tickets": n,
        "breached": row["breached"],
        "breach_rate": round(row["breached"] / n, 4) if n else None,
        "first_response_breached": row["first_response_breached"],
        "resolution_breached": row["resolution_breached"],
    }


async def csat(
    conn: Conn,
    by: Literal["agent", "product"],
    interval: Literal["week", "month", "quarter"],
    since: datetime | None,
) -> list[dict[str, Any]]:
    """Average CSAT (1-5), count and the share of 4s and 5s, per agent or product and period."""
    group = "csat_agent_id" if by == "agent" else "product"
    rows = await conn.fetch(
        f"""
        SELECT COALESCE({group}, '(none)') AS key,
               date_trunc('{interval}', csat_at AT TIME ZONE 'UTC')::date AS period,
               count(*) AS ratings, avg(csat_score)::float AS average,
               (count(*) FILTER (WHERE csat_score >= 4))::float / count(*) AS satisfied
        FROM ticket_facts
        WHERE csat_score IS NOT NULL AND ($1::timestamptz IS NULL OR csat_at >= $1)
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        since,
    )
    return [
        {
            by: r["key"],
            "period": r["period"].isoformat(),
            "ratings": r["ratings"],
            "average": round(r["average"], 2),
            "satisfied_share": round(r["satisfied"], 4),
        }
        for r in rows
    ]


async def open_tickets(conn: Conn, customer_ids: list[str]) -> dict[str, int]:
    """Open tickets of a customer (all its merged ids), and open complaints among them."""
    row = await conn.fetchrow(
        "SELECT count(*) AS open, count(*) FILTER (WHERE kind = 'complaint') AS complaints"
        " FROM ticket_facts WHERE customer_id = ANY($1::text[]) AND status = ANY($2::text[])",
        customer_ids,
        list(OPEN_STATUSES),
    )
    assert row is not None
    return {"open": row["open"], "open_complaints": row["complaints"]}
