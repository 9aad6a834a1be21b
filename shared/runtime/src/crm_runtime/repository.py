"""Loads aggregates from their streams and saves what they recorded, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeVar

from crm_events import registry
from crm_runtime.aggregate import Aggregate
from crm_runtime.db import Conn
from crm_runtime.errors import NotFound, PreconditionFailed
from crm_runtime.eventstore import EventStore, Metadata, NewEvent, StoredEvent, Write

A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    def __init__(self, store: EventStore, factory: type[A]) -> None:
        self.store = store
        self.factory = factory

    def stream_id(self, aggregate_id: str) -> str:
        return f"{self.factory.stream_type}-{aggregate_id}"

    async def load(
        self,
        aggregate_id: str,
        *,
        as_of: datetime | None = None,
        conn: Conn | None = None,
    ) -> A:
        events = await self.store.read_stream(self.stream_id(aggregate_id), as_of=as_of, conn=conn)
        if not events:
            what = self.factory.stream_type
            raise NotFound(
                f"{what} {aggregate_id} does not exist" + (f" as of {as_of}" if as_of else "")
            )
        return self.factory.rehydrate(
            aggregate_id,
            ((registry.decode(e.type, e.schema_version, e.data), e.version) for e in events),
        )

    async def history(self, aggregate_id: str) -> list[StoredEvent]:
        events = await self.store.read_stream(self.stream_id(aggregate_id))
        if not events:
            raise NotFound(f"{self.factory.stream_type} {aggregate_id} does not exist")
        return events

    async def save(
        self,
        conn: Conn,
        aggregate: A,
        metadata: Metadata,
        *,
        also: Sequence[Write] = (),
        final: bool = False,
    ) -> list[StoredEvent]:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        ``also`` and ``final``: as for :meth:`EventStore.append` (read-model writes sent in the
        same statement; the command's last statement).
        """
        new = []
        for payload in aggregate.pending:
            type_, version = registry.type_of(payload)
            new.append(
                NewEvent(
                    type=type_,
                    schema_version=version,
                    data=payload.model_dump(mode="json"),
                    subject=aggregate.subject,
                )
            )
        stored = await self.store.append(
            conn,
            aggregate.stream_id,
            aggregate.stream_type,
            aggregate.version,
            new,
            metadata,
            also=also,
            final=final,
        )
        if stored:
            aggregate.version = stored[-1].version
        aggregate.pending.clear()
        return stored


def check_version(expected: int | None, actual: int) -> None:
    """Optimistic concurrency for a client's If-Match: it must name the current version."""
    if expected is not None and expected != actual:
        raise PreconditionFailed(
            f"the record is at version {actual}; you sent If-Match for version {expected}",
            current_version=actual,
            expected_version=expected,
        )
