"""What segments offer the rest of the service (campaigns, triggers, the audience side).

- ``members(conn, segment_id)``: the customer ids in a segment now (dynamic or static);
- ``is_member(conn, segment_id, customer_id)``;
- ``reevaluate_customers(conn, store, customer_ids, *, now, metadata)``: re-evaluate every dynamic
  segment for these customers in the caller's transaction (member_entered/left only on change);
  the segment tailer already runs it for every customer this service's events touch.
"""

from __future__ import annotations

from crm_marketing.segments import adapters
from crm_marketing.segments.membership import (
    reevaluate_customers,
    run_segment_tailer,
    segment_jobs,
)
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, NotFound

__all__ = ["is_member", "members", "reevaluate_customers", "run_segment_tailer", "segment_jobs"]


async def _active(conn: Conn, segment_id: str) -> None:
    status = await conn.fetchval("SELECT status FROM segments WHERE segment_id = $1", segment_id)
    if status is None:
        raise NotFound(f"segment {segment_id} does not exist")
    if status != "active":
        raise Conflict(f"segment {segment_id} is archived")


async def members(conn: Conn, segment_id: str) -> list[str]:
    """The segment's customer ids, sorted. NotFound / Conflict (archived) otherwise."""
    await _active(conn, segment_id)
    return await adapters.member_ids(conn, segment_id)


async def is_member(conn: Conn, segment_id: str, customer_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM segment_members WHERE segment_id = $1 AND customer_id = $2",
        segment_id,
        customer_id,
    )
    return bool(found)
