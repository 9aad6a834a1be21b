"""The analytical sales CRM: deal history from the sales events, and the queries over it
(pipeline by stage / owner / region, forecast per quarter against last year, win rate and cycle
length, time in stage and stage conversion, account coverage) — now or as of any past time.

The deal projection is temporal. Every deal event is kept in ``deal_events``; each state of a
deal is a ``deal_versions`` row valid over ``[valid_from, valid_to)`` in event time, made by one
event. Events are ordered by (event time, stream version, arrival). An event that arrives after
later ones splits the version it falls in: the versions from that point on are folded again from
the kept events, so late and out-of-order delivery give the same history as in-order delivery.
``as_of=t`` reads the versions with ``valid_from <= t < valid_to``; now reads ``valid_to IS NULL``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from crm_events import CloudEvent, EventPayload
from crm_events.money import base_factor_sql
from crm_runtime.db import Conn

OPENED = "crm.sales.deal.opened"
STAGE_CHANGED = "crm.sales.deal.stage_changed"
UPDATED = "crm.sales.deal.updated"
WON = "crm.sales.deal.won"
LOST = "crm.sales.deal.lost"
DEAL_TYPES = frozenset(
    {
        OPENED,
        STAGE_CHANGED,
        UPDATED,
        WON,
        LOST,
        "crm.sales.deal.assigned",
        "crm.sales.deal.reassigned",
    }
)

# The state a version holds (every deal_versions column but the version's own bookkeeping).
STATE = (
    "customer_id", "name", "owner_id", "team_id", "pipeline_id", "stage", "status", "probability",
    "amount_minor", "currency", "exchange_rate", "base_currency", "expected_close", "source",
    "lost_reason", "opened_at", "closed_at", "lines", "stage_seq", "stage_entered_at",
    "stage_left_at",
)  # fmt: skip
State = dict[str, Any]
Key = tuple[datetime, int, int]  # (event time, stream version, arrival)


def fold(state: State | None, event_type: str, d: Mapping[str, Any], at: datetime) -> State | None:
    """The deal's state after one event (pure). None until the deal was opened."""
    if event_type == OPENED:
        if state is not None:
            return state  # opened twice: the first stands
        return {
            "customer_id": d["customer_id"],
            "name": d["name"],
            "owner_id": d.get("owner_id"),
            "team_id": d.get("team_id"),
            "pipeline_id": d["pipeline_id"],
            "stage": d["stage"],
            "status": "open",
            "probability": d["probability"],
            "amount_minor": d["amount_minor"],
            "currency": d["currency"],
            "exchange_rate": Decimal(d["exchange_rate"]),
            "base_currency": d["base_currency"],
            "expected_close": _date(d.get("expected_close")),
            "source": d.get("source"),
            "lost_reason": None,
            "opened_at": at,
            "closed_at": None,
            "lines": lines_of(d.get("lines") or []),
            "stage_seq": 1,
            "stage_entered_at": at,
            "stage_left_at": None,
        }
    if state is None:
        return None  # an event about a deal not opened (yet): kept, folded once it is
    s = dict(state)
    if event_type == STAGE_CHANGED:
        s.update(
            stage=d["to_stage"],
            probability=d["probability"],
            stage_seq=s["stage_seq"] + 1,
            stage_entered_at=at,
            stage_left_at=None,
        )
    elif event_type == UPDATED:
        changed = set(d["changed"])
        if changed & {"amount_minor", "currency", "exchange_rate"}:
            if d.get("amount_minor") is not None:
                s["amount_minor"] = d["amount_minor"]
            if d.get("currency") is not None:
                s["currency"] = d["currency"]
            if d.get("exchange_rate") is not None:
                s["exchange_rate"] = Decimal(d["exchange_rate"])
        if "expected_close" in changed:
            s["expected_close"] = _date(d.get("expected_close"))
        if "lines" in changed:
            s["lines"] = lines_of(d.get("lines") or [])
        if "name" in changed and d.get("name"):
            s["name"] = d["name"]
    elif event_type in (WON, LOST):
        lost = event_type == LOST
        s.update(status="lost" if lost else "won", closed_at=at)
        s["lost_reason"] = d.get("reason") if lost else None
        if s["stage_left_at"] is None and s["stage"] != d.get("stage"):
            s["stage_left_at"] = at  # closing from another stage leaves the one it was in
    else:  # assigned / reassigned
        s.update(owner_id=d.get("owner_id"), team_id=d.get("team_id"))
    return s


