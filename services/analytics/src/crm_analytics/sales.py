"""The analytical sales CRM: deal facts from the sales events, and the queries over them
(pipeline by stage / owner / region, forecast per quarter against last year, win rate and cycle
length, time in stage and stage conversion)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from crm_events import CloudEvent, EventPayload
from crm_runtime.db import Conn

DEAL_TYPES = frozenset(
    {
        "crm.sales.deal.opened",
        "crm.sales.deal.stage_changed",
        "crm.sales.deal.updated",
        "crm.sales.deal.won",
        "crm.sales.deal.lost",
        "crm.sales.deal.assigned",
        "crm.sales.deal.reassigned",
    }
)


class SalesAnalyticsProjection:
    name = "analytics.sales"

    def handles(self, event_type: str) -> bool:
        return event_type in DEAL_TYPES

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        d, at = event.data, event.time
        deal = d["deal_id"]
        if event.type == "crm.sales.deal.opened":
            await conn.execute(
                """
                INSERT INTO deal_facts (deal_id, customer_id, owner_id, team_id, pipeline_id,
                    stage, status, probability, amount_minor, currency, exchange_rate,
                    base_currency, expected_close, source, opened_at)
                VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (deal_id) DO NOTHING
                """,
                deal,
                d["customer_id"],
                d.get("owner_id"),
                d.get("team_id"),
                d["pipeline_id"],
                d["stage"],
                d["probability"],
                d["amount_minor"],
                d["currency"],
                Decimal(d["exchange_rate"]),
                d["base_currency"],
                _date(d.get("expected_close")),
                d.get("source"),
                at,
            )
            await _lines(conn, deal, d.get("lines") or [])
            await conn.execute(
                "INSERT INTO deal_stages (deal_id, seq, stage, entered_at) VALUES ($1, 1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                deal,
                d["stage"],
                at,
            )
        elif event.type == "crm.sales.deal.stage_changed":
            await conn.execute(
                "UPDATE deal_facts SET stage = $2, probability = $3 WHERE deal_id = $1",
                deal,
                d["to_stage"],
                d["probability"],
            )
            seq = await conn.fetchval(
                "UPDATE deal_stages SET left_at = $2 WHERE deal_id = $1 AND left_at IS NULL"
                " RETURNING seq",
                deal,
                at,
            )
            await conn.execute(
                "INSERT INTO deal_stages (deal_id, seq, stage, entered_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                deal,
                (seq or 0) + 1,
                d["to_stage"],
                at,
            )
        elif event.type == "crm.sales.deal.updated":
            changed = set(d["changed"])
            if changed & {"amount_minor", "currency", "exchange_rate"}:
                await conn.execute(
                    "UPDATE deal_facts SET amount_minor = $2, currency = $3, exchange_rate = $4"
                    " WHERE deal_id = $1",
                    deal,
                    d["amount_minor"],
                    d["currency"],
                    Decimal(d["exchange_rate"]),
                )
            if "expected_close" in changed:
                await conn.execute(
                    "UPDATE deal_facts SET expected_close = $2 WHERE deal_id = $1",
                    deal,
                    _date(d.get("expected_close")),
                )
            if "lines" in changed:
                await conn.execute("DELETE FROM deal_lines WHERE deal_id = $1", deal)
                await _lines(conn, deal, d.get("lines") or [])
        elif event.type in ("crm.sales.deal.won", "crm.sales.deal.lost"):
            status = "won" if event.type.endswith("won") else "lost"
            await conn.execute(
                "UPDATE deal_facts SET status = $2, closed_at = $3, lost_reason = $4"
                " WHERE deal_id = $1",
                deal,
                status,
                at,
                d.get("reason") if status == "lost" else None,
            )
            await conn.execute(
                "UPDATE deal_stages SET left_at = $2 WHERE deal_id = $1 AND left_at IS NULL"
                " AND stage <> $3",
                deal,
                at,
                d.get("stage"),
            )
        else:  # assigned / reassigned
            await conn.execute(
                "UPDATE deal_facts SET owner_id = $2, team_id = $3 WHERE deal_id = $1",
                deal,
                d.get("owner_id"),
                d.get("team_id"),
            )


async def _lines(conn: Conn, deal: str, lines: list[dict[str, Any]]) -> None:
    await conn.executemany(
        "INSERT INTO deal_lines (deal_id, line_no, product_id, name, amount_minor)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [
            (
                deal,
                i,
                line.get("product_id"),
                line["name"],
                int(line["quantity"]) * int(line["unit_price_minor"]),
            )
            for i, line in enumerate(lines)
        ],
    )


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


# --- queries --------------------------------------------------------------------------------

GROUPS = {
    "stage": "f.stage",
    "owner": "coalesce(f.owner_id, '(unassigned)')",
    "region": "coalesce(c.region, '(none)')",
    "pipeline": "f.pipeline_id",
}


async def pipeline(conn: Conn, group_by: str) -> list[dict[str, Any]]:
    """Open deals: count, amount and probability-weighted amount in the base currency."""
    key = GROUPS[group_by]
    rows = await conn.fetch(
        f"""
        SELECT {key} AS key, count(*) AS deals,
               round(sum(f.amount_minor * f.exchange_rate)) AS amount_base_minor,
               round(sum(f.amount_minor * f.exchange_rate * f.probability / 100.0))
                   AS weighted_base_minor
        FROM deal_facts f LEFT JOIN customers c ON c.customer_id = f.customer_id
        WHERE f.status = 'open'
        GROUP BY 1 ORDER BY 1
        """
    )
    return [
        {
            "key": r["key"],
            "deals": r["deals"],
            "amount_base_minor": int(r["amount_base_minor"] or 0),
            "weighted_base_minor": int(r["weighted_base_minor"] or 0),
        }
        for r in rows
    ]


def quarter_of(d: date) -> int:
    return (d.month - 1) // 3 + 1


def quarter_bounds(year: int, quarter: int) -> tuple[date, date]:
    start = date(year, 3 * (quarter - 1) + 1, 1)
    end = date(year + (quarter == 4), (3 * quarter) % 12 + 1, 1)
    return start, end


async def forecast(
    conn: Conn, year: int, threshold: Decimal, product_id: str | None = None
) -> list[dict[str, Any]]:
    """Per quarter: won so far + open deals expected to close, weighted; against what was won in
    the same quarter last year. A drop below (1 - threshold) of last year is flagged."""
    out = []
    for q in range(1, 5):
        start, end = quarter_bounds(year, q)
        last_start, last_end = quarter_bounds(year - 1, q)
        won = await _won(conn, start, end, product_id)
        last = await _won(conn, last_start, last_end, product_id)
        weighted = await _open_weighted(conn, start, end, product_id)
        expected = won + weighted
        change = (expected - last) / last if last else None
        out.append(
            {
                "quarter": f"{year}-Q{q}",
                "won_base_minor": int(won),
                "open_weighted_base_minor": int(weighted),
                "forecast_base_minor": int(expected),
                "last_year_won_base_minor": int(last),
                "change": float(round(change, 4)) if change is not None else None,
                "drop_flagged": change is not None and change < -threshold,
            }
        )
    return out


def _amount_expr(product_id: str | None) -> tuple[str, str]:
    """(amount expression, extra join) — per product, the product's line amounts."""
    if product_id is None:
        return "f.amount_minor * f.exchange_rate", ""
    return (
        "l.amount_minor * f.exchange_rate",
        "JOIN deal_lines l ON l.deal_id = f.deal_id AND l.product_id = $3",
    )


