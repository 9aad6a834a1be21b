"""The rebuild's in-memory fold (``crm_analytics.bulk``) leaves every analytics table exactly as
the worker's statements do, for a history that touches every rule: all three contexts' stories,
merges and their undo, identifications, updates, reassignments, invoices overdue and voided,
ticket reopen/close/merge and SLA breaches, every message step, duplicates, a poison record, a
type nobody knows, and web activity arriving out of order (one event bridging two visits)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from an_helpers import snapshot

from crm_analytics.bulk import BulkState
from crm_analytics.projections import AnalyticsProcessor, all_projections
from crm_analytics.rebuild import Progress, rebuild
from crm_analytics.samples import _example, history
from crm_events import CloudEvent
from crm_runtime import db
from crm_runtime.consumer import ConsumedRecord

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ev(
    type_: str,
    subject: str | None,
    minutes: float,
    stream: str,
    *,
    id_: uuid.UUID | None = None,
    **data: Any,
) -> CloudEvent:
    """An event from the type's contract example, at T0 + ``minutes`` (``id_``: a fixed id)."""
    version, example = _example(type_)
    return CloudEvent(
        id=id_ or uuid.uuid4(),
        source=f"/crm/{type_.split('.')[1]}",
        type=type_,
        time=T0 + timedelta(minutes=minutes),
        subject=subject,
        streamid=stream,
        streamversion=1,
        schemaversion=version,
        data={**example, **data},
    )


