"""Idempotent consumers: decode, dead-letter poison, skip unknown types, apply once per event id.

A projection's writes and the record of the event it applied commit in one transaction, so a
redelivered message changes nothing. The transport (plain aiokafka or a faust agent) only hands
records to ``EventProcessor.process``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from crm_events import (
    CloudEvent,
    EnvelopeError,
    EventPayload,
    SchemaValidationError,
    UnknownEventType,
    registry,
)
from crm_runtime import kafka
from crm_runtime.db import Conn
from crm_runtime.settings import Settings

log = logging.getLogger(__name__)

OUTCOMES = Counter(
    "crm_consumer_events_total", "Records a consumer handled, by outcome", ["consumer", "outcome"]
)
UNKNOWN_TYPES = Counter(
    "crm_consumer_unknown_event_types_total",
    "Records of event types this consumer's registry does not know (skipped)",
    ["consumer", "event_type"],
)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # a known type this projection does not handle
    UNKNOWN_TYPE = "unknown_type"
    DEAD_LETTERED = "dead_lettered"


class ConsumedRecord(NamedTuple):
    """One Kafka record as a consumer got it (a tuple: cheap to make by the million)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, msg: Any) -> ConsumedRecord:
        """From an aiokafka ``ConsumerRecord``."""
        return cls(
            msg.topic, msg.partition, msg.offset, msg.key, msg.value, list(msg.headers or [])
        )


class Projection(Protocol):
    """Something that applies events to rows in its own database."""

    name: str

    def handles(self, event_type: str) -> bool: ...

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None: ...

    # Optional: ``async def apply_batch(self, conn, items: list[tuple[CloudEvent, EventPayload]])``
    # applies many fresh events at once, in order (e.g. one executemany instead of N INSERTs).


DeadLetterSink = Callable[[ConsumedRecord, str, str], Awaitable[None]]


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


class KafkaDeadLetters:
    """Sends poison records to ``<topic>.dlq`` with the reason and their origin in headers.

    The dead-letter topic is created explicitly (one partition per source partition count is not
    needed: letters are rare and read in order) before the first letter goes to it.
    """

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings
        self._ready: set[str] = set()

    async def _ensure(self, topic: str) -> None:
        if topic in self._ready:
            return
        client = kafka.admin(self.settings)
        await client.start()
        try:
            await kafka.ensure_topics(client, [topic], 1, self.settings.kafka_replication_factor)
        finally:
            await client.close()
        self._ready.add(topic)

    async def __call__(self, record: ConsumedRecord, consumer: str, reason: str) -> None:
        await self._ensure(dead_letter_topic(record.topic))
        headers = [
            *record.headers,
            ("dlq_error", reason.encode()[:2000]),
            ("dlq_consumer", consumer.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
        ]
        await self.producer.send_and_wait(
            dead_letter_topic(record.topic),
            value=record.value if record.value is not None else b"",
            key=record.key,
            headers=headers,
        )


def decode_record(record: ConsumedRecord) -> CloudEvent | tuple[Outcome, str]:
    """The record's CloudEvent; else ``DEAD_LETTERED`` and why, if it is none (poison), or
    ``UNKNOWN_TYPE`` and the type, if this process's registry does not know its type."""
    try:
        event = CloudEvent.from_kafka(record.key, record.value, record.headers)
    except EnvelopeError as exc:
        return Outcome.DEAD_LETTERED, f"envelope: {exc}"
    if not registry.knows(event.type):
        return Outcome.UNKNOWN_TYPE, event.type
    return event


class EventProcessor:
    """Turns one record into at most one application of a projection."""

    def __init__(
        self, pool: asyncpg.Pool, projection: Projection, dead_letters: DeadLetterSink
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.dead_letters = dead_letters

    async def process(self, record: ConsumedRecord) -> Outcome:
        return (await self.process_batch([record]))[0]

    async def process_batch(self, records: Sequence[ConsumedRecord]) -> list[Outcome]:
        """Apply a batch in one transaction (one commit, not one per event), in record order.

        Poison records are dead-lettered first; duplicates, also within the batch, apply once.
        """
        outcomes: list[Outcome | None] = [None] * len(records)
        todo: list[tuple[int, CloudEvent, EventPayload]] = []
        for i, record in enumerate(records):
            decoded = await self._decode(record)
            if isinstance(decoded, Outcome):
                outcomes[i] = decoded
            else:
                todo.append((i, *decoded))
        if todo:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "INSERT INTO processed_events (consumer, event_id)"
                    " SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
                    self.projection.name,
                    [event.id for _, event, _ in todo],
                )
                fresh = {r["event_id"] for r in rows}
                applied: list[tuple[CloudEvent, EventPayload]] = []
                for i, event, payload in todo:
                    if event.id in fresh:
                        fresh.discard(event.id)
                        applied.append((event, payload))
                        outcomes[i] = Outcome.APPLIED
                    else:
                        outcomes[i] = Outcome.DUPLICATE
                apply_batch = getattr(self.projection, "apply_batch", None)
                if apply_batch is not None:
                    await apply_batch(conn, applied)  # one round of set-based writes
                else:
                    for event, payload in applied:
                        await self.projection.apply(conn, event, payload)
        done = [o for o in outcomes if o is not None]
        for outcome in done:
            OUTCOMES.labels(self.projection.name, outcome.value).inc()
        return done

    async def _decode(self, record: ConsumedRecord) -> Outcome | tuple[CloudEvent, EventPayload]:
        name = self.projection.name
        try:
            event = CloudEvent.from_kafka(record.key, record.value, record.headers)
        except EnvelopeError as exc:
            await self.dead_letters(record, name, f"envelope: {exc}")
            return Outcome.DEAD_LETTERED
        if not registry.knows(event.type):
            UNKNOWN_TYPES.labels(name, event.type).inc()
            return Outcome.UNKNOWN_TYPE
        if not self.projection.handles(event.type):
            return Outcome.IGNORED
        try:
            payload = registry.decode(event.type, event.schemaversion, event.data)
        except (SchemaValidationError, UnknownEventType) as exc:
            await self.dead_letters(record, name, f"schema: {exc}")
            return Outcome.DEAD_LETTERED
        return event, payload


class KafkaConsumerRunner:
    """A plain aiokafka consumer-group loop around an EventProcessor (commits after processing)."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, projection: Projection, topics: list[str]
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.projection = projection
        self.topics = topics

    async def run(self, stop: asyncio.Event) -> None:
        # Create the topics first: a consumer subscribed to a topic that does not exist yet
        # would only notice it at its next metadata refresh (minutes later).
        admin = kafka.admin(self.settings)
        await admin.start()
        try:
            await kafka.ensure_topics(
                admin,
                self.topics,
                self.settings.kafka_partitions,
                self.settings.kafka_replication_factor,
            )
        finally:
            await admin.close()
        producer = kafka.producer(self.settings)
        consumer = kafka.consumer(self.settings, *self.topics, group_id=self.projection.name)
        await producer.start()
        await consumer.start()
        processor = EventProcessor(
            self.pool, self.projection, KafkaDeadLetters(producer, self.settings)
        )
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    await processor.process_batch([ConsumedRecord.of(m) for m in records])
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
