"""HTTP 201 -> customer timeline latency. Twice: with the path's own processes only (``run``:
sales API, its relay, the faust worker) and on the whole platform (``bench.platform_bench``
starts it with ``crm up`` and calls ``measure``), where every other service consumes the same
events meanwhile and shares the cores.

The load generator (this process) posts leads at a steady rate; each lead's latency is the time
from receiving its 201 to the lead's own event on the timeline (``timeline.projected_at`` of its
``crm.sales.lead.captured`` row, written by the analytics worker; same machine clock).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg

from bench.common import Figure, median, percentile, stop
from crm_runtime import db
from crm_runtime.embedded import free_port, wait_for_port
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings

WARM_SECONDS = 12
PATH_ONLY = "sales API, its relay and the analytics worker only"


async def run(server_url: str, bootstrap: str, *, smoke: bool, logs: Path) -> list[Figure]:
    """The path's own three processes, nothing else on the machine's cores."""
    sales_db, analytics_db = "bench_sales", "bench_analytics"
    for name, pkg in ((sales_db, "crm_sales"), (analytics_db, "crm_analytics")):
        await db.ensure_database(server_url, name)
        await db.migrate_url(db.with_database(server_url, name), ["crm_runtime", pkg])
    port = free_port()
    env = {
        **os.environ,
        "SALES_DATABASE_URL": db.with_database(server_url, sales_db),
        "ANALYTICS_DATABASE_URL": db.with_database(server_url, analytics_db),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_EMBEDDED": "true",
        "SALES_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    crm = [sys.executable, "-m", "crm_runtime.cli"]
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [*crm, *args],
            env=env,
            stdout=open(logs / f"{name}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for name, args in (
            ("sales", ["serve", "sales"]),
            ("relay", ["relay", "sales"]),
            ("worker", ["analytics-worker"]),
        )
    ]
    try:
        await asyncio.to_thread(wait_for_port, port, 60)
        return await measure(
            port, db.with_database(server_url, analytics_db), smoke=smoke, setting=PATH_ONLY
        )
    finally:
        stop(procs)


async def measure(
    sales_port: int, analytics_url: str, *, smoke: bool, setting: str
) -> list[Figure]:
    """Leads at a steady rate against a running sales API; ``setting`` says what runs."""
    total, rate = (100, 50.0) if smoke else (1000, 200.0)
    rounds = 1 if smoke else 3
    p50: list[float] = []
    p99: list[float] = []
    notes: list[str] = []
    token = mint_token(Settings().jwt_secret, "bench", ["sales_manager"])
    headers = {"Authorization": f"Bearer {token}"}
    conn = await asyncpg.connect(analytics_url)
    try:
        # aiohttp: httpx's client costs more CPU per request than the server under test.
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{sales_port}",
            headers=headers,
            connector=aiohttp.TCPConnector(limit=64),
        ) as c:
            # warm-up: the worker has joined its group once a warm-up lead is on the timeline
            await _warm_up(c, conn)
            # The worker pauses once, ~10 s after it first consumes (~150 ms; faust settling
            # its group). Keep a light load past that, so the figure is the steady state.
            for i in range((3 if smoke else WARM_SECONDS) * 10):
                async with c.post("/leads", json={"name": f"Warm {i}", "source": "import"}) as r:
                    r.raise_for_status()
                await asyncio.sleep(0.1)
            # The earlier benchmarks' dirty pages are written now, not by a checkpoint that
            # would run during the rounds (WAL fsyncs queued behind its writes).
            await conn.execute("CHECKPOINT")
            await asyncio.sleep(1)
            for _ in range(rounds):
                latencies, achieved, missing = await _round(c, conn, total, rate)
                p50.append(percentile(latencies, 50))
                p99.append(percentile(latencies, 99))
                notes.append(f"{achieved:.0f}/s, {missing} not seen in 60 s")
    finally:
        await conn.close()
    note = (
        f"{total} leads at {rate:.0f}/s per round, median of {rounds} rounds"
        f" (p99 of each: {', '.join(f'{v:.1f}' for v in p99)} ms); achieved: {'; '.join(notes)}"
    )
    what = f"HTTP 201 -> timeline visible ({setting})"
    return [
        Figure(f"{what}, p50", median(p50), "ms", samples=p50, notes=note),
        Figure(
            f"{what}, p99",
            median(p99),
            "ms",
            goal="<= 100 ms",
            samples=p99,
            notes=note,
        ),
    ]


async def _round(
    c: aiohttp.ClientSession, conn: asyncpg.Connection, total: int, rate: float
) -> tuple[list[float], float, int]:
    """``total`` leads at ``rate``/s: each one's ms from its 201 to its timeline row, the rate
    achieved, and how many never showed."""
    sent: dict[str, float] = {}
    start = time.perf_counter()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        async with c.post("/leads", json={"name": f"Bench {i}", "source": "import"}) as r:
            r.raise_for_status()
            body = await r.json()
        sent[body["customer_id"]] = time.time()

    await asyncio.gather(*(one(i) for i in range(total)))
    achieved = total / (time.perf_counter() - start)
    seen = await _collect(conn, sent, wait=60)
    latencies = [max(0.0, (seen[c] - t) * 1000) for c, t in sent.items() if c in seen]
    return latencies, achieved, total - len(latencies)


async def _warm_up(c: aiohttp.ClientSession, conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        async with c.post("/leads", json={"name": "Warm Up", "source": "import"}) as r:
            r.raise_for_status()
            customer = (await r.json())["customer_id"]
        for _ in range(20):
            if await conn.fetchval("SELECT 1 FROM timeline WHERE customer_id = $1", customer):
                return
            await asyncio.sleep(0.25)
    raise TimeoutError("the analytics worker did not project anything within 90 s")


async def _collect(
    conn: asyncpg.Connection, sent: dict[str, float], wait: float
) -> dict[str, float]:
    deadline = time.monotonic() + wait
    seen: dict[str, float] = {}
    while len(seen) < len(sent) and time.monotonic() < deadline:
        # the command's own event (other contexts add theirs for the same customer later)
        rows = await conn.fetch(
            "SELECT customer_id, min(projected_at) AS projected_at FROM timeline"
            " WHERE customer_id = ANY($1::text[]) AND event_type = 'crm.sales.lead.captured'"
            " GROUP BY customer_id",
            list(sent),
        )
        seen = {r["customer_id"]: _epoch(r["projected_at"]) for r in rows}
        await asyncio.sleep(0.5)
    return seen


def _epoch(ts: datetime) -> float:
    return ts.timestamp()
