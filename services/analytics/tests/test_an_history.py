"""The temporal deal projection: late and out-of-order events give the same history, and every
sales-analytics query (and the 360 view) answers as of a past time from that history."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from typing import Any

import httpx
import pytest
from an_helpers import at, ev, feed, line, lost, moved, opened, won

from crm_analytics.app import create_app
from crm_analytics.history import customer_as_of
from crm_runtime.consumer import ConsumedRecord
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
            yield c, app.state.ctx


def row(key: str, deals: int, amount: int, weighted: int) -> dict[str, Any]:
    return {
        "key": key,
        "deals": deals,
        "amount_base_minor": amount,
        "weighted_base_minor": weighted,
    }


def deal_story(deal: str, customer: str) -> list[ConsumedRecord]:
    s = f"deal-{deal}"
    return [
        opened(deal, customer, "2026-01-01T10:00:00", 1, lines=[line("seat", 5_000, 4)]),
        moved(deal, customer, "2026-01-05T10:00:00", "identified", "demo", 40, 2),
        ev("crm.sales.deal.updated", customer, "2026-01-07T10:00:00",
           {"deal_id": deal, "amount_minor": 70_000, "currency": "EUR", "exchange_rate": "1",
            "lines": [line("seat", 5_000, 10), line("setup", 20_000)],
            "changed": ["amount_minor", "lines"]}, stream=s, version=3),
        ev("crm.sales.deal.reassigned", customer, "2026-01-08T10:00:00",
           {"deal_id": deal, "owner_id": "bob", "team_id": "emea"}, stream=s, version=4),
        moved(deal, customer, "2026-01-09T10:00:00", "demo", "proposal", 70, 5),
        # two events at the same instant: the stream version orders them
        moved(deal, customer, "2026-01-12T10:00:00", "proposal", "won", 100, 6),
        won(deal, customer, "2026-01-12T10:00:00", 70_000, 7),
    ]  # fmt: skip


async def versions(conn: Any, deal: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT event_type, valid_from, valid_to, customer_id, owner_id, stage, status,"
        " probability, amount_minor, lines, stage_seq, stage_entered_at, stage_left_at"
        " FROM deal_versions WHERE deal_id = $1 ORDER BY valid_from, stream_version, arrival",
        deal,
    )
    return [tuple(r) for r in rows]


async def test_late_and_shuffled_events_give_the_same_history(
    analytics: tuple[httpx.AsyncClient, Any],
) -> None:
    _, ctx = analytics
    customer = str(uuid.uuid4())
    in_order = deal_story("ordered", customer)
    await feed(ctx.pool, in_order)
    async with ctx.pool.acquire() as conn:
        expected = await versions(conn, "ordered")
    assert [v[0].rsplit(".", 1)[1] for v in expected] == [
        "opened", "stage_changed", "updated", "reassigned", "stage_changed", "stage_changed", "won",
    ]  # fmt: skip
    assert expected[-1][2] is None and all(v[2] == n[1] for v, n in pairwise(expected))
    assert expected[5][1] == expected[5][2]  # [t, t): never stood on its own
    rng = random.Random(7)
    for k in range(6):
        deal = f"shuffled-{k}"
        story = deal_story(deal, customer)
        late = story[:]
        rng.shuffle(late)
        # deliver in a random order, in random batch sizes (one batch may hold several)
        await feed(ctx.pool, late, batch=rng.randint(1, 3))
        async with ctx.pool.acquire() as conn:
            got = await versions(conn, deal)
        assert got == expected, k


async def test_queries_as_of_past_times(
    analytics: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    client, ctx = analytics
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    records = [
        ev("crm.sales.contact.created", a, "2025-01-01T09:00:00",
           {"contact_id": "k", "customer_id": a, "details": {"last_name": "A"},
            "owner_id": "alice"}),
        ev("crm.sales.account.created", b, "2025-12-01T09:00:00",
           {"account_id": "acc", "customer_id": b, "details": {"name": "B"}, "owner_id": "carl"},
           stream="account-acc"),
        ev("crm.sales.account.reassigned", b, "2026-02-01T09:00:00",
           {"account_id": "acc", "owner_id": "dana"}, stream="account-acc", version=2),
        ev("crm.sales.activity.logged", b, "2026-01-20T12:00:00",
           {"activity_id": "act", "kind": "call", "subject": "Hello",
            "occurred_at": "2026-01-20T11:00:00Z", "customer_id": b,
            "about": {"account_id": "acc"}}),
        opened("L1", a, "2025-01-05T00:00:00"),
        moved("L1", a, "2025-02-10T00:00:00", "identified", "won", 100),
        won("L1", a, "2025-02-10T00:00:00"),
        opened("D1", a, "2026-01-10T00:00:00", amount_minor=50_000),
        moved("D1", a, "2026-01-20T00:00:00", "identified", "demo", 60),
        moved("D1", a, "2026-02-01T00:00:00", "demo", "won", 100),
        won("D1", a, "2026-02-01T00:00:00", 50_000),
        opened("D2", b, "2026-01-12T00:00:00", stage="requirements", probability=40,
               currency="USD", exchange_rate="0.9", expected_close="2026-03-15", owner_id="bob"),
        opened("D3", a, "2026-01-15T00:00:00"),
        moved("D3", a, "2026-02-05T00:00:00", "identified", "lost", 0),
        lost("D3", a, "2026-02-05T00:00:00"),
        ev("crm.sales.deal.updated", b, "2026-03-01T00:00:00",
           {"deal_id": "D2", "amount_minor": 200_000, "currency": "USD", "exchange_rate": "0.9",
            "changed": ["amount_minor"]}, stream="deal-D2", version=2),
    ]  # fmt: skip
    await feed(ctx.pool, records)
    h = {"Authorization": f"Bearer {token('analyst')}"}

    async def get(path: str, **params: Any) -> Any:
        r = await client.get(path, params=params, headers=h)
        assert r.status_code == 200, r.text
        return r.json()

    pipe = "/analytics/sales/pipeline"
    assert (await get(pipe, as_of="2025-01-31T23:59:59Z"))["rows"] == [
        {
            "key": "identified",
            "deals": 1,
            "amount_base_minor": 100_000,
            "weighted_base_minor": 10_000,
        }
    ]
    assert (await get(pipe, as_of="2026-01-25T00:00:00Z"))["rows"] == [
        row("demo", 1, 50_000, 30_000),
        row("identified", 1, 100_000, 10_000),
        row("requirements", 1, 90_000, 36_000),
    ]  # fmt: skip
    feb = await get(pipe, as_of="2026-02-15T00:00:00")  # no offset: UTC
    assert feb["rows"] == [
        {
            "key": "requirements",
            "deals": 1,
            "amount_base_minor": 90_000,
            "weighted_base_minor": 36_000,
        }
    ]
    assert (await get(pipe))["rows"] == [  # now: the amount changed on 1 March
        {
            "key": "requirements",
            "deals": 1,
            "amount_base_minor": 180_000,
            "weighted_base_minor": 72_000,
        }
    ]
    owners = await get(pipe, group_by="owner", as_of="2026-01-25T00:00:00Z")
    assert [(r["key"], r["deals"]) for r in owners["rows"]] == [("alice", 2), ("bob", 1)]

    f = await get("/analytics/sales/forecast", as_of="2026-01-25T00:00:00Z")
    assert f["year"] == 2026  # as_of's year
    q1 = f["quarters"][0]
    assert (q1["won_base_minor"], q1["open_weighted_base_minor"]) == (0, 36_000)
    assert (q1["last_year_won_base_minor"], q1["change"], q1["drop_flagged"]) == (
        100_000,
        -0.64,
        True,
    )
    now_q1 = (await get("/analytics/sales/forecast", year=2026))["quarters"][0]
    assert (now_q1["won_base_minor"], now_q1["open_weighted_base_minor"]) == (50_000, 72_000)

    wr = await get("/analytics/sales/win-rate", as_of="2026-01-25T00:00:00Z")
    assert (wr["won"], wr["lost"], wr["win_rate"], wr["avg_sales_cycle_days"]) == (1, 0, 1.0, 36.0)
    none = await get("/analytics/sales/win-rate", as_of="2025-01-31T00:00:00Z")
    assert (none["won"], none["lost"], none["win_rate"]) == (0, 0, None)

    st = await get("/analytics/sales/stages", as_of="2026-01-25T00:00:00Z")
    assert [(s["stage"], s["entered"], s["moved_on"], s["conversion"], s["avg_days_in_stage"])
            for s in st["stages"]] == [
        ("identified", 3, 2, 0.6667, 23.0),  # L1 36 days, D1 10 days; D3 still in it
        ("requirements", 1, 0, 0.0, None),
        ("demo", 1, 0, 0.0, None),  # D1 left demo only on 1 February
        ("won", 1, 0, None, None),  # a closing stage has no conversion
    ]  # fmt: skip
    now_st = {s["stage"]: s for s in (await get("/analytics/sales/stages"))["stages"]}
    assert now_st["identified"]["moved_on"] == 2 and now_st["demo"]["avg_days_in_stage"] == 12.0

    cov = await get("/analytics/sales/coverage", as_of="2026-01-25T00:00:00Z", untouched_days=30)
    assert cov["owners"] == [{"owner": "carl", "accounts": 1, "untouched": 0}]
    assert cov["untouched_accounts"] == []
    later = await get("/analytics/sales/coverage", as_of="2026-03-31T00:00:00Z", untouched_days=30)
    assert later["owners"] == [{"owner": "dana", "accounts": 1, "untouched": 1}]
    assert later["untouched_accounts"][0]["last_touch_at"] == "2026-01-20T11:00:00+00:00"
    assert (await get("/analytics/sales/coverage", as_of="2025-11-30T00:00:00Z"))["owners"] == []
    bad = await client.get(pipe, params={"as_of": "yesterday"}, headers=h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "as_of"

    # the 360 view as of a past time, replayed from the customer's history
    alice = {"Authorization": f"Bearer {token('sales_rep', user='alice')}"}
    then = (await client.get(f"/customers/{a}", params={"as_of": "2026-01-25T00:00:00Z"},
                             headers=alice)).json()  # fmt: skip
    assert [d["deal_id"] for d in then["open_deals"]] == ["D1", "D3"]
    assert (then["won_deals"], then["lost_deals"]) == (1, 0)  # L1 only
    assert then["open_deals"][0]["stage"] == "demo"
    now = (await client.get(f"/customers/{a}", headers=alice)).json()
    assert now["open_deals"] == [] and (now["won_deals"], now["lost_deals"]) == (2, 1)
    before = await client.get(
        f"/customers/{a}", params={"as_of": "2024-01-01T00:00:00Z"}, headers=h
    )
    assert before.status_code == 404


async def test_the_replay_leaves_the_real_tables_alone(
    analytics: tuple[httpx.AsyncClient, Any],
) -> None:
    _, ctx = analytics
    a = str(uuid.uuid4())
    await feed(
        ctx.pool, [opened("D1", a, "2026-01-10T00:00:00"), won("D1", a, "2026-02-01T00:00:00")]
    )
    async with ctx.pool.acquire() as conn:
        query = "SELECT * FROM customer_deals WHERE customer_id = ANY($1::text[])"
        before = [dict(r) for r in await conn.fetch(query, [a])]  # prepared on this connection
        _, deals, _ = await customer_as_of(conn, [a], at("2026-01-20T00:00:00"))
        assert [(d["deal_id"], d["status"]) for d in deals] == [("D1", "open")]
        assert [dict(r) for r in await conn.fetch(query, [a])] == before  # the real table again
        assert before[0]["status"] == "won"
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename ="
                                   " 'customer_deals'") == 1  # fmt: skip
