"""Inbound e-mail over SMTP -> tickets created, messages/s, next to a plain parse-and-INSERT
SMTP server on the same PostgreSQL, same messages, same client concurrency.

Ours: the service desk itself (``crm_runtime.cli serve service-desk``, its inbound SMTP endpoint
on ``SERVICE_DESK_INBOUND_SMTP_PORT``; scheduler and Kafka consumers off), a separate process.
Each message takes the real path: parse, loop/duplicate checks, resolve the sender (every sender
is new: a provisional customer is minted and a person-sighted event recorded), open the ticket
(events, read model), route it (one rule set, a default queue, four agents: the agent with the
least open work gets it, the assignment is an event) and queue the acknowledgement mail, which is
sent after the commit to a discarding SMTP server (``bench.smtp_servers sink``).
Baseline: ``bench.smtp_servers baseline`` — aiosmtpd, the standard library parser, one INSERT.

The load generator is this process: ``CONCURRENCY`` aiosmtplib clients, each on its own SMTP
connection, send prepared messages (every one with its own sender, subject and Message-ID) one
after the other. A round is timed from the first send to the moment the row count (``tickets``,
or the baseline's table) reaches the number sent; every message must be accepted. After a round
of ours, the acknowledgements are waited for (the outbox drained) so they do not spill into the
next round; a second figure gives that rate, acknowledgements included. Rounds alternate.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx

from bench.common import Figure, median, stop
from crm_runtime import db
from crm_runtime.embedded import free_port, wait_for_port
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings

CONCURRENCY = 8
SUPPORT = "support@desk.bench.example"
DESK_DB, PLAIN_DB = "bench_inbound_desk", "bench_inbound_plain"
ROOT = Path(__file__).resolve().parent.parent
_BODY = (
    "Hello,\n\nsince this morning the printer in room {n} stops with a paper jam on tray {t}."
    " I cleaned the rollers and restarted it twice; the error comes back after a few pages.\n"
    "Order reference: ORD-{n:06d}. Could somebody have a look?\n\nThanks,\n{name}\n"
)


def messages(tag: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct messages (sender, bytes): own sender address, subject and Message-ID."""
    out = []
    for i in range(n):
        sender = f"customer.{tag}.{i}@customers.bench.example"
        msg = EmailMessage()
        msg["From"] = f"Customer {tag} {i} <{sender}>"
        msg["To"] = SUPPORT
        msg["Subject"] = f"Printer jam on tray {i % 3} ({tag} {i})"
        msg["Message-ID"] = f"<{tag}.{i}@customers.bench.example>"
        msg["Date"] = "Mon, 06 Jan 2025 09:00:00 +0000"
        msg.set_content(_BODY.format(n=i, t=i % 3, name=f"Customer {i}"))
        msg["Content-Language"] = "en"
        out.append((sender, msg.as_bytes()))
    return out


async def _send_all(port: int, batch: list[tuple[str, bytes]]) -> None:
    todo = iter(batch)

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        try:
            for sender, content in todo:
                errors, _ = await smtp.sendmail(sender, [SUPPORT], content)
                if errors:
                    raise RuntimeError(f"refused: {errors}")
        finally:
            await smtp.quit()

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def _wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"inbound bench: {what} after {timeout} s")
        await asyncio.sleep(0.005)


async def _round(
    conn: asyncpg.Connection, port: int, batch: list[tuple[str, bytes]], table: str
) -> float:
    """Messages/s from the first send until ``table`` holds a row per message."""
    target = int(await conn.fetchval(f"SELECT count(*) FROM {table}")) + len(batch)

    async def done() -> bool:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}")) >= target

    start = time.perf_counter()
    await _send_all(port, batch)
    await _wait_until(done, 60, f"not every message became a row of {table}")
    return len(batch) / (time.perf_counter() - start)


async def _acks_sent(conn: asyncpg.Connection) -> bool:
    pending = await conn.fetchval("SELECT count(*) FROM ticket_outbox WHERE sent_at IS NULL")
    return int(pending) == 0


