"""The people directory other contexts keep from sales' events (docs/identity.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from crm_events import CloudEvent
from crm_runtime import people
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.eventstore import EventStore, Metadata

pytestmark = pytest.mark.integration


def sales_event(type_: str, data: dict[str, Any], version: int = 1) -> CloudEvent:
    return CloudEvent(
        id=uuid.uuid4(),
        source="/crm/sales",
        type=type_,
        time="2026-11-01T10:00:00Z",  # type: ignore[arg-type]
        subject=data.get("customer_id"),
        streamid=f"x-{uuid.uuid4()}",
        streamversion=1,
        schemaversion=version,
        data=data,
    )


def record(ce: CloudEvent, offset: int = 0) -> ConsumedRecord:
    k = ce.to_kafka()
    return ConsumedRecord("crm.sales.events", 0, offset, k.key, k.value, k.headers)


@pytest.fixture
async def directory_pool(fresh_db: Callable[..., Any]) -> Any:
    url = await fresh_db("crm_runtime.people")
    pool = await asyncpg.create_pool(url)
    yield pool
    await pool.close()


async def no_letters(*_: Any) -> None:
    raise AssertionError("nothing here is poison")


async def test_an_unknown_address_is_minted_once_and_sighted_in_the_same_transaction(
    directory_pool: asyncpg.Pool,
) -> None:
    store = EventStore(directory_pool, "/crm/marketing")
    async with directory_pool.acquire() as conn, conn.transaction():
        cid, minted = await people.resolve_or_mint(conn, " Ada@Example.com ")
        await people.record_sighting(
            conn,
            store,
            context="marketing",
            customer_id=cid,
            email="Ada@Example.com",
            sighted_as="prospect",
            source_detail="form-1",
            attribution={"utm_source": "ads"},
            metadata=Metadata(actor="public"),
        )
    assert minted
    async with directory_pool.acquire() as conn:
        again, minted_again = await people.resolve_or_mint(conn, "ada@example.com")
        assert (again, minted_again) == (cid, False)
        assert await people.known(conn, "nobody@example.com") is None
    [stored] = await store.read_stream(f"person-{cid}")
    assert stored.type == "crm.marketing.person.sighted"
    assert stored.subject == cid
    assert stored.data["email"] == "ada@example.com"
    assert stored.data["attribution"] == {"utm_source": "ads"}


async def test_the_directory_follows_leads_contacts_links_and_merges(
    directory_pool: asyncpg.Pool,
) -> None:
    proc = EventProcessor(directory_pool, people.PeopleDirectory("marketing"), no_letters)
    async with directory_pool.acquire() as conn:
        provisional, _ = await people.resolve_or_mint(conn, "ada@example.com")
    lead_id, contact_cid, other_cid = "L1", str(uuid.uuid4()), str(uuid.uuid4())
    captured = sales_event(
        "crm.sales.lead.captured",
        {
            "lead_id": lead_id,
            "customer_id": provisional,
            "name": "Ada",
            "email": "ada@example.com",
            "source": "web_form",
        },
    )
    converted = sales_event(
        "crm.sales.lead.converted",
        {
            "lead_id": lead_id,
            "lead_customer_id": provisional,
            "customer_id": contact_cid,
            "contact_id": "C1",
        },
    )
    events = [
        captured,
        captured,  # a duplicate delivery changes nothing
        sales_event(
            "crm.sales.contact.created",
            {
                "contact_id": "C1",
                "customer_id": contact_cid,
                "details": {"emails": ["ada@example.com"]},
            },
        ),
        converted,
        sales_event(
            "crm.sales.contact.created",
            {"contact_id": "C2", "customer_id": other_cid, "details": {"emails": ["b@x.io"]}},
        ),
        sales_event(
            "crm.sales.contact.updated",
            {"contact_id": "C2", "changed": ["emails"], "values": {"emails": ["bee@x.io"]}},
        ),
    ]
    outcomes = await proc.process_batch([record(e, i) for i, e in enumerate(events)])
    assert [o.value for o in outcomes].count("applied") == 5
    async with directory_pool.acquire() as conn:
        assert await people.known(conn, "ADA@example.com") == contact_cid
        assert await people.canonical(conn, provisional) == contact_cid
        assert await people.known(conn, "bee@x.io") == other_cid
        # a provisional id sales identified as an existing customer
        alias, _ = await people.resolve_or_mint(conn, "someone@else.io")
    identified = sales_event(
        "crm.sales.customer.identified",
        {
            "alias_id": alias,
            "customer_id": other_cid,
            "sighted_in": "marketing",
            "matched_by": "contact_email",
        },
    )
    merged = sales_event(
        "crm.sales.contact.merged",
        {
            "contact_id": "C1",
            "customer_id": contact_cid,
            "merged_id": "C2",
            "merged_customer_id": other_cid,
            "merge_id": "M1",
            "absorbed": {},
            "absorbed_fields": [],
        },
    )
    await proc.process_batch([record(identified, 10), record(merged, 11)])
    async with directory_pool.acquire() as conn:
        assert await people.canonical(conn, alias) == contact_cid  # alias → C2 → merged into C1
        assert await people.known(conn, "someone@else.io") == contact_cid
    undone = sales_event(
        "crm.sales.contact.merge_undone",
        {
            "contact_id": "C1",
            "survivor_id": "C1",
            "survivor_customer_id": contact_cid,
            "merged_id": "C2",
            "merged_customer_id": other_cid,
            "merge_id": "M1",
        },
    )
    await proc.process_batch([record(undone, 12)])
    async with directory_pool.acquire() as conn:
        assert await people.canonical(conn, alias) == other_cid
