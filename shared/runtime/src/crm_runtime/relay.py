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
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge

from crm_events import context_topic, public_topic, registry
from crm_events.envelope import KafkaRecord
from crm_runtime import kafka
from crm_runtime.eventstore import Checkpoint, EventStore
from crm_runtime.settings import Settings
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

RELAY_LOCK_BASE = 7_364_100

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
            try:
                await self._load_state()
                await self.check_history()
                await self._loop(stop)
            finally:
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

        Pipelined one batch deep: while the broker acknowledges batch n, batch n+1 is read and
        handed to the producer. Cursors are still stored strictly in order and only after the
        acks of their batch, so a failure anywhere resumes from the last stored cursor.
        """
        size = self.settings.relay_batch_size
        read_from = self.state.cursor
        pending: asyncio.Task[None] | None = None
        total = 0
        try:
            while True:
                batch = await self.store.read_committed_records(read_from, size)
                if not batch:
                    break
                sent = await self._send(batch)
                if pending is not None:
                    await pending  # the previous batch's acks and cursor, in order
                pending = asyncio.create_task(self._complete(batch, sent))
                read_from = batch[-1][0]
                total += len(batch)
                if len(batch) < size:
                    break
            if pending is not None:
                await pending
                pending = None
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        return total

    async def _send(
        self, batch: list[tuple[Checkpoint, str, KafkaRecord]]
    ) -> tuple[list[asyncio.Future[Any]], dict[str, int]]:
        """Hand a batch to the producer; return the delivery futures (not awaited yet)."""
        assert self._producer is not None
        send = self._producer.send
        public = public_topic()
        futures = []
        counts: dict[str, int] = {}
        for _, event_type, record in batch:
            targets = (self.topic, public) if registry.is_public(event_type) else (self.topic,)
            for topic in targets:
                futures.append(
                    await send(topic, value=record.value, key=record.key, headers=record.headers)
                )
                counts[topic] = counts.get(topic, 0) + 1
        return futures, counts

    async def _complete(
        self,
        batch: list[tuple[Checkpoint, str, KafkaRecord]],
        sent: tuple[list[asyncio.Future[Any]], dict[str, int]],
    ) -> None:
        """Wait for the broker's acks of a batch, then store the cursor after it."""
        futures, counts = sent
        results = await asyncio.gather(*futures)
        acked = dict(self.state.acked)
        for md in results:
            name = f"{md.topic}:{md.partition}"
            acked[name] = max(acked.get(name, -1), md.offset)
        for topic, n in counts.items():
            PUBLISHED.labels(topic).inc(n)
        cursor = batch[-1][0]
        await self._store_cursor(cursor, acked)
        self.state = RelayState(cursor, acked)
        CURSOR_POSITION.labels(self.topic).set(cursor.position)

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
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE relay_state SET cursor_txid = '0'::xid8, cursor_position = 0,"
                    " acked_offsets = '{}'::jsonb, republished = republished + 1,"
                    " updated_at = now() WHERE topic = $1",
                    self.topic,
                )
            self.state = RelayState()
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

    async def _start_clients(self) -> None:
        self._admin = kafka.admin(self.settings)
        await self._admin.start()
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        self._offsets = kafka.consumer(self.settings)
        await self._offsets.start()

    async def _stop_clients(self) -> None:
        for client in (self._producer, self._offsets):
            if client is not None:
                await client.stop()
        if self._admin is not None:
            await self._admin.close()
        self._producer = self._admin = self._offsets = None
