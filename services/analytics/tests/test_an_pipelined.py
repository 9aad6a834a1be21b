"""``crm_analytics.pipelined``: waves keep each row's statements in order, and a row that two
queues would share flushes first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from crm_analytics.pipelined import apply_pipelined
from crm_events import CloudEvent, EventPayload
from crm_runtime.db import Conn


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[Any, ...]]]] = []

    async def execute(self, query: str, *args: Any) -> str:
        self.sent.append((query, [args]))
        return ""

    async def executemany(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        self.sent.append((query, list(rows)))

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.sent.append(("READ " + query, [args]))
        return 1


def event(subject: str, **data: Any) -> CloudEvent:
    return CloudEvent(
        id=uuid.uuid4(),
        source="/crm/test",
        type="crm.test.thing.happened",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        subject=subject,
        streamid=subject,
        streamversion=1,
        schemaversion=1,
        data=data,
    )


async def apply(conn: Conn, e: CloudEvent, payload: EventPayload) -> None:
    await conn.execute("INSERT customer", e.subject)
    if e.data.get("deal"):
        await conn.execute("UPDATE deal", e.data["deal"], e.subject)
    if e.data.get("read"):
        await conn.fetchval("SELECT something", e.subject)
    await conn.execute("TOUCH customer", e.subject)


def rows(e: CloudEvent) -> list[str] | None:
    if e.data.get("unknown"):
        return None
    return [f"c:{e.subject}"] + ([f"d:{e.data['deal']}"] if e.data.get("deal") else [])


async def run(events: list[CloudEvent]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    conn = FakeConn()
    items = [(e, cast(EventPayload, None)) for e in events]
    await apply_pipelined(cast(Conn, conn), items, apply, rows)
    return conn.sent


async def test_waves_send_each_statement_once_per_wave_in_row_order() -> None:
    sent = await run([event("a"), event("b"), event("a"), event("c")])
    assert sent == [
        ("INSERT customer", [("a",), ("b",), ("c",)]),  # wave 1: every queue's first
        ("TOUCH customer", [("a",), ("b",), ("c",)]),
        ("INSERT customer", [("a",)]),  # a's second event, after its first
        ("TOUCH customer", [("a",)]),
    ]


async def test_a_row_another_queue_holds_flushes_first() -> None:
    # deal 1 moves from customer a to customer b within the batch: b's update must come after a's
    sent = await run([event("a", deal="1"), event("b", deal="1")])
    order = [(q, r) for q, rs in sent for r in rs]
    assert order.index(("UPDATE deal", ("1", "a"))) < order.index(("UPDATE deal", ("1", "b")))
    assert sent[:3] == [
        ("INSERT customer", [("a",)]),
        ("UPDATE deal", [("1", "a")]),
        ("TOUCH customer", [("a",)]),
    ]


async def test_a_read_or_unknown_rows_is_a_barrier_applied_for_real_in_order() -> None:
    sent = await run([event("a"), event("b", read=True), event("c", unknown=True), event("d")])
    assert [q for q, _ in sent] == [
        "INSERT customer",  # a, flushed before b
        "TOUCH customer",
        "INSERT customer",  # b for real (it reads)
        "READ SELECT something",
        "TOUCH customer",
        "INSERT customer",  # c for real (rows unknown)
        "TOUCH customer",
        "INSERT customer",  # d, at the end
        "TOUCH customer",
    ]
    assert [r for _, rs in sent for r in rs][::2] == [("a",), ("b",), ("b",), ("c",), ("d",)]
