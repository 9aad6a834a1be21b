"""Write-only projection code applied to a batch in a few round trips instead of one per statement.

A projection's ``apply(conn, event, payload)`` is first run against a :class:`Recorder`, which
stands in for the connection and only records the statements it is asked to ``execute``. Each
event names the rows its statements touch (``rows``: a customer id, and a deal's or an
invoice's, say); the first is its *queue*. A queue keeps its statements in order. Statements of
different queues touch different rows and commute: a row belongs to one queue until the next
flush, and an event naming a row another queue holds flushes first. So the batch goes out in
*waves*: wave k holds the k-th statement of every queue, and each distinct statement of a wave
is sent once with all its argument rows (``executemany``: pipelined, one round trip). For a
batch of N leads, three statements each, that is three round trips instead of 3N.

An event whose rows are unknown (``rows`` gives None), or whose code needs more than
``execute`` (a read), is a barrier: what is queued goes out first, then the event is applied on
the real connection. The outcome is the same as applying the events one by one, in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from crm_events import CloudEvent, EventPayload
from crm_runtime.db import Conn

Apply = Callable[[Conn, CloudEvent, EventPayload], Awaitable[None]]
Rows = Callable[[CloudEvent], Sequence[str] | None]
Statement = tuple[str, tuple[Any, ...]]


class NeedsConnection(Exception):
    """The projection code asked the recorder for more than ``execute``."""


class Recorder:
    """Stands in for a connection: records ``execute`` calls, refuses anything else."""

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[Statement] = []

    async def execute(self, query: str, *args: Any) -> str:
        self.statements.append((query, args))
        return ""

    def __getattr__(self, name: str) -> Any:
        raise NeedsConnection(name)


async def apply_pipelined(
    conn: Conn, items: Sequence[tuple[CloudEvent, EventPayload]], apply: Apply, rows: Rows
) -> None:
    """Apply ``items`` in order, as ``apply`` would one by one, in waves (see the module)."""
    queues: dict[str, list[Statement]] = {}
    holder: dict[str, str] = {}  # row -> the queue that holds it until the next flush
    for event, payload in items:
        touched = rows(event)
        if touched:
            recorder = Recorder()
            try:
                await apply(cast(Conn, recorder), event, payload)
            except NeedsConnection:
                pass  # nothing was sent: apply it for real below
            else:
                queue = touched[0]
                if any(holder.get(row, queue) != queue for row in touched):
                    await flush(conn, queues)
                    holder.clear()
                holder.update((row, queue) for row in touched)
                queues.setdefault(queue, []).extend(recorder.statements)
                continue
        await flush(conn, queues)
        holder.clear()
        await apply(conn, event, payload)
    await flush(conn, queues)


async def flush(conn: Conn, queues: dict[str, list[Statement]]) -> None:
    """Send the queued statements, wave by wave; empties ``queues``."""
    lists = [q for q in queues.values() if q]
    queues.clear()
    depth = max((len(q) for q in lists), default=0)
    for wave in range(depth):
        groups: dict[str, list[tuple[Any, ...]]] = {}
        for q in lists:
            if wave < len(q):
                query, args = q[wave]
                groups.setdefault(query, []).append(args)
        for query, rows in groups.items():
            if len(rows) == 1:
                await conn.execute(query, *rows[0])
            else:
                await conn.executemany(query, rows)
