"""Time-based rules on a schedule, with an injectable clock (tests move time, never sleep).

One replica per service runs the jobs (a PostgreSQL advisory lock elects it); the others stand
by. A job is ``async (pool, now) -> int`` and manages its own transactions; a failing job is
logged and the others still run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

Job = Callable[[asyncpg.Pool, datetime], Awaitable[int]]
LEADER_LOCK = (
    0x5A1E5_5C4ED  # advisory lock key of the schedulers (each service has its own database)
)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock tests set and advance."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class Scheduler:
    def __init__(
        self, pool: asyncpg.Pool, jobs: dict[str, Job], clock: Clock | None = None
    ) -> None:
        self.pool = pool
        self.jobs = jobs
        self.clock = clock or SystemClock()

    async def tick(self) -> dict[str, int]:
        """Run every job once at the clock's current time; return what each did."""
        now = self.clock.now()
        done: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                done[name] = await job(self.pool, now)
            except Exception:
                log.exception("scheduled job failed", extra={"job": name})
                done[name] = -1
        return done

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Tick every ``interval`` seconds while this replica holds the leader lock."""
        async with self.pool.acquire() as lock_conn:
            while not stop.is_set():
                leader = await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
                if leader:
                    break
                await sleep_or_stop(stop, interval)
            try:
                while not stop.is_set():
                    done = await self.tick()
                    if any(done.values()):
                        log.info("scheduled jobs ran", extra={"jobs": done})
                    await sleep_or_stop(stop, interval)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock_all()")
