"""Command API: create lead on the sales service (one uvicorn worker) next to a plain FastAPI +
asyncpg endpoint that INSERTs one row (the CRUD baseline), same PostgreSQL, same load generator.

The load generator is this process (aiohttp), the servers are separate processes. Closed loop:
``concurrency`` clients each send the next request when the previous answered. Rounds alternate
between the two servers, the order turning each pair (baseline first, then ours first), so drift
over the run hits both alike; the figure is the median of five rounds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench.common import Figure, median, percentile, stop
from crm_runtime import db
from crm_runtime.embedded import free_port, wait_for_port
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings

CONCURRENCY = 32


async def _load(port: int, n: int, headers: dict[str, str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(n))
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}",
        headers=headers,
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
    ) as c:

        async def client() -> None:
            for i in counter:
                t = time.perf_counter()
                async with c.post("/leads", json={"name": f"Bench {i}", "source": "import"}) as r:
                    if r.status != 201:
                        raise RuntimeError(f"{r.status}: {await r.text()}")
                    await r.read()
                latencies.append((time.perf_counter() - t) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - start), latencies


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(server_url: str, bootstrap: str, *, smoke: bool, logs: Path) -> list[Figure]:
    n, rounds = (500, 1) if smoke else (5000, 5)
    await db.ensure_database(server_url, "bench_api_sales")
    await db.ensure_database(server_url, "bench_api_crud")
    sales_url = db.with_database(server_url, "bench_api_sales")
    crud_url = db.with_database(server_url, "bench_api_crud")
    await db.migrate_url(sales_url, ["crm_runtime", "crm_sales"])
    sales_port, crud_port = free_port(), free_port()
    env = {
        **os.environ,
        "SALES_DATABASE_URL": sales_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_EMBEDDED": "true",
        "SALES_PORT": str(sales_port),
        "LOG_LEVEL": "WARNING",
        "SCHEDULER_ENABLED": "false",
    }
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "crm_runtime.cli", "serve", "sales"],
            env=env,
            stdout=open(logs / "api-sales.log", "wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "bench.crud_app", crud_url, str(crud_port)],
            cwd=str(Path(__file__).resolve().parent.parent),
            stdout=open(logs / "api-crud.log", "wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    token = mint_token(Settings().jwt_secret, "bench", ["sales_rep"])
    ours_headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_for_port(sales_port, 60)
        wait_for_port(crud_port, 60)
        await _load(sales_port, n // 5, ours_headers)  # warm-up
        await _load(crud_port, n // 5, {})
        ours, base, ours_lat, base_lat = [], [], [], []
        cpu: dict[str, list[float]] = {"ours": [], "base": []}  # server CPU µs per request
        for r in range(rounds):
            # Each pair in turn order (baseline first, then ours first): a drift over the run
            # (it shows, for both servers) then favours neither side.
            for side in ("base", "ours") if r % 2 == 0 else ("ours", "base"):
                server = procs[0] if side == "ours" else procs[1]
                before = _cpu_seconds(server.pid)
                if side == "base":
                    rate, lat = await _load(crud_port, n, {})
                    base.append(rate)
                    base_lat += lat
                else:
                    rate, lat = await _load(sales_port, n, ours_headers)
                    ours.append(rate)
                    ours_lat += lat
                after = _cpu_seconds(server.pid)
                if before is not None and after is not None:
                    cpu[side].append((after - before) * 1e6 / n)
    finally:
        stop(procs)
    note = f"{n} requests per round x {rounds}, {CONCURRENCY} concurrent clients, one worker"
    if cpu["ours"] and cpu["base"]:
        note += (
            f"; server CPU per request (median): ours {median(cpu['ours']):.0f} µs, baseline"
            f" {median(cpu['base']):.0f} µs (both share two cores with PostgreSQL and the load"
            " generator)"
        )
    return [
        Figure(
            name="command API: create lead, throughput",
            value=median(ours),
            unit="req/s",
            baseline_name="plain FastAPI + asyncpg INSERT of one row (no auth, no events)",
            baseline=median(base),
            goal=">= 0.8x",
            samples=ours,
            baseline_samples=base,
            notes=note + "; ours: JWT, validation, event append, read model, outbox NOTIFY",
        ),
        Figure(
            name="command API: create lead, p99",
            value=percentile(ours_lat, 99),
            unit="ms",
            baseline_name="the same baseline's p99",
            baseline=percentile(base_lat, 99),
            notes=note,
        ),
    ]
