"""The SQL compiler agrees with the reference evaluator, on random data in real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mks_strategies import behaviours, leaves, rules

from crm_marketing.segments import rules as r
from crm_marketing.segments.compiler import bind, compile_rule
from crm_marketing.segments.evaluate import CustomerFacts, evaluate

T = TypeVar("T")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CUSTOMERS = [f"c{i}" for i in range(6)]
# Small pools so rules and rows meet often; mixed case checks case-insensitive comparison.
VALUES = ["DE", "de", "a", "A", "ab"]
rule_values = st.sampled_from(VALUES)
maybe = st.one_of(st.none(), st.sampled_from(VALUES))
# Row times on and around the windows' edges, so boundaries are tested, not just the middle.
HOURS_AGO = [0, 1, 2, 11, 12, 13, 23, 24, 25, 47, 48, 167, 168, 169, 336, 400, -2]
windows = st.one_of(
    st.builds(r.Window, st.sampled_from([1, 2, 7, 14]), st.just("d")),
    st.builds(r.Window, st.sampled_from([1, 2, 12, 24]), st.just("h")),
    st.none(),
)


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    profiles = []
    for cid in draw(st.lists(st.sampled_from(CUSTOMERS), unique=True, min_size=2, max_size=6)):
        profiles.append(
            {
                "customer_id": cid,
                "country": draw(st.sampled_from([None, "DE", "de", "AT"])),
                **{f: draw(maybe) for f in r.FIELDS if f != "country"},
            }
        )
    when = st.sampled_from(HOURS_AGO).map(lambda h: NOW - timedelta(hours=h))
    customer = st.sampled_from([*CUSTOMERS, None])
    activity = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "customer_id": customer,
                    "kind": st.sampled_from(["page_view", "product_view", "search", "add_to_cart"]),
                    "url": st.sampled_from([None, "ab", "/a", "b/a", "A", "DE/a"]),
                    "product_id": maybe,
                    "category": maybe,
                    "query": st.sampled_from([None, "ab", "Ab", "xAB", "b"]),
                    "occurred_at": when,
                }
            ),
            min_size=5,
            max_size=40,
        )
    )
    purchases = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "customer_id": st.sampled_from(CUSTOMERS),
                    "product_id": st.sampled_from(VALUES),
                    "category": maybe,
                    "occurred_at": when,
                }
            ),
            max_size=10,
        )
    )
    consents = draw(
        st.lists(
            st.tuples(
                st.sampled_from(CUSTOMERS),
                st.sampled_from(r.CHANNELS),
                st.sampled_from(["pending", "granted", "withdrawn"]),
            ),
            unique_by=lambda t: (t[0], t[1]),
            max_size=12,
        )
    )
    return {
        "profiles": profiles,
        "activity": activity,
        "purchases": purchases,
        "consents": consents,
    }


async def _load(conn: asyncpg.Connection, data: dict[str, Any]) -> None:
    await conn.execute("TRUNCATE profiles, web_activity, purchases, consents")
    await conn.executemany(
        "INSERT INTO profiles (customer_id, country, city, language, age_band, industry,"
        " company_size) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (
                p["customer_id"],
                p["country"],
                p["city"],
                p["language"],
                p["age_band"],
                p["industry"],
                p["company_size"],
            )
            for p in data["profiles"]
        ],
    )
    await conn.executemany(
        "INSERT INTO web_activity (event_id, visitor_id, customer_id, kind, url, product_id,"
        " category, query, occurred_at) VALUES ($1, 'v', $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                uuid.uuid4(),
                a["customer_id"],
                a["kind"],
                a["url"],
                a["product_id"],
                a["category"],
                a["query"],
                a["occurred_at"],
            )
            for a in data["activity"]
        ],
    )
    await conn.executemany(
        "INSERT INTO purchases (purchase_id, customer_id, product_id, category, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        [
            (str(uuid.uuid4()), p["customer_id"], p["product_id"], p["category"], p["occurred_at"])
            for p in data["purchases"]
        ],
    )
    await conn.executemany(
        "INSERT INTO consents (customer_id, channel, status, changed_at) VALUES ($1, $2, $3, $4)",
        [(c, ch, s, NOW) for c, ch, s in data["consents"]],
    )


def _oracle(rule: r.Rule, data: dict[str, Any]) -> set[str]:
    out = set()
    for p in data["profiles"]:
        cid = p["customer_id"]
        facts = CustomerFacts(
            profile=p,
            activity=[a for a in data["activity"] if a["customer_id"] == cid],
            purchases=[b for b in data["purchases"] if b["customer_id"] == cid],
            consents={ch: s for c, ch, s in data["consents"] if c == cid},
        )
        if evaluate(rule, facts, NOW):
            out.add(cid)
    return out


async def _sql(conn: asyncpg.Connection, rule: r.Rule, candidates: list[str] | None) -> set[str]:
    compiled = compile_rule(rule, NOW, candidates=candidates is not None)
    rows = await conn.fetch(compiled.sql, *bind(compiled, candidates))
    ids = [row["customer_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a customer appears twice"
    return set(ids)


async def test_sql_and_reference_evaluator_agree_on_random_data(
    fresh_db: Callable[..., Awaitable[str]],
) -> None:
    url = await fresh_db("crm_runtime.people", "crm_marketing")
    conn = await asyncpg.connect(url)
    loop = asyncio.get_running_loop()

    def run(coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]

    async def check(data: dict[str, Any], some: list[r.Rule], candidates: list[str]) -> None:
        await _load(conn, data)
        for rule in some:
            want = _oracle(rule, data)
            assert await _sql(conn, rule, None) == want, r.to_text(rule)
            subset = await _sql(conn, rule, candidates)
            assert subset == want & set(candidates), r.to_text(rule)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        datasets(),
        st.lists(
            st.one_of(
                behaviours(rule_values, windows, min_filters=1),
                behaviours(rule_values, windows),
                leaves(rule_values, windows),
                rules(rule_values, max_leaves=6, windows=windows),
            ),
            min_size=2,
            max_size=8,
        ),
        st.lists(st.sampled_from([*CUSTOMERS, "nobody"]), unique=True),
    )
    def property_(data: dict[str, Any], some: list[r.Rule], candidates: list[str]) -> None:
        run(check(data, some, candidates))

    try:
        await asyncio.to_thread(property_)
    finally:
        await conn.close()


async def test_every_action_filter_and_window_agrees_one_by_one(
    fresh_db: Callable[..., Awaitable[str]],
) -> None:
    """Single behaviour tests (each filter, window and count) on dense data: no and/or/not to
    hide a difference."""
    url = await fresh_db("crm_runtime.people", "crm_marketing")
    conn = await asyncpg.connect(url)
    loop = asyncio.get_running_loop()

    async def check(data: dict[str, Any], some: list[r.Behaviour]) -> None:
        await _load(conn, data)
        for rule in some:
            assert await _sql(conn, rule, None) == _oracle(rule, data), r.to_text(rule)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        datasets(),
        st.lists(behaviours(rule_values, windows, min_filters=1), min_size=10, max_size=10),
    )
    def property_(data: dict[str, Any], some: list[r.Behaviour]) -> None:
        asyncio.run_coroutine_threadsafe(check(data, some), loop).result()

    try:
        await asyncio.to_thread(property_)
    finally:
        await conn.close()


async def test_window_boundaries_and_counts_mean_what_they_say(
    fresh_db: Callable[..., Awaitable[str]],
) -> None:
    url = await fresh_db("crm_runtime.people", "crm_marketing")
    conn = await asyncpg.connect(url)
    try:
        data = {
            "profiles": [
                {"customer_id": c, "country": "DE", **{f: None for f in r.FIELDS if f != "country"}}
                for c in ("fresh", "stale", "never")
            ],
            "activity": [
                {
                    "customer_id": "fresh",
                    "kind": "product_view",
                    "url": None,
                    "product_id": "p1",
                    "category": "Phones",
                    "query": None,
                    "occurred_at": NOW - timedelta(days=d),
                }
                for d in (1, 2, 6)
            ]
            + [
                {
                    "customer_id": "stale",
                    "kind": "product_view",
                    "url": None,
                    "product_id": "p1",
                    "category": "phones",
                    "query": None,
                    "occurred_at": NOW - timedelta(days=d),
                }
                for d in (1, 2, 7)  # exactly 7 days ago is outside "within 7d"
            ],
            "purchases": [],
            "consents": [],
        }
        await _load(conn, data)
        rule = r.parse('product_view(category="phones") >= 3 within 7d and not purchased')
        assert await _sql(conn, rule, None) == {"fresh"} == _oracle(rule, data)
        none = r.parse('product_view(category="phones") = 0')
        assert await _sql(conn, none, None) == {"never"} == _oracle(none, data)
        ever = r.parse("product_view(category=phones) >= 3")
        assert await _sql(conn, ever, None) == {"fresh", "stale"} == _oracle(ever, data)
        hours = r.parse("product_view(category=phones) >= 2 within 49h")
        assert await _sql(conn, hours, None) == {"fresh", "stale"} == _oracle(hours, data)
    finally:
        await conn.close()


def test_values_are_parameters_never_sql_text() -> None:
    evil = "x'); DROP TABLE profiles; --"
    rule = r.And(
        (
            r.FieldEquals("city", "=", evil),
            r.Behaviour("search", (("query", evil),)),
            r.FieldIn("country", (evil,)),
        )
    )
    compiled = compile_rule(rule, NOW)
    assert evil not in compiled.sql and "DROP" not in compiled.sql
    assert compiled.params.count(evil) == 2 and [evil] in compiled.params
