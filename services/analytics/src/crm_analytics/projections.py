"""Every analytics projection, in the order the worker and the rebuild apply them, and the tables
they own (every table the crm_analytics migrations create)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

from crm_analytics.customers import CustomerProfileProjection
from crm_analytics.marketing import MarketingAnalyticsProjection
from crm_analytics.sales import SalesAnalyticsProjection
from crm_analytics.service import ServiceAnalyticsProjection
from crm_analytics.timeline import TimelineProjection
from crm_events import (
    CloudEvent,
    EventPayload,
    SchemaValidationError,
    UnknownEventType,
    registry,
)
from crm_runtime.consumer import (
    OUTCOMES,
    ConsumedRecord,
    DeadLetterSink,
    Outcome,
    Projection,
    decode_record,
)
from crm_runtime.db import Conn, package_migrations


def all_projections() -> list[Projection]:
    """A new projection joins this list (the worker and `crm analytics rebuild` both read it)."""
    return [
        TimelineProjection(),
        CustomerProfileProjection(),
        SalesAnalyticsProjection(),
        ServiceAnalyticsProjection(),
        MarketingAnalyticsProjection(),
    ]


_CREATED = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)


async def projection_tables(conn: Conn) -> list[str]:
    """The tables the analytics migrations created that exist now (views and dropped tables
    excluded), in name order."""
    names = {
        m.group(1).lower()
        for _, sql in package_migrations("crm_analytics")
        for m in _CREATED.finditer(sql)
    }
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname = ANY($1::text[])"
        " AND pg_table_is_visible(c.oid) ORDER BY c.relname",
        sorted(names),
    )
    return [r["relname"] for r in rows]


class AnalyticsProcessor:
    """What the worker runs: every projection over each batch, in one transaction.

    A record is decoded and schema-checked once (not once per projection), marked applied once
    in ``applied_events`` (a redelivery, or the same event sent twice, applies nowhere), and
    handed to each projection that handles its type. The projections live in one database, so
    one transaction keeps them consistent with each other and with the marks.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        projections: list[Projection],
        dead_letters: DeadLetterSink,
    ) -> None:
        self.pool = pool
        self.projections = projections
        self.dead_letters = dead_letters

    async def process_batch(self, records: Sequence[ConsumedRecord]) -> dict[str, list[Outcome]]:
        """Apply ``records`` in order; the outcome of each record for each projection."""
        outcomes: dict[str, list[Outcome]] = {p.name: [] for p in self.projections}
        todo: list[tuple[CloudEvent, EventPayload | None, list[Projection]]] = []
        for record in records:
            decoded = decode_record(record)
            if isinstance(decoded, tuple):
                outcome, why = decoded
                if outcome is Outcome.DEAD_LETTERED:
                    await self.dead_letters(record, "analytics", why)
                for p in self.projections:
                    outcomes[p.name].append(outcome)
                continue
            handlers = [p for p in self.projections if p.handles(decoded.type)]
            payload: EventPayload | None = None
            if handlers:
                try:
                    payload = registry.decode(decoded.type, decoded.schemaversion, decoded.data)
                except (SchemaValidationError, UnknownEventType) as exc:
                    await self.dead_letters(record, "analytics", f"schema: {exc}")
                    handlers = []
                    for p in self.projections:
                        outcomes[p.name].append(
                            Outcome.DEAD_LETTERED if p.handles(decoded.type) else Outcome.IGNORED
                        )
                    continue
            todo.append((decoded, payload, handlers))
        if todo:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "INSERT INTO applied_events (event_id) SELECT unnest($1::uuid[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    [event.id for event, _, _ in todo],
                )
                fresh = {r["event_id"] for r in rows}
                per: dict[str, list[tuple[CloudEvent, EventPayload]]] = {
                    p.name: [] for p in self.projections
                }
                for event, payload, handlers in todo:
                    new = event.id in fresh
                    fresh.discard(event.id)  # the same event twice in the batch: once
                    for p in self.projections:
                        if p not in handlers:
                            outcomes[p.name].append(Outcome.IGNORED)
                        elif new and payload is not None:
                            per[p.name].append((event, payload))
                            outcomes[p.name].append(Outcome.APPLIED)
                        else:
                            outcomes[p.name].append(Outcome.DUPLICATE)
                for p in self.projections:
                    items = per[p.name]
                    if not items:
                        continue
                    apply_batch = getattr(p, "apply_batch", None)
                    if apply_batch is not None:
                        await apply_batch(conn, items)
                    else:
                        for event, payload in items:
                            await p.apply(conn, event, payload)
        for name, done in outcomes.items():
            for outcome in done:
                OUTCOMES.labels(name, outcome.value).inc()
        return outcomes
