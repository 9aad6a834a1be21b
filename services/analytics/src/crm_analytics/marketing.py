"""The analytical marketing CRM: message, lead and deal facts, and the queries over them — the
campaign funnel (sent → delivered → opened → clicked → lead → deal → won revenue), open rates
per message with underperformers flagged, and lead volume and quality by source."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from crm_analytics.pipelined import apply_pipelined
from crm_events import CloudEvent, EventPayload
from crm_events.money import MINOR_DIGITS, minor_digits
from crm_runtime.db import Conn

# The currencies whose minor unit is not 2 decimals, for SQL (the others: 2).
_MINOR_DIGITS_JSON = json.dumps(dict(MINOR_DIGITS))

MESSAGE_STEPS = {
    "crm.marketing.message.sent": "sent_at",
    "crm.marketing.message.delivered": "delivered_at",
    "crm.marketing.message.bounced": "bounced_at",
    "crm.marketing.message.opened": "opened_at",
    "crm.marketing.message.clicked": "clicked_at",
    "crm.marketing.message.unsubscribed": "unsubscribed_at",
}
LEAD_TYPES = frozenset(
    {
        "crm.sales.lead.captured",
        "crm.sales.lead.qualified",
        "crm.sales.lead.disqualified",
        "crm.sales.lead.converted",
        "crm.sales.deal.opened",
        "crm.sales.deal.won",
    }
)


class MarketingAnalyticsProjection:
    name = "analytics.marketing"

    def handles(self, event_type: str) -> bool:
        return event_type in MESSAGE_STEPS or event_type in LEAD_TYPES

    async def apply_batch(self, conn: Conn, items: list[tuple[CloudEvent, EventPayload]]) -> None:
        """As ``apply`` one by one, in few round trips (``pipelined``): each event writes one
        row, its message's, lead's or deal's."""
        await apply_pipelined(conn, items, self.apply, _rows)

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        d, at, t = event.data, event.time, event.type
        if t in MESSAGE_STEPS:
            column = MESSAGE_STEPS[t]  # a fixed column name from the map above
            await conn.execute(
                f"""
                INSERT INTO message_facts (message_id, customer_id, campaign_id, trigger_id,
                    template_id, channel, {column})
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (message_id) DO UPDATE SET
                    {column} = LEAST(COALESCE(message_facts.{column}, EXCLUDED.{column}),
                                     EXCLUDED.{column}),
                    template_id = COALESCE(message_facts.template_id, EXCLUDED.template_id)
                """,
                d["message_id"],
                d["customer_id"],
                d.get("campaign_id"),
                d.get("trigger_id"),
                d.get("template_id"),
                d["channel"],
                at,
            )
        elif t == "crm.sales.lead.captured":
            await conn.execute(
                """
                INSERT INTO lead_facts (lead_id, customer_id, source, source_detail,
                    utm_campaign, captured_at)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (lead_id) DO NOTHING
                """,
                d["lead_id"],
                d["customer_id"],
                d["source"],
                d.get("source_detail"),
                (d.get("attribution") or {}).get("utm_campaign"),
                at,
            )
        elif t == "crm.sales.lead.qualified":
            await conn.execute(
                "UPDATE lead_facts SET qualified_at = COALESCE(qualified_at, $2)"
                " WHERE lead_id = $1",
                d["lead_id"],
                at,
            )
        elif t == "crm.sales.lead.disqualified":
            await conn.execute(
                "UPDATE lead_facts SET disqualified_at = $2 WHERE lead_id = $1", d["lead_id"], at
            )
        elif t == "crm.sales.lead.converted":
            await conn.execute(
                "UPDATE lead_facts SET converted_at = $2, deal_id = $3 WHERE lead_id = $1",
                d["lead_id"],
                at,
                d.get("deal_id"),
            )
        elif t == "crm.sales.deal.opened":
            await conn.execute(
                """
                INSERT INTO funnel_deals (deal_id, customer_id, opened_at, currency,
                    exchange_rate, base_currency)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (deal_id) DO NOTHING
                """,
                d["deal_id"],
                d["customer_id"],
                at,
                d["currency"],
                Decimal(d["exchange_rate"]),
                d["base_currency"],
            )
        elif t == "crm.sales.deal.won":
            digits = minor_digits(d["currency"])  # the rate is per major unit
            # In major units of the base currency, to its minor unit (the row knows the base).
            await conn.execute(
                "UPDATE funnel_deals SET won_at = $2,"
                " won_base = round($3::numeric / $4 * exchange_rate,"
                " coalesce(($5::jsonb ->> base_currency)::int, 2)) WHERE deal_id = $1",
                d["deal_id"],
                at,
                d["amount_minor"],
                10**digits,
                _MINOR_DIGITS_JSON,
            )


