"""HTTP 201 -> customer timeline latency, with the real processes: sales API, relay, faust worker.

The load generator (this process) posts leads at a steady rate; each lead's latency is the time
from receiving its 201 to its timeline row being written by the analytics worker
(``timeline.projected_at``, same machine clock).
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

from bench.common import Figure, percentile
from crm_runtime import db
from crm_runtime.embedded import free_port, wait_for_port
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings

NAMES = ("sales", "relay", "worker")
WARM_SECONDS = 12
LABELS = {
    "sales": "sales API (uvicorn, 1 worker)",
    "relay": "sales outbox relay",
    "worker": "analytics worker (faust)",
}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run(server_url: str, bootstrap: str, *, smoke: bool, logs: Path) -> list[Figure]:
    total, rate = (100, 50.0) if smoke else (1000, 200.0)
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
            stdout=open(logs / f"{n}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for n, args in zip(
            NAMES,
            (["serve", "sales"], ["relay", "sales"], ["analytics-worker"]),
            strict=True,
        )
    ]
    token = mint_token(Settings().jwt_secret, "bench", ["sales_manager"])
    headers = {"Authorization": f"Bearer {token}"}
    conn = await asyncpg.connect(db.with_database(server_url, analytics_db))
    try:
        wait_for_port(port, 60)
        # aiohttp: httpx's client costs more CPU per request than the server under test.
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}",
            headers=headers,
            connector=aiohttp.TCPConnector(limit=64),
        ) as c:
            # warm-up: the worker has joined its group once a warm-up lead is on the timeline
            await _warm_up(c, conn)
            # The worker pauses once, ~10 s after it first consumes (~150 ms; faust settling
            # its group). Keep a light load past that, so the figure is the steady state.
            for i in range(WARM_SECONDS * 10):
                async with c.post("/leads", json={"name": f"Warm {i}", "source": "import"}) as r:
                    r.raise_for_status()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            idle_rss = {name: rss_mb(p.pid) for name, p in zip(NAMES, procs, strict=True)}
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
            after_rss = {name: rss_mb(p.pid) for name, p in zip(NAMES, procs, strict=True)}
    finally:
        await conn.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    latencies = [max(0.0, (seen[c] - t) * 1000) for c, t in sent.items() if c in seen]
    missing = total - len(latencies)
    note = f"{total} leads at {achieved:.0f}/s (target {rate:.0f}/s); {missing} not seen in 60 s"
    rss = [
        Figure(
            f"RSS of {LABELS[name]}",
            idle_rss[name],
            "MB idle",
            goal="<= 150 MB idle",
            notes=f"{after_rss[name]:.0f} MB after the run",
        )
        for name in NAMES
    ]
    return [
        *rss,
        Figure("HTTP 201 -> timeline visible, p50", percentile(latencies, 50), "ms", notes=note),
        Figure(
            "HTTP 201 -> timeline visible, p99",
            percentile(latencies, 99),
            "ms",
            goal="<= 100 ms",
            notes=note,
        ),
    ]


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
        rows = await conn.fetch(
            "SELECT customer_id, projected_at FROM timeline WHERE customer_id = ANY($1::text[])",
            list(sent),
        )
        seen = {r["customer_id"]: _epoch(r["projected_at"]) for r in rows}
        await asyncio.sleep(0.5)
    return seen


def _epoch(ts: datetime) -> float:
    return ts.timestamp()
