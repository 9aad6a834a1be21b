"""The outbox relay: publishes committed events to Kafka, at least once, in commit order.

One relay per service holds an advisory lock; further replicas wait as hot standbys. The cursor
is stored after the broker acknowledged the records. If the broker lost history (a fresh
in-memory broker, a deleted topic), the relay notices and republishes from the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge

from crm_events import context_topic, public_topic, registry
from crm_events.envelope import JSON_CONTENT_TYPE_B, SPEC_VERSION_B
from crm_runtime import kafka
from crm_runtime.eventstore import HORIZON, Checkpoint, EventStore
from crm_runtime.settings import Settings
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

RELAY_LOCK_BASE = 7_364_100

# The relay's read: the next committed events in commit order (design §3: only below the oldest
# running transaction), each as the bytes of its Kafka record in CloudEvents binary mode, as
# ``crm_events.envelope.binary_record`` builds them: key = subject, or the stream id without one;
# value = the payload's JSON text; ``ce_time`` in RFC 3339 with ``Z`` and microseconds unless 0.
_FETCH = f"""
SELECT position, txid::text::bigint,
       convert_to(event_type, 'UTF8'),
       convert_to(coalesce(nullif(subject, ''), stream_id), 'UTF8'),
       convert_to(payload::text, 'UTF8'),
       convert_to(event_id::text, 'UTF8'),
       convert_to(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                  || CASE WHEN date_trunc('second', occurred_at) = occurred_at THEN ''
                          ELSE to_char(occurred_at AT TIME ZONE 'UTC', '.US') END
                  || 'Z', 'UTF8'),
       convert_to(subject, 'UTF8'),
       convert_to(stream_id, 'UTF8'),
       convert_to(version::text, 'UTF8'),
       convert_to(schema_version::text, 'UTF8'),
       convert_to(metadata->>'correlation_id', 'UTF8'),
       convert_to(metadata->>'causation_id', 'UTF8')
FROM events
WHERE (txid, position) > ($1::text::xid8, $2::bigint)
  AND txid < {HORIZON}
