"""Segment re-evaluation over 100,000 profiles (issue 4), next to a hand-written SQL query.

Data (synthetic, seeded): N audience profiles in 8 countries, about ten website-activity rows
each (page views, product views in five categories — mostly the shopper's favourite one —,
searches, add-to-carts) over the last 14 days, and a purchase for one in ten — written with
COPY into a fresh marketing database (all its migrations), then ANALYZE. The rule is the
issue's example::

    country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased

Figures (median of the rounds):

- *full re-evaluation, nothing changed*: ``evaluate_segment`` over every profile — the compiled
  rule and the set diff against the stored members in one statement (what the scheduler's
  reconcile and ``POST /segments/{id}/evaluate`` run). Baseline: one hand-written SQL query
  that selects the same members (JOIN/GROUP BY/HAVING, NOT EXISTS), fetching the ids and
  writing nothing — what it costs just to know the answer.
- *first evaluation, every member enters*: the same, from an empty membership, so each member is
  inserted and gets its ``member_entered`` event (one append). Same baseline.
- *reference evaluator*: the same membership computed in Python by the reference evaluator over
  the rows loaded from the database (load + evaluate), against the same baseline — why the
  evaluation is set-based SQL.

All three results are checked to be the same set of customers.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.common import Figure
from crm_marketing.segments import adapters, rules
from crm_marketing.segments.application import DefineSegment, SegmentHandlers
from crm_marketing.segments.evaluate import CustomerFacts, evaluate
from crm_marketing.segments.membership import evaluate_segment
from crm_runtime import db
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata

RULE = 'country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased'
COUNTRIES = ["DE", "DE", "AT", "FR", "GB", "IT", "ES", "NL"]
CATEGORIES = ["phones", "phones", "laptops", "audio", "cameras", "tv"]
KINDS = ["page_view", "product_view", "product_view", "product_view", "search", "add_to_cart"]
BASELINE_SQL = """
SELECT p.customer_id FROM profiles p
JOIN (SELECT customer_id FROM web_activity
      WHERE customer_id IS NOT NULL AND kind = 'product_view' AND category = 'phones'
        AND occurred_at > $1
      GROUP BY customer_id HAVING count(*) >= 3) v ON v.customer_id = p.customer_id
WHERE p.country IN ('DE', 'AT')
  AND NOT EXISTS (SELECT 1 FROM purchases u WHERE u.customer_id = p.customer_id)
