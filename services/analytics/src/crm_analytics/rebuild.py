"""`crm analytics rebuild`: drop every analytics projection and build it again from the history.

Source: Kafka when it still holds the whole history (every partition of every context topic
starts at offset 0), read from the beginning by a fresh consumer with no group (the worker's
committed offsets are untouched); otherwise each service's event feed (``GET /events?after=``,
paged, with a service token). Records of all topics / feeds are merged by event time (each
partition's or feed's own order kept), so the rebuilt state matches what the worker built as the
events happened.

The rebuild folds the events in memory and writes each table with COPY (``crm_analytics.bulk``),
with one mark per event in ``applied_events``; a projection without bulk rules is applied batch
by batch as the worker does.

The worker must not write while the rebuild runs. The rebuild holds the exclusive advisory lock
``REBUILD_LOCK`` from the reset to the end; the worker takes the same lock shared around every
batch (``worker_turn``), so a running worker waits, and then carries on: whatever it applies
again is a duplicate (``applied_events``) and changes nothing. If a worker batch holds the lock
for longer than ``wait`` seconds, or another rebuild runs, the rebuild refuses to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from aiokafka.structs import TopicPartition
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_analytics import bulk as bulk_rules
from crm_analytics.projections import AnalyticsProcessor, all_projections, projection_tables
from crm_events import (
    CloudEvent,
    SchemaValidationError,
    UnknownEventType,
    context_topic,
    registry,
)
from crm_runtime import kafka
from crm_runtime.consumer import (
    ConsumedRecord,
    Outcome,
    Projection,
    decode_record,
)
from crm_runtime.db import Conn
from crm_runtime.settings import DEFAULT_PORTS, Settings

log = logging.getLogger(__name__)

REBUILD_LOCK = 7_364_101  # advisory lock: the rebuild exclusive, worker batches shared
CONTEXTS = ("sales", "marketing", "service")
SERVICE_OF = {"sales": "sales", "marketing": "marketing", "service": "service-desk"}
_EPOCH = datetime.min.replace(tzinfo=UTC)


class RebuildRefused(RuntimeError):
    """Another rebuild runs, or the worker did not let go of the tables in time."""


class FeedSettings(BaseSettings):
    """Where the services' event feeds are (``SALES_URL``, ``MARKETING_URL``,
    ``SERVICE_DESK_URL``), and the bearer token to read them with (``ANALYTICS_REBUILD_TOKEN``;
    default: an analyst token minted with ``JWT_SECRET``)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    sales_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['sales']}"
    marketing_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['marketing']}"
    service_desk_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['service-desk']}"
    analytics_rebuild_token: str | None = None

    def url(self, context: str) -> str:
        return {
            "sales": self.sales_url,
            "marketing": self.marketing_url,
            "service": self.service_desk_url,
        }[context]


# --- the worker's side of the lock -----------------------------------------------------------


@contextlib.asynccontextmanager
async def worker_turn(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Hold the rebuild lock shared while one worker batch is applied (waits during a rebuild)."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock_shared($1)", REBUILD_LOCK)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock_shared($1)", REBUILD_LOCK)


# --- progress --------------------------------------------------------------------------------


@dataclass
class Progress:
    """A one-line progress bar on stderr (or any writer), redrawn at most every 0.2 s."""

    total: int | None = None
    write: Callable[[str], Any] = sys.stderr.write
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _drawn: float = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self._drawn >= 0.2:
            self._draw()

    def finish(self) -> None:
        self._draw()
        self.write("\n")

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        rate = self.done / max(self._drawn - self.started, 1e-9)
        if self.total:
            total = max(self.total, self.done)  # the source's count is a lower bound
            share = self.done / total
            bar = "#" * int(share * 30)
            line = f"[{bar:<30}] {self.done:,}/{total:,} events ({share:.0%})"
        else:
            line = f"{self.done:,} events"
        self.write(f"\rrebuild {line}, {rate:,.0f}/s ")


# --- sources ---------------------------------------------------------------------------------


def record_time(record: ConsumedRecord) -> datetime:
    for name, value in record.headers:
        if name == "ce_time":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                return datetime.fromisoformat(value.decode())
    return _EPOCH  # no time: apply it first (it is dead-lettered or skipped anyway)


