"""Event store on real PostgreSQL: optimistic concurrency, as-of reads, and no skipped events."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from crm_runtime.errors import ConcurrencyError
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, NewEvent
from crm_runtime.relay import _FETCH as relay_fetch

pytestmark = pytest.mark.integration


def ev(n: int = 0) -> NewEvent:
    return NewEvent(type="crm.sales.lead.qualified", data={"n": n}, subject="c-1")


async def test_append_and_read_stream(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/crm/test")
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.append(conn, "lead-1", "lead", 0, [ev(1), ev(2)], Metadata(actor="u1"))
    assert [e.version for e in stored] == [1, 2]
    events = await store.read_stream("lead-1")
    assert [e.data["n"] for e in events] == [1, 2]
    assert events[0].metadata == {"actor": "u1"}
    assert await store.stream_version("lead-1") == 2


async def test_stale_expected_version_is_rejected_and_changes_nothing(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/crm/test")
    async with pool.acquire() as conn:
        await store.append(conn, "lead-2", "lead", 0, [ev(1)])
        with pytest.raises(ConcurrencyError) as err:
            await store.append(conn, "lead-2", "lead", 0, [ev(2)])
        assert err.value.expected == 0
        with pytest.raises(ConcurrencyError):
            await store.append(conn, "lead-2", "lead", 5, [ev(3)])  # a version from the future
    assert [e.data["n"] for e in await store.read_stream("lead-2")] == [1]


async def test_concurrent_appends_to_one_stream_one_wins(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/crm/test")

    async def attempt(n: int) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            try:
                await store.append(conn, "lead-3", "lead", 0, [ev(n)])
                return True
            except ConcurrencyError:
                return False

    results = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert results.count(True) == 1
    assert len(await store.read_stream("lead-3")) == 1


async def test_read_as_of_a_time(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/crm/test")
    async with pool.acquire() as conn:
        await store.append(conn, "lead-4", "lead", 0, [ev(1)])
        await asyncio.sleep(0.02)
        between = datetime.now(UTC)
        await asyncio.sleep(0.02)
        await store.append(conn, "lead-4", "lead", 1, [ev(2)])
    assert [e.data["n"] for e in await store.read_stream("lead-4", as_of=between)] == [1]
    assert len(await store.read_stream("lead-4")) == 2


async def _naive_read(pool: asyncpg.Pool, after: int) -> list[int]:
    async with pool.acquire() as c:
        return [
            r["position"]
            for r in await c.fetch(
                "SELECT position FROM events WHERE position > $1 ORDER BY position", after
            )
        ]


@pytest.mark.parametrize("early_txid", [False, True])
async def test_late_commit_is_not_skipped(pool: asyncpg.Pool, early_txid: bool) -> None:
    """A takes a position, B takes a later one and commits first; A commits last.

    A ``position > cursor`` reader passes over A for good; the store's reader does not. With
    ``early_txid`` B's transaction id is older than A's although its position is newer.
    """
    store = EventStore(pool, "/crm/test")
    a_conn = await pool.acquire()
    b_conn = await pool.acquire()
    try:
        a_tx = a_conn.transaction()
        b_tx = b_conn.transaction()
        await b_tx.start()
        if early_txid:
            await b_conn.fetchval("SELECT pg_current_xact_id()")
        await a_tx.start()
        a = await store.append(a_conn, "stream-a", "t", 0, [ev(1)])
        b = await store.append(b_conn, "stream-b", "t", 0, [ev(2)])
        assert a[0].position < b[0].position
        await b_tx.commit()

        naive_seen = await _naive_read(pool, 0)
        assert naive_seen == [b[0].position]  # the naive reader moves its cursor past A ...
        safe_seen = await store.read_committed(Checkpoint())
        cursor = safe_seen[-1].checkpoint if safe_seen else Checkpoint()

        await a_tx.commit()
        assert await _naive_read(pool, b[0].position) == []  # ... and never sees A.
        rest = await store.read_committed(cursor)
        seen = [e.event_id for e in safe_seen + rest]
        assert sorted(map(str, seen)) == sorted(str(x.event_id) for x in a + b)
    finally:
        await pool.release(a_conn)
        await pool.release(b_conn)


async def test_a_writer_in_another_database_does_not_hold_readers_back(
    pool: asyncpg.Pool, fresh_db: Any
) -> None:
    """Transaction ids are cluster-wide, but only this database's transactions can still add
    events here: a long write transaction of another service's database on the same server
    holds neither ``read_committed`` nor the relay's read back. One in this database does."""
    store = EventStore(pool, "/crm/test")
    neighbour = await asyncpg.connect(await fresh_db())
    same = await pool.acquire()
    try:
        other_tx = neighbour.transaction()
        await other_tx.start()
        await neighbour.fetchval("SELECT pg_current_xact_id()")  # a writer: it holds an id
        async with pool.acquire() as conn:
            first = await store.append(conn, "s-1", "t", 0, [ev(1)])
        seen = await store.read_committed(Checkpoint())
        assert [e.event_id for e in seen] == [first[0].event_id]
        relayed = await pool.fetch(relay_fetch, "0", 0, 100)
        assert [r[0] for r in relayed] == [first[0].position]

        same_tx = same.transaction()  # an open writer here, older than the next event
        await same_tx.start()
        await same.fetchval("SELECT pg_current_xact_id()")
        async with pool.acquire() as conn:
            second = await store.append(conn, "s-2", "t", 0, [ev(2)])
        assert await store.read_committed(seen[-1].checkpoint) == []
        await same_tx.rollback()
        after = await store.read_committed(seen[-1].checkpoint)
        assert [e.event_id for e in after] == [second[0].event_id]
        await other_tx.rollback()
    finally:
        await pool.release(same)
        await neighbour.close()


async def test_sixteen_concurrent_writers_catch_up_reader_misses_nothing(
    pool: asyncpg.Pool,
) -> None:
    """16 writers with interleaved, randomly delayed commits (and some rollbacks) while a reader
    catches up continuously: it reads every committed event exactly once and no aborted one, and
    a second read from the start returns the same sequence."""
    store = EventStore(pool, "/crm/test")
    rng = random.Random(1234)
    committed: set[uuid.UUID] = set()
    aborted: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def writer(w: int) -> None:
        versions = [0, 0, 0]
        for i in range(25):
            events = [ev(i) for _ in range(rng.randint(1, 3))]
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                if rng.random() < 0.3:
                    await conn.fetchval("SELECT pg_current_xact_id()")  # txid before position
                    await asyncio.sleep(rng.random() * 0.005)
                await store.append(conn, f"w{w}-s{i % 3}", "t", versions[i % 3], events)
                await asyncio.sleep(rng.random() * 0.01)  # hold the transaction open
                if rng.random() < 0.1:
                    await tx.rollback()
                    aborted.update(e.event_id for e in events)
                else:
                    await tx.commit()
                    committed.update(e.event_id for e in events)
                    versions[i % 3] += len(events)

    seen: list[uuid.UUID] = []

    async def reader() -> None:
        cursor = Checkpoint()
        while True:
            finished = done.is_set()
            batch = await store.read_committed(cursor, limit=50)
            seen.extend(e.event_id for e in batch)
            if batch:
                cursor = batch[-1].checkpoint
            elif finished:
                return
            else:
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(16)))
    done.set()
    await reading

    assert len(committed) > 500
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == committed, f"missing {len(committed - set(seen))} events"
    assert not set(seen) & aborted
    again = await store.read_committed(Checkpoint(), limit=100_000)
    assert [e.event_id for e in again] == seen, "catch-up order is not stable"