"""


async def _fresh(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = db.with_database(server_url, name)
    await db.migrate_url(url, ["crm_runtime", "crm_runtime.people", "crm_marketing"])
    return url


async def _load(conn: Conn, profiles: int, now: datetime, seed: int = 11) -> int:
    rnd = random.Random(seed)
    ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(profiles)]
    await conn.copy_records_to_table(
        "profiles",
        columns=["customer_id", "email", "first_name", "last_name", "country", "language"],
        records=[
            (cid, f"p{i}@example.com", "Pat", f"Example{i}", rnd.choice(COUNTRIES), "en")
            for i, cid in enumerate(ids)
        ],
    )
    activity = []
    for cid in ids:
        interest = rnd.choice(CATEGORIES)  # most of a shopper's product views are in one
        for _ in range(rnd.randint(4, 16)):
            kind = rnd.choice(KINDS)
            category = None
            if kind in ("product_view", "add_to_cart"):
                category = interest if rnd.random() < 0.8 else rnd.choice(CATEGORIES)
            activity.append(
                (
                    uuid.UUID(int=rnd.getrandbits(128), version=4),
                    f"v-{cid[:8]}",
                    cid,
                    kind,
                    "https://shop.example.com/p" if kind == "page_view" else None,
                    f"p-{rnd.randrange(500)}" if category else None,
                    category,
                    "usb-c phone" if kind == "search" else None,
                    now - timedelta(minutes=rnd.randrange(14 * 24 * 60)),
                )
            )
    await conn.copy_records_to_table(
        "web_activity",
        columns=[
            "event_id",
            "visitor_id",
            "customer_id",
            "kind",
            "url",
            "product_id",
            "category",
            "query",
            "occurred_at",
        ],
        records=activity,
    )
    await conn.copy_records_to_table(
        "purchases",
        columns=["purchase_id", "customer_id", "product_id", "category", "occurred_at"],
        records=[
            (str(uuid.uuid4()), cid, "p-1", rnd.choice(CATEGORIES), now - timedelta(days=30))
            for cid in ids
            if rnd.random() < 0.1
        ],
    )
    await conn.execute("ANALYZE")
    return len(activity)


async def _baseline(conn: Conn, now: datetime) -> tuple[float, set[str]]:
    start = time.perf_counter()
    rows = await conn.fetch(BASELINE_SQL, now - timedelta(days=7))
    return time.perf_counter() - start, {r["customer_id"] for r in rows}


async def _reference(conn: Conn, now: datetime) -> tuple[float, set[str]]:
    rule = rules.parse(RULE)
    start = time.perf_counter()
    activity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in await conn.fetch(
        "SELECT customer_id, kind, url, product_id, category, query, occurred_at"
        " FROM web_activity WHERE customer_id IS NOT NULL"
    ):
        activity[r["customer_id"]].append(dict(r))
    bought: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in await conn.fetch(
        "SELECT customer_id, product_id, category, occurred_at FROM purchases"
    ):
        bought[r["customer_id"]].append(dict(r))
    consents: dict[str, dict[str, str]] = defaultdict(dict)
    for r in await conn.fetch("SELECT customer_id, channel, status FROM consents"):
        consents[r["customer_id"]][r["channel"]] = r["status"]
    members = set()
    for p in await conn.fetch("SELECT * FROM profiles"):
        cid = p["customer_id"]
        facts = CustomerFacts(dict(p), activity.get(cid, []), bought.get(cid, []), consents[cid])
        if evaluate(rule, facts, now):
            members.add(cid)
    return time.perf_counter() - start, members


async def run(server_url: str, *, smoke: bool) -> list[Figure]:
    profiles = 5_000 if smoke else 100_000
    rounds = 1 if smoke else 3
    url = await _fresh(server_url, "bench_segments")
    pool = await db.create_pool(url, max_size=2)
    store = EventStore(pool, source="/crm/marketing")
    now = datetime.now(UTC)
    meta = Metadata(actor="bench")
    try:
        async with pool.acquire() as conn:
            rows = await _load(conn, profiles, now)
        steady, first, base, ref = [], [], [], []
        members = 0
        for n in range(rounds):  # interleaved, so drift hits all alike
            async with pool.acquire() as conn:
                seconds, want = await _baseline(conn, now)
                base.append(seconds)
                async with conn.transaction():
                    start = time.perf_counter()
                    cmd = DefineSegment(f"bench {n}", "dynamic", rules.parse(RULE))
                    segment, done = await SegmentHandlers(store).define(conn, cmd, meta, now)
                    first.append(time.perf_counter() - start)
                assert done is not None and done.entered == len(want) and done.left == 0
                got = {
                    r["customer_id"]
                    for r in await conn.fetch(
                        "SELECT customer_id FROM segment_members WHERE segment_id = $1",
                        segment.id,
                    )
                }
                assert got == want, "the segment and the hand-written query disagree"
                async with conn.transaction():
                    row = await adapters.get(conn, segment.id, lock=True)
                    assert row is not None
                    start = time.perf_counter()
                    again = await evaluate_segment(conn, store, row, now=now, metadata=meta)
                    steady.append(time.perf_counter() - start)
                assert (again.entered, again.left) == (0, 0)
                seconds, by_python = await _reference(conn, now)
                ref.append(seconds)
                assert by_python == want, "the reference evaluator and SQL disagree"
                members = len(want)
    finally:
        await pool.close()
    b = statistics.median(base) * 1000
    notes = (
        f"{profiles:,} profiles, {rows:,} web activity rows, {members:,} members;"
        f" median of {rounds}; the issue's example rule"
    )
    baseline_name = "hand-written SQL query selecting the same members, no writes"
    return [
        Figure(
            f"segment full re-evaluation, {profiles:,} profiles (nothing changed)",
            statistics.median(steady) * 1000,
            "ms",
            baseline_name,
            b,
            goal="report both",
            notes=notes + "; compiled rule + set diff against the members, one statement",
            samples=[s * 1000 for s in steady],
            baseline_samples=[s * 1000 for s in base],
        ),
        Figure(
            f"segment first evaluation, {profiles:,} profiles (every member enters)",
            statistics.median(first) * 1000,
            "ms",
            baseline_name,
            b,
            goal="report both",
            notes=notes + "; inserts the members and appends one member_entered event each",
            samples=[s * 1000 for s in first],
            baseline_samples=[s * 1000 for s in base],
        ),
        Figure(
            f"segment membership by the Python reference evaluator, {profiles:,} profiles",
            statistics.median(ref) * 1000,
            "ms",
            baseline_name,
            b,
            notes=notes + "; loads every row into Python, then evaluates (why SQL does it)",
            samples=[s * 1000 for s in ref],
            baseline_samples=[s * 1000 for s in base],
        ),
    ]