async def _fresh(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return db.with_database(server_url, name)


async def _configure_routing(http_port: int) -> None:
    """One default queue with four agents (English), and a rule set naming it."""
    token = mint_token(Settings().jwt_secret, "bench-manager", ["service_manager"])
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as c:
        for queue in ("general", "returns"):
            r = await c.put(f"/queues/{queue}", json={"name": queue.title()})
            r.raise_for_status()
        for i in range(4):
            r = await c.put(
                f"/agents/agent-{i}",
                json={
                    "email": f"agent-{i}@desk.bench.example",
                    "skills": [],
                    "languages": ["en"],
                    "queues": ["general"],
                },
            )
            r.raise_for_status()
        rules = {
            "rules": [{"rule_id": "returns", "kinds": ["product_return"], "queue_id": "returns"}],
            "default_queue_id": "general",
        }
        r = await c.put("/routing-rules", json=rules, headers={"If-Match": '"0"'})
        r.raise_for_status()


async def _wait_http(port: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as c:
        while True:
            try:
                if (await c.get("/health/live")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the service desk did not answer on {port}")
            await asyncio.sleep(0.05)


async def run(server_url: str, bootstrap: str, *, smoke: bool, logs: Path) -> list[Figure]:
    n, warm, rounds = (100, 20, 1) if smoke else (1000, 100, 3)
    desk_url = await _fresh(server_url, DESK_DB)
    plain_url = await _fresh(server_url, PLAIN_DB)
    http_port, smtp_port, plain_port, sink_port = (free_port() for _ in range(4))
    env = {
        **os.environ,
        "SERVICE_DESK_DATABASE_URL": desk_url,
        "SERVICE_DESK_PORT": str(http_port),
        "SERVICE_DESK_INBOUND_SMTP_ENABLED": "true",
        "SERVICE_DESK_INBOUND_SMTP_PORT": str(smtp_port),
        "SERVICE_DESK_SUPPORT_ADDRESS": SUPPORT,
        "SMTP_URL": f"smtp://127.0.0.1:{sink_port}",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_EMBEDDED": "true",
        "SCHEDULER_ENABLED": "false",
        "CONSUMERS_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    logs.mkdir(parents=True, exist_ok=True)
    servers = [sys.executable, "-m", "bench.smtp_servers"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "crm_runtime.cli", "serve", "service-desk"],
            env=env,
            stdout=open(logs / "inbound-desk.log", "wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [*servers, "baseline", plain_url, str(plain_port)],
            cwd=str(ROOT),
            stdout=open(logs / "inbound-plain.log", "wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [*servers, "sink", str(sink_port)],
            cwd=str(ROOT),
            stdout=open(logs / "inbound-sink.log", "wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    ours: list[float] = []
    with_acks: list[float] = []
    base: list[float] = []
    desk = plain = None
    try:
        batches = [messages(f"w{k}", warm) for k in range(2)]
        batches += [messages(f"r{k}", n) for k in range(rounds)]
        await _wait_http(http_port, 60)
        await _configure_routing(http_port)
        for port in (smtp_port, plain_port, sink_port):
            await asyncio.to_thread(wait_for_port, port, 30)
        desk, plain = await asyncpg.connect(desk_url), await asyncpg.connect(plain_url)
        await _round(plain, plain_port, batches[0], "inbound_plain")  # warm-up
        await _round(desk, smtp_port, batches[1], "tickets")
        await _wait_until(lambda: _acks_sent(desk), 60, "acknowledgements not sent")
        for batch in batches[2:]:
            base.append(await _round(plain, plain_port, batch, "inbound_plain"))
            start = time.perf_counter()
            ours.append(await _round(desk, smtp_port, batch, "tickets"))
            await _wait_until(lambda: _acks_sent(desk), 120, "acknowledgements not sent")
            with_acks.append(len(batch) / (time.perf_counter() - start))
        routed = await desk.fetchval("SELECT count(*) FROM tickets WHERE assignee_id IS NOT NULL")
        total = await desk.fetchval("SELECT count(*) FROM tickets")
        if routed != total:
            raise RuntimeError(f"inbound bench: {total - routed} of {total} tickets not assigned")
    finally:
        for c in (desk, plain):
            if c is not None:
                await c.close()
        stop(procs)
    how = (
        f"{n:,} messages per round, median of {rounds} after a warm-up of {warm};"
        f" {CONCURRENCY} SMTP clients, one connection each; every sender new (customer minted)"
    )
    baseline = (
        "plain aiosmtpd server: stdlib e-mail parse + one asyncpg INSERT per message"
        " (no customer, events, routing or mail)"
    )
    return [
        Figure(
            name="inbound e-mail -> ticket created, SMTP",
            value=median(ours),
            unit="msg/s",
            baseline_name=baseline,
            baseline=median(base),
            samples=ours,
            baseline_samples=base,
            notes=f"{how}; timed until every message is a row of `tickets`; ours: loop and"
            " duplicate checks, customer resolved (provisional id + person sighting), ticket"
            " events + read model, routing to the least-loaded agent, acknowledgement queued",
        ),
        Figure(
            name="inbound e-mail -> ticket, acknowledgement sent",
            value=median(with_acks),
            unit="msg/s",
            baseline_name="the same baseline",
            baseline=median(base),
            samples=with_acks,
            baseline_samples=base,
            notes=f"{how}; timed until the service's outbox is drained (every acknowledgement"
            " sent over SMTP to a discarding server)",
        ),
    ]
