"""Idempotent consumers over the real broker: duplicates, poison messages, unknown types."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from crm_events import CloudEvent, EventPayload, context_topic
from crm_runtime import kafka as kafka_clients
from crm_runtime.consumer import (
    UNKNOWN_TYPES,
    ConsumedRecord,
    EventProcessor,
    KafkaConsumerRunner,
    Outcome,
    dead_letter_topic,
)
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


class CountingProjection:
    """Counts leads per source: a duplicate applied twice would double a count."""

    name = "test.lead-counts"

    def handles(self, event_type: str) -> bool:
        return event_type == "crm.sales.lead.captured"

    async def apply(
        self, conn: asyncpg.Connection, event: CloudEvent, payload: EventPayload
    ) -> None:
        await conn.execute(
            "INSERT INTO lead_counts (source, n) VALUES ($1, 1)"
            " ON CONFLICT (source) DO UPDATE SET n = lead_counts.n + 1",
            event.data["source"],
        )


def captured(source: str = "manual") -> CloudEvent:
    lead, customer = str(uuid.uuid4()), str(uuid.uuid4())
    return CloudEvent(
        id=uuid.uuid4(),
        source="/crm/sales",
        type="crm.sales.lead.captured",
        time="2026-11-01T10:00:00Z",  # type: ignore[arg-type]
        subject=customer,
        streamid=f"lead-{lead}",
        streamversion=1,
        schemaversion=1,
        data={"lead_id": lead, "customer_id": customer, "name": "X", "source": source},
    )


def record(topic: str, ce: CloudEvent, offset: int = 0) -> ConsumedRecord:
    k = ce.to_kafka()
    return ConsumedRecord(topic, 0, offset, k.key, k.value, k.headers)


@pytest.fixture
async def counts_pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE lead_counts (source text PRIMARY KEY, n int NOT NULL)")
    return pool


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {r["source"]: r["n"] for r in await conn.fetch("SELECT * FROM lead_counts")}


async def test_every_message_twice_gives_the_same_result_as_once(counts_pool: asyncpg.Pool) -> None:
    sunk: list[Any] = []

    async def sink(rec: ConsumedRecord, consumer: str, reason: str) -> None:
        sunk.append(reason)

    proc = EventProcessor(counts_pool, CountingProjection(), sink)
    events = [captured("manual") for _ in range(5)] + [captured("web_form") for _ in range(3)]
    outcomes = [await proc.process(record("t", e, i)) for i, e in enumerate(events)]
    once = await counts(counts_pool)
    outcomes += [await proc.process(record("t", e, i)) for i, e in enumerate(events)]
    assert once == {"manual": 5, "web_form": 3}
    assert await counts(counts_pool) == once
    assert outcomes.count(Outcome.APPLIED) == 8
    assert outcomes.count(Outcome.DUPLICATE) == 8
    assert sunk == []


async def test_poison_and_unknown_over_the_broker(
    counts_pool: asyncpg.Pool, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for("analytics")
    topic = context_topic(f"poison{uuid.uuid4().hex[:6]}")
    admin = kafka_clients.admin(settings)
    await admin.start()
    await kafka_clients.ensure_topics(admin, [topic], 1, 1)
    await admin.close()

    good = captured("referral")
    bad_schema = captured("referral")
    broken = bad_schema.to_kafka()
    invalid_value = json.dumps({**bad_schema.data, "unexpected": 1}).encode()
    unknown = CloudEvent(**{**captured().model_dump(), "type": "crm.sales.lead.teleported"})
    producer = kafka_clients.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not json at all", key=b"k1")
        await producer.send_and_wait(topic, b'{"a": 1}', key=b"k2")  # JSON, not a CloudEvent
        await producer.send_and_wait(topic, invalid_value, key=broken.key, headers=broken.headers)
        u = unknown.to_kafka()
        await producer.send_and_wait(topic, u.value, key=u.key, headers=u.headers)
        g = good.to_kafka()
        await producer.send_and_wait(topic, g.value, key=g.key, headers=g.headers)
        await producer.send_and_wait(topic, g.value, key=g.key, headers=g.headers)  # redelivery
    finally:
        await producer.stop()

    unknown_before = UNKNOWN_TYPES.labels(
        "test.lead-counts", "crm.sales.lead.teleported"
    )._value.get()
    runner = KafkaConsumerRunner(settings, counts_pool, CountingProjection(), [topic])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while (await counts(counts_pool)).get("referral") != 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    assert await counts(counts_pool) == {"referral": 1}
    unknown_after = UNKNOWN_TYPES.labels(
        "test.lead-counts", "crm.sales.lead.teleported"
    )._value.get()
    assert unknown_after == unknown_before + 1

    dlq = kafka_clients.consumer(settings, dead_letter_topic(topic), group_id=None)
    await dlq.start()
    letters: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(letters) < 3 and asyncio.get_running_loop().time() < deadline:
            for msgs in (await dlq.getmany(timeout_ms=300)).values():
                letters.extend(msgs)
    finally:
        await dlq.stop()
    assert len(letters) == 3
    headers = [dict(m.headers) for m in letters]
    reasons = [h["dlq_error"].decode() for h in headers]
    assert reasons[0].startswith("envelope: value is not JSON")
    assert "ce_specversion" in reasons[1]
    assert reasons[2].startswith("schema:") and "unexpected" in reasons[2]
    assert all(h["dlq_source_topic"].decode() == topic for h in headers)
    assert all(h["dlq_source_partition"] == b"0" for h in headers)
    offsets = [int(h["dlq_source_offset"]) for h in headers]
    assert offsets == sorted(set(offsets)), "each letter names its own source offset, in order"


async def test_a_batch_with_repeats_applies_each_event_once(counts_pool: asyncpg.Pool) -> None:
    async def sink(rec: ConsumedRecord, consumer: str, reason: str) -> None:
        raise AssertionError(reason)

    proc = EventProcessor(counts_pool, CountingProjection(), sink)
    a, b = captured("campaign"), captured("campaign")
    batch = [record("t", a, 0), record("t", b, 1), record("t", a, 2), record("t", b, 3)]
    outcomes = await proc.process_batch(batch)
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert await counts(counts_pool) == {"campaign": 2}
    assert await proc.process_batch(batch) == [Outcome.DUPLICATE] * 4
    assert await counts(counts_pool) == {"campaign": 2}
