"""The command path's unit of work on real PostgreSQL: one-statement commands stay atomic, the
transaction still covers everything else, and the relay is woken after commit (never before)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from crm_runtime import db
from crm_runtime.errors import ConcurrencyError
from crm_runtime.eventstore import EventStore, Metadata, NewEvent, Write
from crm_runtime.http.commands import COMMAND_ATTEMPTS
from crm_runtime.unit_of_work import NOTIFY_CHANNEL, CommandConnection, CommitNotifier

pytestmark = pytest.mark.integration

VIEW = "CREATE TABLE view_rows (id text PRIMARY KEY, version int NOT NULL)"
UPSERT = (
    "INSERT INTO view_rows (id, version) VALUES ($1, $2)"
    " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version"
)


def ev(n: int = 0) -> NewEvent:
    return NewEvent(type="crm.sales.lead.qualified", data={"n": n}, subject="c-1")


@pytest.fixture
async def url(fresh_db: Callable[..., Any]) -> str:
    u: str = await fresh_db()
    conn = await asyncpg.connect(u)
    try:
        await conn.execute(VIEW)
    finally:
        await conn.close()
    return u


@pytest.fixture
async def pool(url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(url, max_size=5)
    yield p
    await p.close()


class Listener:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self, *_: object) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
async def listener(url: str) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(url)
    heard = Listener()
    await conn.add_listener(NOTIFY_CHANNEL, heard)
    yield heard
    await conn.close()


class Recorder(CommitNotifier):
    """Counts the wake-ups it is asked for and sends none."""

    def __init__(self) -> None:
        super().__init__("postgresql://unused")
        self.calls = 0

    def committed(self) -> None:
        self.calls += 1


async def _settle() -> None:
    await asyncio.sleep(0.3)  # notifications are delivered asynchronously


async def test_final_append_with_view_write_is_one_statement_and_atomic(
    pool: asyncpg.Pool, listener: Listener, url: str
) -> None:
    notifier = CommitNotifier(url)
    store = EventStore(pool, "/t", notifier)
    async with pool.acquire() as raw:
        async with CommandConnection(raw, notifier) as conn:
            stored = await store.append(
                conn,
                "s-1",
                "t",
                0,
                [ev(1)],
                Metadata(),
                also=[Write(UPSERT, ("s-1", 1))],
                final=True,
            )
            assert not conn.is_in_transaction()  # ran alone: no BEGIN/COMMIT
            with pytest.raises(RuntimeError, match="final"):
                await conn.execute("SELECT 1")
        assert await raw.fetchval("SELECT version FROM view_rows WHERE id = 's-1'") == 1
    assert stored[0].version == 1
    await asyncio.wait_for(listener.event.wait(), 5)  # woken after commit, by the notifier
    await notifier.close()


async def test_failed_final_append_writes_nothing(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/t")
    async with pool.acquire() as raw:
        await store.append(raw, "s-2", "t", 0, [ev(1)])
        with pytest.raises(ConcurrencyError):
            async with CommandConnection(raw) as conn:
                await store.append(
                    conn, "s-2", "t", 0, [ev(2)], also=[Write(UPSERT, ("s-2", 9))], final=True
                )
        assert await raw.fetchval("SELECT count(*) FROM view_rows WHERE id = 's-2'") == 0
        assert await raw.fetchval("SELECT count(*) FROM events WHERE stream_id = 's-2'") == 1


async def test_stale_version_rolls_the_view_write_back(pool: asyncpg.Pool) -> None:
    """Version 5 of a stream at 1 inserts no event and raises nothing in SQL: the append runs
    in a transaction so its writes roll back with the ConcurrencyError."""
    store = EventStore(pool, "/t")
    async with pool.acquire() as raw:
        await store.append(raw, "s-3", "t", 0, [ev(1)])
        with pytest.raises(ConcurrencyError):
            async with CommandConnection(raw) as conn:
                await store.append(
                    conn, "s-3", "t", 5, [ev(2)], also=[Write(UPSERT, ("s-3", 6))], final=True
                )
        assert await raw.fetchval("SELECT count(*) FROM view_rows WHERE id = 's-3'") == 0
        with pytest.raises(ValueError, match="transaction"):  # a plain conn outside a transaction
            await store.append(raw, "s-3", "t", 1, [ev(3)], also=[Write(UPSERT, ("s-3", 2))])


async def test_statements_before_the_final_one_share_its_transaction(pool: asyncpg.Pool) -> None:
    store = EventStore(pool, "/t")

    async def command(conn: CommandConnection) -> None:
        await conn.execute("INSERT INTO view_rows VALUES ('before', 1)")
        assert conn.is_in_transaction()
        async with conn.transaction():  # a savepoint inside it
            await conn.execute("INSERT INTO view_rows VALUES ('savepoint', 1)")
        await store.append(conn, "s-4", "t", 0, [ev(1)])
        await store.append(conn, "s-4", "t", 0, [ev(2)], final=True)  # conflicts

    async with pool.acquire() as raw:
        with pytest.raises(ConcurrencyError):
            async with CommandConnection(raw) as conn:
                await command(conn)
        # everything rolled back together
        assert await raw.fetchval("SELECT count(*) FROM view_rows") == 0
        assert await raw.fetchval("SELECT count(*) FROM events WHERE stream_id = 's-4'") == 0
        async with CommandConnection(raw) as conn:
            await conn.execute("INSERT INTO view_rows VALUES ('kept', 1)")
            await store.append(conn, "s-5", "t", 0, [ev(1)], final=True)
        assert await raw.fetchval("SELECT count(*) FROM view_rows WHERE id = 'kept'") == 1


async def test_the_trigger_still_notifies_other_writers_and_defers_for_commands(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    store = EventStore(pool, "/t")
    async with pool.acquire() as raw, raw.transaction():  # a consumer, an import: it notifies
        await store.append(raw, "s-6", "t", 0, [ev(1)])
    await asyncio.wait_for(listener.event.wait(), 5)
    listener.event.clear()
    seen = listener.count
    recorder = Recorder()
    async with pool.acquire() as raw, CommandConnection(raw, recorder) as conn:
        await store.append(conn, "s-7", "t", 0, [ev(1)], final=True)
        assert recorder.calls == 0  # not before the commit
    assert recorder.calls == 1  # the wake-up is the notifier's, after commit
    await _settle()
    assert listener.count == seen  # and the trigger kept quiet for the command


async def test_notifier_folds_a_burst_into_few_notifications(url: str, listener: Listener) -> None:
    notifier = CommitNotifier(url, interval=0.05)
    for _ in range(50):
        notifier.committed()
        await asyncio.sleep(0)
    await notifier.close()
    await _settle()
    assert 1 <= listener.count <= 3


async def test_released_command_connections_keep_a_clean_session(pool: asyncpg.Pool) -> None:
    """The pool skips its reset query only for what a command vouches for; others are reset."""
    async with pool.acquire() as raw:
        await raw.execute("SET application_name = 'dirty'")
    async with pool.acquire() as raw:
        assert await raw.fetchval("SHOW application_name") != "dirty"


class _Racer:
    """A command that reads its stream's version, lets another writer append to the stream
    (on the first ``races`` runs), then appends at the version it read; an If-Match is checked
    against what it read."""

    def __init__(self, store: EventStore, pool: asyncpg.Pool, races: int, if_match: int | None):
        self.store, self.pool, self.races, self.if_match = store, pool, races, if_match
        self.runs = 0

    async def __call__(self, conn: Any) -> Any:
        from crm_runtime.http.commands import CommandResult, check_version

        self.runs += 1
        version = await self.store.stream_version("lead-r", conn)
        check_version(self.if_match, version)
        if self.runs <= self.races:
            async with self.pool.acquire() as other:
                await self.store.append(other, "lead-r", "lead", version, [ev(99)], META)
        stored = await self.store.append(conn, "lead-r", "lead", version, [ev(self.runs)], META)
        return CommandResult(200, {"version": stored[-1].version})


META = Metadata(actor="u-1")


async def _run_racer(pool: asyncpg.Pool, racer: _Racer) -> Any:
    from types import SimpleNamespace

    from crm_runtime.http.auth import Principal
    from crm_runtime.http.commands import run_command

    ctx: Any = SimpleNamespace(pool=pool, store=racer.store)
    user = Principal("u-1", frozenset({"sales_rep"}))
    return await run_command(ctx, user, None, None, racer)


async def test_a_command_that_lost_a_race_runs_again_on_the_new_state(
    pool: asyncpg.Pool,
) -> None:
    import json

    from crm_runtime.errors import Conflict, PreconditionFailed

    store = EventStore(pool, "/crm/test")
    await store.append(pool, "lead-r", "lead", 0, [ev()], META)

    # Without If-Match: the second run applies the change on top of the other writer's.
    racer = _Racer(store, pool, races=1, if_match=None)
    response = await _run_racer(pool, racer)
    assert response.status_code == 200 and racer.runs == 2
    assert json.loads(response.body) == {"version": 3}  # the first, the other's, its own
    assert [e.data["n"] for e in await store.read_stream("lead-r")] == [0, 99, 2]

    # With If-Match naming the version read first: checked afresh, now stale -> 412.
    racer = _Racer(store, pool, races=1, if_match=3)
    with pytest.raises(PreconditionFailed) as stale:
        await _run_racer(pool, racer)
    assert type(stale.value) is PreconditionFailed and racer.runs == 2

    # Losing every time: a 409 (not a 412: the client set no precondition), nothing of its own.
    racer = _Racer(store, pool, races=99, if_match=None)
    with pytest.raises(Conflict):
        await _run_racer(pool, racer)
    events = await store.read_stream("lead-r")
    assert racer.runs == COMMAND_ATTEMPTS and all(e.data["n"] == 99 for e in events[4:])


async def test_many_concurrent_changes_of_one_record_all_apply(pool: asyncpg.Pool) -> None:
    """Ten commands read the record at once, then append: after the first loss they take
    turns, so none of them runs out of attempts."""
    from types import SimpleNamespace

    from crm_runtime.http.auth import Principal
    from crm_runtime.http.commands import CommandResult, run_command

    store = EventStore(pool, "/crm/test")
    await store.append(pool, "lead-m", "lead", 0, [ev()], META)
    ctx: Any = SimpleNamespace(pool=pool, store=store)
    user = Principal("u-1", frozenset({"sales_rep"}))

    async def change(n: int) -> Any:
        async def command(conn: Any) -> Any:
            version = await store.stream_version("lead-m", conn)
            await asyncio.sleep(0.02)  # everyone has read before anyone appends
            await store.append(conn, "lead-m", "lead", version, [ev(n)], META)
            return CommandResult(200, {})

        return await run_command(ctx, user, None, None, command)

    answers = await asyncio.gather(*(change(n) for n in range(1, 11)))
    assert [a.status_code for a in answers] == [200] * 10
    stream = await store.read_stream("lead-m")
    assert sorted(e.data["n"] for e in stream[1:]) == list(range(1, 11))


async def test_a_command_waits_for_its_turn_at_most_queue_wait_then_409(
    pool: asyncpg.Pool, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from crm_runtime.errors import Conflict
    from crm_runtime.http import commands

    monkeypatch.setattr(commands, "QUEUE_WAIT", 0.3)
    store = EventStore(pool, "/crm/test")
    await store.append(pool, "lead-r", "lead", 0, [ev()], META)
    holder = await asyncpg.connect(url)  # a command that holds the turn and does not finish
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended('lead-r', 11))")
        racer = _Racer(store, pool, races=1, if_match=None)
        started = time.monotonic()
        with pytest.raises(Conflict):
            await _run_racer(pool, racer)
        assert racer.runs == 1 and time.monotonic() - started < 3
    finally:
        await holder.close()

    # once it is free, the run after a lost race gets its turn, with the session's own timeout
    seen: list[str] = []

    class Checking(_Racer):
        async def __call__(self, conn: Any) -> Any:
            seen.append(await conn.fetchval("SELECT current_setting('lock_timeout')"))
            return await super().__call__(conn)

    racer = Checking(store, pool, races=1, if_match=None)
    assert (await _run_racer(pool, racer)).status_code == 200
    assert racer.runs == 2 and seen == ["0", "0"]
