"""The outbox relay: throughput (event store -> Kafka) next to a raw aiokafka producer sending the
same records, and commit -> record-on-Kafka latency at a steady 1,000 events/s.

Both sides use the same producer settings (acks=all, the same broker, the same partition count,
the same record batch size of the producer); the relay additionally reads the committed events
from PostgreSQL and stores its cursor after the acks — that is what the ratio prices. The raw
side sends record by record with ``send()`` and awaits each batch of futures, as the issue names
it; the relay hands the producer whole record batches (``send_batch``) on the partitions the
default partitioner picks, computing that murmur2 for a page at once, which is why it can be the
faster of the two. Its clock stops once the cursor after the last event is stored.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from bench.common import Figure, median, percentile
from crm_runtime import db, heap
from crm_runtime import kafka as kafka_clients
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, NewEvent, StreamAppend
from crm_runtime.relay import OutboxRelay
from crm_runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# A non-public type, so each event is one record (public ones also go to the public topic).
TYPE = "crm.sales.lead.disqualified"


def _event() -> NewEvent:
    return NewEvent(
        TYPE,
        {"lead_id": str(uuid.uuid4()), "reason": "Benchmark: no budget this quarter"},
        subject=str(uuid.uuid4()),
    )


def _settings(bootstrap: str, database_url: str) -> Settings:
    return Settings(
        service_name="bench",
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_embedded=True,
        kafka_partitions=6,
        relay_history_check_interval=3600,
    )


async def _fresh(server_url: str, name: str) -> str:
    await db.ensure_database(server_url, name)
    url = db.with_database(server_url, name)
    await db.migrate_url(url, ["crm_runtime"])
    return url


async def _fill(store: EventStore, n: int) -> None:
    """n committed events in batches of 500 streams (setup, not measured)."""
    meta = Metadata(actor="bench")
    async with store.pool.acquire() as conn:
        for start in range(0, n, 500):
            async with conn.transaction():
                for _ in range(min(500, n - start)):
                    await store.append(conn, f"lead-{uuid.uuid4()}", "lead", 0, [_event()], meta)


async def _relay_rate(server_url: str, bootstrap: str, n: int, context: str) -> float:
    """Relay started and idle first; then n events commit at once; time until all are acked."""
    url = await _fresh(server_url, f"bench_relay_{context}")
    settings = _settings(bootstrap, url)
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
    assert pool is not None
    store = EventStore(pool, "/crm/bench")
    stop = asyncio.Event()
    relay = OutboxRelay(pool, store, settings, context)
    task = asyncio.create_task(relay.run(stop))
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # clients started, topics created, history checked
        batches = [StreamAppend(f"lead-{uuid.uuid4()}", "lead", 0, [_event()]) for _ in range(n)]
        async with pool.acquire() as conn, conn.transaction():
            await store.append_new_streams(conn, batches, Metadata(actor="bench"))
        last = await pool.fetchval("SELECT max(position) FROM events")
        start = time.perf_counter()
        relay._wake.set()
        while relay.stored.position < last:  # acknowledged, and the cursor stored after it
            await asyncio.sleep(0.001)
            if task.done():
                task.result()
        return n / (time.perf_counter() - start)
    finally:
        stop.set()
        await task
        await pool.close()


async def _raw_rate(server_url: str, bootstrap: str, n: int, context: str, batch: int) -> float:
    """The same records, sent by a plain producer in batches of the relay's size."""
    url = await _fresh(server_url, f"bench_raw_{context}")
    settings = _settings(bootstrap, url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    store = EventStore(pool, "/crm/bench")
    try:
        await _fill(store, n)
        events = await store.read_committed(Checkpoint(), n + 1)
        records = [e.to_cloud_event(store.source).to_kafka() for e in events]
    finally:
        await pool.close()
    topic = f"crm.{context}.events"
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await kafka_clients.ensure_topics(
            admin, [topic], settings.kafka_partitions, settings.kafka_replication_factor
        )
    finally:
        await admin.close()
    producer = kafka_clients.producer(settings)
    await producer.start()
    try:
        start = time.perf_counter()
        for i in range(0, len(records), batch):
            futures = [
                await producer.send(topic, value=r.value, key=r.key, headers=r.headers)
                for r in records[i : i + batch]
            ]
            await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def _serve_relay(url: str, bootstrap: str, context: str) -> None:
    """The relay alone in its process, as ``crm relay`` runs it (a pool of 4), until SIGTERM."""
    settings = _settings(bootstrap, url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert pool is not None
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    heap.settle()  # as `crm relay` does once started
    try:
        await OutboxRelay(pool, EventStore(pool, "/crm/bench"), settings, context).run(stop)
    finally:
        await pool.close()


async def _latency(server_url: str, bootstrap: str, rate: float, seconds: float) -> list[float]:
    """Append at ``rate``/s with the relay running; time from commit to the consumer seeing it.

    The relay runs in a process of its own, as in production (``crm relay``): this process is
    the load generator and the observer, and its event loop and garbage collector are not the
    relay's. Appends are started at their time (not all created up front), and this process's
    startup objects are kept out of its garbage collector's way while it measures.
    """
    context = f"lat{uuid.uuid4().hex[:6]}"
    url = await _fresh(server_url, f"bench_latency_{context}")
    settings = _settings(bootstrap, url)
    pool = await asyncpg.create_pool(url, min_size=4, max_size=8)
    assert pool is not None
    store = EventStore(pool, "/crm/bench")
    stop = asyncio.Event()
    relay = subprocess.Popen(
        [sys.executable, "-m", "bench.relay_bench", "serve-relay", url, bootstrap, context],
        cwd=ROOT,
    )
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}
    # The observer: the embedded broker answers a fetch when its wait ends, so its wait bounds
    # how late an arrival is seen. 10 ms, as the timeline's worker (the services' own 50 ms
    # would measure the observer, not the relay).
    consumer = kafka_clients.consumer(
        settings, f"crm.{context}.events", group_id=None, fetch_max_wait_ms=10
    )
    reader: asyncio.Task[None] | None = None
    try:
        deadline = time.perf_counter() + 30
        while not await pool.fetchval("SELECT count(*) FROM relay_state"):  # leader, state read
            if relay.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the relay did not start (exit code {relay.returncode})")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # topics created, history checked, producer connected
        # The earlier benchmarks' dirty pages are written now, not during the measurement.
        await pool.execute("CHECKPOINT")
        await consumer.start()

        async def consume() -> None:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for msgs in batches.values():
                    for m in msgs:
                        ce_id = dict(m.headers).get("ce_id", b"").decode()
                        seen.setdefault(ce_id, now)

        reader = asyncio.create_task(consume())
        meta = Metadata(actor="bench")
        total = int(rate * seconds)

        async def one() -> None:
            event = _event()
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await store.append(conn, f"lead-{uuid.uuid4()}", "lead", 0, [event], meta)
                committed[str(event.event_id)] = time.perf_counter()

        running: set[asyncio.Task[None]] = set()
        # This process's own full collections (it holds every module the benchmarks import)
        # would otherwise pause the clock readings of the commits and the sightings.
        gc.collect()
        gc.freeze()
        try:
            t0 = time.perf_counter()
            for i in range(total):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                task = asyncio.create_task(one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
            deadline = time.perf_counter() + 30
            while len(seen.keys() & committed.keys()) < total and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        finally:
            gc.unfreeze()
    finally:
        stop.set()
        if reader is not None:
            await reader
        relay.terminate()
        try:
            relay.wait(20)
        except subprocess.TimeoutExpired:
            relay.kill()
        await consumer.stop()
        await pool.close()
    return [max(0.0, (seen[k] - t) * 1000) for k, t in committed.items() if k in seen]


async def run(server_url: str, bootstrap: str, *, smoke: bool) -> list[Figure]:
    n = 2_000 if smoke else 20_000
    rounds = 1 if smoke else 3
    ours, raw = [], []
    settings = Settings()
    for i in range(rounds):
        raw.append(await _raw_rate(server_url, bootstrap, n, f"braw{i}", settings.relay_batch_size))
        ours.append(await _relay_rate(server_url, bootstrap, n, f"brel{i}"))
    figures = [
        Figure(
            name="relay: event store -> Kafka",
            value=median(ours),
            unit="events/s",
            baseline_name="raw aiokafka producer, same records, same batch size and acks",
            baseline=median(raw),
            goal=">= 0.8x",
            samples=ours,
            baseline_samples=raw,
            notes=(
                f"{n} events, median of {rounds}; 6 partitions, acks=all; the relay hands over"
                " record batches (send_batch), the baseline sends record by record"
            ),
        )
    ]
    seconds = 2.0 if smoke else 10.0
    lat = await _latency(server_url, bootstrap, 1000.0, seconds)
    expected = int(1000 * seconds)
    note = (
        f"{len(lat)}/{expected} events at 1,000/s for {seconds:.0f} s; commit -> consumer;"
        " the relay in its own process"
    )
    figures += [
        Figure("commit -> record on Kafka, p50", percentile(lat, 50), "ms", notes=note),
        Figure(
            "commit -> record on Kafka, p99",
            percentile(lat, 99),
            "ms",
            goal="<= 35 ms (anchors: WAL relay p99 34 ms, Debezium p99 499 ms)",
            notes=note,
        ),
    ]
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve-relay":
        asyncio.run(_serve_relay(*sys.argv[2:]))
    else:
        sys.exit("usage: python -m bench.relay_bench serve-relay URL BOOTSTRAP CONTEXT")
