"""Amounts in the base currency follow each currency's minor unit: a deal's exchange rate is one
major unit in the base currency, so 1,000,000 JPY (no decimals) at 0.0061 is 610,000 EUR cents
and 1.000 KWD (3 decimals: 1,000 fils) at 2.98 is 298 — in the 360 view (worker and rebuild),
the pipeline, the forecast (per product too) and the marketing funnel's won revenue."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from an_helpers import ev, feed, line, opened
from test_an_bulk import ListSource

from crm_analytics import sales
from crm_analytics.rebuild import Progress, rebuild
from crm_runtime import db
from crm_runtime.consumer import ConsumedRecord

pytestmark = pytest.mark.integration

C = "c-yen"


def history() -> list[ConsumedRecord]:
    return [
        opened("JP", C, "2026-01-05T00:00:00", amount_minor=1_000_000, currency="JPY",
               exchange_rate="0.0061", expected_close="2026-02-15",
               lines=[line("p-jp", price=1_000, quantity=1_000)]),
        opened("KW", C, "2026-01-06T00:00:00", amount_minor=1_000, currency="KWD",
               exchange_rate="2.98", expected_close="2026-02-15"),
        # a USD deal becomes a JPY deal: the new currency's minor unit comes with it
        opened("US", C, "2026-01-07T00:00:00", amount_minor=10_000, currency="USD",
               exchange_rate="0.9", expected_close="2026-02-15"),
        ev("crm.sales.deal.updated", C, "2026-01-08T00:00:00",
           {"deal_id": "US", "amount_minor": 500, "currency": "JPY", "exchange_rate": "0.0061",
            "lines": [], "changed": ["amount_minor", "currency", "exchange_rate"]},
           stream="deal-US", version=2),
        # won in ISK (no decimals): 100,000 kr at 0.0066 is 660.00 EUR
        opened("IS", "c-isk", "2026-01-09T00:00:00", amount_minor=100_000, currency="ISK",
               exchange_rate="0.0066"),
        ev("crm.sales.deal.won", "c-isk", "2026-01-10T00:00:00",
           {"deal_id": "IS", "stage": "won", "amount_minor": 100_000, "currency": "ISK"},
           stream="deal-IS", version=2),
    ]  # fmt: skip


EXPECTED_BASE = {"JP": Decimal(610_000), "KW": Decimal(298), "US": Decimal(305)}


async def _deals(pool: Any) -> dict[str, Decimal]:
    rows = await pool.fetch(
        "SELECT deal_id, amount_base FROM customer_deals WHERE customer_id = $1", C
    )
    return {r["deal_id"]: r["amount_base"] for r in rows}


@contextlib.asynccontextmanager
async def three_ways(
    fresh_db: Callable[..., Any], records: list[ConsumedRecord]
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The history projected three ways, each into a database of its own: by the worker one
    event at a time, by the worker in one batch (the pipelined path), and by the rebuild."""
    one = await db.create_pool(await fresh_db("crm_analytics"), max_size=2)
    batched = await db.create_pool(await fresh_db("crm_analytics"), max_size=2)
    rebuilt = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    try:
        await feed(one, records, batch=1)
        await feed(batched, records, batch=len(records))
        await rebuild(rebuilt, ListSource(records), progress=Progress(write=io.StringIO().write))
        yield one, batched, rebuilt
    finally:
        for pool in (one, batched, rebuilt):
            await pool.close()


async def test_base_amounts_by_minor_unit(
    fresh_db: Callable[..., Any],
) -> None:
    async with three_ways(fresh_db, history()) as (one, batched, rebuilt):
        for pool in (one, batched, rebuilt):
            assert await _deals(pool) == EXPECTED_BASE
            won_base = await pool.fetchval("SELECT won_base FROM funnel_deals WHERE deal_id='IS'")
            assert won_base == Decimal("660.00")  # major units

        async with one.acquire() as conn:
            rows = {r["key"]: r for r in await sales.pipeline(conn, "stage")}
            assert rows["identified"]["amount_base_minor"] == 610_000 + 298 + 305
            assert rows["identified"]["weighted_base_minor"] == round((610_000 + 298 + 305) / 10)
            q1 = (await sales.forecast(conn, 2026, Decimal("0.1")))[0]
            # won: 660.00 EUR; open, 10 % of 6,106.03 EUR expected to close in Q1
            assert q1["won_base_minor"] == 66_000
            assert q1["open_weighted_base_minor"] == round((610_000 + 298 + 305) / 10)
            per_product = (await sales.forecast(conn, 2026, Decimal("0.1"), "p-jp"))[0]
            assert per_product["open_weighted_base_minor"] == 61_000  # its one line, 10 %


async def test_won_revenue_is_rounded_to_the_base_currencys_minor_unit(
    fresh_db: Callable[..., Any],
) -> None:
    # 10.01 EUR won, in a KWD base (3 decimals) and in a JPY base (none)
    records = [
        opened("K", "c-k", "2026-03-01T00:00:00", amount_minor=1_001, base_currency="KWD",
               exchange_rate="0.3333"),
        ev("crm.sales.deal.won", "c-k", "2026-03-02T00:00:00",
           {"deal_id": "K", "stage": "won", "amount_minor": 1_001, "currency": "EUR"},
           stream="deal-K", version=2),
        opened("J", "c-j", "2026-03-01T00:00:00", amount_minor=1_001, base_currency="JPY",
               exchange_rate="161.2345"),
        ev("crm.sales.deal.won", "c-j", "2026-03-02T00:00:00",
           {"deal_id": "J", "stage": "won", "amount_minor": 1_001, "currency": "EUR"},
           stream="deal-J", version=2),
    ]  # fmt: skip
    async with three_ways(fresh_db, records) as pools:
        for pool in pools:
            won = {
                r["deal_id"]: r["won_base"]
                for r in await pool.fetch("SELECT deal_id, won_base FROM funnel_deals")
            }
            # 3.336333 KWD -> 3.336 (not 3.34); 1613.957... JPY -> 1614 (not 1613.96)
            assert won == {"K": Decimal("3.336"), "J": Decimal("1614")}
            assert [str(won["K"]), str(won["J"])] == ["3.336", "1614"]
