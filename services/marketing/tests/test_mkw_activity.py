"""Website activity from anonymous visitors, and identification joining it to the customer."""

from __future__ import annotations

import pytest
from mkb_support import ORIGIN, Mkb, mkb  # noqa: F401

from crm_marketing.audience import api
from crm_runtime.eventstore import Metadata

pytestmark = pytest.mark.integration

VISITOR = "v-8f3a2b1c9d7e"


async def test_anonymous_browsing_joins_the_customer_once_they_identify(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    r = await mkb.activity(
        key,
        VISITOR,
        [
            {"type": "page_view", "url": "https://shop.example.com/", "title": "Shop"},
            {"type": "search", "query": "usb-c phone"},
            {"type": "product_view", "product_id": "p-1", "category": "phones"},
            {"type": "product_view", "product_id": "p-2", "category": "phones"},
            {"type": "add_to_cart", "product_id": "p-2", "category": "phones", "quantity": 2},
        ],
    )
    assert r.status_code == 202
    assert r.json() == {"accepted": 5}
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    anonymous = await mkb.events_of("crm.marketing.web.product_viewed")
    assert [e["subject"] for e in anonymous] == [None, None]
    assert anonymous[0]["visitor_id"] == VISITOR and anonymous[0]["site_key_id"] == key
    assert (
        await mkb.ctx.pool.fetchval("SELECT count(*) FROM web_activity WHERE customer_id IS NULL")
        == 5
    )

    # another visitor's activity stays theirs
    await mkb.activity(key, "v-someone-else", [{"type": "page_view", "url": "https://s.example/"}])

    # the form identifies the visitor: the earlier activity joins the customer
    assert (
        await mkb.submit(key, form_id, {"email": "ada@example.com", "visitor_id": VISITOR})
    ).status_code == 202
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    identified = await mkb.events_of("crm.marketing.visitor.identified")
    assert identified == [
        {
            "subject": cid,
            "visitor_id": VISITOR,
            "customer_id": cid,
            "via": "form",
            "joined_activity": 5,
        }
    ]
    rows = await mkb.ctx.pool.fetch(
        "SELECT visitor_id, customer_id FROM web_activity ORDER BY occurred_at"
    )
    assert {(r["visitor_id"], r["customer_id"]) for r in rows} == {
        (VISITOR, cid),
        ("v-someone-else", None),
    }

    # later activity of the visitor carries the customer id, in its rows and events
    await mkb.activity(
        key, VISITOR, [{"type": "product_view", "product_id": "p-3", "category": "tv"}]
    )
    later = await mkb.events_of("crm.marketing.web.product_viewed")
    assert (later[-1]["subject"], later[-1]["customer_id"]) == (cid, cid)
    listed = (
        await mkb.marketer.get(f"/audience/{cid}/activity", params={"kind": "product_view"})
    ).json()
    assert {a["product_id"] for a in listed["items"]} == {"p-1", "p-2", "p-3"}
    anonymous_only = (await mkb.marketer.get("/web/activity", params={"identified": False})).json()
    assert [a["visitor_id"] for a in anonymous_only["items"]] == ["v-someone-else"]
    categories = {
        r["product_id"]: r["category"]
        for r in await mkb.ctx.pool.fetch("SELECT product_id, category FROM product_categories")
    }
    assert categories == {"p-1": "phones", "p-2": "phones", "p-3": "tv"}

    # identifying again changes nothing and records nothing
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        again = await api.identify_visitor(
            conn, mkb.ctx.store, visitor_id=VISITOR, customer_id=cid, metadata=Metadata()
        )
    assert again == 0
    assert len(await mkb.events_of("crm.marketing.visitor.identified")) == 1


async def test_an_e_mail_click_identifies_through_the_audience_api(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    await mkb.submit(key, form_id, {"email": "bea@example.com"})
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    await mkb.activity(key, "v-clicker-0001", [{"type": "page_view", "url": "https://x.example/"}])
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        joined = await api.identify_visitor(
            conn,
            mkb.ctx.store,
            visitor_id="v-clicker-0001",
            customer_id=cid,
            metadata=Metadata(actor="tracking"),
            via="email_click",
        )
    assert joined == 1
    [event] = await mkb.events_of("crm.marketing.visitor.identified")
    assert event["via"] == "email_click"


async def test_a_retried_batch_is_stored_once(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    batch = [
        {"id": "e1", "type": "page_view", "url": "https://shop.example.com/a"},
        {"id": "e2", "type": "search", "query": "tv"},
        {"id": "e2", "type": "search", "query": "tv"},
    ]
    assert (await mkb.activity(key, VISITOR, batch)).json() == {"accepted": 2}
    assert (await mkb.activity(key, VISITOR, batch)).json() == {"accepted": 0}
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM web_activity") == 2
    assert (
        await mkb.ctx.pool.fetchval(
            "SELECT count(*) FROM events WHERE event_type LIKE 'crm.marketing.web.%'"
        )
        == 2
    )
    # the same client id from another visitor is another event
    assert (await mkb.activity(key, "v-another-001", batch[:1])).json() == {"accepted": 1}


async def test_client_times_are_kept_only_when_plausible(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    await mkb.activity(
        key,
        VISITOR,
        [
            {
                "type": "page_view",
                "url": "https://a.example/1",
                "occurred_at": "2026-05-04T09:59:00Z",
            },
            {
                "type": "page_view",
                "url": "https://a.example/2",
                "occurred_at": "2020-01-01T00:00:00Z",
            },
        ],
    )
    times = {
        r["url"]: r["occurred_at"].isoformat()
        for r in await mkb.ctx.pool.fetch("SELECT url, occurred_at FROM web_activity")
    }
    assert times == {
        "https://a.example/1": "2026-05-04T09:59:00+00:00",
        "https://a.example/2": "2026-05-04T10:00:10+00:00",  # the server's time instead
    }


async def test_bad_activity_gets_422_naming_the_field(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    r = await mkb.activity(key, VISITOR, [{"type": "product_view", "category": "phones"}])
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "events.0.product_view.product_id"
    unknown = await mkb.activity(key, VISITOR, [{"type": "checkout"}])
    assert unknown.status_code == 422
    short = await mkb.activity(key, "x", [{"type": "search", "query": "a"}])
    assert short.json()["errors"][0]["field"] == "visitor_id"
    many = await mkb.activity(key, VISITOR, [{"type": "search", "query": "a"}] * 21)
    assert many.status_code == 422
    assert many.json()["errors"] == [{"field": "events", "reason": "at most 20 per batch"}]
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM web_activity") == 0


async def test_activity_racing_the_identification_is_never_left_anonymous(mkb: Mkb) -> None:  # noqa: F811
    import asyncio

    key = await mkb.site()
    form_id = await mkb.form(key)
    visitor = "v-racer-000001"
    batch = [{"type": "product_view", "product_id": "p-1", "category": "phones"}]
    results = await asyncio.gather(
        *[mkb.activity(key, visitor, batch) for _ in range(8)],
        mkb.submit(key, form_id, {"email": "racer@example.com", "visitor_id": visitor}),
        *[mkb.activity(key, visitor, batch) for _ in range(8)],
    )
    assert {r.status_code for r in results} == {202}
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    rows = await mkb.ctx.pool.fetch("SELECT customer_id FROM web_activity")
    assert len(rows) == 16
    assert {r["customer_id"] for r in rows} == {cid}
