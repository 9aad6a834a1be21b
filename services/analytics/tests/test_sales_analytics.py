"""Sales analytics over deal facts built from the sales events, with chosen event times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crm_analytics.app import create_app
from crm_analytics.customers import CustomerProfileProjection
from crm_analytics.sales import SalesAnalyticsProjection
from crm_events import CloudEvent
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


async def _no_letters(record: ConsumedRecord, consumer: str, reason: str) -> None:
    raise AssertionError(reason)


def ev(type_: str, subject: str, when: str, data: dict[str, Any]) -> ConsumedRecord:
    r = CloudEvent(
        id=uuid.uuid4(),
        source="/crm/sales",
        type=type_,
        time=datetime.fromisoformat(when).replace(tzinfo=UTC),
        subject=subject,
        streamid=f"x-{uuid.uuid4()}",
        streamversion=1,
        schemaversion=1,
        data=data,
    ).to_kafka()
    return ConsumedRecord("crm.sales.events", 0, 0, r.key, r.value, r.headers)


def opened(deal: str, customer: str, when: str, **over: Any) -> ConsumedRecord:
    data = {
        "deal_id": deal, "customer_id": customer, "name": deal, "pipeline_id": "default",
        "stage": "identified", "probability": 10, "amount_minor": 100_000, "currency": "EUR",
        "base_currency": "EUR", "exchange_rate": "1", "owner_id": "alice",
    }  # fmt: skip
    data.update(over)
    return ev("crm.sales.deal.opened", customer, when, data)


def moved(deal: str, customer: str, when: str, frm: str, to: str, p: int) -> ConsumedRecord:
    data = {"deal_id": deal, "from_stage": frm, "to_stage": to, "probability": p}
    return ev("crm.sales.deal.stage_changed", customer, when, data)


def won(deal: str, customer: str, when: str, amount: int) -> ConsumedRecord:
    data = {"deal_id": deal, "stage": "won", "amount_minor": amount, "currency": "EUR"}
    return ev("crm.sales.deal.won", customer, when, data)


LINES = [
    {"product_id": "p1", "name": "Seat", "quantity": 10, "unit_price_minor": 6_000},
    {"product_id": "p2", "name": "Setup", "quantity": 1, "unit_price_minor": 40_000},
]


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


async def test_pipeline_forecast_win_rate_and_stages(
    analytics: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    client, ctx = analytics
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    records = [
        ev("crm.sales.contact.created", a, "2025-01-01T09:00:00",
           {"contact_id": "k", "customer_id": a, "details": {"last_name": "A", "region": "EMEA"}}),
        ev("crm.sales.account.created", b, "2025-01-01T09:00:00",
           {"account_id": "acc", "customer_id": b, "details": {"name": "B", "region": "US"}}),
        # last year: won 100,000 in Q1
        opened("L1", a, "2025-01-05T00:00:00"),
        moved("L1", a, "2025-02-10T00:00:00", "identified", "won", 100),
        won("L1", a, "2025-02-10T00:00:00", 100_000),
        # this year: D1 won 50,000 in Q1, D2 open in Q1 (USD at 0.9, 40 %), D3 lost
        opened("D1", a, "2026-01-10T00:00:00", amount_minor=50_000),
        moved("D1", a, "2026-01-20T00:00:00", "identified", "demo", 60),
        moved("D1", a, "2026-02-01T00:00:00", "demo", "won", 100),
        won("D1", a, "2026-02-01T00:00:00", 50_000),
        opened("D2", b, "2026-01-12T00:00:00", stage="requirements", probability=40,
               currency="USD", exchange_rate="0.9", expected_close="2026-03-15", owner_id="bob",
               lines=LINES),
        opened("D3", a, "2026-01-15T00:00:00"),
        moved("D3", a, "2026-02-05T00:00:00", "identified", "lost", 0),
        ev("crm.sales.deal.lost", a, "2026-02-05T00:00:00",
           {"deal_id": "D3", "stage": "lost", "reason": "budget"}),
    ]  # fmt: skip
    for projection in (CustomerProfileProjection(), SalesAnalyticsProjection()):
        processor = EventProcessor(ctx.pool, projection, _no_letters)
        for r in records:  # one by one, in order, and twice: a redelivery changes nothing
            await processor.process_batch([r])
            await processor.process_batch([r])
    h = {"Authorization": f"Bearer {token('analyst')}"}

    by_stage = (await client.get("/analytics/sales/pipeline", headers=h)).json()
    assert by_stage["rows"] == [
        {
            "key": "requirements",
            "deals": 1,
            "amount_base_minor": 90_000,
            "weighted_base_minor": 36_000,
        }
    ]
    by_region = (await client.get("/analytics/sales/pipeline?group_by=region", headers=h)).json()
    assert [r["key"] for r in by_region["rows"]] == ["US"]
    by_owner = (await client.get("/analytics/sales/pipeline?group_by=owner", headers=h)).json()
    assert [r["key"] for r in by_owner["rows"]] == ["bob"]

    f = (await client.get("/analytics/sales/forecast?year=2026", headers=h)).json()
    q1 = f["quarters"][0]
    assert (q1["won_base_minor"], q1["open_weighted_base_minor"]) == (50_000, 36_000)
    assert (q1["forecast_base_minor"], q1["last_year_won_base_minor"]) == (86_000, 100_000)
    assert q1["change"] == -0.14 and q1["drop_flagged"] is False
    strict = (
        await client.get("/analytics/sales/forecast?year=2026&drop_threshold=0.1", headers=h)
    ).json()
    assert strict["quarters"][0]["drop_flagged"] is True
    assert f["quarters"][1]["change"] is None  # nothing last year to compare with
    seat = (await client.get("/analytics/sales/forecast?year=2026&product_id=p1", headers=h)).json()
    assert seat["quarters"][0]["open_weighted_base_minor"] == 21_600  # 60,000 x 0.9 x 40 %

    wr = (await client.get("/analytics/sales/win-rate", headers=h)).json()
    assert (wr["won"], wr["lost"], wr["win_rate"]) == (2, 1, 0.6667)
    assert wr["avg_sales_cycle_days"] == 29.0  # (36 + 22) / 2
    this_year = (
        await client.get("/analytics/sales/win-rate?since=2026-01-01T00:00:00Z", headers=h)
    ).json()
    assert (this_year["won"], this_year["lost"]) == (1, 1)

    st = {
        s["stage"]: s
        for s in (await client.get("/analytics/sales/stages", headers=h)).json()["stages"]
    }
    # three entered; one moved on to lost, which is no conversion
    assert st["identified"]["entered"] == 3 and st["identified"]["moved_on"] == 2
    assert st["demo"]["avg_days_in_stage"] == 12.0  # 2026-01-20 -> 2026-02-01
    rep = {"Authorization": f"Bearer {token('sales_rep')}"}
    assert (await client.get("/analytics/sales/pipeline", headers=rep)).status_code == 403

    cov = (await client.get("/analytics/sales/coverage?untouched_days=30", headers=h)).json()
    assert cov["owners"] == [{"owner": "(unassigned)", "accounts": 1, "untouched": 1}]
    assert [x["customer_id"] for x in cov["untouched_accounts"]] == [b]
