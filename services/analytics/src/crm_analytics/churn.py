"""Churn risk: a 0-100 score per customer with the factors that explain it, and the at-risk
list per owner. Factors (points add up, capped at 100):

- engagement recency: last touch in any context ≤ 30 days 0, ≤ 90 days +15, ≤ 180 days +30,
  older or never +40;
- open complaints: +15 each, at most +30;
- CSAT: average of the last three ratings ≤ 2 +20, below 3 +10;
- overdue invoices: +15 each, at most +30;
- falling purchases: won revenue in the last 180 days under half of the 180 days before +20
  (none at all after buying before +25).

Levels: high ≥ 60, medium ≥ 30, else low.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from crm_runtime.db import Conn


@dataclass(frozen=True)
class Factor:
    name: str
    points: int
    detail: str


@dataclass(frozen=True)
class ChurnRisk:
    score: int
    level: str
    factors: list[Factor] = field(default_factory=list)


@dataclass(frozen=True)
class Signals:
    last_touch: datetime | None
    open_complaints: int
    recent_csat: list[int]  # newest first
    overdue_invoices: int
    revenue_recent: Decimal
    revenue_before: Decimal


def churn_risk(now: datetime, s: Signals) -> ChurnRisk:
    factors: list[Factor] = []
    if s.last_touch is None:
        factors.append(Factor("engagement_recency", 40, "never touched"))
    else:
        days = (now - s.last_touch).days
        pts = 0 if days <= 30 else 15 if days <= 90 else 30 if days <= 180 else 40
        factors.append(Factor("engagement_recency", pts, f"last touch {days} days ago"))
    if s.open_complaints:
        factors.append(
            Factor(
                "open_complaints",
                min(30, 15 * s.open_complaints),
                f"{s.open_complaints} open complaint(s)",
            )
        )
    if s.recent_csat:
        last = s.recent_csat[:3]
        avg = sum(last) / len(last)
        pts = 20 if avg <= 2 else 10 if avg < 3 else 0
        factors.append(Factor("csat", pts, f"average CSAT {avg:.1f} over the last {len(last)}"))
    if s.overdue_invoices:
        factors.append(
            Factor(
                "overdue_invoices",
                min(30, 15 * s.overdue_invoices),
                f"{s.overdue_invoices} overdue invoice(s)",
            )
        )
    if s.revenue_before > 0:
        if s.revenue_recent == 0:
            factors.append(
                Factor("falling_purchases", 25, "bought before, nothing in the last 180 days")
            )
        elif s.revenue_recent < s.revenue_before / 2:
            share = s.revenue_recent / s.revenue_before
            factors.append(
                Factor(
                    "falling_purchases",
                    20,
                    f"won revenue down to {share:.0%} of the 180 days before",
                )
            )
    score = max(0, min(100, sum(f.points for f in factors)))
    level = "high" if score >= 60 else "medium" if score >= 30 else "low"
    return ChurnRisk(score, level, [f for f in factors if f.points])


async def signals(conn: Conn, ids: list[str], now: datetime) -> Signals:
    """Everything the score needs for one customer (all the ids that are it)."""
    last = await conn.fetchval(
        "SELECT max(last_touch_at) FROM customers WHERE customer_id = ANY($1::text[])", ids
    )
    complaints = await conn.fetchval(
        "SELECT count(*) FROM ticket_facts WHERE customer_id = ANY($1::text[]) AND kind ="
        " 'complaint' AND status IN ('new', 'assigned', 'in_progress', 'waiting_on_customer')",
        ids,
    )
    csat = [
        r["csat_score"]
        for r in await conn.fetch(
            "SELECT csat_score FROM ticket_facts WHERE customer_id = ANY($1::text[])"
            " AND csat_score IS NOT NULL ORDER BY csat_at DESC LIMIT 3",
            ids,
        )
    ]
    overdue = await conn.fetchval(
        "SELECT count(*) FROM customer_invoices WHERE customer_id = ANY($1::text[])"
        " AND overdue AND status NOT IN ('paid', 'void')",
        ids,
    )
    half = timedelta(days=180)
    row = await conn.fetchrow(
        "SELECT COALESCE(sum(won_base) FILTER (WHERE won_at > $2), 0) AS recent,"
        " COALESCE(sum(won_base) FILTER (WHERE won_at <= $2 AND won_at > $3), 0) AS before"
        " FROM funnel_deals WHERE customer_id = ANY($1::text[]) AND won_at IS NOT NULL",
        ids,
        now - half,
        now - 2 * half,
    )
    assert row is not None
    return Signals(
        last_touch=last,
        open_complaints=int(complaints or 0),
        recent_csat=csat,
        overdue_invoices=int(overdue or 0),
        revenue_recent=Decimal(row["recent"]),
        revenue_before=Decimal(row["before"]),
    )


def as_json(risk: ChurnRisk) -> dict[str, Any]:
    return {
        "score": risk.score,
        "level": risk.level,
        "factors": [{"name": f.name, "points": f.points, "detail": f.detail} for f in risk.factors],
    }


async def at_risk(
    conn: Conn, now: datetime, owner_id: str | None, min_score: int, limit: int
) -> list[dict[str, Any]]:
    """Owned customers (contacts and accounts that stand for themselves, not merged away),
    scored, highest risk first; ``owner_id`` narrows to one owner."""
    from crm_analytics.timeline import customer_ids

    rows = await conn.fetch(
        """
        SELECT c.customer_id, c.display_name, c.owner_id, c.kind
        FROM customers c
        WHERE c.owner_id IS NOT NULL AND c.kind IN ('contact', 'account')
          AND ($1::text IS NULL OR c.owner_id = $1)
          AND NOT EXISTS (SELECT 1 FROM customer_links l WHERE l.alias_id = c.customer_id)
        ORDER BY c.customer_id
        """,
        owner_id,
    )
    out: list[dict[str, Any]] = []
    for r in rows:
        _, ids = await customer_ids(conn, r["customer_id"])
        risk = churn_risk(now, await signals(conn, ids, now))
        if risk.score >= min_score:
            out.append(
                {
                    "customer_id": r["customer_id"],
                    "display_name": r["display_name"],
                    "kind": r["kind"],
                    "owner_id": r["owner_id"],
                    **as_json(risk),
                }
            )
    out.sort(key=lambda x: (-x["score"], x["customer_id"]))
    return out[:limit]