def extras() -> list[CloudEvent]:
    """The rules the sample stories do not reach, in an order that is not time order."""
    a, b, acct = (str(uuid.uuid4()) for _ in range(3))
    deal, invoice, invoice2, lead, lead2 = (str(uuid.uuid4()) for _ in range(5))
    merge, message = str(uuid.uuid4()), str(uuid.uuid4())
    ticket, ticket2 = "T-EXTRA00001", "T-EXTRA00002"
    visitor = "v-bridge"
    web: dict[str, Any] = {"site_key_id": "pk_t", "visitor_id": visitor}
    return [
        ev("crm.sales.lead.captured", a, 0, f"lead-{lead}", lead_id=lead, customer_id=a,
           owner_id=None, team_id=None),
        ev("crm.sales.lead.assigned", a, 1, f"lead-{lead}", lead_id=lead, owner_id="olga"),
        ev("crm.sales.lead.qualified", a, 2, f"lead-{lead}", lead_id=lead),
        ev("crm.sales.lead.qualified", a, 3, f"lead-{lead}", lead_id=lead),
        ev("crm.sales.lead.captured", b, 4, f"lead-{lead2}", lead_id=lead2, customer_id=b),
        ev("crm.sales.lead.disqualified", b, 5, f"lead-{lead2}", lead_id=lead2),
        ev("crm.sales.contact.created", a, 6, f"contact-{a}", customer_id=a,
           details={**_example("crm.sales.contact.created")[1]["details"], "first_name": "",
                    "last_name": "Zed"}),
        ev("crm.sales.contact.updated", a, 7, f"contact-{a}",
           changed=["first_name", "region"], values={"first_name": "Ann", "region": "APAC"}),
        ev("crm.sales.contact.reassigned", a, 8, f"contact-{a}", owner_id="bob", team_id="t"),
        ev("crm.sales.account.created", acct, 9, f"account-{acct}"),
        ev("crm.sales.account.updated", acct, 10, f"account-{acct}",
           changed=["name", "tier"], values={"name": "Renamed", "tier": "top"}),
        ev("crm.sales.account.reassigned", acct, 11, f"account-{acct}", owner_id="eve"),
        ev("crm.sales.lead.converted", a, 12, f"lead-{lead}", lead_id=lead,
           lead_customer_id=b, customer_id=a, deal_id=deal),
        ev("crm.sales.deal.stage_changed", a, 13, f"deal-{deal}", deal_id=deal),  # before open
        ev("crm.sales.deal.opened", a, 14, f"deal-{deal}", deal_id=deal, customer_id=a),
        ev("crm.sales.deal.updated", a, 15, f"deal-{deal}", deal_id=deal),
        ev("crm.sales.deal.assigned", a, 16, f"deal-{deal}", deal_id=deal, owner_id="zoe"),
        ev("crm.sales.deal.reassigned", a, 17, f"deal-{deal}", deal_id=deal, owner_id="yan"),
        ev("crm.sales.deal.won", a, 18, f"deal-{deal}", deal_id=deal, currency="JPY"),
        ev("crm.sales.invoice.issued", a, 19, f"invoice-{invoice}", invoice_id=invoice),
        ev("crm.sales.invoice.overdue", a, 20, f"invoice-{invoice}", invoice_id=invoice),
        ev("crm.sales.invoice.issued", a, 21, f"invoice-{invoice2}", invoice_id=invoice2),
        ev("crm.sales.invoice.voided", a, 22, f"invoice-{invoice2}", invoice_id=invoice2),
        ev("crm.sales.contact.merged", a, 23, f"contact-{a}", merge_id=merge,
           merged_customer_id=b, customer_id=a),
        ev("crm.sales.contact.merge_undone", a, 24, f"contact-{a}", merge_id=merge),
        ev("crm.sales.customer.identified", a, 25, f"person-{a}", alias_id=str(uuid.uuid4()),
           customer_id=a),
        ev("crm.sales.activity.logged", a, 26, f"activity-{a}", customer_id=a,
           occurred_at=(T0 - timedelta(days=3)).isoformat()),  # a touch in the past
        ev("crm.service.ticket.opened", a, 27, f"ticket-{ticket}", ticket_id=ticket,
           customer_id=a, kind="incident", priority="low", product_return=None),
        ev("crm.service.ticket.assigned", a, 28, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.customer_replied", a, 29, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.replied", a, 31, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.replied", a, 30, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.updated", a, 32, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.sla.breached", a, 33, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.sla.breached", a, 34, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.resolved", a, 35, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.reopened", a, 36, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.status_changed", a, 37, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.closed", a, 38, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.rated", a, 39, f"ticket-{ticket}", ticket_id=ticket),
        ev("crm.service.ticket.rated", a, 40, f"ticket-{ticket}", ticket_id=ticket, score=1),
        ev("crm.service.ticket.opened", a, 41, f"ticket-{ticket2}", ticket_id=ticket2,
           customer_id=a, product_return=None),
        ev("crm.service.ticket.merged_into", a, 42, f"ticket-{ticket2}", ticket_id=ticket2),
        *(
            ev(f"crm.marketing.message.{step}", a, 43 + i, f"message-{message}",
               message_id=message, customer_id=a, **({"template_id": "tpl"} if i == 1 else {}))
            for i, step in enumerate(
                ("delivered", "sent", "bounced", "opened", "clicked", "opened", "unsubscribed")
            )
        ),
        # web: two visits an hour apart, then a late event between them joins them
        ev("crm.marketing.web.page_viewed", None, 100, f"visitor-{visitor}", **web),
        ev("crm.marketing.web.product_viewed", None, 101, f"visitor-{visitor}", **web,
           customer_id=None, category="zeta"),
        ev("crm.marketing.web.searched", None, 160, f"visitor-{visitor}", **web),
        ev("crm.marketing.web.product_viewed", None, 161, f"visitor-{visitor}", **web,
           customer_id=None, category="alpha"),
        ev("crm.marketing.visitor.identified", a, 170, f"visitor-{visitor}",
           visitor_id=visitor, customer_id=a),
        ev("crm.marketing.web.added_to_cart", None, 130, f"visitor-{visitor}", **web),
        ev("crm.marketing.web.page_viewed", None, 90, f"visitor-{visitor}", **web,
           url="https://shop.example/early"),
        ev("crm.marketing.web.page_viewed", a, 400, f"visitor-{visitor}", **web,
           customer_id=a),
    ]  # fmt: skip


def records() -> list[ConsumedRecord]:
    events = [e.cloud_event() for e in history(28 * 12, seed=3)] + extras()
    out = []
    for i, e in enumerate(events):
        k = e.to_kafka()
        out.append(ConsumedRecord("crm.x.events", 0, i, k.key, k.value, k.headers))
    out.insert(40, out[10])  # a redelivery
    out.append(out[-5])
    out.insert(7, ConsumedRecord("crm.x.events", 0, 10**6, b"k", b"not json", []))
    unknown = ev("crm.sales.lead.captured", "x", 0, "lead-x").model_copy(
        update={"type": "crm.sales.future.thing"}
    )
    k = unknown.to_kafka()
    out.insert(3, ConsumedRecord("crm.x.events", 0, 10**6 + 1, k.key, k.value, k.headers))
    return out


async def feed(pool: Any, items: list[ConsumedRecord], batch: int) -> list[str]:
    """What the worker does with ``items`` (``batch`` a transaction); the dead letters."""
    letters: list[str] = []

    async def sink(record: ConsumedRecord, consumer: str, reason: str) -> None:
        letters.append(reason)

    processor = AnalyticsProcessor(pool, all_projections(), sink)
    for i in range(0, len(items), batch):
        await processor.process_batch(items[i : i + batch])
    return letters


class ListSource:
    """One stream: the records exactly in the order given (as the worker saw them)."""

    name = "list"

    def __init__(self, items: list[ConsumedRecord]) -> None:
        self.items = items
        self.total: int | None = len(items)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[list[AsyncIterator[list[ConsumedRecord]]]]:
        async def stream() -> AsyncIterator[list[ConsumedRecord]]:
            for i in range(0, len(self.items), 50):
                yield self.items[i : i + 50]

        yield [stream()]


async def test_the_bulk_fold_leaves_every_table_as_the_worker_does(
    fresh_db: Callable[..., Any],
) -> None:
    items = records()
    worker = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    rebuilt = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    try:
        letters = await feed(worker, items, batch=7)
        assert letters[0].startswith("envelope: value is not JSON"), letters
        assert len(letters) == 1, letters
        result = await rebuild(
            rebuilt, ListSource(items), progress=Progress(write=io.StringIO().write)
        )
        async with worker.acquire() as a, rebuilt.acquire() as b:
            expected, got = await snapshot(a), await snapshot(b)
        assert set(got) == set(expected)
        for table in expected:
            assert got[table] == expected[table], table
        # the history reached the rules it is meant to
        assert len(expected["web_visits"]) > 12 and len(expected["ticket_breaches"]) == 1
        assert any(r[0].startswith("lead:") for r in expected["customer_links"])
        assert result.outcomes["analytics.timeline"]["duplicate"] == 2
        assert result.outcomes["analytics.timeline"]["dead_lettered"] == 1
        assert result.outcomes["analytics.timeline"]["unknown_type"] == 1
        # the worker carries on after the rebuild: what it sees again applies nowhere
        before = await rebuilt.fetchval("SELECT count(*) FROM timeline")
        assert await feed(rebuilt, items[-30:], batch=30) == []
        assert await rebuilt.fetchval("SELECT count(*) FROM timeline") == before
    finally:
        await worker.close()
        await rebuilt.close()


async def test_a_part_that_fails_leaves_no_marks_and_one_connection_is_enough(
    fresh_db: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tables are written in parts on connections of their own; the marks are committed
    only once every part is written (else the worker would skip events whose rows are missing),
    and the error is the part's own. A pool of one connection writes the parts in turn."""
    items = records()
    quiet = Progress(write=io.StringIO().write)
    wide = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    narrow = await db.create_pool(await fresh_db("crm_analytics"), max_size=1)
    reference = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    try:
        original = BulkState._write_tickets

        async def broken(self: BulkState, conn: Any) -> None:
            await asyncio.sleep(0.05)  # the other parts and the marks are under way
            raise asyncpg.DataError("ticket_facts refused")

        monkeypatch.setattr(BulkState, "_write_tickets", broken)
        with pytest.raises(asyncpg.DataError, match="ticket_facts refused"):
            await rebuild(wide, ListSource(items), progress=quiet)
        assert await wide.fetchval("SELECT count(*) FROM applied_events") == 0
        # the lock is free again, and the next rebuild (the part mended) is whole
        monkeypatch.setattr(BulkState, "_write_tickets", original)
        await rebuild(wide, ListSource(items), progress=quiet)
        await rebuild(narrow, ListSource(items), progress=quiet)
        await rebuild(reference, ListSource(items), progress=quiet)
        async with wide.acquire() as a, narrow.acquire() as b, reference.acquire() as c:
            expected = await snapshot(c)
            assert await snapshot(a) == expected
            assert await snapshot(b) == expected
        assert await narrow.fetchval("SELECT count(*) FROM applied_events") > 0
    finally:
        await wide.close()
        await narrow.close()
        await reference.close()


async def test_whole_batches_leave_every_table_as_one_event_at_a_time(
    fresh_db: Callable[..., Any],
) -> None:
    # The customer and marketing projections send a batch in waves (crm_analytics.pipelined):
    # the statements of different customers, deals, invoices, messages and leads reordered
    # among each other. Merges, reassignments, a deal's and an invoice's lives, redeliveries:
    # the tables end exactly as when each event is its own transaction.
    # ... and a deal whose events change subject within a batch (as after a merge): its row is
    # written from two customers' queues, so the second must wait for the first.
    moving = [
        ev(
            "crm.sales.lead.captured", "cust-a", 1, "lead-a", lead_id="lead-a", customer_id="cust-a"
        ),
        ev("crm.sales.deal.opened", "cust-a", 2, "deal-m", deal_id="deal-m", customer_id="cust-a"),
        ev("crm.sales.deal.stage_changed", "cust-b", 3, "deal-m", deal_id="deal-m"),
    ]
    items = records() + [
        ConsumedRecord("crm.x.events", 1, i, k.key, k.value, k.headers)
        for i, k in enumerate(e.to_kafka() for e in moving)
    ]
    single = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    batched = await db.create_pool(await fresh_db("crm_analytics"), max_size=4)
    try:
        await feed(single, items, batch=1)
        await feed(batched, items, batch=len(items))  # one transaction
        async with single.acquire() as a, batched.acquire() as b:
            expected, got = await snapshot(a), await snapshot(b)
        for table in expected:
            assert got[table] == expected[table], table
        assert len(expected["customer_deals"]) > 5 and len(expected["message_facts"]) > 5
        stage = await single.fetchval("SELECT stage FROM customer_deals WHERE deal_id = 'deal-m'")
        assert stage == moving[2].data["to_stage"] != moving[1].data["stage"]
    finally:
        await single.close()
        await batched.close()