async def _won(conn: Conn, start: date, end: date, product_id: str | None) -> Decimal:
    amount, join = _amount_expr(product_id)
    args: list[Any] = [start, end] + ([product_id] if product_id else [])
    value = await conn.fetchval(
        f"SELECT coalesce(sum({amount}), 0) FROM deal_facts f {join}"
        " WHERE f.status = 'won' AND f.closed_at >= $1 AND f.closed_at < $2",
        *args,
    )
    return Decimal(value).quantize(Decimal(1))


async def _open_weighted(conn: Conn, start: date, end: date, product_id: str | None) -> Decimal:
    amount, join = _amount_expr(product_id)
    args: list[Any] = [start, end] + ([product_id] if product_id else [])
    value = await conn.fetchval(
        f"SELECT coalesce(sum({amount} * f.probability / 100.0), 0)"
        f" FROM deal_facts f {join}"
        " WHERE f.status = 'open' AND f.expected_close >= $1 AND f.expected_close < $2",
        *args,
    )
    return Decimal(value).quantize(Decimal(1))


async def win_rate(conn: Conn, since: datetime | None) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'won') AS won,
               count(*) FILTER (WHERE status = 'lost') AS lost,
               avg(extract(epoch FROM closed_at - opened_at) / 86400)
                   FILTER (WHERE status = 'won') AS won_cycle_days
        FROM deal_facts WHERE status <> 'open' AND ($1::timestamptz IS NULL OR closed_at >= $1)
        """,
        since,
    )
    assert row is not None  # an aggregate always returns one row
    won, lost = int(row["won"]), int(row["lost"])
    cycle = row["won_cycle_days"]
    return {
        "won": won,
        "lost": lost,
        "win_rate": round(won / (won + lost), 4) if won + lost else None,
        "avg_sales_cycle_days": round(float(cycle), 2) if cycle is not None else None,
    }


async def stages(conn: Conn, pipeline_id: str) -> list[dict[str, Any]]:
    """Per stage: deals that entered it, how many went on to a later stage, time spent in it."""
    rows = await conn.fetch(
        """
        SELECT s.stage,
               count(DISTINCT s.deal_id) AS entered,
               count(DISTINCT s.deal_id) FILTER (WHERE s.left_at IS NOT NULL
                   AND EXISTS (SELECT 1 FROM deal_stages n WHERE n.deal_id = s.deal_id
                               AND n.seq > s.seq)) AS moved_on,
               avg(extract(epoch FROM s.left_at - s.entered_at))
                   FILTER (WHERE s.left_at IS NOT NULL) AS avg_seconds
        FROM deal_stages s JOIN deal_facts f ON f.deal_id = s.deal_id
        WHERE f.pipeline_id = $1
        GROUP BY s.stage
        ORDER BY min(s.seq), s.stage
        """,
        pipeline_id,
    )
    return [
        {
            "stage": r["stage"],
            "entered": r["entered"],
            "moved_on": r["moved_on"],
            "conversion": round(r["moved_on"] / r["entered"], 4) if r["entered"] else None,
            "avg_days_in_stage": round(float(r["avg_seconds"]) / 86400, 3)
            if r["avg_seconds"] is not None
            else None,
        }
        for r in rows
    ]


async def coverage(conn: Conn, now: datetime, untouched_days: int) -> dict[str, Any]:
    """Accounts per owner, and the ones nobody touched for ``untouched_days`` (or ever)."""
    cutoff = now - timedelta(days=untouched_days)
    rows = await conn.fetch(
        """
        SELECT coalesce(owner_id, '(unassigned)') AS owner,
               count(*) AS accounts,
               count(*) FILTER (WHERE last_touch_at IS NULL OR last_touch_at < $1) AS untouched
        FROM customers WHERE kind = 'account'
        GROUP BY 1 ORDER BY 1
        """,
        cutoff,
    )
    quiet = await conn.fetch(
        """
        SELECT customer_id, display_name, owner_id, tier, last_touch_at FROM customers
        WHERE kind = 'account' AND (last_touch_at IS NULL OR last_touch_at < $1)
        ORDER BY last_touch_at NULLS FIRST, customer_id LIMIT 200
        """,
        cutoff,
    )
    return {
        "untouched_days": untouched_days,
        "owners": [dict(r) for r in rows],
        "untouched_accounts": [
            {
                **dict(r),
                "last_touch_at": r["last_touch_at"].isoformat() if r["last_touch_at"] else None,
            }
            for r in quiet
        ],
    }
