"""The event store: append with optimistic concurrency, stream reads (also as of a time), catch-up.

Catch-up order is (txid, position). Positions are taken at insert time but transactions commit
in another order, so a reader that follows ``position > cursor`` can pass over an event whose
transaction commits later. Readers here only read events whose transaction id is below the
oldest transaction still running in this database (``HORIZON``): every such transaction has
ended, so the set below that horizon never grows again, and (txid, position) orders it stably.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from crm_events import CloudEvent
from crm_events.envelope import KafkaRecord, binary_record
from crm_runtime.db import Conn
from crm_runtime.errors import ConcurrencyError, InvalidInput
from crm_runtime.unit_of_work import NOTIFY_SETTING, CommandConnection, CommitNotifier

# The catch-up horizon, as of the statement's snapshot: the oldest transaction still running
# that may have written to this database's events, else the snapshot's xmax. Transaction ids are
# cluster-wide, and PostgreSQL's own ``pg_snapshot_xmin`` is the oldest running transaction of
# any database of the cluster: with the services' databases on one server (``crm up``), every
# busy neighbour (a consumer's batch, a projection) held each relay back, 50-100 ms at a time,
# often back to back. A transaction is left out only while pg_stat_activity shows it running in
# another database (a backend never changes database). One that ended between the snapshot and
# that look, or cannot be seen there, still counts: the horizon can only be lower than needed,
# never higher. Ids are compared on their low 32 bits (pg_stat_activity's ``xid``): the
# snapshot's running ids lie within 2^31 of each other.
# On a standby the snapshot lists running transactions elsewhere (not in xip): there the
# server's own xmin stays the horizon. (ORDER BY/LIMIT, not min(): xid8 has no min() before 15.)
HORIZON = """(
    CASE WHEN pg_is_in_recovery() THEN pg_snapshot_xmin(pg_current_snapshot())
    ELSE coalesce(
        (SELECT running FROM pg_snapshot_xip(pg_current_snapshot()) AS running
         WHERE (running::text::bigint & 4294967295) NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS NOT NULL
               AND datname <> current_database())
         ORDER BY running LIMIT 1),
        pg_snapshot_xmax(pg_current_snapshot()))
    END
)"""

_COLUMNS = (
    "position, txid::text::bigint AS txid, stream_id, stream_type, version, event_id, event_type,"
    " schema_version, subject, payload, metadata, occurred_at, recorded_at"
)


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A place in a service's event log, in commit order. Text form: ``<txid>-<position>``."""

    txid: int = 0
    position: int = 0

    def __str__(self) -> str:
        return f"{self.txid}-{self.position}"

    @classmethod
    def parse(cls, text: str | None, field_name: str = "after") -> Checkpoint:
        if text is None or text in ("", "0"):
            return cls()
        try:
            txid, position = (int(p) for p in text.split("-", 1))
        except ValueError:
            raise InvalidInput(
                field_name, "must be a checkpoint '<txid>-<position>' from an earlier page"
            ) from None
        if txid < 0 or position < 0:
            raise InvalidInput(field_name, "must not be negative")
        return cls(txid, position)