def lines_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "product_id": line.get("product_id"),
            "name": line["name"],
            "amount_minor": int(line["quantity"]) * int(line["unit_price_minor"]),
        }
        for line in lines
    ]


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    return date.fromisoformat(value) if isinstance(value, str) else None


class SalesAnalyticsProjection:
    name = "analytics.sales"

    def handles(self, event_type: str) -> bool:
        return event_type in DEAL_TYPES

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        await self.apply_batch(conn, [(event, payload)])

    async def apply_batch(self, conn: Conn, items: list[tuple[CloudEvent, EventPayload]]) -> None:
        by_deal: dict[str, list[tuple[CloudEvent, EventPayload]]] = {}
        for event, payload in items:
            by_deal.setdefault(str(event.data["deal_id"]), []).append((event, payload))
        for deal, events in by_deal.items():
            await _apply_deal(conn, deal, events)


async def _apply_deal(conn: Conn, deal: str, events: list[tuple[CloudEvent, EventPayload]]) -> None:
    """Keep the events, then fold the versions again from the earliest new event on."""
    kept = await conn.fetch(
        """
        INSERT INTO deal_events (deal_id, event_id, occurred_at, stream_version, event_type, data)
        SELECT $1, e.id, e.at, e.v, e.t, e.d::jsonb
        FROM unnest($2::uuid[], $3::timestamptz[], $4::integer[], $5::text[], $6::text[])
             WITH ORDINALITY AS e(id, at, v, t, d, n)
        ORDER BY e.n
        ON CONFLICT DO NOTHING
        RETURNING occurred_at, stream_version, arrival
        """,
        deal,
        [e.id for e, _ in events],
        [e.time for e, _ in events],
        [e.streamversion for e, _ in events],
        [e.type for e, _ in events],
        [json.dumps(p.model_dump(mode="json")) for _, p in events],
    )
    if not kept:
        return
    split: Key = min((r["occurred_at"], r["stream_version"], r["arrival"]) for r in kept)
    base = await conn.fetchrow(
        "SELECT * FROM deal_versions WHERE deal_id = $1"
        " AND (valid_from, stream_version, arrival) < ($2, $3, $4)"
        " ORDER BY valid_from DESC, stream_version DESC, arrival DESC LIMIT 1",
        deal,
        *split,
    )
    later = await conn.fetch(
        "SELECT event_id, occurred_at, stream_version, arrival, event_type, data FROM deal_events"
        " WHERE deal_id = $1 AND (occurred_at, stream_version, arrival) >= ($2, $3, $4)"
        " ORDER BY occurred_at, stream_version, arrival",
        deal,
        *split,
    )
    await conn.execute(
        "DELETE FROM deal_versions WHERE deal_id = $1"
        " AND (valid_from, stream_version, arrival) >= ($2, $3, $4)",
        deal,
        *split,
    )
    state: State | None = None
    if base is not None:
        state = {c: base[c] for c in STATE}
        state["lines"] = json.loads(base["lines"])
    folded: list[tuple[Any, State]] = []
    for e in later:
        state = fold(state, e["event_type"], json.loads(e["data"]), e["occurred_at"])
        if state is not None:
            folded.append((e, state))
    if not folded:
        return
    starts = [e["occurred_at"] for e, _ in folded]
    ends = [*starts[1:], None]  # each version ends where the next begins
    versions = [
        (deal, e["event_id"], e["event_type"], e["occurred_at"], end, e["stream_version"],
         e["arrival"], *(json.dumps(s[c]) if c == "lines" else s[c] for c in STATE))
        for (e, s), end in zip(folded, ends, strict=True)
    ]  # fmt: skip
    if base is not None:
        await conn.execute(
            "UPDATE deal_versions SET valid_to = $3 WHERE deal_id = $1 AND event_id = $2",
            deal,
            base["event_id"],
            starts[0],
        )
    columns = ("deal_id", "event_id", "event_type", "valid_from", "valid_to", "stream_version",
               "arrival", *STATE)  # fmt: skip
    values = ", ".join(
        f"${i}::jsonb" if c == "lines" else f"${i}" for i, c in enumerate(columns, start=1)
    )
    await conn.executemany(
        f"INSERT INTO deal_versions ({', '.join(columns)}) VALUES ({values})", versions
    )


