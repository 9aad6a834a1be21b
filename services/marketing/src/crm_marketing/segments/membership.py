"""Segment membership: set-based evaluation, entered/left events only on change, the tailer.

A segment's members are rows of ``segment_members``; every change appends an event to the
stream ``segment_membership-<id>`` in the same transaction. The stream's version is kept on the
segment's row, which every evaluation locks first (``FOR UPDATE``): evaluations of one segment
queue up, and nothing else serialises on it.

Evaluation is one statement: the compiled rule (all customers, or only candidates), the rows to
insert and the rows to delete, computed together as a diff against the current members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from crm_events import registry
from crm_events.schemas.marketing_segments import SegmentMemberEntered, SegmentMemberLeft
from crm_marketing.segments import adapters, rules
from crm_marketing.segments.compiler import bind, compile_rule
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, NewEvent
from crm_runtime.scheduler import Job
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

TAILER = "segments"
SYSTEM = Metadata(actor="system:segments")
# Our own events change nothing a rule looks at; skipping them keeps the tailer from chasing itself.
_IGNORED = ("crm.marketing.segment.", "crm.marketing.template.")
_ENTERED, _ = registry.type_of(SegmentMemberEntered(segment_id="-", customer_id="-", reason="rule"))
_LEFT, _ = registry.type_of(SegmentMemberLeft(segment_id="-", customer_id="-", reason="rule"))


@dataclass(frozen=True)
class Evaluation:
    segment_id: str
    entered: int
    left: int
    member_count: int


def membership_stream(segment_id: str) -> str:
    return f"segment_membership-{segment_id}"


async def record_changes(
    conn: Conn,
    store: EventStore,
    segment: dict[str, Any],
    entered: Sequence[str],
    left: Sequence[str],
    *,
    now: datetime,
    metadata: Metadata,
    entered_reason: str = "rule",
    left_reason: str = "rule",
) -> Evaluation:
    """Append the entered/left events and move the segment row on (the row must be locked)."""
    sid = segment["segment_id"]
    events = [
        NewEvent(
            type=_LEFT,
            data=SegmentMemberLeft(
                segment_id=sid,
                customer_id=c,
                reason=left_reason,
            ).model_dump(mode="json"),
            subject=c,
            occurred_at=now,
        )
        for c in left
    ] + [
        NewEvent(
            type=_ENTERED,
            data=SegmentMemberEntered(
                segment_id=sid,
                customer_id=c,
                reason=entered_reason,
            ).model_dump(mode="json"),
            subject=c,
            occurred_at=now,
        )
        for c in entered
    ]
    stored = await store.append(
        conn,
        membership_stream(sid),
        "segment_membership",
        segment["membership_version"],
        events,
        metadata,
    )
    count = await conn.fetchval(
        "UPDATE segments SET membership_version = $2, member_count = member_count + $3,"
        " evaluated_at = CASE WHEN kind = 'dynamic' THEN $4 ELSE evaluated_at END"
        " WHERE segment_id = $1 RETURNING member_count",
        sid,
        stored[-1].version if stored else segment["membership_version"],
        len(entered) - len(left),
        now,
    )
    segment["membership_version"] = stored[-1].version if stored else segment["membership_version"]
    return Evaluation(sid, len(entered), len(left), int(count))


async def evaluate_segment(
    conn: Conn,
    store: EventStore,
    segment: dict[str, Any],
    *,
    now: datetime,
    metadata: Metadata,
    candidates: list[str] | None = None,
) -> Evaluation:
    """Bring a locked dynamic segment's members up to date (all customers, or ``candidates``)."""
    rule = rules.from_json(segment["rule"])
    compiled = compile_rule(rule, now, candidates=candidates is not None)
    params = bind(compiled, candidates)
    sid_param = f"${len(params) + 1}"
    now_param = f"${len(params) + 2}"
    only = " AND m.customer_id = ANY($1::text[])" if candidates is not None else ""
    rows = await conn.fetch(
        f"""
        WITH target AS ({compiled.sql}),
        ins AS (
            INSERT INTO segment_members (segment_id, customer_id, since)
            SELECT {sid_param}, t.customer_id, {now_param} FROM target t
            ON CONFLICT (segment_id, customer_id) DO NOTHING
            RETURNING customer_id
        ),
        del AS (
            DELETE FROM segment_members m
            WHERE m.segment_id = {sid_param}{only}
              AND NOT EXISTS (SELECT 1 FROM target t WHERE t.customer_id = m.customer_id)
            RETURNING m.customer_id
        )
        SELECT true AS entered, customer_id FROM ins
        UNION ALL SELECT false, customer_id FROM del
        ORDER BY 2
        """,
        *params,
        segment["segment_id"],
        now,
    )
    entered = [r["customer_id"] for r in rows if r["entered"]]
    left = [r["customer_id"] for r in rows if not r["entered"]]
    return await record_changes(conn, store, segment, entered, left, now=now, metadata=metadata)