def _rows(event: CloudEvent) -> list[str] | None:
    """The one row ``apply`` writes for ``event``: its message's, lead's or deal's."""
    d, t = event.data, event.type
    if t in MESSAGE_STEPS:
        return [f"message:{d['message_id']}"]
    if t.startswith("crm.sales.lead."):
        return [f"lead:{d['lead_id']}"]
    if t.startswith("crm.sales.deal."):
        return [f"deal:{d['deal_id']}"]
    return None


# Every id that stands for another (merges, conversions, identifications) mapped to its root.
ROOTS = """
WITH RECURSIVE chain(alias, root, depth) AS (
    SELECT alias_id, customer_id, 1 FROM customer_links
    UNION
    SELECT c.alias, l.customer_id, c.depth + 1
    FROM chain c JOIN customer_links l ON l.alias_id = c.root
    WHERE c.depth < 20
)
SELECT DISTINCT ON (alias) alias, root FROM chain ORDER BY alias, depth DESC
"""


async def _roots(conn: Conn) -> dict[str, str]:
    return {r["alias"]: r["root"] for r in await conn.fetch(ROOTS)}


async def funnel(conn: Conn, campaign_id: str, window_days: int = 30) -> dict[str, Any]:
    """One campaign's funnel. Messages count per step (e-mail: delivered = sent - bounced, as
    SMTP reports no delivery); a lead counts when a recipient who
    clicked got a lead captured within ``window_days`` after the click, or a lead carries the
    campaign as ``utm_campaign``; deals are those opened for the campaign's clicked or attributed
    customers within the window (after the click or the lead); won revenue sums the won ones, in
    the base currency. Customers are compared by their root id (merges, conversions and
    identifications followed)."""
    steps = await conn.fetchrow(
        """
        SELECT count(sent_at) AS sent, count(delivered_at) AS delivered,
               count(bounced_at) AS bounced, count(opened_at) AS opened,
               count(clicked_at) AS clicked, count(unsubscribed_at) AS unsubscribed,
               min(channel) AS channel
        FROM message_facts WHERE campaign_id = $1
        """,
        campaign_id,
    )
    assert steps is not None
    roots = await _roots(conn)

    def root(customer: str) -> str:
        return roots.get(customer, customer)

    window = timedelta(days=window_days)
    clicks: dict[str, datetime] = {}
    for r in await conn.fetch(
        "SELECT customer_id, min(clicked_at) AS at FROM message_facts"
        " WHERE campaign_id = $1 AND clicked_at IS NOT NULL GROUP BY customer_id",
        campaign_id,
    ):
        key = root(r["customer_id"])
        clicks[key] = min(clicks.get(key, r["at"]), r["at"])
    leads: dict[str, datetime] = {}
    for r in await conn.fetch(
        "SELECT customer_id, captured_at, utm_campaign FROM lead_facts"
        " WHERE utm_campaign = $1 OR customer_id = ANY($2::text[])",
        campaign_id,
        [*clicks, *(a for a, rt in roots.items() if rt in clicks)],
    ):
        key = root(r["customer_id"])
        clicked = clicks.get(key)
        attributed = r["utm_campaign"] == campaign_id
        in_window = clicked is not None and clicked <= r["captured_at"] <= clicked + window
        if attributed or in_window:
            leads[key] = min(leads.get(key, r["captured_at"]), r["captured_at"])
    starts = {**clicks, **leads}
    deals, won, revenue = 0, 0, Decimal(0)
    currency: str | None = None
    interested = list(starts) + [a for a, rt in roots.items() if rt in starts]
    for r in await conn.fetch(
        "SELECT customer_id, opened_at, won_base, base_currency FROM funnel_deals"
        " WHERE customer_id = ANY($1::text[])",
        interested,
    ):
        start = starts.get(root(r["customer_id"]))
        if start is None or not (start <= r["opened_at"] <= start + window):
            continue
        deals += 1
        currency = r["base_currency"]
        if r["won_base"] is not None:
            won += 1
            revenue += r["won_base"]
    sent = steps["sent"]
    # E-mail has no delivery reports: a sent message that did not bounce counts as delivered.
    delivered = sent - steps["bounced"] if steps["channel"] == "email" else steps["delivered"]
    return {
        "campaign_id": campaign_id,
        "channel": steps["channel"],
        "window_days": window_days,
        "steps": [
            {"step": "sent", "count": sent},
            {"step": "delivered", "count": delivered},
            {"step": "opened", "count": steps["opened"]},
            {"step": "clicked", "count": steps["clicked"]},
            {"step": "lead", "count": len(leads)},
            {"step": "deal", "count": deals},
            {"step": "won", "count": won},
        ],
        "bounced": steps["bounced"],
        "unsubscribed": steps["unsubscribed"],
        "won_revenue": str(revenue),
        "currency": currency,
        "rates": {
            "delivery": _rate(delivered, sent),
            "open": _rate(steps["opened"], delivered or sent),
            "click": _rate(steps["clicked"], delivered or sent),
        },
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def flag_underperformers(
    rates: dict[str, float], min_ratio: float = 0.7
) -> dict[str, dict[str, Any]]:
    """Each message against the *others* (leave-one-out): flagged when its open rate is below
    ``min_ratio`` times the median of the others' rates. A message alone is never flagged."""
    out: dict[str, dict[str, Any]] = {}
    for key, rate in rates.items():
        others = [r for k, r in rates.items() if k != key]
        if not others:
            out[key] = {"others_median": None, "underperforming": False}
            continue
        median = statistics.median(others)
        out[key] = {
            "others_median": round(median, 4),
            "underperforming": median > 0 and rate < min_ratio * median,
        }
    return out


async def open_rates(
    conn: Conn, since: datetime | None, min_sent: int = 20, min_ratio: float = 0.7
) -> list[dict[str, Any]]:
    """Open rate per message (a campaign's or trigger's template on a channel), each against
    the other messages of the same campaign when it has several, else of the same channel."""
    rows = await conn.fetch(
        """
        SELECT COALESCE(campaign_id, 'trigger:' || trigger_id) AS source, campaign_id,
               trigger_id, template_id, channel,
               count(sent_at) AS sent, count(opened_at) AS opened
        FROM message_facts
        WHERE sent_at IS NOT NULL AND ($1::timestamptz IS NULL OR sent_at >= $1)
        GROUP BY 1, 2, 3, 4, 5
        HAVING count(sent_at) >= $2
        ORDER BY 1, 4
        """,
        since,
        min_sent,
    )
    messages = [
        {
            "campaign_id": r["campaign_id"],
            "trigger_id": r["trigger_id"],
            "template_id": r["template_id"],
            "channel": r["channel"],
            "sent": r["sent"],
            "opened": r["opened"],
            "open_rate": round(r["opened"] / r["sent"], 4),
            "_key": f"{r['source']}|{r['template_id']}",
            "_source": r["source"],
        }
        for r in rows
    ]
    per_source: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        per_source.setdefault(m["_source"], []).append(m)
    for m in messages:
        siblings = per_source[m["_source"]]
        peers = (
            siblings if len(siblings) > 1 else [x for x in messages if x["channel"] == m["channel"]]
        )
        m["compared_with"] = "campaign" if len(siblings) > 1 else "channel"
        flags = flag_underperformers({x["_key"]: x["open_rate"] for x in peers}, min_ratio)
        m.update(flags[m["_key"]])
    for m in messages:
        del m["_key"], m["_source"]
    return messages


async def leads_by_source(conn: Conn, since: datetime | None) -> list[dict[str, Any]]:
    """Lead volume and quality per source: qualified, disqualified and converted shares, and
    the deals won from converted leads with their revenue."""
    rows = await conn.fetch(
        """
        SELECT l.source, count(*) AS leads,
               count(l.qualified_at) AS qualified, count(l.disqualified_at) AS disqualified,
               count(l.converted_at) AS converted,
               count(d.won_at) AS won, COALESCE(sum(d.won_base), 0) AS revenue,
               min(d.base_currency) AS currency
        FROM lead_facts l LEFT JOIN funnel_deals d ON d.deal_id = l.deal_id
        WHERE ($1::timestamptz IS NULL OR l.captured_at >= $1)
        GROUP BY l.source ORDER BY count(*) DESC, l.source
        """,
        since,
    )
    return [
        {
            "source": r["source"],
            "leads": r["leads"],
            "qualified": r["qualified"],
            "disqualified": r["disqualified"],
            "converted": r["converted"],
            "won": r["won"],
            "qualification_rate": _rate(r["qualified"], r["leads"]),
            "conversion_rate": _rate(r["converted"], r["leads"]),
            "win_rate": _rate(r["won"], r["leads"]),
            "won_revenue": str(r["revenue"]),
            "currency": r["currency"],
        }
        for r in rows
    ]