# --- queries (now, or as of a past time) --------------------------------------------------


def valid_at(alias: str, as_of: datetime | None, args: list[Any]) -> str:
    """The condition on ``alias`` (deal_versions) for the versions that stood at ``as_of``."""
    if as_of is None:
        return f"{alias}.valid_to IS NULL"
    args.append(as_of)
    p = f"${len(args)}::timestamptz"
    return f"{alias}.valid_from <= {p} AND ({alias}.valid_to IS NULL OR {alias}.valid_to > {p})"


# A deal version's amount in the base currency's minor unit: the rate is one major unit of the
# deal currency, so amount_minor x rate x 10^(base digits - currency digits) (crm_events.money).
_BASE_FACTOR = base_factor_sql("f.currency", "f.base_currency")
BASE_MINOR = f"f.amount_minor * f.exchange_rate * {_BASE_FACTOR}"

GROUPS = {
    "stage": "f.stage",
    "owner": "coalesce(f.owner_id, '(unassigned)')",
    "region": "coalesce(c.region, '(none)')",  # the customer's region today
    "pipeline": "f.pipeline_id",
}


async def pipeline(
    conn: Conn, group_by: str, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    """Open deals: count, amount and probability-weighted amount in the base currency."""
    key = GROUPS[group_by]
    args: list[Any] = []
    rows = await conn.fetch(
        f"""
        SELECT {key} AS key, count(*) AS deals,
               round(sum({BASE_MINOR})) AS amount_base_minor,
               round(sum({BASE_MINOR} * f.probability / 100.0)) AS weighted_base_minor
        FROM deal_versions f LEFT JOIN customers c ON c.customer_id = f.customer_id
        WHERE f.status = 'open' AND {valid_at("f", as_of, args)}
        GROUP BY 1 ORDER BY 1
        """,
        *args,
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
    conn: Conn,
    year: int,
    threshold: Decimal,
    product_id: str | None = None,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Per quarter: won so far + open deals expected to close, weighted; against what was won in
    the same quarter last year. A drop below (1 - threshold) of last year is flagged."""
    out = []
    for q in range(1, 5):
        start, end = quarter_bounds(year, q)
        last_start, last_end = quarter_bounds(year - 1, q)
        won = await _won(conn, start, end, product_id, as_of)
        last = await _won(conn, last_start, last_end, product_id, as_of)
        weighted = await _open_weighted(conn, start, end, product_id, as_of)
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


def _amount_expr(product_id: str | None, args: list[Any]) -> tuple[str, str]:
    """(amount expression, extra join) — per product, the product's line amounts."""
    if product_id is None:
        return BASE_MINOR, ""
    args.append(product_id)
    return (
        f"l.amount_minor * f.exchange_rate * {_BASE_FACTOR}",
        "JOIN LATERAL jsonb_to_recordset(f.lines) AS l(product_id text, amount_minor bigint)"
        f" ON l.product_id = ${len(args)}",
    )


async def _won(
    conn: Conn, start: date, end: date, product_id: str | None, as_of: datetime | None
) -> Decimal:
    args: list[Any] = [start, end]
    amount, join = _amount_expr(product_id, args)
    value = await conn.fetchval(
        f"SELECT coalesce(sum({amount}), 0) FROM deal_versions f {join}"
        f" WHERE {valid_at('f', as_of, args)}"
        " AND f.status = 'won' AND f.closed_at >= $1 AND f.closed_at < $2",
        *args,
    )
    return Decimal(value).quantize(Decimal(1))


async def _open_weighted(
    conn: Conn, start: date, end: date, product_id: str | None, as_of: datetime | None
) -> Decimal:
    args: list[Any] = [start, end]
    amount, join = _amount_expr(product_id, args)
    value = await conn.fetchval(
        f"SELECT coalesce(sum({amount} * f.probability / 100.0), 0)"
        f" FROM deal_versions f {join} WHERE {valid_at('f', as_of, args)}"
        " AND f.status = 'open' AND f.expected_close >= $1 AND f.expected_close < $2",
        *args,
    )
    return Decimal(value).quantize(Decimal(1))


async def win_rate(
    conn: Conn, since: datetime | None, as_of: datetime | None = None
) -> dict[str, Any]:
    args: list[Any] = [since]
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE status = 'won') AS won,
               count(*) FILTER (WHERE status = 'lost') AS lost,
               avg(extract(epoch FROM closed_at - opened_at) / 86400)
                   FILTER (WHERE status = 'won') AS won_cycle_days
        FROM deal_versions f
        WHERE {valid_at("f", as_of, args)} AND status <> 'open'
          AND ($1::timestamptz IS NULL OR closed_at >= $1)
        """,
        *args,
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


async def win_rate_by_month(
    conn: Conn, start: date, months: int, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    """Won and lost deals per calendar month of closing (UTC), ``months`` months from ``start``."""
    end = _add_months(start, months)
    args: list[Any] = [start, end]
    rows = await conn.fetch(
        f"""
        SELECT to_char(date_trunc('month', closed_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
               count(*) FILTER (WHERE status = 'won') AS won,
               count(*) FILTER (WHERE status = 'lost') AS lost
        FROM deal_versions f
        WHERE {valid_at("f", as_of, args)} AND status <> 'open'
          AND closed_at >= $1::date AT TIME ZONE 'UTC' AND closed_at < $2::date AT TIME ZONE 'UTC'
        GROUP BY 1
        """,
        *args,
    )
    found = {r["month"]: (int(r["won"]), int(r["lost"])) for r in rows}
    out = []
    for i in range(months):
        month = _add_months(start, i).strftime("%Y-%m")
        won, lost = found.get(month, (0, 0))
        rate = round(won / (won + lost), 4) if won + lost else None
        out.append({"month": month, "won": won, "lost": lost, "win_rate": rate})
    return out


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


async def stages(
    conn: Conn, pipeline_id: str, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    """Per stage: deals that entered it, how many went on to a later stage (a move to a lost
    stage is no conversion), time spent in it. Closing stages (won, lost) have no conversion.

    A stage is left when the deal enters the next one, or when closing leaves it."""
    args: list[Any] = [pipeline_id]
    known = "TRUE"
    if as_of is not None:
        args.append(as_of)
        known = "valid_from <= $2::timestamptz"
    rows = await conn.fetch(
        f"""
        WITH s AS (
            SELECT deal_id, stage_seq AS seq, min(stage) AS stage, min(pipeline_id) AS pipeline_id,
                   min(stage_entered_at) AS entered_at, max(stage_left_at) AS closed_left,
                   bool_or(status = 'lost') AS lost, bool_or(status IN ('won', 'lost')) AS closing
            FROM deal_versions WHERE {known}
            GROUP BY deal_id, stage_seq
        ), st AS (
            SELECT deal_id, seq, stage, pipeline_id, entered_at, closing,
                   coalesce(lead(entered_at) OVER w, closed_left) AS left_at,
                   lead(seq) OVER w IS NOT NULL AND NOT coalesce(lead(lost) OVER w, false) AS moved
            FROM s WINDOW w AS (PARTITION BY deal_id ORDER BY seq)
        )
        SELECT stage, bool_and(closing) AS closing,
               count(DISTINCT deal_id) AS entered,
               count(DISTINCT deal_id) FILTER (WHERE moved) AS moved_on,
               avg(extract(epoch FROM left_at - entered_at))
                   FILTER (WHERE left_at IS NOT NULL) AS avg_seconds
        FROM st WHERE pipeline_id = $1
        GROUP BY stage
        ORDER BY min(seq), stage
        """,
        *args,
    )
    return [
        {
            "stage": r["stage"],
            "entered": r["entered"],
            "moved_on": r["moved_on"],
            "conversion": round(r["moved_on"] / r["entered"], 4)
            if r["entered"] and not r["closing"]
            else None,
            "avg_days_in_stage": round(float(r["avg_seconds"]) / 86400, 3)
            if r["avg_seconds"] is not None
            else None,
        }
        for r in rows
    ]


async def coverage(
    conn: Conn, now: datetime, untouched_days: int, as_of: datetime | None = None
) -> dict[str, Any]:
    """Accounts per owner, and the ones nobody touched for ``untouched_days`` (or ever).

    As of a past time: the accounts created by then, their owner then and their last touch
    before then, from the timeline (names and tiers are today's)."""
    if as_of is not None:
        return await _coverage_as_of(conn, as_of, untouched_days)
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


async def _coverage_as_of(conn: Conn, as_of: datetime, untouched_days: int) -> dict[str, Any]:
    from crm_analytics.customers import TOUCH_TYPES

    cutoff = as_of - timedelta(days=untouched_days)
    accounts = await conn.fetch(
        """
        WITH acc AS (
            SELECT DISTINCT customer_id FROM timeline
            WHERE event_type = 'crm.sales.account.created' AND occurred_at <= $1
        ), own AS (
            SELECT DISTINCT ON (t.customer_id) t.customer_id, t.data ->> 'owner_id' AS owner_id
            FROM timeline t JOIN acc USING (customer_id)
            WHERE t.event_type IN ('crm.sales.account.created', 'crm.sales.account.reassigned')
              AND t.occurred_at <= $1
            ORDER BY t.customer_id, t.occurred_at DESC, t.stream_version DESC
        ), touch AS (
            SELECT t.customer_id,
                   max(CASE WHEN t.event_type = 'crm.sales.activity.logged'
                            THEN coalesce((t.data ->> 'occurred_at')::timestamptz, t.occurred_at)
                            ELSE t.occurred_at END) AS last_touch_at
            FROM timeline t JOIN acc USING (customer_id)
            WHERE t.event_type = ANY($2::text[]) AND t.occurred_at <= $1
            GROUP BY t.customer_id
        )
        SELECT acc.customer_id, c.display_name, own.owner_id, c.tier, touch.last_touch_at
        FROM acc LEFT JOIN own USING (customer_id) LEFT JOIN touch USING (customer_id)
                 LEFT JOIN customers c USING (customer_id)
        """,
        as_of,
        sorted(TOUCH_TYPES),
    )
    owners: dict[str, dict[str, Any]] = {}
    quiet = []
    for r in accounts:
        owner = r["owner_id"] or "(unassigned)"
        row = owners.setdefault(owner, {"owner": owner, "accounts": 0, "untouched": 0})
        row["accounts"] += 1
        if r["last_touch_at"] is None or r["last_touch_at"] < cutoff:
            row["untouched"] += 1
            quiet.append(r)
    quiet.sort(key=lambda r: (r["last_touch_at"] is not None, r["last_touch_at"], r["customer_id"]))
    return {
        "untouched_days": untouched_days,
        "owners": [owners[k] for k in sorted(owners)],
        "untouched_accounts": [
            {
                **dict(r),
                "last_touch_at": r["last_touch_at"].isoformat() if r["last_touch_at"] else None,
            }
            for r in quiet[:200]
        ],
    }
