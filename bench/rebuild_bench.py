"""Projection rebuild: `crm analytics rebuild` (every analytics projection) from the three context
topics holding N mixed events (crm_analytics.samples: sales, marketing and service-desk
stories), next to a raw aiokafka consume of the same records that writes nothing.

Both read the same topics from the earliest offset on the same broker: a fresh embedded broker
of this benchmark's own (it keeps everything in memory; what earlier benchmarks left in the
shared one, their topics, groups and any straggling client, is not this figure's business).
The rebuild is the product's own code path (``crm_analytics.rebuild.rebuild`` with a Kafka
source): it merges the topics by event time, decodes and schema-checks every record, dedupes by
event id and writes every projection (timeline, visits, customer 360, sales, service and
marketing analytics).
"""

from __future__ import annotations

import asyncio
import io
import resource
import time
import uuid

import asyncpg

from bench.common import Figure
from crm_analytics.rebuild import KafkaSource, Progress, rebuild
from crm_analytics.samples import history
from crm_runtime import db
from crm_runtime import kafka as kafka_clients
from crm_runtime.embedded import EmbeddedBroker, free_port
from crm_runtime.settings import Settings

CONTEXTS = ("sales", "marketing", "service")


async def _produce(settings: Settings, topics: dict[str, str], n: int) -> int:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await kafka_clients.ensure_topics(
            admin,
            list(topics.values()),
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
    finally:
        await admin.close()
    producer = kafka_clients.producer(settings, linger_ms=5)
    await producer.start()
    count = 0
    try:
        futures = []
        for event in history(n):
            record = event.record()
            futures.append(
                await producer.send(
                    topics[event.context],
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                )
            )
            count += 1
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def _raw_consume(settings: Settings, topics: list[str], n: int) -> float:
    consumer = kafka_clients.consumer(settings, *topics, group_id=None)
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


async def _rebuild(settings: Settings, topics: list[str], n: int, url: str) -> tuple[float, str]:
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
    assert pool is not None
    try:
        start = time.perf_counter()
        result = await rebuild(
            pool, KafkaSource(settings, topics), progress=Progress(write=io.StringIO().write)
        )
        rate = n / (time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
        if result.records != n:
            raise RuntimeError(f"rebuild read {result.records} records of {n}")
        async with pool.acquire() as conn:
            timeline = await conn.fetchval("SELECT count(*) FROM timeline")
            customers = await conn.fetchval("SELECT count(*) FROM customers")
        stories = n // 28
        # every story: 21 touchpoints + 2 visits on the timeline, one customer in the 360
        if customers != stories or timeline != stories * 23:
            raise RuntimeError(
                f"rebuild wrote {timeline} timeline rows and {customers} customers for {stories}"
                " stories"
            )
        return rate, (
            f"{timeline:,} timeline rows, {customers:,} customers; peak RSS of the process"
            f" (it also produced and raw-consumed) {peak:,.0f} MiB"
        )
    finally:
        await pool.close()


async def run(server_url: str, bootstrap: str, *, smoke: bool) -> list[Figure]:
    """``bootstrap`` (the shared broker) is not used: see the module's docstring."""
    broker = EmbeddedBroker(free_port()).start()
    try:
        return await _run(server_url, broker.bootstrap, smoke=smoke)
    finally:
        broker.stop()


async def _run(server_url: str, bootstrap: str, *, smoke: bool) -> list[Figure]:
    n = 28 * (1_000 if smoke else 35_715)  # whole stories: 28,000 or 1,000,020 events
    settings = Settings(
        service_name="bench", kafka_bootstrap_servers=bootstrap, kafka_embedded=True
    )
    run_id = uuid.uuid4().hex[:8]
    topics = {c: f"bench.rebuild.{run_id}.{c}" for c in CONTEXTS}
    n = await _produce(settings, topics, n)
    await db.ensure_database(server_url, "bench_rebuild")
    url = db.with_database(server_url, "bench_rebuild")
    await db.migrate_url(url, ["crm_runtime", "crm_analytics"])
    raw = await _raw_consume(settings, list(topics.values()), n)
    ours, written = await _rebuild(settings, list(topics.values()), n, url)
    return [
        Figure(
            name=f"projection rebuild (`crm analytics rebuild`, every projection) over {n:,} "
            "mixed events",
            value=ours,
            unit="events/s",
            baseline_name="raw aiokafka consume of the same records, no writes",
            baseline=raw,
            goal=">= 20,000 events/s (issue 6); report both",
            notes=f"sales, marketing and service stories (28 event types); {written};"
            " fsync on; 3 topics x 6 partitions on a broker of its own",
        )
    ]
