"""End to end: POST /leads -> event store -> relay -> Kafka -> faust agent -> customer timeline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_analytics.app import create_app as create_analytics
from crm_runtime.context import open_context
from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.relay import OutboxRelay
from crm_runtime.settings import Settings
from crm_runtime.testing import unique_name
from crm_sales.app import create_app as create_sales

pytestmark = pytest.mark.integration


@pytest.fixture
async def mail(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    async with MailCatcher(tmp_path / "mail") as catcher:
        yield catcher


@pytest.fixture
async def platform(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    kafka: tuple[str, bool],
    mail: MailCatcher,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    sales_db = await fresh_db("crm_sales")
    analytics_db = await fresh_db("crm_analytics")
    sales_settings = settings_for(
        "sales",
        database_url=sales_db,
        smtp_url=f"smtp://127.0.0.1:{mail.smtp_port}",
        scheduler_enabled=False,
    )
    analytics_settings = settings_for("analytics", database_url=analytics_db)
    app_id = unique_name("analytics")
    env = {
        **os.environ,
        "ANALYTICS_DATABASE_URL": analytics_db,
        "KAFKA_BOOTSTRAP_SERVERS": kafka[0],
        "KAFKA_EMBEDDED": str(kafka[1]).lower(),
        "KAFKA_PARTITIONS": "3",
        "ANALYTICS_APP_ID": app_id,
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "crm_runtime.cli", "analytics-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    relay_ctx = await open_context(sales_settings, ["crm_sales"])
    stop = asyncio.Event()
    relay = asyncio.create_task(
        OutboxRelay(relay_ctx.pool, relay_ctx.store, sales_settings, "sales").run(stop)
    )
    sales, analytics = create_sales(sales_settings), create_analytics(analytics_settings)
    try:
        async with (
            sales.router.lifespan_context(sales),
            analytics.router.lifespan_context(analytics),
        ):
            s = httpx.AsyncClient(transport=httpx.ASGITransport(app=sales), base_url="http://s")
            a = httpx.AsyncClient(transport=httpx.ASGITransport(app=analytics), base_url="http://a")
            async with s, a:
                yield s, a
    finally:
        stop.set()
        await relay
        await relay_ctx.close()
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        if worker.returncode not in (0, -15):
            err = worker.stderr.read().decode() if worker.stderr else ""
            print(err[-3000:])


async def wait_timeline(
    a: httpx.AsyncClient, customer: str, headers: dict[str, str], n: int, timeout: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r = await a.get(f"/customers/{customer}/timeline", headers=headers)
        assert r.status_code in (200, 404), r.text  # 404 until the first event arrives
        items: list[dict[str, Any]] = r.json()["items"] if r.status_code == 200 else []
        if len(items) >= n or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.2)


async def test_lead_reaches_the_customer_timeline(
    platform: tuple[httpx.AsyncClient, httpx.AsyncClient], token: Callable[..., str]
) -> None:
    sales, analytics = platform
    h = {"Authorization": f"Bearer {token('sales_manager')}"}
    r = await sales.post(
        "/leads",
        json={"name": "Grace Hopper", "company": "Navy", "source": "referral"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    lead = r.json()
    await sales.post(f"/leads/{lead['id']}/qualify", json={"score": 90}, headers=h)

    items = await wait_timeline(analytics, lead["customer_id"], h, 2)
    assert [i["type"] for i in items] == ["crm.sales.lead.captured", "crm.sales.lead.qualified"]
    assert items[0]["summary"] == "Lead captured from referral (Navy)"
    assert items[1]["summary"] == "Lead qualified with score 90"
    assert items[0]["context"] == "sales"
    assert items[0]["link"] == f"sales:/leads/{lead['id']}"
    assert items[0]["data"]["name"] == "Grace Hopper"

    other = await analytics.get("/customers/someone-else/timeline", headers=h)
    assert other.status_code == 404  # nothing about them was ever seen
    denied = await analytics.get(f"/customers/{lead['customer_id']}/timeline")
    assert denied.status_code == 401


async def test_lead_to_cash_and_merges_on_one_timeline(
    platform: tuple[httpx.AsyncClient, httpx.AsyncClient],
    token: Callable[..., str],
    mail: MailCatcher,
) -> None:
    """lead -> convert -> deal through stages -> quote -> accept -> invoice -> paid -> won."""
    sales, analytics = platform
    h = {"Authorization": f"Bearer {token('sales_manager', user='meg', team='emea')}"}

    async def ok(r: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert r.status_code == status, r.text
        body: dict[str, Any] = r.json()
        return body

    lead = await ok(
        await sales.post(
            "/leads",
            json={"name": "Ada Lovelace", "email": "ada@engines.example", "company": "Engines"},
            headers=h,
        ),
        201,
    )
    conv = await ok(
        await sales.post(
            f"/leads/{lead['id']}/convert",
            json={"deal": {"amount_minor": 500_000, "currency": "EUR"}},
            headers=h,
        )
    )
    deal_id = conv["deal_id"]
    for stage in ("qualified", "demo", "negotiation"):
        await ok(await sales.post(f"/deals/{deal_id}/stage", json={"stage": stage}, headers=h))
    lines = [{"name": "Seats", "quantity": 10, "unit_price_minor": 50_000, "tax_rate": "20"}]
    quote = await ok(
        await sales.post("/quotes", json={"deal_id": deal_id, "lines": lines}, headers=h), 201
    )
    await ok(await sales.post(f"/quotes/{quote['id']}/send", headers=h))
    [sent] = mail.store.list()
    assert sent.rcpt_tos == ["ada@engines.example"]
    accepted = await ok(await sales.post(f"/quotes/{quote['id']}/accept", headers=h))
    invoice = accepted["invoice"]
    assert invoice["total_minor"] == 600_000  # 500,000 net + 20 % tax
    paid = await ok(
        await sales.post(
            f"/invoices/{invoice['id']}/payments",
            json={"amount_minor": 600_000, "method": "bank_transfer"},
            headers=h,
        ),
        201,
    )
    assert paid["status"] == "paid"
    await ok(await sales.post(f"/deals/{deal_id}/stage", json={"stage": "won"}, headers=h))

    customer = lead["customer_id"]
    expected = [
        "crm.sales.lead.captured",
        "crm.sales.contact.created",
        "crm.sales.deal.opened",
        "crm.sales.lead.converted",
        "crm.sales.deal.stage_changed",
        "crm.sales.deal.stage_changed",
        "crm.sales.deal.stage_changed",
        "crm.sales.quote.drafted",
        "crm.sales.quote.sent",
        "crm.sales.quote.accepted",
        "crm.sales.invoice.issued",
        "crm.sales.invoice.payment_received",
        "crm.sales.invoice.paid",
        "crm.sales.deal.stage_changed",
        "crm.sales.deal.won",
    ]
    items = await wait_timeline(analytics, customer, h, len(expected))
    assert [i["type"] for i in items] == expected
    assert items[-1]["summary"] == "The deal was won"
    assert items[2]["link"] == f"sales:/deals/{deal_id}"
    assert items[10]["link"] == f"sales:/invoices/{invoice['id']}"

    deadline = time.monotonic() + 30  # the 360 projection runs just after the timeline's
    while True:
        r = await analytics.get(f"/customers/{customer}", headers=h)
        if (r.status_code == 200 and r.json()["won_deals"] == 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    view = await ok(r)
    assert (view["kind"], view["display_name"]) == ("contact", "Ada Lovelace")
    assert view["owner_id"] is None  # a manager's lead, no rule routed it
    assert (view["won_deals"], view["open_deals"], view["open_invoices"]) == (1, [], 0)
    assert view["last_touch_type"] == "crm.sales.deal.won"
    assert view["health"]["score"] == 90  # touched today +20, a won deal +10
    assert (await analytics.get("/customers/nobody", headers=h)).status_code == 404

    # A second contact for the same person: merging joins the timelines, undo separates them.
    twin = (
        await sales.post(
            "/contacts", json={"last_name": "King", "emails": ["ada@home.example"]}, headers=h
        )
    ).json()
    merged = await sales.post(
        f"/contacts/{conv['contact_id']}/merge", json={"merged_id": twin["id"]}, headers=h
    )
    assert merged.status_code == 200, merged.text
    joined = await wait_timeline(analytics, twin["customer_id"], h, len(expected) + 3)
    assert {i["customer_id"] for i in joined} == {customer, twin["customer_id"]}
    assert "crm.sales.contact.merged" in [i["type"] for i in joined]
    undo = await sales.post(
        f"/contacts/{conv['contact_id']}/merges/{merged.json()['merge_id']}/undo",
        headers=h,
    )
    assert undo.status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = await analytics.get(f"/customers/{twin['customer_id']}/timeline", headers=h)
        if {i["customer_id"] for i in r.json()["items"]} == {twin["customer_id"]}:
            break
        await asyncio.sleep(0.2)
    assert [i["type"] for i in r.json()["items"]] == [
        "crm.sales.contact.created",
        "crm.sales.contact.merged_into",
        "crm.sales.contact.merge_undone",
    ]
    assert r.headers["X-Customer-Id"] == twin["customer_id"]