async def merge_by_time(
    streams: list[AsyncIterator[list[ConsumedRecord]]], batch_size: int
) -> AsyncIterator[list[ConsumedRecord]]:
    """One sequence of batches from many ordered streams, by event time (ties: stream order).

    Each stream's own order is kept: a record leaves its stream only after the ones before it."""
    buffers: list[list[ConsumedRecord]] = [[] for _ in streams]
    cursor = [0] * len(streams)
    live = set(range(len(streams)))
    heap: list[tuple[datetime, int]] = []

    async def refill(i: int) -> None:
        async for page in streams[i]:
            if page:
                buffers[i], cursor[i] = page, 0
                heapq.heappush(heap, (record_time(page[0]), i))
                return
        live.discard(i)

    for i in range(len(streams)):
        await refill(i)
    out: list[ConsumedRecord] = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(buffers[i][cursor[i]])
        cursor[i] += 1
        if cursor[i] < len(buffers[i]):
            heapq.heappush(heap, (record_time(buffers[i][cursor[i]]), i))
        elif i in live:
            await refill(i)
        if len(out) >= batch_size:
            yield out
            out = []
    if out:
        yield out


async def kafka_holds_full_history(settings: Settings, topics: Iterable[str]) -> bool:
    """Every partition of every topic still starts at offset 0 (and every topic exists)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        existing = set(await consumer.topics())
        partitions = []
        for topic in topics:
            if topic not in existing:
                return False
            partitions += [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        starts = await consumer.beginning_offsets(partitions)
        return all(offset == 0 for offset in starts.values())
    finally:
        await consumer.stop()


@dataclass
class KafkaSource:
    """The topics from the beginning up to their end offsets when the rebuild started."""

    settings: Settings
    topics: list[str]
    page: int = 1000
    ahead: int = 100_000  # records held ahead of the merge (spread over the partitions)
    # per partition and fetch: few large fetches (the embedded broker's cost per fetch grows
    # with what it holds: at 1,000,000 events 16 MiB took it from 16 to 7 us of CPU per event)
    fetch_bytes: int = 16 << 20
    name: str = "kafka"
    total: int | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[list[AsyncIterator[list[ConsumedRecord]]]]:
        consumer = kafka.consumer(
            self.settings, group_id=None, max_partition_fetch_bytes=self.fetch_bytes
        )
        await consumer.start()
        try:
            await consumer.topics()  # metadata of every topic
            partitions = [
                TopicPartition(t, p)
                for t in self.topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            self.total = sum(ends.values())

            # The consumer fetches in the background, one request at a time, for the partitions
            # whose fetched records were all taken; the broker answers with some of them. So
            # every fetched record is taken at once, whole (a paused partition's records left in
            # the consumer would be dropped and fetched again: past the end offset, lost), in
            # pages (each page taken is a chance to take more), and a partition that holds
            # enough is paused, so that the requests ask for the partitions about to run dry (a
            # dry one waits for a round trip).
            buffered: dict[TopicPartition, deque[list[ConsumedRecord]]] = {
                tp: deque() for tp in partitions
            }
            held = dict.fromkeys(partitions, 0)  # records in ``buffered``, by partition
            enough = max(self.page, self.ahead // max(len(partitions), 1))

            def keep(got: dict[TopicPartition, list[Any]]) -> None:
                size = self.page
                for tp, msgs in got.items():
                    pages = buffered[tp]
                    for i in range(0, len(msgs), size):
                        pages.append([ConsumedRecord.of(m) for m in msgs[i : i + size]])
                    held[tp] += len(msgs)
                    if held[tp] >= enough:
                        consumer.pause(tp)

            async def take(tp: TopicPartition, timeout_ms: int) -> None:
                consumer.resume(tp)
                keep(await consumer.getmany(timeout_ms=timeout_ms))

            async def pages(tp: TopicPartition) -> AsyncIterator[list[ConsumedRecord]]:
                # The end offset is a lower bound, not the exact end: some brokers (the embedded
                # one) report the last batch's base offset + 1, so the rest of that batch lies
                # past it, fetched with the record before it. Read to the end offset, then what is
                # already fetched (anything newer is applied too; the worker dedupes it later).
                while True:
                    if buffered[tp]:
                        page = buffered[tp].popleft()
                        held[tp] -= len(page)
                        if held[tp] < enough:
                            consumer.resume(tp)
                        keep(await consumer.getmany(timeout_ms=0))
                        yield page
                    elif await consumer.position(tp) < ends[tp]:
                        await take(tp, 1000)
                    else:  # past the end offset: only what the last fetch brought along
                        consumer.resume(tp)
                        rest = (await consumer.getmany(tp, timeout_ms=0)).get(tp)
                        if not rest:
                            return
                        keep({tp: rest})

            yield [pages(tp) for tp in partitions if ends[tp] > 0]
        finally:
            await consumer.stop()


@dataclass
class FeedSource:
    """Each service's ``GET /events`` feed, page by page from the start."""

    clients: Mapping[str, httpx.AsyncClient]  # context -> client (base URL and token set)
    page: int = 1000
    name: str = "feed"
    total: int | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[list[AsyncIterator[list[ConsumedRecord]]]]:
        for client in self.clients.values():  # every feed answers (and takes the token) first
            (await client.get("/events", params={"limit": 1})).raise_for_status()
        yield [self._pages(context, client) for context, client in self.clients.items()]

    async def _pages(
        self, context: str, client: httpx.AsyncClient
    ) -> AsyncIterator[list[ConsumedRecord]]:
        after = "0"
        topic = context_topic(context)
        while True:
            r = await client.get("/events", params={"after": after, "limit": self.page})
            r.raise_for_status()
            body = r.json()
            records = []
            for item in body["items"]:
                k = CloudEvent.model_validate(item["event"]).to_kafka()
                records.append(
                    ConsumedRecord(topic, 0, int(item["position"]), k.key, k.value, k.headers)
                )
            yield records
            after = body["next_after"]
            if not body["has_more"] or not records:
                return