@dataclass(frozen=True)
class Metadata:
    """Who and what caused a change. Never personal data: actor is an opaque user id."""

    actor: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended."""

    type: str
    data: dict[str, Any]
    schema_version: int = 1
    subject: str | None = None
    event_id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class StoredEvent:
    """An event as recorded."""

    position: int
    txid: int
    stream_id: str
    stream_type: str
    version: int
    event_id: UUID
    type: str
    schema_version: int
    subject: str | None
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.txid, self.position)

    def to_cloud_event(self, source: str) -> CloudEvent:
        return CloudEvent(
            id=self.event_id,
            source=source,
            type=self.type,
            time=self.occurred_at,
            subject=self.subject,
            streamid=self.stream_id,
            streamversion=self.version,
            schemaversion=self.schema_version,
            correlationid=self.metadata.get("correlation_id"),
            causationid=self.metadata.get("causation_id"),
            data=self.data,
        )

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> StoredEvent:
        payload = r["payload"]
        metadata = r["metadata"]
        return cls(
            position=r["position"],
            txid=r["txid"],
            stream_id=r["stream_id"],
            stream_type=r["stream_type"],
            version=r["version"],
            event_id=r["event_id"],
            type=r["event_type"],
            schema_version=r["schema_version"],
            subject=r["subject"],
            data=json.loads(payload) if isinstance(payload, str) else payload,
            metadata=json.loads(metadata) if isinstance(metadata, str) else metadata,
            occurred_at=r["occurred_at"],
            recorded_at=r["recorded_at"],
        )


@dataclass(frozen=True)
class Write:
    """A read-model write that must commit with an append; it is sent in the append's statement.

    ``sql`` is one INSERT, UPDATE or DELETE with its own ``$1..$n`` parameters (they are
    renumbered when the statement is composed, so do not write ``$<digit>`` inside a literal).
    Like the append itself it cannot see the other parts' effects (one snapshot).
    """

    sql: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class StreamAppend:
    """A batch for one stream, for appends that span several streams in one transaction."""

    stream_id: str
    stream_type: str
    expected_version: int
    events: Sequence[NewEvent]


_APPEND = """
INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                    subject, payload, metadata, occurred_at)
SELECT $1, $2, $3 + e.ord, e.event_id, e.event_type, e.schema_version, e.subject, e.payload,
       $4::jsonb, e.occurred_at
FROM unnest($5::uuid[], $6::text[], $7::int[], $8::text[], $9::jsonb[], $10::timestamptz[])
     WITH ORDINALITY AS e(event_id, event_type, schema_version, subject, payload, occurred_at, ord)
