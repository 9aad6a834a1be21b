"""The customer 360 projection on real PostgreSQL, fed the records the relay would publish."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crm_analytics.app import create_app
from crm_analytics.customers import CustomerProfileProjection
from crm_analytics.timeline import TimelineProjection
from crm_events import CloudEvent
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


async def _no_letters(record: ConsumedRecord, consumer: str, reason: str) -> None:
    raise AssertionError(reason)


def record(type_: str, subject: str, data: dict[str, Any], version: int = 1) -> ConsumedRecord:
    stream = f"{type_.split('.')[2]}-{uuid.uuid4()}"
    r = CloudEvent(
        id=uuid.uuid4(),
        source="/crm/sales",
        type=type_,
        time=datetime.now(UTC),
        subject=subject,
        streamid=stream,
        streamversion=1,
        schemaversion=version,
        data=data,
    ).to_kafka()
    return ConsumedRecord("crm.sales.events", 0, 0, r.key, r.value, r.headers)


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c,
    ):
        yield c, app.state.ctx


async def test_profile_deals_and_health(
    analytics: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    client, ctx = analytics
    c = str(uuid.uuid4())
    deal = str(uuid.uuid4())
    records = [
        record(
            "crm.sales.lead.captured",
            c,
            {"lead_id": "l", "customer_id": c, "name": "Ada L", "source": "web_form"},
            2,
        ),
        record(
            "crm.sales.contact.created",
            c,
            {
                "contact_id": "k",
                "customer_id": c,
                "details": {"first_name": "Ada", "last_name": "Lovelace"},
                "owner_id": "alice",
            },
        ),
        record(
            "crm.sales.deal.opened",
            c,
            {
                "deal_id": deal,
                "customer_id": c,
                "name": "Seats",
                "pipeline_id": "default",
                "stage": "demo",
                "probability": 60,
                "amount_minor": 100_000,
                "currency": "USD",
                "base_currency": "EUR",
                "exchange_rate": "0.9",
            },
        ),
        record(
            "crm.sales.contact.updated",
            c,
            {"contact_id": "k", "changed": ["last_name"], "values": {"last_name": "King"}},
        ),
    ]
    for projection in (TimelineProjection(), CustomerProfileProjection()):
        processor = EventProcessor(ctx.pool, projection, _no_letters)
        await processor.process_batch(records)
        await processor.process_batch(records)  # a redelivery changes nothing
    h = {"Authorization": f"Bearer {token('sales_rep', user='alice')}"}  # the owner
    view = (await client.get(f"/customers/{c}", headers=h)).json()
    assert view["kind"] == "contact" and view["display_name"] == "Ada King"
    assert view["owner_id"] == "alice"
    assert [d["deal_id"] for d in view["open_deals"]] == [deal]
    assert view["open_pipeline_base"] == "90000" and view["weighted_pipeline_base"] == "54000"
    assert view["last_touch_type"] == "crm.sales.deal.opened"
    assert view["health"]["score"] == 90  # 60 + 20 (touched today) + 10 (open deal)
    assert (await client.get(f"/customers/{c}")).status_code == 401