Source = KafkaSource | FeedSource


# --- the rebuild ---------------------------------------------------------------------------


@dataclass
class Result:
    source: str
    records: int
    outcomes: dict[str, dict[str, int]]  # projection -> outcome -> count
    seconds: float
    # where the time went (bulk path): "read" waiting for the source's next batch (fetch and
    # merge), "fold" applying the records, "write" the tables written at the end
    phases: dict[str, float] = field(default_factory=dict)


async def reset(conn: Conn, projections: list[Projection]) -> list[str]:
    """Empty every projection table and forget what the projections applied."""
    tables = await projection_tables(conn)
    async with conn.transaction():
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        await conn.execute(
            "DELETE FROM processed_events WHERE consumer = ANY($1::text[])",
            [p.name for p in projections],
        )
    return tables


async def rebuild(
    pool: asyncpg.Pool,
    source: Source,
    *,
    projections: list[Projection] | None = None,
    progress: Progress | None = None,
    batch_size: int = 500,
    wait: float = 30.0,
) -> Result:
    """Drop and rebuild ``projections`` (default: all) from ``source``, under the rebuild lock."""
    projections = projections if projections is not None else all_projections()
    started = time.monotonic()

    outcomes: dict[str, dict[str, int]] = {p.name: {} for p in projections}
    phases: dict[str, float] = {}
    bulk = set(p.name for p in projections) <= bulk_rules.KNOWN
    async with pool.acquire() as lock:
        await lock.execute(f"SET lock_timeout = '{int(wait * 1000)}ms'")
        try:
            await lock.execute("SELECT pg_advisory_lock($1)", REBUILD_LOCK)
        except asyncpg.LockNotAvailableError:
            raise RebuildRefused(
                "another rebuild runs, or a worker batch held the analytics tables for "
                f"{wait:.0f} s; stop the analytics worker and try again"
            ) from None
        finally:
            await lock.execute("RESET lock_timeout")
        try:
            count = 0
            async with source.open() as streams:  # the source answers: now drop the state
                await reset(lock, projections)
                progress = progress or Progress()
                progress.total = source.total
                batches = merge_by_time(streams, batch_size)
                if bulk:
                    with _collector_off():
                        count = await _bulk(
                            pool, lock, projections, batches, outcomes, progress, phases
                        )
                else:  # a projection without bulk rules: the worker's way, batch by batch
                    processor = AnalyticsProcessor(pool, projections, letters)
                    async for batch in batches:
                        for name, done in (await processor.process_batch(batch)).items():
                            seen = outcomes[name]
                            for outcome in done:
                                seen[outcome.value] = seen.get(outcome.value, 0) + 1
                        count += len(batch)
                        progress.advance(len(batch))
                progress.finish()
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)
    return Result(source.name, count, outcomes, time.monotonic() - started, phases)