WHERE $3 = 0 OR EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND version = $3)
RETURNING position, txid::text::bigint AS txid, version, recorded_at
"""

# The common case, one event starting a new stream, in the cheapest form. Version 1 of the
# stream is unique, so a stream that already exists fails on the constraint.
_APPEND_FIRST = """
INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                    subject, payload, metadata, occurred_at)
VALUES ($1, $2, 1, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9)
RETURNING position, txid::text::bigint AS txid, version, recorded_at
"""

_PARAM = re.compile(r"\$(\d+)")
_DEFER_NOTIFY = f"set_config('{NOTIFY_SETTING}', 'deferred', true)"


def _renumbered(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


@lru_cache(maxsize=512)
def _composed(
    append_sql: str, append_args: int, writes: tuple[tuple[str, int], ...], defer: bool
) -> str:
    """One statement: the append, the writes that go with it, and (``defer``) the setting that
    keeps the trigger's NOTIFY for :class:`CommitNotifier`. Data-modifying CTEs all run, to
    completion, in the statement's one snapshot; statement-level AFTER triggers fire at its end,
    after the outer SELECT has evaluated ``set_config``."""
    parts = [f"appended AS ({append_sql.strip()})"]
    offset = append_args
    for i, (sql, count) in enumerate(writes):
        parts.append(f"w{i} AS ({_renumbered(sql.strip(), offset)})")
        offset += count
    defer_col = f", {_DEFER_NOTIFY} AS deferred" if defer else ""
    return (
        "WITH "
        + ",\n".join(parts)
        + f"\nSELECT position, txid, version, recorded_at{defer_col} FROM appended ORDER BY version"
    )


class EventStore:
    """Append and read events in one service's database.

    ``notifier``: appends made through a :class:`CommandConnection` leave the relay's wake-up to
    it (after commit, coalesced) instead of the trigger's in-transaction NOTIFY.
    """

    def __init__(
        self, pool: asyncpg.Pool, source: str, notifier: CommitNotifier | None = None
    ) -> None:
        self.pool = pool
        self.source = source
        self.notifier = notifier

    async def append(
        self,
        conn: Conn,
        stream_id: str,
        stream_type: str,
        expected_version: int,
        events: Sequence[NewEvent],
        metadata: Metadata | None = None,
        *,
        also: Sequence[Write] = (),
        final: bool = False,
    ) -> list[StoredEvent]:
        """Append inside the caller's transaction; ConcurrencyError if the stream moved on.

        ``also``: read-model writes that commit with the events, sent in the same statement.
        ``final``: on a :class:`CommandConnection`, this is the command's last statement; if
        nothing ran before it (and the stream is new) it runs alone, atomically, without
        BEGIN/COMMIT round trips.
        """
        if not events:
            for w in also:
                await conn.execute(w.sql, *w.args)
            return []
        meta = (metadata or Metadata()).as_json()
        # Optimistic concurrency: version N+1 is unique per stream, and (for N > 0) version N
        # must exist, so the append succeeds only if the stream is exactly at the expected version.
        sql: str
        args: list[Any]
        if expected_version == 0 and len(events) == 1:
            e = events[0]
            sql = _APPEND_FIRST
            args = [
                stream_id,
                stream_type,
                e.event_id,
                e.type,
                e.schema_version,
                e.subject,
                json.dumps(e.data),
                json.dumps(meta),
                e.occurred_at,
            ]
        else:
            sql = _APPEND
            args = [
                stream_id,
                stream_type,
                expected_version,
                json.dumps(meta),
                [e.event_id for e in events],
                [e.type for e in events],
                [e.schema_version for e in events],
                [e.subject for e in events],
                [json.dumps(e.data) for e in events],
                [e.occurred_at for e in events],
            ]
        command = conn if isinstance(conn, CommandConnection) else None
        defer = command is not None and command.notifier is not None
        if also or defer:
            sql = _composed(sql, len(args), tuple((w.sql, len(w.args)) for w in also), defer)
            for w in also:
                args.extend(w.args)
        if expected_version > 0 and (also or final):
            # A stale version inserts no event and raises nothing: the writes must roll back
            # with it, and the error names the stream's version (a second statement).
            if command is not None:
                await command.begin()
            elif also and not conn.is_in_transaction():
                raise ValueError(
                    "`also` writes with an append to an existing stream need a transaction"
                )
        try:
            if final and command is not None:
                rows = await command.fetch_final(sql, *args)
            else:
                rows = await conn.fetch(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            if "event_id" in (exc.constraint_name or ""):
                raise
            raise ConcurrencyError(stream_id, expected_version) from None
        if not rows:
            actual = await self.stream_version(stream_id, conn)
            raise ConcurrencyError(stream_id, expected_version, actual)
        if defer:
            assert command is not None
            command.appended = True
        return [
            StoredEvent(
                position=r["position"],
                txid=r["txid"],
                stream_id=stream_id,
                stream_type=stream_type,
                version=r["version"],
                event_id=e.event_id,
                type=e.type,
                schema_version=e.schema_version,
                subject=e.subject,
                data=e.data,
                metadata=meta,
                occurred_at=e.occurred_at,
                recorded_at=r["recorded_at"],
            )
            for r, e in zip(rows, events, strict=True)
        ]

    async def append_new_streams(
        self, conn: Conn, batches: Sequence[StreamAppend], metadata: Metadata
    ) -> int:
        """Bulk append of streams that must not exist yet (imports): one COPY, not one per row.

        A stream that already exists makes the COPY fail on (stream_id, version): the caller's
        transaction is then rolled back whole, as with any other concurrency conflict.
        """
        meta = json.dumps(metadata.as_json())
        records = [
            (
                b.stream_id,
                b.stream_type,
                i + 1,
                e.event_id,
                e.type,
                e.schema_version,
                e.subject,
                json.dumps(e.data),
                meta,
                e.occurred_at,
            )
            for b in batches
            for i, e in enumerate(b.events)
        ]
        try:
            await conn.copy_records_to_table(
                "events",
                records=records,
                columns=[
                    "stream_id",
                    "stream_type",
                    "version",
                    "event_id",
                    "event_type",
                    "schema_version",
                    "subject",
                    "payload",
                    "metadata",
                    "occurred_at",
                ],
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrencyError("<batch>", 0) from exc
        return len(records)

    async def stream_version(self, stream_id: str, conn: Conn | None = None) -> int:
        q = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
        if conn is not None:
            return int(await conn.fetchval(q, stream_id))
        async with self.pool.acquire() as c:
            return int(await c.fetchval(q, stream_id))

    async def read_stream(
        self,
        stream_id: str,
        *,
        as_of: datetime | None = None,
        after_version: int = 0,
        conn: Conn | None = None,
    ) -> list[StoredEvent]:
        """Events of one stream in version order; with ``as_of``, only those recorded by then."""
        q = (
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"
            " AND ($3::timestamptz IS NULL OR recorded_at <= $3) ORDER BY version"
        )
        if conn is not None:
            rows = await conn.fetch(q, stream_id, after_version, as_of)
        else:
            async with self.pool.acquire() as c:
                rows = await c.fetch(q, stream_id, after_version, as_of)
        return [StoredEvent.from_record(r) for r in rows]

    async def read_committed(
        self, after: Checkpoint, limit: int = 500, conn: Conn | None = None
    ) -> list[StoredEvent]:
        """The next events after ``after`` in commit order, none of which can be overtaken later."""
        q = (
            f"SELECT {_COLUMNS} FROM events"
            " WHERE (txid, position) > ($1::text::xid8, $2::bigint)"
            f"   AND txid < {HORIZON}"
            " ORDER BY events.txid, events.position LIMIT $3"
        )
        if conn is not None:
            rows = await conn.fetch(q, str(after.txid), after.position, limit)
        else:
            async with self.pool.acquire() as c:
                rows = await c.fetch(q, str(after.txid), after.position, limit)
        return [StoredEvent.from_record(r) for r in rows]

    async def read_committed_records(
        self, after: Checkpoint, limit: int = 500, conn: Conn | None = None
    ) -> list[tuple[Checkpoint, str, KafkaRecord]]:
        """As read_committed, but straight to Kafka records: the relay's hot path.

        The payload goes out as PostgreSQL's own JSON text of the stored ``jsonb`` (no decode and
        re-encode in Python); consumers read it as JSON like any other.
        """
        q = (
            "SELECT position, txid::text::bigint AS txid, stream_id, version, event_id,"
            " event_type, schema_version, subject, payload::text AS payload,"
            " metadata->>'correlation_id' AS correlation_id,"
            " metadata->>'causation_id' AS causation_id, occurred_at"
            " FROM events"
            " WHERE (txid, position) > ($1::text::xid8, $2::bigint)"
            f"   AND txid < {HORIZON}"
            " ORDER BY events.txid, events.position LIMIT $3"
        )
        if conn is not None:
            rows = await conn.fetch(q, str(after.txid), after.position, limit)
        else:
            async with self.pool.acquire() as c:
                rows = await c.fetch(q, str(after.txid), after.position, limit)
        source = self.source
        return [
            (
                Checkpoint(r["txid"], r["position"]),
                r["event_type"],
                binary_record(
                    event_id=r["event_id"],
                    source=source,
                    type_=r["event_type"],
                    time=r["occurred_at"],
                    subject=r["subject"],
                    streamid=r["stream_id"],
                    streamversion=r["version"],
                    schemaversion=r["schema_version"],
                    correlationid=r["correlation_id"],
                    causationid=r["causation_id"],
                    value=r["payload"].encode(),
                ),
            )
            for r in rows
        ]

    async def read_subject(self, subject: str, limit: int = 1000) -> list[StoredEvent]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE subject = $1 ORDER BY position LIMIT $2",
                subject,
                limit,
            )
        return [StoredEvent.from_record(r) for r in rows]
