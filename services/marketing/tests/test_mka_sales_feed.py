"""Profiles and purchases kept from sales' events (real encoded events through EventProcessor)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from mkb_support import Mkb, mkb, record, sales_event  # noqa: F401

from crm_marketing.audience import api
from crm_marketing.audience.sales_feed import run_audience_consumer, split_name
from crm_runtime.consumer import Outcome
from crm_runtime.eventstore import Metadata

pytestmark = pytest.mark.integration


def contact_created(cid: str, contact_id: str, **details: Any) -> Any:
    return sales_event(
        "crm.sales.contact.created",
        {"contact_id": contact_id, "customer_id": cid, "details": details},
        subject=cid,
    )


async def profile(mkb: Mkb, cid: str) -> dict[str, Any] | None:  # noqa: F811
    row = await mkb.ctx.pool.fetchrow("SELECT * FROM profiles WHERE customer_id = $1", cid)
    return None if row is None else dict(row)


async def test_contacts_and_leads_keep_profiles_once_per_event(mkb: Mkb) -> None:  # noqa: F811
    feed = mkb.feed()
    cid, contact = str(uuid.uuid4()), str(uuid.uuid4())
    created = contact_created(
        cid,
        contact,
        first_name="Ada",
        last_name="Lovelace",
        emails=["ada@example.com", "ada@work.example"],
        phones=["+44 20 7946 0000"],
        industry="software",
        address={"city": "London", "country": "GB"},
    )
    assert await feed.process_batch([record(created, 0), record(created, 1)]) == [
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    p = await profile(mkb, cid)
    assert p is not None
    assert (p["email"], p["phone"], p["country"], p["city"], p["industry"]) == (
        "ada@example.com",
        "+44 20 7946 0000",
        "GB",
        "London",
        "software",
    )
    [ev] = await mkb.events_of("crm.marketing.profile.created")
    assert (ev["subject"], ev["source"]) == (cid, "sales")
    history = (await mkb.marketer.get(f"/audience/{cid}/history")).json()
    assert history[0]["actor"] == "consumer:marketing.audience"

    updated = sales_event(
        "crm.sales.contact.updated",
        {
            "contact_id": contact,
            "changed": ["emails", "address"],
            "values": {"emails": ["ada@new.example"], "address": {"country": "IE"}},
        },
        subject=cid,
    )
    assert await feed.process(record(updated)) == Outcome.APPLIED
    p = await profile(mkb, cid)
    assert p is not None and (p["email"], p["country"], p["city"]) == (
        "ada@new.example",
        "IE",
        "London",
    )

    # a lead fills only what the profile lacks; a lead of someone new starts one
    lead_cid = str(uuid.uuid4())
    for lead in (
        sales_event(
            "crm.sales.lead.captured",
            {
                "lead_id": "l-1",
                "customer_id": cid,
                "name": "Augusta Ada King",
                "company": "Engines Ltd",
                "source": "web_form",
            },
            subject=cid,
        ),
        sales_event(
            "crm.sales.lead.captured",
            {
                "lead_id": "l-2",
                "customer_id": lead_cid,
                "name": "Bea Baker",
                "email": "bea@example.com",
                "source": "referral",
            },
            subject=lead_cid,
        ),
    ):
        assert await feed.process(record(lead)) == Outcome.APPLIED
    p = await profile(mkb, cid)
    assert p is not None and (p["first_name"], p["company"]) == ("Ada", "Engines Ltd")
    b = await profile(mkb, lead_cid)
    assert b is not None and (b["first_name"], b["last_name"], b["email"]) == (
        "Bea",
        "Baker",
        "bea@example.com",
    )
    # what this consumer does not handle is ignored
    other = sales_event("crm.sales.task.completed", {"task_id": "t-1"}, subject=cid)
    assert await feed.process(record(other)) == Outcome.IGNORED


async def test_a_merge_folds_the_profile_into_the_survivor(mkb: Mkb) -> None:  # noqa: F811
    feed = mkb.feed()
    key = await mkb.site()
    survivor, merged = str(uuid.uuid4()), str(uuid.uuid4())
    await feed.process_batch(
        [
            record(
                contact_created(survivor, "c-1", last_name="Lovelace", emails=["ada@example.com"])
            ),
            record(
                contact_created(
                    merged, "c-2", last_name="Lovelace", phones=["+44 1"], emails=["a@old.example"]
                ),
                1,
            ),
        ]
    )
    await mkb.marketer.post(f"/audience/{merged}/consents/sms/opt-in", json={})
    await mkb.marketer.post(f"/audience/{merged}/devices", json={"token": "t-1", "platform": "ios"})
    await mkb.activity(key, "v-merged-0001", [{"type": "page_view", "url": "https://a.example/"}])
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        await api.identify_visitor(
            conn, mkb.ctx.store, visitor_id="v-merged-0001", customer_id=merged, metadata=Metadata()
        )
    merge = sales_event(
        "crm.sales.contact.merged",
        {
            "contact_id": "c-1",
            "customer_id": survivor,
            "merged_id": "c-2",
            "merged_customer_id": merged,
            "merge_id": "m-1",
            "absorbed": {"phones": ["+44 1"]},
            "absorbed_fields": ["phones"],
        },
        subject=survivor,
    )
    assert await feed.process_batch([record(merge, 0), record(merge, 1)]) == [
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    assert await profile(mkb, merged) is None
    s = await profile(mkb, survivor)
    assert s is not None and (s["email"], s["phone"]) == ("ada@example.com", "+44 1")
    async with mkb.ctx.pool.acquire() as conn:
        # the merged id now stands for the survivor: its consent and device came along
        assert await api.contact_point(conn, merged, "sms") == "+44 1"
        assert await api.has_consent(conn, survivor, "sms")
        assert await conn.fetchval("SELECT customer_id FROM push_devices") == survivor
        assert await conn.fetchval("SELECT customer_id FROM web_activity") == survivor
        assert await conn.fetchval("SELECT customer_id FROM visitors") == survivor
    shown = (await mkb.marketer.get(f"/audience/{merged}")).json()
    assert shown["customer_id"] == survivor
    [folded] = await mkb.events_of("crm.marketing.profile.merged")
    assert (folded["subject"], folded["merged_customer_id"], folded["folded"]) == (
        survivor,
        merged,
        ["phone"],
    )
    # later activity of the visitor goes to the survivor too
    await mkb.activity(key, "v-merged-0001", [{"type": "search", "query": "x"}])
    [searched] = await mkb.events_of("crm.marketing.web.searched")
    assert searched["subject"] == survivor

    undone = sales_event(
        "crm.sales.contact.merge_undone",
        {
            "contact_id": "c-1",
            "merge_id": "m-1",
            "survivor_id": "c-1",
            "survivor_customer_id": survivor,
            "merged_id": "c-2",
            "merged_customer_id": merged,
        },
        subject=survivor,
    )
    assert await feed.process(record(undone)) == Outcome.APPLIED
    restored = await profile(mkb, merged)
    assert restored is not None and restored["email"] == "a@old.example"
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.has_consent(conn, merged, "sms")


async def test_a_form_person_sales_identifies_folds_into_the_existing_customer(mkb: Mkb) -> None:  # noqa: F811
    feed = mkb.feed()
    existing = str(uuid.uuid4())
    await feed.process(
        record(contact_created(existing, "c-9", last_name="Hopper", emails=["grace@navy.example"]))
    )
    key = await mkb.site()
    form_id = await mkb.form(key)
    # marketing's people directory has not heard of the contact yet: it mints a provisional id
    await mkb.submit(
        key, form_id, {"email": "grace@navy.example", "country": "us", "visitor_id": "v-grace-0001"}
    )
    [sighted] = await mkb.events_of("crm.marketing.person.sighted")
    alias = sighted["customer_id"]
    assert alias != existing
    identified = sales_event(
        "crm.sales.customer.identified",
        {
            "alias_id": alias,
            "customer_id": existing,
            "sighted_in": "marketing",
            "matched_by": "contact_email",
        },
        subject=existing,
    )
    assert await feed.process(record(identified)) == Outcome.APPLIED
    assert await profile(mkb, alias) is None
    p = await profile(mkb, existing)
    assert p is not None and (p["last_name"], p["country"]) == ("Hopper", "US")
    assert await mkb.ctx.pool.fetchval("SELECT customer_id FROM visitors") == existing
    assert await mkb.ctx.pool.fetchval("SELECT customer_id FROM form_submissions") == existing

    # a converted lead's profile folds into its contact's the same way
    lead_cid, contact_cid = str(uuid.uuid4()), str(uuid.uuid4())
    await feed.process(
        record(
            sales_event(
                "crm.sales.lead.captured",
                {"lead_id": "l-7", "customer_id": lead_cid, "name": "Kay", "source": "phone"},
                subject=lead_cid,
            )
        )
    )
    await feed.process(record(contact_created(contact_cid, "c-7", last_name="Kay")))
    converted = sales_event(
        "crm.sales.lead.converted",
        {
            "lead_id": "l-7",
            "lead_customer_id": lead_cid,
            "customer_id": contact_cid,
            "contact_id": "c-7",
        },
        subject=contact_cid,
    )
    assert await feed.process(record(converted)) == Outcome.APPLIED
    assert await profile(mkb, lead_cid) is None
    async with mkb.ctx.pool.acquire() as conn:
        assert (await api.profile_variables(conn, lead_cid))["customer_id"] == contact_cid


def deal_opened(deal_id: str, cid: str, lines: list[dict[str, Any]]) -> Any:
    return sales_event(
        "crm.sales.deal.opened",
        {
            "deal_id": deal_id,
            "customer_id": cid,
            "name": "Phones",
            "pipeline_id": "default",
            "stage": "new",
            "probability": 10,
            "amount_minor": 100_000,
            "currency": "EUR",
            "base_currency": "EUR",
            "exchange_rate": "1",
            "lines": lines,
        },
        subject=cid,
    )


def invoice_issued(invoice_id: str, deal_id: str, cid: str) -> Any:
    line = {
        "line_no": 1,
        "product_id": "p-tv",
        "name": "TV",
        "quantity": "1",
        "unit_price_minor": 50_000,
        "discount_minor": 0,
        "net_minor": 50_000,
        "tax_minor": 0,
        "total_minor": 50_000,
    }
    totals = {"subtotal_minor": 50_000, "discount_minor": 0, "tax_minor": 0, "total_minor": 50_000}
    return sales_event(
        "crm.sales.invoice.issued",
        {
            "invoice_id": invoice_id,
            "invoice_number": "INV-2026-000001",
            "quote_id": "q-1",
            "quote_number": "Q-1",
            "quote_revision": 1,
            "deal_id": deal_id,
            "customer_id": cid,
            "currency": "EUR",
            "lines": [line],
            "totals": totals,
            "issue_date": "2026-05-01",
            "due_date": "2026-05-31",
            "payment_terms_days": 30,
        },
        subject=cid,
    )


def paid(invoice_id: str) -> Any:
    return sales_event(
        "crm.sales.invoice.paid",
        {
            "invoice_id": invoice_id,
            "paid_minor": 50_000,
            "currency": "EUR",
            "paid_at": "2026-05-03T12:00:00Z",
        },
    )


async def test_won_deals_and_paid_invoices_are_purchases_counted_once(mkb: Mkb) -> None:  # noqa: F811
    feed = mkb.feed()
    key = await mkb.site()
    # the website told us the phone's category
    await mkb.activity(
        key,
        "v-cat-00001",
        [{"type": "product_view", "product_id": "p-phone", "category": "phones"}],
    )
    cid = str(uuid.uuid4())
    await feed.process(record(contact_created(cid, "c-1", last_name="Buyer")))
    lines = [
        {"product_id": "p-phone", "name": "Phone", "quantity": 2, "unit_price_minor": 30_000},
        {"name": "Setup", "quantity": 1, "unit_price_minor": 40_000},
    ]
    won = sales_event(
        "crm.sales.deal.won",
        {"deal_id": "d-1", "stage": "won", "amount_minor": 100_000, "currency": "EUR"},
        subject=cid,
    )
    outcomes = await feed.process_batch(
        [record(deal_opened("d-1", cid, lines), 0), record(won, 1), record(won, 2)]
    )
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE]
    rows = await mkb.ctx.pool.fetch(
        "SELECT product_id, category, amount_minor FROM purchases WHERE customer_id = $1"
        " ORDER BY purchase_id",
        cid,
    )
    assert [tuple(r) for r in rows] == [
        ("p-phone", "phones", 60_000),
        ("custom:Setup", None, 40_000),
    ]
    listed = (await mkb.marketer.get(f"/audience/{cid}/purchases")).json()["items"]
    assert len(listed) == 2
    recorded = await mkb.events_of("crm.marketing.purchase.recorded")
    assert [e["subject"] for e in recorded] == [cid, cid]

    # the deal's invoice, paid later, is the same sale: nothing more
    await feed.process_batch([record(invoice_issued("i-1", "d-1", cid)), record(paid("i-1"), 1)])
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM purchases") == 2
    # an invoice of a deal nobody marked won is a purchase when paid
    await feed.process_batch([record(invoice_issued("i-2", "d-2", cid)), record(paid("i-2"), 1)])
    assert (
        await mkb.ctx.pool.fetchval(
            "SELECT count(*) FROM purchases WHERE source = 'invoice' AND product_id = 'p-tv'"
        )
        == 1
    )
    # and winning that deal afterwards does not count it twice
    won2 = sales_event(
        "crm.sales.deal.won",
        {"deal_id": "d-2", "stage": "won", "amount_minor": 50_000, "currency": "EUR"},
        subject=cid,
    )
    await feed.process_batch([record(deal_opened("d-2", cid, [])), record(won2, 1)])
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM purchases") == 3


async def test_the_consumer_is_off_when_consumers_are_disabled(mkb: Mkb) -> None:  # noqa: F811
    stop = asyncio.Event()
    await asyncio.wait_for(run_audience_consumer(mkb.ctx, stop), 2)  # returns at once


def test_names_split_into_first_and_last() -> None:
    assert split_name("Augusta Ada King") == ("Augusta Ada", "King")
    assert split_name("Cher") == ("Cher", None)  # a single name is a first name
    assert split_name("  ") == (None, None)
