"""The customer 360 view as of a past time, from the event history.

The customer's touchpoints up to that time (the timeline holds every event about a customer, with
its upcast payload) are replayed through the same 360 projection into temporary tables that
shadow ``customers``, ``customer_deals`` and ``customer_invoices`` inside one transaction, read,
and rolled back: no second copy of the projection's rules, and nothing of it stays behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crm_analytics.customers import CustomerProfileProjection
from crm_events import CloudEvent, registry
from crm_runtime.db import Conn

SHADOWED = ("customers", "customer_deals", "customer_invoices")


async def customer_as_of(
    conn: Conn, ids: list[str], as_of: datetime
) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any]]:
    """(profiles, deals, invoices) of ``ids`` as the 360 projection had them at ``as_of``."""
    tr = conn.transaction()
    await tr.start()
    try:
        events = await conn.fetch(
            "SELECT event_id, customer_id, occurred_at, context, event_type, stream_id,"
            " stream_version, data FROM timeline"
            " WHERE customer_id = ANY($1::text[]) AND occurred_at <= $2"
            " ORDER BY occurred_at, stream_version, event_id",
            ids,
            as_of,
        )
        for table in SHADOWED:
            await conn.execute(
                f"CREATE TEMPORARY TABLE {table} (LIKE {table} INCLUDING ALL) ON COMMIT DROP"
            )
        # A changed search_path makes PostgreSQL parse cached statements again, so the ones this
        # connection prepared against the real tables now find the temporary ones (and find the
        # real ones again once the rollback drops them).
        await conn.execute(
            "SELECT set_config('search_path', 'pg_temp, ' || current_setting('search_path'), true)"
        )
        projection = CustomerProfileProjection()
        for r in events:
            if not registry.knows(r["event_type"]):
                continue
            version = registry.current_version(r["event_type"])
            data = json.loads(r["data"])
            event = CloudEvent(
                id=r["event_id"],
                source=f"/crm/{r['context']}",
                type=r["event_type"],
                time=r["occurred_at"],
                subject=r["customer_id"],
                streamid=r["stream_id"],
                streamversion=r["stream_version"],
                schemaversion=version,
                data=data,
            )
            await projection.apply(conn, event, registry.decode(r["event_type"], version, data))
        people = await conn.fetch(
            "SELECT * FROM customers WHERE customer_id = ANY($1::text[])", ids
        )
        deals = await conn.fetch(
            "SELECT * FROM customer_deals WHERE customer_id = ANY($1::text[])"
            " ORDER BY updated_at DESC",
            ids,
        )
        invoices = await conn.fetch(
            "SELECT status, overdue FROM customer_invoices WHERE customer_id = ANY($1::text[])",
            ids,
        )
        return people, deals, invoices
    finally:
        await tr.rollback()