ORDER BY events.txid, events.position
LIMIT $3
"""
_CONTENT_TYPE = ("content-type", JSON_CONTENT_TYPE_B)
_SPEC = ("ce_specversion", SPEC_VERSION_B)

# Delivery futures of a page's record batches with their record counts, and records per topic.
_Sent = tuple[list[tuple["asyncio.Future[Any]", int]], dict[str, int]]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


PUBLISHED = Counter("crm_relay_published_total", "Records the relay published", ["topic"])
REPUBLISHES = Counter(
    "crm_relay_history_resets_total", "Times the relay found the broker had lost history", ["topic"]
)
RELAY_ERRORS = Counter(
    "crm_relay_broker_errors_total", "Publish attempts that failed on the broker", ["topic"]
)
CURSOR_POSITION = Gauge(
    "crm_relay_cursor_position", "Position of the last relayed event", ["topic"]
)


@dataclass
class RelayState:
    cursor: Checkpoint = field(default_factory=Checkpoint)
    acked: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> highest offset


class OutboxRelay:
    """Relays one service's event store to its context topic (and the public topic)."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, settings: Settings, context: str):
        self.pool = pool
        self.store = store
        self.settings = settings
        self.context = context
        self.topic = context_topic(context)
        self.topics = [self.topic, public_topic()]
        self.state = RelayState()
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._ends: dict[str, int] = {}  # "topic:partition" -> high-water mark at the last check
        self.is_leader = False
        self._cursor_conn: Any = None
        self._read_conn: Any = None
        self._writer: asyncio.Task[None] | None = None
        self.stored = Checkpoint()  # the cursor last written to relay_state
        self._source_header = ("ce_source", store.source.encode())
        self._types: dict[bytes, tuple[tuple[str, bytes], bool]] = {}
        self._max_request_size = 1_048_576
        self._check_size_above = self._max_request_size // 2

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set. Waits for the lock if another replica holds it."""
        lock_conn = await self.pool.acquire()
        try:
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_BASE):
                if await sleep_or_stop(stop, 2.0):
                    return
            self.is_leader = True
            await lock_conn.add_listener("crm_events", self._on_notify)
            await self._start_clients()
            self._cursor_conn = await self.pool.acquire()
            await self._cursor_conn.execute("SET synchronous_commit TO OFF")
            # Reads go over the lock's connection: never queued behind the service's other
            # users of the pool (a commit -> Kafka latency spike under load otherwise).
            self._read_conn = lock_conn
            try:
                await self._load_state()
                await self.check_history()
                await self._loop(stop)
            finally:
                self._read_conn = None
                await self.pool.release(self._cursor_conn)  # the pool resets the session
                self._cursor_conn = None
                await self._stop_clients()
                await lock_conn.remove_listener("crm_events", self._on_notify)
        finally:
            if self.is_leader:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_BASE)
            self.is_leader = False
            await self.pool.release(lock_conn)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.settings.relay_history_check_interval
        backoff = 0.5
        while not stop.is_set():
            self._wake.clear()
            try:
                published = await self.relay_once()
                if loop.time() >= next_check:
                    await self.check_history()
                    next_check = loop.time() + self.settings.relay_history_check_interval
            except (KafkaError, OSError, TimeoutError) as exc:
                # The broker is away: nothing was acknowledged, so the cursor has not moved.
                # Keep trying (loudly); after it returns, the history check runs first.
                log.warning(
                    "broker unavailable; retrying",
                    extra={"topic": self.topic, "error": type(exc).__name__, "retry_in": backoff},
                )
                RELAY_ERRORS.labels(self.topic).inc()
                if await sleep_or_stop(stop, backoff):
                    return
                backoff = min(backoff * 2, 30.0)
                next_check = loop.time()
                continue
            backoff = 0.5
            if published:
                continue  # there may be more right away
            waker = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {waker, stopper},
                timeout=self.settings.relay_poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waker.cancel()
            stopper.cancel()

    async def relay_once(self) -> int:
        """Publish every committed event not yet relayed; return how many.

        Pipelined: while page n is handed to the producer, page n+1 is already being read; while
        the broker acknowledges page n, page n+1 is handed over; the cursor is stored by its own
        task, never holding up the next page. Cursors are still stored strictly in order and
        only after the acks of their page; a failure anywhere resumes from the last acknowledged
        page (after a crash, from the last stored cursor) and re-sends what may have gone out
        since: at least once.

        When this returns, the cursor of everything it published is stored, so the first read
        of the next call overlaps none of the relay's own writes. That matters: a read that
        runs while the cursor ``UPDATE`` is open cannot see events of transactions that began
        after it (they are above the horizon), and their notifications may already be spent;
        the loop calls this again after any call that published, and that read sees them.
        """
        size = self.settings.relay_batch_size
        cursor = self.state.cursor
        fetch: asyncio.Task[list[Any]] | None = asyncio.create_task(self._fetch(cursor, size))
        pending: asyncio.Task[None] | None = None
        total = 0
        try:
            while fetch is not None:
                rows = await fetch
                fetch = None
                if not rows:
                    break
                last = rows[-1]
                cursor = Checkpoint(last[1], last[0])
                # A full page, or a commit notified since the read began: read on while this
                # page goes out (the wake is cleared before that read, so nothing is missed).
                if len(rows) == size or self._wake.is_set():
                    self._wake.clear()
                    fetch = asyncio.create_task(self._fetch(cursor, size))
                sent = await self._send(rows)
                if pending is not None:
                    await pending  # the previous page's acks, in order
                pending = asyncio.create_task(self._complete(cursor, sent))
                total += len(rows)
            if pending is not None:
                await pending
                pending = None
            if self._writer is not None:
                await self._writer
        finally:
            for task in (fetch, pending):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if self._writer is not None and not self._writer.done():
                with contextlib.suppress(BaseException):
                    await self._writer  # acked progress only; let it land
        return total

    async def _fetch(self, after: Checkpoint, limit: int) -> list[Any]:
        """The next committed events in commit order, as the parts of their Kafka records.

        Same horizon as ``EventStore.read_committed`` (design §3: only below the oldest running
        transaction, so nothing is passed over), read on the relay's own connection; PostgreSQL
        renders the record's key, value and header values as bytes (``binary_record``'s format).
        """
        conn = self._read_conn
        if conn is None:
            async with self.pool.acquire() as c:
                return list(await c.fetch(_FETCH, str(after.txid), after.position, limit))
        return list(await conn.fetch(_FETCH, str(after.txid), after.position, limit))

    async def _send(self, rows: list[Any]) -> _Sent:
        """Hand a page to the producer as record batches, one or more per partition; return
        the delivery futures (not awaited yet).

        Records go to the partitions aiokafka's default partitioner would pick, in commit order
        within each partition, in batches of the producer's ``max_batch_size``.
        """
        producer = self._producer
        assert producer is not None
        public = public_topic()
        source = self._source_header
        types = self._types
        keys: list[bytes] = []
        records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        publics: list[bool] = []
        for (
            _,
            _,
            type_b,
            key,
            value,
            ce_id,
            ce_time,
            subject,
            stream_id,
            stream_version,
            schema_version,
            correlation_id,
            causation_id,
        ) in rows:
            known = types.get(type_b)
            if known is None:
                known = types[type_b] = (("ce_type", type_b), registry.is_public(type_b.decode()))
            headers = [
                _CONTENT_TYPE,
                ("ce_id", ce_id),
                source,
                known[0],
                _SPEC,
                ("ce_time", ce_time),
            ]
            if subject is not None:
                headers.append(("ce_subject", subject))
            headers.append(("ce_streamid", stream_id))
            headers.append(("ce_streamversion", stream_version))
            headers.append(("ce_schemaversion", schema_version))
            if correlation_id is not None:
                headers.append(("ce_correlationid", correlation_id))
            if causation_id is not None:
                headers.append(("ce_causationid", causation_id))
            if len(value) > self._check_size_above:
                self._check_size(key, value, headers)
            keys.append(key)
            records.append((key, value, headers))
            publics.append(known[1])
        batches: dict[tuple[str, int], list[Any]] = {}
        counts: dict[str, int] = {}
        for topic in self.topics:
            if topic == public:
                chosen = [i for i, p in enumerate(publics) if p]
                if not chosen:
                    continue
                topic_keys = [keys[i] for i in chosen]
            else:
                chosen = None
                topic_keys = keys
            parts = sorted(await producer.partitions_for(topic))
            counts[topic] = len(topic_keys)
            for i, part in zip(
                chosen if chosen is not None else range(len(records)),
                kafka.default_partitions(topic_keys, parts),
                strict=True,
            ):
                key, value, headers = records[i]
                queue = batches.get((topic, part))
                if queue is None:
                    queue = batches[topic, part] = [producer.create_batch()]
                if queue[-1].append(key=key, value=value, timestamp=None, headers=headers) is None:
                    queue[-1].close()
                    queue.append(producer.create_batch())
                    queue[-1].append(key=key, value=value, timestamp=None, headers=headers)

        async def enqueue(topic: str, part: int, builders: list[Any]) -> list[Any]:
            # One partition's batches in order; all partitions side by side, so that each
            # produce request carries a batch for every partition, as with send().
            futures = []
            for builder in builders:
                builder.close()
                future = await producer.send_batch(builder, topic, partition=part)
                # A page whose acks are never awaited (the relay failed meanwhile and resends
                # from its cursor) must not log its delivery errors as unretrieved.
                future.add_done_callback(_retrieve)
                futures.append(future)
            return futures

        # All partitions finish their hand-over (or fail), so none hands over a batch of this
        # page after a failure here, behind the resend of the same records.
        queued = await asyncio.gather(
            *(enqueue(t, p, b) for (t, p), b in batches.items()), return_exceptions=True
        )
        for outcome in queued:
            if isinstance(outcome, BaseException):
                raise outcome
        futures = [
            (future, builder.record_count())
            for builders, fs in zip(batches.values(), queued, strict=True)
            for builder, future in zip(builders, fs, strict=True)  # type: ignore[arg-type]
        ]
        return futures, counts

    def _check_size(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """What send() checks: a record the broker would refuse fails here, loudly."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self._max_request_size:
            raise MessageSizeTooLargeError(
                f"an event of {size} bytes exceeds the producer's max_request_size"
            )

    async def _complete(self, cursor: Checkpoint, sent: _Sent) -> None:
        """Wait for the broker's acks of a page, then have the cursor after it stored."""
        futures, counts = sent
        results = await asyncio.gather(*(f for f, _ in futures), return_exceptions=True)
        acked = dict(self.state.acked)
        for md, (_, n) in zip(results, futures, strict=True):
            if isinstance(md, BaseException):
                raise md
            name = f"{md.topic}:{md.partition}"
            last = md.offset + n - 1
            if last > acked.get(name, -1):
                acked[name] = last
        for topic, n in counts.items():
            PUBLISHED.labels(topic).inc(n)
        self.state = RelayState(cursor, acked)
        CURSOR_POSITION.labels(self.topic).set(cursor.position)
        writer = self._writer
        if writer is None or writer.done():
            if writer is not None:
                writer.result()  # a failed store fails the relay, as before
            self._writer = asyncio.create_task(self._write_cursor())

    async def _write_cursor(self) -> None:
        """Store the latest acknowledged state until the stored one is the latest: one write in
        flight at a time, so pages acked meanwhile share the next write."""
        while self.stored != self.state.cursor:
            state = self.state
            await self._store_cursor(state.cursor, state.acked)
            self.stored = state.cursor

    async def _store_cursor(self, cursor: Checkpoint, acked: dict[str, int]) -> None:
        """One round trip on the relay's own connection. The cursor need not survive a crash
        (the relay is at-least-once: an older cursor only means records are sent again), so
        that connection commits without waiting for the WAL flush."""
        query = (
            "UPDATE relay_state SET cursor_txid = $2::text::xid8, cursor_position = $3,"
            " acked_offsets = $4::jsonb, updated_at = now() WHERE topic = $1"
        )
        args = (self.topic, str(cursor.txid), cursor.position, json.dumps(acked))
        if self._cursor_conn is None:
            async with self.pool.acquire() as conn:
                await conn.execute(query, *args)
            return
        await self._cursor_conn.execute(query, *args)

    async def check_history(self) -> bool:
        """Republish from the start if a topic is gone or shorter than what was acknowledged."""
        assert self._admin is not None and self._offsets is not None
        created = await kafka.ensure_topics(
            self._admin,
            self.topics,
            self.settings.kafka_partitions,
            self.settings.kafka_replication_factor,
        )
        lost = bool(created) and (self.state.cursor != Checkpoint() or bool(self.state.acked))
        if not lost and self.state.acked:
            # Only the context topic is compared with what was acknowledged: it has this relay
            # as its one writer. The public topic has one writer per context, and its high-water
            # mark is no measure of one writer's records (the embedded broker even reports it
            # low while producers interleave); its loss shows as the topic being gone (above).
            tps = []
            for name in self.state.acked:
                topic, _, part = name.rpartition(":")
                if topic == self.topic:
                    tps.append(TopicPartition(topic, int(part)))
            try:
                ends = await self._offsets.end_offsets(tps)
            except Exception:
                log.warning("could not read end offsets; treating history as lost")
                ends = {}
            # A live partition's high-water mark never goes back: seen lower than at the last
            # check, the partition lost records. Before a first sighting, it must not be empty
            # and not be behind the acks (by a batch on the embedded broker, whose mark counts
            # batches, not records).
            slack = self.settings.relay_batch_size if self.settings.kafka_embedded else 0
            for tp in tps:
                name = f"{tp.topic}:{tp.partition}"
                end = ends.get(tp)
                seen = self._ends.get(name)
                if end is None or (seen is not None and end < seen):
                    lost = True
                elif seen is None and (end == 0 or end + slack <= self.state.acked[name]):
                    lost = True  # empty, or far behind what it acknowledged
                if lost:
                    break
                self._ends[name] = end
        if lost:
            log.warning(
                "broker lost history; republishing from the event store",
                extra={"topic": self.topic, "from_position": self.state.cursor.position},
            )
            REPUBLISHES.labels(self.topic).inc()
            self._ends.clear()
            if self._writer is not None and not self._writer.done():
                await self._writer  # never a stale cursor written after the reset
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE relay_state SET cursor_txid = '0'::xid8, cursor_position = 0,"
                    " acked_offsets = '{}'::jsonb, republished = republished + 1,"
                    " updated_at = now() WHERE topic = $1",
                    self.topic,
                )
            self.state = RelayState()
            self.stored = Checkpoint()
        return lost

    async def _load_state(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO relay_state (topic) VALUES ($1) ON CONFLICT DO NOTHING", self.topic
            )
            row = await conn.fetchrow(
                "SELECT cursor_txid::text::bigint AS txid, cursor_position, acked_offsets"
                " FROM relay_state WHERE topic = $1",
                self.topic,
            )
        assert row is not None
        acked = row["acked_offsets"]
        self.state = RelayState(
            Checkpoint(row["txid"], row["cursor_position"]),
            {
                k: int(v)
                for k, v in (json.loads(acked) if isinstance(acked, str) else acked).items()
            },
        )
        self.stored = self.state.cursor

    async def _start_clients(self) -> None:
        self._admin = kafka.admin(self.settings)
        await self._admin.start()
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        self._max_request_size = getattr(self._producer, "_max_request_size", 1_048_576)
        self._check_size_above = self._max_request_size // 2
        self._offsets = kafka.consumer(self.settings)
        await self._offsets.start()

    async def _stop_clients(self) -> None:
        for client in (self._producer, self._offsets):
            if client is not None:
                await client.stop()
        if self._admin is not None:
            await self._admin.close()
        self._producer = self._admin = self._offsets = None
