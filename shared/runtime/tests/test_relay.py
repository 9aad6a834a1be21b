"""Outbox relay over the real broker: CloudEvents records, standby replicas, broker history loss."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from cloudevents.v1 import kafka as ce_kafka

from crm_events import CloudEvent, context_topic, public_topic
from crm_runtime import kafka as kafka_clients
from crm_runtime.embedded import EmbeddedBroker, free_port
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, NewEvent
from crm_runtime.relay import OutboxRelay
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


def lead_captured(customer: str) -> NewEvent:
    lead_id = str(uuid.uuid4())
    return NewEvent(
        type="crm.sales.lead.captured",
        data={
            "lead_id": lead_id,
            "customer_id": customer,
            "name": "Test Person",
            "source": "manual",
        },
        subject=customer,
    )


async def append_leads(store: EventStore, n: int) -> list[NewEvent]:
    events = [lead_captured(str(uuid.uuid4())) for _ in range(n)]
    async with store.pool.acquire() as conn:
        for e in events:
            await store.append(conn, f"lead-{e.data['lead_id']}", "lead", 0, [e], Metadata())
    return events


async def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 20) -> list[Any]:
    consumer: AIOKafkaConsumer = kafka_clients.consumer(settings, topic, group_id=None)
    await consumer.start()
    got: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < expect and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for msgs in batches.values():
                got.extend(msgs)
    finally:
        await consumer.stop()
    return got


async def wait_for(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def test_relay_publishes_committed_events_keyed_by_customer(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    context = f"relay{uuid.uuid4().hex[:6]}"
    settings = settings_for("sales")
    store = EventStore(pool, "/crm/sales")
    events = await append_leads(store, 20)
    relay = OutboxRelay(pool, store, settings, context)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        records = await read_topic(settings, context_topic(context), 20)
        more = await append_leads(store, 5)  # woken by NOTIFY while running
        records += await read_topic(settings, context_topic(context), 25)
    finally:
        stop.set()
        await task
    by_id = {}
    for r in records:
        ce = CloudEvent.from_kafka(r.key, r.value, r.headers)
        assert r.key == ce.subject.encode()  # type: ignore[union-attr]
        by_id[ce.id] = ce
    assert {e.event_id for e in events + more} <= set(by_id)
    # A client we did not write reads the same records off the broker.
    for r in records:
        sdk_event = ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value)
        )
        ours = by_id[uuid.UUID(sdk_event["id"])]
        assert sdk_event["type"] == "crm.sales.lead.captured"
        assert sdk_event["subject"] == ours.subject
        assert sdk_event["streamversion"] == "1"
        assert sdk_event.get_data() == ours.data
    public = await read_topic(settings, public_topic(), 25)
    assert {e.event_id for e in events} <= {
        CloudEvent.from_kafka(r.key, r.value, r.headers).id for r in public
    }
    async with pool.acquire() as conn:
        pos = await conn.fetchval("SELECT cursor_position FROM relay_state")
        last = await conn.fetchval("SELECT max(position) FROM events")
    assert pos == last  # the cursor was stored after the acks


async def read_ids(
    settings: Settings, topic: str, ids: set[bytes], timeout: float = 20
) -> list[Any]:
    """The records of ``topic`` whose ``ce_id`` is one of ``ids``, once all of them are there."""
    consumer: AIOKafkaConsumer = kafka_clients.consumer(settings, topic, group_id=None)
    await consumer.start()
    got: dict[bytes, Any] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < len(ids) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for msgs in batches.values():
                for m in msgs:
                    ce_id = dict(m.headers).get("ce_id")
                    if ce_id in ids:
                        got.setdefault(ce_id, m)
    finally:
        await consumer.stop()
    return list(got.values())


async def partition_count(settings: Settings, topic: str) -> int:
    consumer: AIOKafkaConsumer = kafka_clients.consumer(settings, topic, group_id=None)
    await consumer.start()
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()


async def test_relay_records_are_the_envelopes_on_the_default_partitions_in_commit_order(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    """Byte for byte the records of ``binary_record`` (the envelope's binary mode) over the
    stored events, on the partition aiokafka's default partitioner picks for the key, each
    partition in commit order; over many small pages and record batches that fill up."""
    context = f"bytes{uuid.uuid4().hex[:6]}"
    settings = settings_for("sales", relay_batch_size=7)
    store = EventStore(pool, "/crm/sales")
    customers = [str(uuid.uuid4()) for _ in range(5)] + ["kunde-ü-1"]
    meta = Metadata(actor="u-1", correlation_id="corr-1", causation_id=str(uuid.uuid4()))
    whole_second = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    elsewhere = datetime(2024, 3, 1, 1, 2, 3, 450000, tzinfo=timezone(timedelta(hours=2)))
    async with pool.acquire() as conn:
        for i in range(60):
            customer = customers[i % len(customers)]
            stream = f"lead-{customer}-{i % 4}"
            version = await store.stream_version(stream, conn)
            subject: str | None = customer
            if i % 11 == 3:
                subject = None  # about no customer: keyed by the stream id
            elif i % 13 == 5:
                subject = ""
            event = NewEvent(
                type="crm.sales.lead.captured" if i % 3 else "crm.sales.lead.disqualified",
                data={
                    "lead_id": stream,
                    "n": i,
                    "note": "é" * (i * 50),
                    "nested": {"b": 1, "a": 2},
                },
                subject=subject,
                occurred_at=[whole_second, elsewhere, datetime.now(UTC)][i % 3],
            )
            await store.append(conn, stream, "lead", version, [event], meta if i % 2 else None)
    expected = await store.read_committed_records(Checkpoint(), 1000)
    assert len(expected) == 60
    relay = OutboxRelay(pool, store, settings, context)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    ids = {dict(r.headers)["ce_id"] for _, _, r in expected}
    public_ids = {
        dict(r.headers)["ce_id"] for _, t, r in expected if t == "crm.sales.lead.captured"
    }
    try:
        got = await read_ids(settings, context_topic(context), ids)
        public = await read_ids(settings, public_topic(), public_ids)
    finally:
        stop.set()
        await task
    for topic, records, wanted in (
        (context_topic(context), got, expected),
        (public_topic(), public, [e for e in expected if e[1] == "crm.sales.lead.captured"]),
    ):
        by_id = {dict(r.headers)["ce_id"]: r for r in records}
        assert {dict(r.headers)["ce_id"] for _, _, r in wanted} <= set(by_id), topic
        n = await partition_count(settings, topic)
        order: dict[int, list[int]] = {}
        for _, _, record in wanted:
            r = by_id[dict(record.headers)["ce_id"]]
            assert (r.key, r.value, list(r.headers)) == (record.key, record.value, record.headers)
            assert r.partition == DefaultPartitioner()(r.key, list(range(n)), list(range(n)))
            order.setdefault(r.partition, []).append(r.offset)
        for offsets in order.values():
            assert offsets == sorted(offsets)  # each partition in commit order


async def test_second_relay_replica_waits_as_standby(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for("sales")
    store = EventStore(pool, "/crm/sales")
    context = f"standby{uuid.uuid4().hex[:6]}"
    first, second = (OutboxRelay(pool, store, settings, context) for _ in range(2))
    stop1, stop2 = asyncio.Event(), asyncio.Event()
    t1 = asyncio.create_task(first.run(stop1))
    await wait_for(lambda: first.is_leader)
    t2 = asyncio.create_task(second.run(stop2))
    await asyncio.sleep(1.0)
    assert not second.is_leader
    stop1.set()
    await t1
    await wait_for(lambda: second.is_leader, timeout=10)  # takes over when the leader stops
    stop2.set()
    await t2


async def test_relay_republishes_when_broker_lost_history(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    """A fresh in-memory broker (as after a restart of the embedded one) is refilled."""
    store = EventStore(pool, "/crm/sales")
    events = await append_leads(store, 10)
    context = f"loss{uuid.uuid4().hex[:6]}"
    first_broker = EmbeddedBroker(free_port()).start()
    try:
        s1 = settings_for(
            "sales", kafka_bootstrap_servers=first_broker.bootstrap, kafka_embedded=True
        )
        relay = OutboxRelay(pool, store, s1, context)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        assert len(await read_topic(s1, context_topic(context), 10)) >= 10
        stop.set()
        await task
    finally:
        first_broker.stop()

    second_broker = EmbeddedBroker(free_port()).start()
    try:
        s2 = settings_for(
            "sales", kafka_bootstrap_servers=second_broker.bootstrap, kafka_embedded=True
        )
        relay = OutboxRelay(pool, store, s2, context)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        records = await read_topic(s2, context_topic(context), 10)
        stop.set()
        await task
        ids = {CloudEvent.from_kafka(r.key, r.value, r.headers).id for r in records}
        assert {e.event_id for e in events} <= ids
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT republished FROM relay_state") == 1
    finally:
        second_broker.stop()


async def test_relay_republishes_after_topic_deleted(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for("sales")
    store = EventStore(pool, "/crm/sales")
    context = f"deleted{uuid.uuid4().hex[:6]}"
    events = await append_leads(store, 8)
    relay = OutboxRelay(pool, store, settings, context)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        assert len(await read_topic(settings, context_topic(context), 8)) >= 8
        admin = kafka_clients.admin(settings)
        await admin.start()
        try:
            await admin.delete_topics([context_topic(context)])
        finally:
            await admin.close()
        # the periodic history check (1 s in tests) recreates the topic and republishes
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 20
        ids: set[uuid.UUID] = set()
        while not {e.event_id for e in events} <= ids:
            assert asyncio.get_running_loop().time() < deadline, "not republished"
            await asyncio.sleep(0.5)
            records = await read_topic(settings, context_topic(context), 8, timeout=2)
            ids = {CloudEvent.from_kafka(r.key, r.value, r.headers).id for r in records}
    finally:
        stop.set()
        await task


async def test_relay_rides_out_a_broker_outage_and_loses_nothing(
    pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    """The broker stops while commands keep committing; a new (empty) broker comes back on the
    same port; every event, before and during the outage, ends up on the topic."""
    store = EventStore(pool, "/crm/sales")
    context = f"outage{uuid.uuid4().hex[:6]}"
    port = free_port()
    broker = EmbeddedBroker(port).start()
    settings = settings_for("sales", kafka_bootstrap_servers=broker.bootstrap, kafka_embedded=True)
    relay = OutboxRelay(pool, store, settings, context)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        before = await append_leads(store, 5)
        assert len(await read_topic(settings, context_topic(context), 5)) >= 5
        broker.stop()
        during = await append_leads(store, 5)  # accepted while the broker is down
        await asyncio.sleep(2)
        assert not task.done(), "the relay must not die with the broker"
        broker = EmbeddedBroker(port).start()
        ids: set[uuid.UUID] = set()
        # A page in flight when the broker died fails only after the producer's request
        # timeout (15 s), its retry may wait as long, then the relay restarts its clients and
        # republishes: on a loaded machine this took over 40 s once. Lost events still fail.
        deadline = asyncio.get_running_loop().time() + 90
        while not {e.event_id for e in before + during} <= ids:
            assert asyncio.get_running_loop().time() < deadline, "events lost"
            records = await read_topic(settings, context_topic(context), 10, timeout=2)
            ids = {CloudEvent.from_kafka(r.key, r.value, r.headers).id for r in records}
    finally:
        stop.set()
        await task
        broker.stop()
