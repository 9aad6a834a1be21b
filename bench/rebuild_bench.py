"""Projection rebuild: the customer-timeline projection rebuilt from a topic of N events, next to
a raw aiokafka consume of the same records that writes nothing. Both read from the earliest
offset of the same topic on the same broker; the rebuild decodes, checks the schema, dedupes in
PostgreSQL and writes the timeline rows, in batches (as the analytics worker does).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.common import Figure
from crm_analytics.timeline import TimelineProjection
from crm_events import CloudEvent
from crm_runtime import db
from crm_runtime import kafka as kafka_clients
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.settings import Settings


async def _dead_letter(record: ConsumedRecord, consumer: str, reason: str) -> None:
    raise RuntimeError(f"unexpected poison record in the benchmark: {reason}")


async def _produce(settings: Settings, topic: str, n: int) -> None:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await kafka_clients.ensure_topics(
            admin, [topic], settings.kafka_partitions, settings.kafka_replication_factor
        )
    finally:
        await admin.close()
    producer = kafka_clients.producer(settings, linger_ms=5)
    await producer.start()
    try:
        now = datetime.now(UTC)
        for start in range(0, n, 2000):
            futures = []
            for i in range(start, min(start + 2000, n)):
                customer = str(uuid.uuid4())
                lead = str(uuid.uuid4())
                record = CloudEvent(
                    id=uuid.uuid4(),
                    source="/crm/sales",
                    type="crm.sales.lead.captured",
                    time=now,
                    subject=customer,
                    streamid=f"lead-{lead}",
                    streamversion=1,
                    schemaversion=2,
                    data={
                        "lead_id": lead,
                        "customer_id": customer,
                        "name": f"Bench Person {i}",
                        "source": "import",
                    },
                ).to_kafka()
                futures.append(
                    await producer.send(
                        topic, value=record.value, key=record.key, headers=record.headers
                    )
                )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _raw_consume(settings: Settings, topic: str, n: int) -> float:
    consumer = kafka_clients.consumer(settings, topic, group_id=None)
    await consumer.start()
    try:
        got = 0
        start = time.perf_counter()
        while got < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            got += sum(len(msgs) for msgs in batches.values())
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def _rebuild(settings: Settings, topic: str, n: int, url: str) -> float:
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
    assert pool is not None
    processor = EventProcessor(pool, TimelineProjection(), _dead_letter)
    consumer = kafka_clients.consumer(settings, topic, group_id=None)
    await consumer.start()
    try:
        done = 0
        start = time.perf_counter()
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for msgs in batches.values():
                await processor.process_batch(
                    [
                        ConsumedRecord(
                            m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or [])
                        )
                        for m in msgs
                    ]
                )
                done += len(msgs)
        rate = n / (time.perf_counter() - start)
        rows = await pool.fetchval("SELECT count(*) FROM timeline")
        if rows != n:
            raise RuntimeError(f"rebuild wrote {rows} timeline rows for {n} events")
        return rate
    finally:
        await consumer.stop()
        await pool.close()


async def run(server_url: str, bootstrap: str, *, smoke: bool) -> list[Figure]:
    n = 20_000 if smoke else 1_000_000
    settings = Settings(
        service_name="bench", kafka_bootstrap_servers=bootstrap, kafka_embedded=True
    )
    topic = f"bench.rebuild.{uuid.uuid4().hex[:8]}"
    await _produce(settings, topic, n)
    await db.ensure_database(server_url, "bench_rebuild")
    url = db.with_database(server_url, "bench_rebuild")
    await db.migrate_url(url, ["crm_runtime", "crm_analytics"])
    raw = await _raw_consume(settings, topic, n)
    ours = await _rebuild(settings, topic, n, url)
    return [
        Figure(
            name=f"projection rebuild (customer timeline) over {n:,} events",
            value=ours,
            unit="events/s",
            baseline_name="raw aiokafka consume of the same records, no writes",
            baseline=raw,
            goal="report both",
            notes="batches of 500, one transaction each; fsync on; 6 partitions",
        )
    ]