async def letters(record: ConsumedRecord, consumer: str, reason: str) -> None:
    # counted in the outcomes; the worker dead-lettered it when it first came by
    log.warning("poison record skipped", extra={"consumer": consumer, "topic": record.topic})


async def _write_part(pool: asyncpg.Pool, part: Callable[[Conn], Awaitable[None]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await part(conn)


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    """The cyclic garbage collector off: the fold keeps millions of objects alive and makes no
    garbage cycles worth a collection, so the collector would only walk them again and again,
    during the fold and while the tables are written (a third of the time at 1,000,000 events)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


async def _bulk(
    pool: asyncpg.Pool,
    conn: Conn,
    projections: list[Projection],
    batches: AsyncIterator[list[ConsumedRecord]],
    outcomes: dict[str, dict[str, int]],
    progress: Progress,
    phases: dict[str, float],
) -> int:
    """Fold every record into memory once (decoded once for all projections), stream the
    timeline out in chunks (on the lock's connection), then write the other tables in parts on
    connections of their own, at once, and the processed-event marks in a transaction that
    commits only when every part is written (see ``crm_analytics.bulk``)."""
    state = bulk_rules.BulkState(p.name for p in projections)
    seen: set[int] = set()  # event ids (as numbers)
    applied: list[UUID] = []
    names = [p.name for p in projections]
    # event type -> the projections handling it, and their rules
    handlers_of: dict[str, tuple[tuple[str, ...], tuple[Callable[[CloudEvent, str], None], ...]]]
    handlers_of = {}
    # outcomes counted once per record, by (the projections it concerns, outcome)
    counts: dict[tuple[tuple[str, ...], Outcome], int] = {}
    ignored: dict[tuple[str, ...], int] = {}  # by the projections that handle the type
    writing: asyncio.Task[None] | None = None
    count = 0
    reading = folding = 0.0
    clock = time.perf_counter()
    try:
        async for batch in batches:
            now = time.perf_counter()
            reading += now - clock
            clock = now
            for record in batch:
                decoded = decode_record(record)
                if isinstance(decoded, tuple):  # not a CloudEvent, or a type nobody knows
                    outcome, why = decoded
                    if outcome is Outcome.DEAD_LETTERED:
                        await letters(record, "analytics", why)
                    key = (tuple(names), outcome)
                    counts[key] = counts.get(key, 0) + 1
                    continue
                event = decoded
                handled = handlers_of.get(event.type)
                if handled is None:
                    concerned = tuple(p.name for p in projections if p.handles(event.type))
                    handled = handlers_of[event.type] = (
                        concerned,
                        tuple(state.rule(name) for name in concerned),
                    )
                handlers, rules = handled
                ignored[handlers] = ignored.get(handlers, 0) + 1
                if not handlers:
                    continue
                try:
                    payload = registry.decode(event.type, event.schemaversion, event.data)
                except (SchemaValidationError, UnknownEventType):
                    await letters(record, "analytics", "schema")
                    key = (handlers, Outcome.DEAD_LETTERED)
                    counts[key] = counts.get(key, 0) + 1
                    continue
                number = event.id.int  # hashed in C (a UUID's hash is Python code)
                if number in seen:
                    key = (handlers, Outcome.DUPLICATE)
                else:
                    seen.add(number)
                    applied.append(event.id)
                    dumped = payload.model_dump_json()
                    for rule in rules:
                        rule(event, dumped)
                    key = (handlers, Outcome.APPLIED)
                counts[key] = counts.get(key, 0) + 1
            count += len(batch)
            progress.advance(len(batch))
            now = time.perf_counter()
            folding += now - clock
            clock = now
            await asyncio.sleep(0)  # the fetcher and the timeline's COPY get their turn
            rows = state.take_timeline()
            if rows:  # written while the fold goes on, on the lock's connection (idle meanwhile)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(bulk_rules.copy_timeline(conn, rows))
    except BaseException:
        if writing is not None:
            writing.cancel()
            with contextlib.suppress(BaseException):
                await writing
        raise
    phases["read"], phases["fold"] = reading, folding
    if writing is not None:
        await writing
    for (concerned, outcome), n in counts.items():
        for name in concerned:
            outcomes[name][outcome.value] = outcomes[name].get(outcome.value, 0) + n
    for handling, n in ignored.items():
        for name in names:
            if name not in handling:
                o = outcomes[name]
                o[Outcome.IGNORED.value] = o.get(Outcome.IGNORED.value, 0) + n
    parts = state.parts()

    async def marks() -> None:  # the key built after the rows (far faster than row by row)
        await conn.execute("ALTER TABLE applied_events DROP CONSTRAINT applied_events_pkey")
        await conn.copy_records_to_table(
            "applied_events", records=[(i,) for i in applied], columns=("event_id",)
        )
        await conn.execute("ALTER TABLE applied_events ADD PRIMARY KEY (event_id)")

    # The parts go out at once, each on a connection of its own (PostgreSQL takes each COPY in
    # a backend of its own, while this process encodes the next); the marks are committed only
    # once every part is written, so the worker never skips an event whose rows are missing.
    async with conn.transaction():
        if pool.get_max_size() < 2:  # no connection besides this one: one after the other
            for part in parts:
                await part(conn)
            await marks()
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(marks())
                    for part in parts:
                        group.create_task(_write_part(pool, part))
            except* Exception as failed:  # the first failure, as if it ran alone
                raise failed.exceptions[0] from None
    phases["write"] = time.perf_counter() - clock
    return count


async def choose_source(
    settings: Settings,
    wanted: str,
    feeds: FeedSettings,
    topics: Mapping[str, str] | None = None,
) -> Source:
    """``auto``: Kafka if it holds the full history (and answers), else the services' feeds."""
    topics = topics or {c: context_topic(c) for c in CONTEXTS}
    if wanted == "kafka":
        return KafkaSource(settings, list(topics.values()))
    if wanted == "auto":
        try:
            if await asyncio.wait_for(kafka_holds_full_history(settings, topics.values()), 30):
                return KafkaSource(settings, list(topics.values()))
        except Exception as exc:  # the broker is away: the feeds still answer
            log.warning("broker not usable for the rebuild", extra={"error": type(exc).__name__})
    return FeedSource(feed_clients(settings, feeds, topics.keys()))


def feed_clients(
    settings: Settings, feeds: FeedSettings, contexts: Iterable[str]
) -> dict[str, httpx.AsyncClient]:
    from crm_runtime.http.auth import mint_token

    token = feeds.analytics_rebuild_token or mint_token(
        settings.jwt_secret, "analytics-rebuild", ["analyst"], ttl=6 * 3600
    )
    return {
        c: httpx.AsyncClient(
            base_url=feeds.url(c),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60.0),
        )
        for c in contexts
    }


def main(args: argparse.Namespace) -> int:
    """The CLI entry point (see crm_runtime.cli): returns the exit code."""
    from crm_runtime.context import open_context

    settings = Settings.for_service("analytics")

    async def run() -> int:
        ctx = await open_context(settings, ["crm_analytics"], pool_size=4)
        source = await choose_source(settings, args.source, FeedSettings())
        print(f"crm analytics rebuild: from {source.name}", file=sys.stderr)
        try:
            result = await rebuild(ctx.pool, source, batch_size=args.batch_size)
        except RebuildRefused as exc:
            print(f"crm analytics rebuild: refused: {exc}", file=sys.stderr)
            return 1
        finally:
            if isinstance(source, FeedSource):
                for client in source.clients.values():
                    await client.aclose()
            await ctx.close()
        applied = {n: o.get(Outcome.APPLIED.value, 0) for n, o in result.outcomes.items()}
        spent = ", ".join(f"{name} {s:.1f} s" for name, s in result.phases.items())
        print(
            f"crm analytics rebuild: {result.records:,} records from {result.source} in "
            f"{result.seconds:.1f} s ({spent or 'per batch'}); applied per projection: {applied}",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())