async def _dynamic_segments(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT segment_id, rule, membership_version FROM segments"
        " WHERE kind = 'dynamic' AND status = 'active' ORDER BY segment_id FOR UPDATE"
    )
    return [r for r in (adapters.row(x) for x in rows) if r is not None]


async def reevaluate_customers(
    conn: Conn,
    store: EventStore,
    customer_ids: Sequence[str],
    *,
    now: datetime,
    metadata: Metadata,
) -> int:
    """Re-evaluate every active dynamic segment for these customers, in the caller's
    transaction; emits member_entered/left only where membership changed. Returns the changes.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    changes = 0
    for segment in await _dynamic_segments(conn):
        done = await evaluate_segment(
            conn, store, segment, now=now, metadata=metadata, candidates=ids
        )
        changes += done.entered + done.left
    return changes


# --- the tailer: re-evaluates the customers that new events of this service touched -------------


async def tail_once(
    pool: asyncpg.Pool, store: EventStore, *, now: datetime | None = None, limit: int = 500
) -> int:
    """Consume one batch of the service's committed events; returns how many were read.

    The checkpoint row is locked (SKIP LOCKED: another replica busy with it means nothing to do
    here) and moves in the same transaction as the membership changes: each batch is applied
    once, even across restarts.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT cursor_txid, cursor_position FROM segment_tailer WHERE name = $1"
            " FOR UPDATE SKIP LOCKED",
            TAILER,
        )
        if row is None:
            return 0
        batch = await store.read_committed(
            Checkpoint(row["cursor_txid"], row["cursor_position"]), limit, conn=conn
        )
        if not batch:
            return 0
        touched = {e.subject for e in batch if e.subject and not e.type.startswith(_IGNORED)}
        if touched:
            await reevaluate_customers(
                conn, store, sorted(touched), now=now or datetime.now(UTC), metadata=SYSTEM
            )
        last = batch[-1].checkpoint
        await conn.execute(
            "UPDATE segment_tailer SET cursor_txid = $2, cursor_position = $3, updated_at = now()"
            " WHERE name = $1",
            TAILER,
            last.txid,
            last.position,
        )
        return len(batch)


async def catch_up(pool: asyncpg.Pool, store: EventStore, *, now: datetime | None = None) -> int:
    """Tail until nothing new is committed (tests, and the loop below)."""
    total = 0
    while n := await tail_once(pool, store, now=now):
        total += n
    return total


async def run_segment_tailer(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """The tailer beside the API: woken by the event store's NOTIFY, polling as a fallback.

    Off when ``CONSUMERS_ENABLED`` is false (tests drive :func:`tail_once` themselves)."""
    if not ctx.settings.consumers_enabled:
        return
    wake = asyncio.Event()

    def notified(*_: object) -> None:
        wake.set()

    listener = await ctx.pool.acquire()
    try:
        await listener.add_listener("crm_events", notified)
        backoff = 1.0
        while not stop.is_set():
            wake.clear()
            try:
                await catch_up(ctx.pool, ctx.store)
                backoff = 1.0
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("segment tailer failed; retrying", extra={"error": type(exc).__name__})
                if await sleep_or_stop(stop, backoff):
                    break
                backoff = min(backoff * 2, 30.0)
                continue
            waker = asyncio.create_task(wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waker, stopper}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            stopper.cancel()
    finally:
        await listener.remove_listener("crm_events", notified)
        await ctx.pool.release(listener)


# --- the periodic job: windows pass, and a slow full reconcile --------------------------------


async def refresh_segments(
    pool: asyncpg.Pool, store: EventStore, now: datetime, reconcile_after: timedelta
) -> int:
    """Fully re-evaluate the dynamic segments whose rules have time windows (members drop out
    as windows pass), and any not fully evaluated for ``reconcile_after``. Returns changes."""
    async with pool.acquire() as conn:
        due = await conn.fetch(
            "SELECT segment_id FROM segments WHERE kind = 'dynamic' AND status = 'active'"
            " AND (has_window OR evaluated_at IS NULL OR evaluated_at < $1) ORDER BY segment_id",
            now - reconcile_after,
        )
    changes = 0
    for r in due:
        async with pool.acquire() as conn, conn.transaction():
            segment = await adapters.get(conn, r["segment_id"], lock=True)
            if segment is None or segment["status"] != "active":
                continue
            done = await evaluate_segment(conn, store, segment, now=now, metadata=SYSTEM)
            changes += done.entered + done.left
    return changes


def segment_jobs(ctx: ServiceContext, reconcile_after: timedelta | None = None) -> dict[str, Job]:
    """The scheduler jobs of segments, for the service's scheduler (``jobs.py``)."""
    every = reconcile_after or timedelta(hours=1)

    async def refresh(pool: asyncpg.Pool, now: datetime) -> int:
        return await refresh_segments(pool, ctx.store, now, every)

    return {"segments.refresh": refresh}
