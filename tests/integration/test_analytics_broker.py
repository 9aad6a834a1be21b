"""Analytics fed through the real broker: every record published twice, and the contexts'
records out of order (service before marketing before sales). The worker must still give the
timeline in time order, the 360 view, the forecast against last year's quarter, the campaign
funnel, the ticket spike and the pipeline as it stood at an earlier time (issue 6)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

import httpx
import pytest

from crm_analytics.app import create_app as create_analytics
from crm_events import CloudEvent
from crm_runtime import kafka as kafka_clients
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller, unique_name

pytestmark = pytest.mark.integration
T = TypeVar("T")


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def event(type_: str, subject: str, when: datetime, stream: str, **data: Any) -> CloudEvent:
    example = resources.files("crm_events").joinpath("examples", type_, "v1.json")
    return CloudEvent(
        id=uuid.uuid4(),
        source=f"/crm/{type_.split('.')[1]}",
        type=type_,
        time=when,
        subject=subject,
        streamid=stream,
        streamversion=1,
        schemaversion=1,
        data={**json.loads(example.read_text()), **data},
    )


async def eventually(probe: Callable[[], Awaitable[T]], what: str, timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while True:
        if got := await probe():
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    kafka: tuple[str, bool],
    token: Callable[..., str],
) -> AsyncIterator[tuple[ApiCaller, Settings]]:
    url = await fresh_db("crm_analytics")
    settings = settings_for("analytics", database_url=url)
    env = {
        **os.environ,
        "ANALYTICS_DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka[0],
        "KAFKA_EMBEDDED": str(kafka[1]).lower(),
        "KAFKA_PARTITIONS": "3",
        "ANALYTICS_APP_ID": unique_name("analytics"),
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "crm_runtime.cli", "analytics-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = create_analytics(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c,
        ):
            yield ApiCaller(c, token("analyst")), settings
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()


async def publish(settings: Settings, events: list[CloudEvent]) -> None:
    producer = kafka_clients.producer(settings)
    await producer.start()
    try:
        for e in events:
            record = e.to_kafka()
            await producer.send_and_wait(
                f"crm.{e.context}.events",
                value=record.value,
                key=record.key,
                headers=record.headers,
            )
    finally:
        await producer.stop()


async def test_duplicated_out_of_order_events_through_the_broker(
    analytics: tuple[ApiCaller, Settings],
) -> None:
    api, settings = analytics
    tag = uuid.uuid4().hex[:6]
    cust, product, campaign = str(uuid.uuid4()), f"router-{tag}", f"camp-{tag}"
    d_old, d_new = f"deal-old-{tag}", f"deal-new-{tag}"

    def deal(name: str, opened: datetime, won: datetime, amount: int) -> list[CloudEvent]:
        s = f"deal-{name}"
        return [
            event("crm.sales.deal.opened", cust, opened, s, deal_id=name, customer_id=cust,
                  amount_minor=amount, currency="EUR", base_currency="EUR", exchange_rate="1",
                  stage="identified", probability=10, lines=[], expected_close=None),
            event("crm.sales.deal.stage_changed", cust, opened + timedelta(days=17), s,
                  deal_id=name, from_stage="identified", to_stage="demo", probability=60),
            event("crm.sales.deal.won", cust, won, s, deal_id=name, stage="won",
                  amount_minor=amount, currency="EUR"),
        ]  # fmt: skip

    sales = [
        event("crm.sales.contact.created", cust, at("2024-01-05"), f"contact-{tag}",
              contact_id=f"k-{tag}", customer_id=cust, owner_id="alice", lead_id=None),
        *deal(d_old, at("2024-04-02"), at("2024-05-10"), 100_000),
        *deal(d_new, at("2025-04-03"), at("2025-05-05"), 50_000),
        event("crm.sales.lead.captured", cust, at("2025-03-20"), f"lead-{tag}",
              lead_id=f"L-{tag}", customer_id=cust, source="web_form", email=None,
              owner_id=None),
    ]  # fmt: skip
    day = datetime(2025, 6, 1, tzinfo=UTC)
    service = [
        event("crm.service.ticket.opened", cust, day - timedelta(days=n, hours=-10),
              f"ticket-b{n}-{tag}", ticket_id=f"B{n}-{tag}", customer_id=cust, product=product,
              product_return=None, kind="incident")
        for n in range(1, 29)
    ] + [
        event("crm.service.ticket.opened", cust, day + timedelta(hours=8, minutes=n),
              f"ticket-s{n}-{tag}", ticket_id=f"S{n}-{tag}", customer_id=cust, product=product,
              product_return=None, kind="incident")
        for n in range(9)
    ]  # fmt: skip
    sent = at("2025-03-01", 9)
    marketing = [
        event(f"crm.marketing.message.{step}", cust, sent + timedelta(minutes=m),
              f"message-{tag}", message_id=f"m-{tag}", customer_id=cust, campaign_id=campaign,
              trigger_id=None, channel="email")
        for step, m in (("sent", 0), ("opened", 30), ("clicked", 31))
    ] + [
        event("crm.marketing.message.sent", other, sent, f"message-{other}",
              message_id=f"m-{other}", customer_id=other, campaign_id=campaign, trigger_id=None,
              channel="email")
        for other in (f"o1-{tag}", f"o2-{tag}")
    ]  # fmt: skip
    # the other contexts first, sales last; every record twice
    ordered = [*service, *marketing, *sales]
    await publish(settings, [e for e in ordered for _ in (0, 1)])

    async def timeline() -> Any:
        r = await api.get(f"/customers/{cust}/timeline", params={"limit": 200})
        items = r.json()["items"] if r.status_code == 200 else []
        return items if len(items) >= len({e.id for e in ordered}) - 2 else None  # 2 not cust

    items = await eventually(timeline, "the whole history on the timeline")
    assert len(items) == len({i["event_id"] for i in items}) == len(ordered) - 2
    times = [i["occurred_at"] for i in items]
    assert times == sorted(times)  # time order, whatever the arrival order
    assert items[0]["type"] == "crm.sales.contact.created"

    view = (await api.get(f"/customers/{cust}")).json()
    assert (view["won_deals"], view["open_tickets"], view["owner_id"]) == (2, 37, "alice")

    f = (await api.get("/analytics/sales/forecast", params={"year": 2025})).json()
    q2 = f["quarters"][1]
    assert (q2["won_base_minor"], q2["last_year_won_base_minor"]) == (50_000, 100_000)
    assert q2["change"] == -0.5 and q2["drop_flagged"] is True

    before = await api.get("/analytics/sales/pipeline", params={"as_of": "2025-04-10T00:00:00Z"})
    after = await api.get("/analytics/sales/pipeline", params={"as_of": "2025-04-25T00:00:00Z"})
    assert before.status_code == after.status_code == 200, before.text
    b, a = before.json()["rows"], after.json()["rows"]
    assert {r["key"]: r["deals"] for r in b} == {"identified": 1}  # deal-new, open then
    assert {r["key"]: r["deals"] for r in a} == {"demo": 1}

    spikes = (
        await api.get(
            "/analytics/service/ticket-spikes",
            params={"start": "2025-06-01", "end": "2025-06-01", "product": product, "min_count": 3},
        )
    ).json()
    [p] = spikes["products"]
    assert p["days"][0]["count"] == 9 and p["days"][0]["baseline"] == 1.0
    assert p["spikes"] == ["2025-06-01"]

    funnel = (await api.get(f"/analytics/marketing/campaigns/{campaign}/funnel")).json()
    assert [(s["step"], s["count"]) for s in funnel["steps"]] == [
        ("sent", 3),
        ("delivered", 3),  # e-mail: sent and not bounced
        ("opened", 1),
        ("clicked", 1),
        ("lead", 1),
        ("deal", 1),
        ("won", 1),
    ]
    assert funnel["won_revenue"] == "500.00"  # deal-new: opened within 30 days of the lead
