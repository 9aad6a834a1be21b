"""Campaign e-mail sending rate to the local SMTP server, next to a plain aiosmtplib loop.

The SMTP server is the mail catcher (``python -m crm_runtime.mailcatcher``, the one `make up`
runs) in a process of its own; both senders talk to it.

Ours: a campaign of N recipients (profiles with e-mail consent, a static segment, an e-mail
template with personalisation, two links and an unsubscribe link) started through the campaign
job — the recipients are materialised — and then sent by the service's sender
(``crm_marketing.delivery.sender.Deliverer.drain``, unthrottled, default settings otherwise):
claims in batches with ``FOR UPDATE SKIP LOCKED`` under the frequency-cap lock (the next batch
while the current one is sent), renders the template per recipient, rewrites links and adds the
open pixel, builds the MIME message, sends it over one reused SMTP connection held by the
sender's SMTP worker process (``delivery.smtp_worker``: the same aiosmtplib ``sendmail`` per
message, fed over a pipe, so composing and recording overlap the SMTP round trips; the worker
runs on uvloop, as the services do), and records each message as sent with its event (group
commits: one transaction for what was answered within 0.2 s). The timed span is from the
campaign start (materialising the recipients) to the last message recorded. The worker is
started in the warm-up round and kept, as the service keeps it (the baseline's connection is
opened before its timer too). Both sides share the machine's two cores with the catcher (and
ours with PostgreSQL and the worker).
Baseline: a plain loop on one aiosmtplib connection sending the very same messages (the bytes
the catcher received from ours, envelope and all) — no database, no rendering, no building —
on asyncio's default event loop, as a plain script runs.
Rounds alternate baseline / ours; each round is a new campaign to the same segment.
Run alone: ``python -m bench run --only campaign [--smoke]``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from bench.common import Figure, median
from crm_runtime import db
from crm_runtime.embedded import free_port, wait_for_port
from crm_runtime.http.auth import mint_token
from crm_runtime.mailcatcher import MailStore
from crm_runtime.settings import Settings

DATABASE = "bench_campaign"
SENDER = "news@shop.example"
TEMPLATE = {
    "subject": "{{ first_name }}, the new phones are here",
    "html": (
        "<html><body><h1>Hello {{ first_name }}</h1>"
        "<p>Our spring range is in store. Have a look before it is gone.</p>"
        '<p><a href="https://shop.example/phones?utm_campaign=spring">See the phones</a></p>'
        '<p><a href="https://shop.example/stores">Find a store</a></p>'
        '<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        "</body></html>"
    ),
}


async def _database(server_url: str) -> str:
    await db.ensure_database(server_url, DATABASE)
    url = db.with_database(server_url, DATABASE)
    await db.migrate_url(url, ["crm_runtime", "crm_runtime.people", "crm_marketing"])
    return url


async def _people(url: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC)
    conn = await db.create_pool(url, max_size=1)
    try:
        async with conn.acquire() as c, c.transaction():
            await c.copy_records_to_table(
                "profiles",
                records=[(cid, f"r{i}@example.com", f"Name{i}") for i, cid in enumerate(ids)],
                columns=["customer_id", "email", "first_name"],
            )
            await c.copy_records_to_table(
                "consents",
                records=[(cid, "email", "granted", now) for cid in ids],
                columns=["customer_id", "channel", "status", "changed_at"],
            )
    finally:
        await conn.close()
    return ids


async def _raw_messages(store: MailStore) -> list[tuple[str, list[str], bytes]]:
    out = []
    for summary in store.list(limit=1_000_000):
        out.append((summary.mail_from, summary.rcpt_tos, store.raw(summary.id)))
    return out


async def _plain_loop(port: int, messages: list[tuple[str, list[str], bytes]]) -> float:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    try:
        started = time.perf_counter()
        for sender, rcpts, raw in messages:
            await smtp.sendmail(sender, rcpts, raw)
        return len(messages) / (time.perf_counter() - started)
    finally:
        await smtp.quit()


async def run(server_url: str, *, smoke: bool) -> list[Figure]:
    n, rounds = (100, 3) if smoke else (2000, 3)
    from crm_marketing.app import create_app
    from crm_marketing.campaigns.application import start_due_campaigns
    from crm_marketing.delivery.sender import Deliverer
    from crm_marketing.delivery.settings import DeliverySettings, use_settings

    url = await _database(server_url)
    ids = await _people(url, n)
    port = free_port()
    mail_dir = Path(tempfile.mkdtemp(prefix="crm-bench-mail-"))
    catcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "crm_runtime.mailcatcher", "--dir", str(mail_dir)),
            *("--smtp-port", str(port), "--no-http", "--log-level", "WARNING"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = MailStore(mail_dir)
    settings = Settings(
        service_name="marketing",
        crm_env="test",
        service_database_url=url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        mail_from=SENDER,
        scheduler_enabled=False,
        consumers_enabled=False,
        log_level="WARNING",
    )
    cfg = DeliverySettings(
        public_base_url="https://crm.example.com",
        send_rate=0,
        frequency_cap=0,
        quiet_hours_start=None,
        quiet_hours_end=None,
        batch_size=500,
    )
    app = create_app(settings)
    ours: list[float] = []
    base: list[float] = []
    try:
        await asyncio.to_thread(wait_for_port, port, 30)
        async with app.router.lifespan_context(app):
            ctx: Any = app.state.ctx
            use_settings(ctx, cfg)
            auth = {
                "Authorization": f"Bearer {mint_token(settings.jwt_secret, 'bench', ['marketer'])}"
            }
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://m", headers=auth
            ) as client:
                tpl = await _ok(
                    client.post(
                        "/templates",
                        json={
                            "name": f"Spring {uuid.uuid4().hex[:6]}",
                            "channel": "email",
                            "content": TEMPLATE,
                        },
                    )
                )
                seg = await _ok(
                    client.post(
                        "/segments", json={"name": f"All {uuid.uuid4().hex[:6]}", "kind": "static"}
                    )
                )
                for i in range(0, n, 10_000):
                    await _ok(
                        client.post(
                            f"/segments/{seg}/members", json={"customer_ids": ids[i : i + 10_000]}
                        ),
                        key=None,
                    )
                deliverer = Deliverer(ctx.pool, ctx.store, settings, cfg)
                clock = datetime.now(UTC)
                for r in range(rounds + 1):  # round 0 warms up (and makes the baseline's bytes)
                    cid = await _ok(
                        client.post(
                            "/campaigns",
                            json={
                                "name": f"r{r}",
                                "template_id": tpl,
                                "segment_id": seg,
                                "channel": "email",
                            },
                        )
                    )
                    await _ok(client.post(f"/campaigns/{cid}/schedule", json={}), key=None)
                    clock = max(clock, datetime.now(UTC)) + timedelta(seconds=1)
                    if r > 0:
                        messages = await _raw_messages(store)
                        store.clear()
                        base.append(await _plain_loop(port, messages))
                        store.clear()
                    started = time.perf_counter()
                    assert await start_due_campaigns(ctx.pool, ctx.store, cfg, clock) == 1
                    sent = await deliverer.drain(clock)
                    elapsed = time.perf_counter() - started
                    if sent != n:
                        raise RuntimeError(f"campaign bench: sent {sent} of {n}")
                    if r > 0:
                        ours.append(n / elapsed)
                await deliverer.close()
                if len(store.list(limit=n + 1)) != n:
                    raise RuntimeError("campaign bench: the catcher did not get every message")
    finally:
        catcher.terminate()
        try:
            catcher.wait(20)
        except subprocess.TimeoutExpired:
            catcher.kill()
        shutil.rmtree(mail_dir, ignore_errors=True)
    return [
        Figure(
            name="campaign e-mail sending rate, SMTP (mail catcher)",
            value=median(ours),
            unit="msg/s",
            baseline_name="plain aiosmtplib loop, one connection, the same message bytes",
            baseline=median(base),
            goal=">= 0.8x",
            notes=(
                f"{n:,} recipients per campaign, median of {rounds} after a warm-up; ours from the "
                "campaign start (recipients materialised) to the last message recorded: claim, "
                "render, track links, build MIME, send over one connection (from the sender's "
                "SMTP worker process, on uvloop; the baseline runs on asyncio's default loop), "
                "record + event each (group commits)"
            ),
            samples=ours,
            baseline_samples=base,
        )
    ]


async def _ok(request: Any, key: str | None = "id") -> str:
    r = await request
    if r.status_code >= 300:
        raise RuntimeError(f"campaign bench: {r.request.method} {r.request.url.path}: {r.text}")
    return str(r.json()[key]) if key else ""
