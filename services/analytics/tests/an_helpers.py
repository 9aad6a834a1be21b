"""Helpers of the test_an_* tests: analytics app fixture pieces and sales event records."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from crm_analytics.projections import AnalyticsProcessor, all_projections, projection_tables
from crm_events import CloudEvent
from crm_runtime.consumer import ConsumedRecord

BOOKKEEPING = {"projected_at", "arrival"}  # columns that record when/how, not what


async def no_letters(record: ConsumedRecord, consumer: str, reason: str) -> None:
    raise AssertionError(reason)


def at(when: str) -> datetime:
    return datetime.fromisoformat(when).replace(tzinfo=UTC)


def ev(
    type_: str,
    subject: str,
    when: str,
    data: dict[str, Any],
    *,
    stream: str | None = None,
    version: int = 1,
    schema: int = 1,
) -> ConsumedRecord:
    r = CloudEvent(
        id=uuid.uuid4(),
        source=f"/crm/{type_.split('.')[1]}",
        type=type_,
        time=at(when),
        subject=subject,
        streamid=stream or f"x-{uuid.uuid4()}",
        streamversion=version,
        schemaversion=schema,
        data=data,
    ).to_kafka()
    return ConsumedRecord(f"crm.{type_.split('.')[1]}.events", 0, 0, r.key, r.value, r.headers)


def opened(deal: str, customer: str, when: str, version: int = 1, **over: Any) -> ConsumedRecord:
    data = {
        "deal_id": deal, "customer_id": customer, "name": deal, "pipeline_id": "default",
        "stage": "identified", "probability": 10, "amount_minor": 100_000, "currency": "EUR",
        "base_currency": "EUR", "exchange_rate": "1", "owner_id": "alice",
    }  # fmt: skip
    data.update(over)
    return ev("crm.sales.deal.opened", customer, when, data, stream=f"deal-{deal}", version=version)


def moved(
    deal: str, customer: str, when: str, frm: str, to: str, p: int, version: int = 1
) -> ConsumedRecord:
    data = {"deal_id": deal, "from_stage": frm, "to_stage": to, "probability": p}
    return ev(
        "crm.sales.deal.stage_changed", customer, when, data, stream=f"deal-{deal}", version=version
    )


def won(
    deal: str, customer: str, when: str, amount: int = 100_000, version: int = 1
) -> ConsumedRecord:
    data = {"deal_id": deal, "stage": "won", "amount_minor": amount, "currency": "EUR"}
    return ev("crm.sales.deal.won", customer, when, data, stream=f"deal-{deal}", version=version)


def lost(deal: str, customer: str, when: str, reason: str = "budget") -> ConsumedRecord:
    data = {"deal_id": deal, "stage": "lost", "reason": reason}
    return ev("crm.sales.deal.lost", customer, when, data, stream=f"deal-{deal}")


def line(product: str, price: int = 10_000, quantity: int = 1) -> dict[str, Any]:
    return {
        "product_id": product,
        "name": product.title(),
        "quantity": quantity,
        "unit_price_minor": price,
    }


async def feed(pool: asyncpg.Pool, records: Sequence[ConsumedRecord], *, batch: int = 1) -> None:
    """Apply ``records`` to every projection as the worker does, ``batch`` records per
    transaction, in order."""
    processor = AnalyticsProcessor(pool, all_projections(), no_letters)
    for i in range(0, len(records), batch):
        await processor.process_batch(records[i : i + batch])


async def snapshot(
    conn: Any, tables: Iterable[str] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows (bookkeeping columns left out), in a stable order."""
    out = {}
    for table in tables or await projection_tables(conn):
        columns = [
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum",
                table,
            )
            if r["attname"] not in BOOKKEEPING
        ]
        order = ", ".join(str(i) for i in range(1, len(columns) + 1))
        rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
        out[table] = [tuple(r) for r in rows]
    return out
