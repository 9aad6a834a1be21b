"""Event append, one event per command, next to raw asyncpg INSERT transactions (same table)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.common import Figure, median
from crm_runtime import db
from crm_runtime.eventstore import EventStore, Metadata, NewEvent

PAYLOAD = {"lead_id": "x", "customer_id": "c", "name": "Bench Person", "source": "manual"}

RAW_INSERT = """
INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                    subject, payload, metadata, occurred_at)
VALUES ($1, 'lead', 1, $2, 'crm.sales.lead.captured', 1, $3, $4::jsonb, $5::jsonb, $6)
"""


async def _raw(pool: asyncpg.Pool, n: int, concurrency: int) -> float:
    async def worker(count: int) -> None:
        async with pool.acquire() as conn:
            for _ in range(count):
                async with conn.transaction():
                    await conn.execute(
                        RAW_INSERT,
                        f"lead-{uuid.uuid4()}",
                        uuid.uuid4(),
                        str(uuid.uuid4()),
                        json.dumps(PAYLOAD),
                        json.dumps({"actor": "bench"}),
                        datetime.now(UTC),
                    )

    start = time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return (n // concurrency * concurrency) / (time.perf_counter() - start)


async def _store(pool: asyncpg.Pool, n: int, concurrency: int) -> float:
    store = EventStore(pool, "/crm/bench")
    meta = Metadata(actor="bench")

    async def worker(count: int) -> None:
        async with pool.acquire() as conn:
            for _ in range(count):
                async with conn.transaction():
                    await store.append(
                        conn,
                        f"lead-{uuid.uuid4()}",
                        "lead",
                        0,
                        [NewEvent("crm.sales.lead.captured", PAYLOAD, subject=str(uuid.uuid4()))],
                        meta,
                    )

    start = time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return (n // concurrency * concurrency) / (time.perf_counter() - start)


async def _eventsourcing(url: str, n: int, concurrency: int) -> float:
    """events/s of the `eventsourcing` library saving one aggregate per command (subprocess)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.es_baseline",
        url,
        str(n),
        str(concurrency),
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"eventsourcing baseline failed: {err.decode()[-2000:]}")
    return float(out.decode().strip().splitlines()[-1])


async def run(url: str, *, smoke: bool) -> list[Figure]:
    n = 320 if smoke else 4000
    rounds = 1 if smoke else 3
    figures = []
    pool = await asyncpg.create_pool(url, min_size=16, max_size=16)
    assert pool is not None
    try:
        for concurrency in (1, 16):
            count = n // 4 if concurrency == 1 else n
            await _raw(pool, count // 4, concurrency)  # warm-up
            await _store(pool, count // 4, concurrency)
            raw, ours = [], []
            for _ in range(rounds):  # interleaved, so drift hits both alike
                raw.append(await _raw(pool, count, concurrency))
                ours.append(await _store(pool, count, concurrency))
            es_url = db.with_database(url, "bench_eventsourcing")
            await db.ensure_database(url, "bench_eventsourcing")
            es = [await _eventsourcing(es_url, count, concurrency) for _ in range(rounds)]
            figures.append(
                Figure(
                    name=f"event append vs eventsourcing library, concurrency {concurrency}",
                    value=median(ours),
                    unit="events/s",
                    baseline_name="`eventsourcing` 9.5 (PostgreSQL module), one aggregate saved"
                    " per command, threads",
                    baseline=median(es),
                    goal=">= 5x eventsourcing",
                    samples=ours,
                    baseline_samples=es,
                    notes=f"{count} commands per round, median of {rounds}; same server",
                )
            )
            figures.append(
                Figure(
                    name=f"event append, 1 event/command, concurrency {concurrency}",
                    value=median(ours),
                    unit="events/s",
                    baseline_name="raw asyncpg INSERT transaction, same table",
                    baseline=median(raw),
                    goal=">= 0.9x raw",
                    samples=ours,
                    baseline_samples=raw,
                    notes=f"{count} commands per round, median of {rounds}; fsync on",
                )
            )
    finally:
        await pool.close()
    return figures
