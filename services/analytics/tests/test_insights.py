"""Service and marketing analytics, churn risk and the 360's tickets, on real PostgreSQL, fed
the records the relays would publish (payloads start from each type's contract example)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import pytest

from crm_analytics.app import create_app
from crm_analytics.churn import Signals, churn_risk
from crm_analytics.customers import CustomerProfileProjection
from crm_analytics.marketing import MarketingAnalyticsProjection, flag_underperformers
from crm_analytics.sales import SalesAnalyticsProjection
from crm_analytics.service import ServiceAnalyticsProjection, spike_flags
from crm_analytics.timeline import TimelineProjection
from crm_events import CloudEvent
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


def example(type_: str, version: int = 1) -> dict[str, Any]:
    path = resources.files("crm_events").joinpath("examples", type_, f"v{version}.json")
    return dict(json.loads(path.read_text()))


def record(
    type_: str, subject: str | None, at: datetime, version: int = 1, **data: Any
) -> ConsumedRecord:
    r = CloudEvent(
        id=uuid.uuid4(),
        source=f"/crm/{type_.split('.')[1]}",
        type=type_,
        time=at,
        subject=subject,
        streamid=f"{type_.split('.')[2]}-{uuid.uuid4()}",
        streamversion=1,
        schemaversion=version,
        data={**example(type_, version), **data},
    ).to_kafka()
    return ConsumedRecord(f"crm.{type_.split('.')[1]}.events", 0, 0, r.key, r.value, r.headers)


# --- pure rules --------------------------------------------------------------------------------


def test_a_spike_needs_a_full_baseline_a_minimum_and_a_real_jump() -> None:
    flat = [2] * 7
    assert not any(f["spike"] for f in spike_flags([*flat, 4], 7, 3, 3.0))  # 4 <= 2 + 3*1
    assert spike_flags([*flat, 6], 7, 3, 3.0)[-1]["spike"]
    assert not spike_flags([*flat, 6], 7, 10, 3.0)[-1]["spike"]  # below the minimum count
    assert spike_flags([6], 7, 1, 3.0)[0] == {"count": 6, "baseline": None, "spike": False}
    noisy = [0, 10, 0, 10, 0, 10, 0]
    assert not spike_flags([*noisy, 14], 7, 3, 3.0)[-1]["spike"]  # within 3 sd of a noisy past


def test_underperformers_are_judged_against_the_others_only() -> None:
    flags = flag_underperformers({"a": 0.40, "b": 0.38, "c": 0.10})
    assert [k for k, f in flags.items() if f["underperforming"]] == ["c"]
    assert flags["c"]["others_median"] == 0.39
    assert not flag_underperformers({"alone": 0.01})["alone"]["underperforming"]


def test_churn_risk_adds_explained_factors_and_caps_at_100() -> None:
    calm = churn_risk(NOW, Signals(NOW - timedelta(days=3), 0, [5, 4], 0, 0, 0))  # type: ignore[arg-type]
    assert (calm.score, calm.level, calm.factors) == (0, "low", [])
    from decimal import Decimal

    bad = churn_risk(
        NOW,
        Signals(NOW - timedelta(days=200), 3, [1, 2, 2], 4, Decimal(0), Decimal(5000)),
    )
    assert bad.score == 100 and bad.level == "high"
    assert {f.name: f.points for f in bad.factors} == {
        "engagement_recency": 40,
        "open_complaints": 30,
        "csat": 20,
        "overdue_invoices": 30,
        "falling_purchases": 25,
    }
    halved = churn_risk(
        NOW, Signals(NOW - timedelta(days=40), 0, [], 0, Decimal(100), Decimal(1000))
    )
    assert {f.name: f.points for f in halved.factors} == {
        "engagement_recency": 15,
        "falling_purchases": 20,
    }
    assert halved.level == "medium"


# --- projections and API -------------------------------------------------------------------


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Callable[..., Any]]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c,
    ):
        pool = app.state.ctx.pool

        async def no_letters(record: ConsumedRecord, consumer: str, reason: str) -> None:
            raise AssertionError(reason)

        procs = [
            EventProcessor(pool, p, no_letters)
            for p in (
                TimelineProjection(),
                CustomerProfileProjection(),
                SalesAnalyticsProjection(),
                ServiceAnalyticsProjection(),
                MarketingAnalyticsProjection(),
            )
        ]

        async def feed(*records: ConsumedRecord) -> None:
            for p in procs:
                await p.process_batch(list(records))

        yield c, feed


def ticket(
    ticket_id: str, customer: str, at: datetime, product: str = "router", kind: str = "incident"
) -> ConsumedRecord:
    return record(
        "crm.service.ticket.opened",
        customer,
        at,
        ticket_id=ticket_id,
        customer_id=customer,
        product=product,
        kind=kind,
        priority="normal",
        product_return=None,
    )


pytestmark_integration = pytest.mark.integration


@pytestmark_integration
async def test_ticket_spikes_response_times_breach_rate_and_csat(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    client, feed = analytics
    base = (NOW - timedelta(days=1)).replace(hour=12, minute=0, second=0)  # clear of midnight
    today = base.date()
    start = base - timedelta(days=30)
    records = []
    for day in range(30):  # one router and one modem ticket a day, then 9 router tickets today
        at = start + timedelta(days=day)
        records += [ticket(f"r{day}", "c-1", at), ticket(f"m{day}", "c-1", at, "modem")]
    records += [ticket(f"spike{i}", "c-2", base - timedelta(minutes=i)) for i in range(9)]
    await feed(*records)
    h = {"Authorization": f"Bearer {token('analyst', user='ana')}"}
    r = await client.get(
        "/analytics/service/ticket-spikes",
        params={"start": str(today - timedelta(days=2)), "end": str(today), "min_count": 3},
        headers=h,
    )
    assert r.status_code == 200, r.text
    got = {p["product"]: p for p in r.json()["products"]}
    assert got["router"]["spikes"] == [str(today)]
    assert got["router"]["days"][-1]["count"] == 9 and got["router"]["days"][-1]["baseline"] == 1
    assert got["modem"]["spikes"] == []

    # first responses after 1, 2 and 3 hours; two resolved after 4 and 8 hours; one breach
    t0 = base + timedelta(hours=2)
    extra = [ticket(f"t{i}", "c-3", t0) for i in range(3)]
    for i, hours in enumerate((1, 2, 3)):
        extra.append(
            record(
                "crm.service.ticket.replied",
                "c-3",
                t0 + timedelta(hours=hours),
                ticket_id=f"t{i}",
                first_response=True,
            )
        )
    extra += [
        record(
            "crm.service.ticket.assigned",
            "c-3",
            t0,
            ticket_id="t0",
            assignee_id="agent-a",
            queue_id="q",
            from_status="new",
            to_status="assigned",
        ),
        record("crm.service.ticket.resolved", "c-3", t0 + timedelta(hours=4), ticket_id="t0"),
        record("crm.service.ticket.resolved", "c-3", t0 + timedelta(hours=8), ticket_id="t1"),
        record("crm.service.ticket.rated", "c-3", t0 + timedelta(hours=9), ticket_id="t0", score=5),
        record("crm.service.ticket.rated", "c-3", t0 + timedelta(hours=9), ticket_id="t1", score=2),
        record(
            "crm.service.ticket.rated", "c-3", t0 + timedelta(hours=10), ticket_id="t1", score=5
        ),
        record("crm.service.sla.breached", "c-3", t0 + timedelta(hours=5), ticket_id="t2"),
    ]
    await feed(*extra)
    since = {"since": (t0 - timedelta(minutes=1)).isoformat()}
    rt = (await client.get("/analytics/service/response-times", params=since, headers=h)).json()
    assert rt["first_response"]["p50"] == 2.0
    assert rt["resolution"]["p50"] == 6.0
    assert (rt["tickets"], rt["responded"], rt["resolved"]) == (3, 3, 2)
    sla = (await client.get("/analytics/service/sla", params=since, headers=h)).json()
    assert (sla["tickets"], sla["breached"], sla["breach_rate"]) == (3, 1, 0.3333)
    csat = (await client.get("/analytics/service/csat", params={"by": "agent"}, headers=h)).json()
    by_agent = {row["agent"]: row for row in csat["rows"]}
    assert by_agent["agent-a"]["average"] == 5.0
    assert by_agent["(none)"]["average"] == 2.0  # rated once: the second rating changed nothing
    rep = {"Authorization": f"Bearer {token('sales_rep', user='bob')}"}
    assert (await client.get("/analytics/service/sla", headers=rep)).status_code == 403


@pytestmark_integration
async def test_campaign_funnel_open_rates_and_leads_by_source(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    client, feed = analytics
    t0 = NOW - timedelta(days=20)
    x_lead, x_contact, y_lead = "cust-x", "cust-x-contact", "cust-y"

    def msg(step: str, n: int, customer: str, at: datetime, campaign: str = "camp-1") -> Any:
        return record(
            f"crm.marketing.message.{step}",
            customer,
            at,
            message_id=f"{campaign}-m{n}",
            customer_id=customer,
            campaign_id=campaign,
            trigger_id=None,
            channel="email",
            **({"template_id": "tpl-1"} if step == "sent" else {}),
        )

    records = [msg("sent", i, f"r{i}" if i else x_lead, t0) for i in range(4)]
    records += [msg("delivered", i, f"r{i}" if i else x_lead, t0) for i in range(3)]
    records += [msg("opened", i, f"r{i}" if i else x_lead, t0 + timedelta(hours=1)) for i in (0, 1)]
    records += [msg("clicked", 0, x_lead, t0 + timedelta(hours=2))]
    records += [
        record(
            "crm.sales.lead.captured",
            x_lead,
            t0 + timedelta(days=1),
            lead_id="L-x",
            customer_id=x_lead,
            source="web_form",
            owner_id=None,
        ),
        record(
            "crm.sales.lead.captured",
            y_lead,
            t0 + timedelta(days=1),
            version=3,
            lead_id="L-y",
            customer_id=y_lead,
            source="campaign",
            source_detail="camp-1",
            owner_id=None,
            attribution={"utm_campaign": "camp-1", "utm_source": "newsletter"},
        ),
        record(
            "crm.sales.lead.converted",
            x_contact,
            t0 + timedelta(days=2),
            lead_id="L-x",
            lead_customer_id=x_lead,
            customer_id=x_contact,
            deal_id="D-x",
        ),
        record(
            "crm.sales.deal.opened",
            x_contact,
            t0 + timedelta(days=2),
            deal_id="D-x",
            customer_id=x_contact,
            currency="USD",
            exchange_rate="0.5",
            base_currency="EUR",
        ),
        record(
            "crm.sales.deal.won",
            x_contact,
            t0 + timedelta(days=10),
            deal_id="D-x",
            amount_minor=200000,
            currency="USD",
        ),
    ]
    await feed(*records)
    # x clicked, then became a lead; y's lead names the campaign in its attribution (v3)
    h = {"Authorization": f"Bearer {token('marketer', user='mia')}"}
    f = (await client.get("/analytics/marketing/campaigns/camp-1/funnel", headers=h)).json()
    assert [(s["step"], s["count"]) for s in f["steps"]] == [
        ("sent", 4),
        ("delivered", 4),  # e-mail: sent and not bounced
        ("opened", 2),
        ("clicked", 1),
        ("lead", 2),
        ("deal", 1),
        ("won", 1),
    ]
    assert (f["won_revenue"], f["currency"]) == ("1000.00", "EUR")
    assert f["rates"]["open"] == 0.5

    by_source = {
        s["source"]: s
        for s in (await client.get("/analytics/marketing/leads-by-source", headers=h)).json()[
            "sources"
        ]
    }
    assert by_source["web_form"]["converted"] == 1 and by_source["web_form"]["won"] == 1
    assert by_source["web_form"]["won_revenue"] == "1000.00"
    assert by_source["campaign"]["conversion_rate"] == 0.0

    # open rates: three campaigns of 20 messages; the third far below the others
    more = []
    for campaign, opened in (("camp-a", 8), ("camp-b", 7), ("camp-c", 2)):
        for i in range(20):
            more.append(msg("sent", i, f"{campaign}-{i}", t0, campaign))
            if i < opened:
                more.append(msg("opened", i, f"{campaign}-{i}", t0, campaign))
    await feed(*more)
    rates = (await client.get("/analytics/marketing/open-rates", headers=h)).json()["messages"]
    flagged = {m["campaign_id"]: m["underperforming"] for m in rates}
    assert flagged == {"camp-a": False, "camp-b": False, "camp-c": True}
    agent = {"Authorization": f"Bearer {token('service_agent', user='sam')}"}
    assert (await client.get("/analytics/marketing/open-rates", headers=agent)).status_code == 403


@pytestmark_integration
async def test_the_360_counts_open_tickets_and_churn_risk_lists_owners_customers(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    client, feed = analytics
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    old = NOW - timedelta(days=200)
    contact = example("crm.sales.contact.created")
    await feed(
        record(
            "crm.sales.contact.created",
            cid,
            old,
            contact_id="k1",
            customer_id=cid,
            owner_id="bob",
            details={**contact["details"], "last_name": "Risky"},
        ),
        record(
            "crm.sales.contact.created",
            other,
            old,
            contact_id="k2",
            customer_id=other,
            owner_id="carl",
            details={**contact["details"], "last_name": "Other"},
        ),
        ticket("tc1", cid, old, kind="complaint"),
        ticket("tc2", cid, old, kind="complaint"),
        ticket("tq", cid, old, kind="query"),
        record("crm.service.ticket.resolved", cid, old, ticket_id="tq"),
        record("crm.service.ticket.rated", cid, old, ticket_id="tq", score=1),
    )
    admin = {"Authorization": f"Bearer {token('admin', user='root')}"}
    view = (await client.get(f"/customers/{cid}", headers=admin)).json()
    assert (view["open_tickets"], view["open_complaints"]) == (2, 2)
    factors = {f["name"]: f["points"] for f in view["churn_risk"]["factors"]}
    assert factors == {"engagement_recency": 40, "open_complaints": 30, "csat": 20}
    assert view["churn_risk"]["level"] == "high"

    bob = {"Authorization": f"Bearer {token('sales_rep', user='bob')}"}
    mine = (await client.get("/analytics/customers/at-risk", headers=bob)).json()
    assert [c["customer_id"] for c in mine["customers"]] == [cid]
    assert mine["owner_id"] == "bob"
    r = await client.get("/analytics/customers/at-risk", params={"owner_id": "carl"}, headers=bob)
    assert r.status_code == 403
    everyone = (await client.get("/analytics/customers/at-risk", headers=admin)).json()
    # carl's customer was never touched: medium risk, listed after bob's high-risk one
    assert [(c["customer_id"], c["level"]) for c in everyone["customers"]] == [
        (cid, "high"),
        (other, "medium"),
    ]


@pytestmark_integration
async def test_website_activity_shows_per_visit_once_the_visitor_is_known(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    client, feed = analytics
    customer, visitor = str(uuid.uuid4()), "v-1234abcd"
    t0 = NOW - timedelta(days=2)

    def web(kind: str, minutes: int, subject: str | None = None, **data: Any) -> ConsumedRecord:
        return record(
            f"crm.marketing.web.{kind}",
            subject,
            t0 + timedelta(minutes=minutes),
            visitor_id=visitor,
            customer_id=subject,
            **data,
        )

    # anonymous browsing: nothing on anyone's timeline yet
    await feed(
        web("page_viewed", 0, url="https://shop.example.com/"),
        web("product_viewed", 5, product_id="p1", category="phones"),
        web("searched", 10, query="case"),
    )
    h = {"Authorization": f"Bearer {token('analyst')}"}

    async def visits_of() -> list[dict[str, Any]]:
        r = await client.get(f"/customers/{customer}/timeline", headers=h)
        if r.status_code == 404:  # nothing about this customer has been seen yet
            return []
        return [i for i in r.json()["items"] if i["type"] == "crm.marketing.web.visit"]

    assert await visits_of() == []
    identified = record(
        "crm.marketing.visitor.identified",
        customer,
        t0 + timedelta(minutes=12),
        visitor_id=visitor,
        customer_id=customer,
        via="form",
        joined_activity=3,
    )
    # identified; then a late event of the first visit, and a second visit two hours later
    await feed(identified)
    [first] = await visits_of()
    assert (
        first["summary"] == "Website visit: 1 page, 1 product viewed (phones), 1 search over 10 min"
    )
    late = web("product_viewed", 3, customer, product_id="p2", category="cases")
    await feed(
        web("added_to_cart", 14, customer, product_id="p1", category="phones"),
        web("product_viewed", 130, customer, product_id="p9", category="tablets"),
        late,  # out of order
        late,  # and delivered twice: counted once
    )
    got = await visits_of()
    assert [v["summary"] for v in got] == [
        "Website visit: 1 page, 2 products viewed (cases, phones), 1 search, 1 added to cart"
        " over 14 min",
        "Website visit: 1 product viewed (tablets)",
    ]
    assert got[0]["occurred_at"] < got[1]["occurred_at"]
    # an event in the gap bridges the two visits into one
    await feed(*(web("page_viewed", m, customer, url="https://shop.example.com/x")
                 for m in (40, 70, 100)))  # fmt: skip
    [merged] = await visits_of()
    assert (merged["data"]["pages"], merged["data"]["products"]) == (4, 3)
    assert merged["data"]["categories"] == ["cases", "phones", "tablets"]


@pytestmark_integration
async def test_unknowns_and_out_of_range_dates_are_clear_errors(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    client, _ = analytics
    h = {"Authorization": f"Bearer {token('analyst')}"}
    assert (await client.get("/customers/nobody/timeline", headers=h)).status_code == 404
    funnel = await client.get("/analytics/marketing/campaigns/nope/funnel", headers=h)
    assert funnel.status_code == 404
    far = await client.get(
        "/analytics/service/ticket-spikes",
        params={"start": "2000-01-01", "end": "9999-12-31"},
        headers=h,
    )
    assert far.status_code == 422 and far.json()["errors"][0]["field"] == "end"
    chart = await client.get("/analytics/charts/win-rate", params={"until": "9999-12"}, headers=h)
    assert chart.status_code == 422


@pytestmark_integration
async def test_a_backdated_activity_sits_on_the_timeline_when_it_happened(
    analytics: tuple[httpx.AsyncClient, Callable[..., Any]], token: Callable[..., str]
) -> None:
    # A call logged today that took place in January is January's, on the timeline and in its
    # since/until filters (as it already was for the customer's last touch).
    client, feed = analytics
    customer = str(uuid.uuid4())
    january = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    await feed(
        record("crm.sales.lead.captured", customer, NOW - timedelta(days=2), customer_id=customer),
        record(
            "crm.sales.activity.logged", customer, NOW, occurred_at=january.isoformat(), kind="call"
        ),
    )
    h = {"Authorization": f"Bearer {token('analyst')}"}
    r = await client.get(f"/customers/{customer}/timeline", headers=h)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["type"] for i in items] == ["crm.sales.activity.logged", "crm.sales.lead.captured"]
    assert datetime.fromisoformat(items[0]["occurred_at"]) == january
    found = await client.get(
        f"/customers/{customer}/timeline",
        params={"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
        headers=h,
    )
    assert [i["type"] for i in found.json()["items"]] == ["crm.sales.activity.logged"]
