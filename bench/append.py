"""Event append, one event per command, next to raw asyncpg INSERT transactions (same table).

Ours is the command path the API uses: a :class:`CommandConnection` (the append is the command's
final statement, so it runs alone, without BEGIN/COMMIT round trips) and the relay wake-up sent
after commit by :class:`CommitNotifier` (one NOTIFY for many commits). The raw baseline is a
BEGIN/INSERT/COMMIT transaction; its connections set ``crm.events_notify = 'deferred'`` at
connect time (no extra round trip), so it does not pay the commit-serialising in-transaction
NOTIFY of the events trigger either — that makes the baseline faster, not slower.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.common import Figure, median
from crm_runtime import db
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_runtime.unit_of_work import NOTIFY_SETTING, CommandConnection, CommitNotifier

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


async def _floor(pool: asyncpg.Pool, n: int, *, event_row: bool) -> float:
    """Context for the concurrency-1 figures, where each command waits for its own WAL flush:
    one INSERT statement per command (its own transaction, fsync on) and nothing else — a
    one-column row into a table without index or trigger, or (``event_row``) the raw baseline's
    event row into the event table, without BEGIN/COMMIT and without reading anything back."""
    async with pool.acquire() as conn:
        start = time.perf_counter()
        for _ in range(n):
            if event_row:
                await conn.execute(
                    RAW_INSERT,
                    f"lead-{uuid.uuid4()}",
                    uuid.uuid4(),
                    str(uuid.uuid4()),
                    json.dumps(PAYLOAD),
                    json.dumps({"actor": "bench"}),
                    datetime.now(UTC),
                )
            else:
                await conn.execute("INSERT INTO bench_floor (id) VALUES ($1)", uuid.uuid4())
        return n / (time.perf_counter() - start)


async def _store(store: EventStore, n: int, concurrency: int) -> float:
    meta = Metadata(actor="bench")

    async def worker(count: int) -> None:
        async with store.pool.acquire() as raw:
            for _ in range(count):
                async with CommandConnection(raw, store.notifier) as conn:
                    await store.append(
                        conn,
                        f"lead-{uuid.uuid4()}",
                        "lead",
                        0,
                        [NewEvent("crm.sales.lead.captured", PAYLOAD, subject=str(uuid.uuid4()))],
                        meta,
                        final=True,
                    )

    start = time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return (n // concurrency * concurrency) / (time.perf_counter() - start)


async def _eventsourcing(url: str, n: int, concurrency: int, *, flush: bool = True) -> float:
    """events/s of the `eventsourcing` library saving one aggregate per command (subprocess).
    ``flush=False``: its sessions commit without waiting for the WAL flush (libpq PGOPTIONS)."""
    env = None if flush else {**os.environ, "PGOPTIONS": "-c synchronous_commit=off"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.es_baseline",
        url,
        str(n),
        str(concurrency),
        cwd=str(Path(__file__).resolve().parent.parent),
        env=env,
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
    raw_pool = await asyncpg.create_pool(
        url, min_size=16, max_size=16, server_settings={NOTIFY_SETTING: "deferred"}
    )
    assert pool is not None and raw_pool is not None
    store = EventStore(pool, "/crm/bench", notifier=CommitNotifier(url))
    # Context for concurrency 1: the same command path with the WAL flush not waited for.
    unflushed_pool = await asyncpg.create_pool(
        url, min_size=1, max_size=1, server_settings={"synchronous_commit": "off"}
    )
    assert unflushed_pool is not None
    unflushed = EventStore(unflushed_pool, "/crm/bench", notifier=store.notifier)
    es_url = db.with_database(url, "bench_eventsourcing")
    await db.ensure_database(url, "bench_eventsourcing")
    await raw_pool.execute("CREATE TABLE IF NOT EXISTS bench_floor (id uuid NOT NULL)")
    try:
        for concurrency in (1, 16):
            count = n // 4 if concurrency == 1 else n
            await _raw(raw_pool, count // 4, concurrency)  # warm-up
            await _store(store, count // 4, concurrency)
            raw, ours, es, floor, row, ours_nf, es_nf = [], [], [], [], [], [], []
            for _ in range(rounds):  # interleaved, so drift hits them all alike
                raw.append(await _raw(raw_pool, count, concurrency))
                ours.append(await _store(store, count, concurrency))
                es.append(await _eventsourcing(es_url, count, concurrency))
                if concurrency == 1:
                    floor.append(await _floor(raw_pool, count, event_row=False))
                    row.append(await _floor(raw_pool, count, event_row=True))
                    ours_nf.append(await _store(unflushed, count, concurrency))
                    es_nf.append(await _eventsourcing(es_url, count, concurrency, flush=False))
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
                    notes=f"{count} commands per round, median of {rounds}; same server; both"
                    " sides commit each command with fsync (eventsourcing also takes a table lock"
                    " and NOTIFYs in the transaction, as documented)",
                )
            )
            if floor:
                common = (
                    f"{count} commands per round, median of {rounds}; fsync on; one INSERT"
                    " statement per command, its own transaction, nothing read back"
                )
                floors = [
                    (
                        "a one-column row",
                        floor,
                        "a table without index or trigger: the most any client committing one"
                        " command at a time gets from this server and disk",
                    ),
                    (
                        "the event row alone",
                        row,
                        "the raw baseline's event row into the event table (its five indexes,"
                        " two JSON documents): what any append of this row reaches; ours is"
                        f" {median(ours) / median(row):.2f}x it",
                    ),
                ]
                figures += [
                    Figure(
                        name=f"concurrency 1, floor: {what} vs eventsourcing library",
                        value=median(samples),
                        unit="commands/s",
                        baseline_name="`eventsourcing`, the same rounds",
                        baseline=median(es),
                        samples=samples,
                        baseline_samples=es,
                        notes=f"{common}; {note}",
                    )
                    for what, samples, note in floors
                ]
                figures.append(
                    Figure(
                        name="concurrency 1, no WAL flush wait: event append vs eventsourcing"
                        " library",
                        value=median(ours_nf),
                        unit="events/s",
                        baseline_name="`eventsourcing`, its sessions also with"
                        " synchronous_commit off, the same rounds",
                        baseline=median(es_nf),
                        samples=ours_nf,
                        baseline_samples=es_nf,
                        notes=f"{count} commands per round, median of {rounds}; both sides"
                        " exactly as above but committing with synchronous_commit off: the"
                        " ratio a disk with a free flush would give (not durable, context"
                        " only; the flush adds the same time to both sides' commands)",
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
                    notes=f"{count} commands per round, median of {rounds}; fsync on; ours is the"
                    " API's command path (one statement, relay woken after commit); the raw"
                    " transaction skips the trigger's NOTIFY too",
                )
            )
    finally:
        assert store.notifier is not None
        await store.notifier.close()
        await raw_pool.close()
        await unflushed_pool.close()
        await pool.close()
    return figures
