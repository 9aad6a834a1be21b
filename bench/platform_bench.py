"""The platform as a user runs it: RSS of every process, idle and after a run of everyday
traffic, and HTTP 201 -> timeline latency (``bench.latency``) with everything running.

The platform is started the way a user starts it: ``crm up`` (its own mail catcher, free ports),
on this run's PostgreSQL and broker. Idle: once it is up and settled, before any request. Then
the latency run (leads at a steady rate), then a run through every service over HTTP, as its
users would:

- sales: leads captured (each with an e-mail address), one per request, eight at a time;
- service desk: tickets opened for some of those people;
- marketing: the leads' profiles (from the sales feed) asked for e-mail consent, the
  confirmation links in the mailed opt-ins followed, then a campaign (template, static segment)
  sent to them through the sender and its SMTP worker process;
- analytics: the customers' timelines read, and the sales dashboards.

After the run: the same processes, a second after the last step. A process that the run starts
(the marketing SMTP worker, on the first campaign) has only the second figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench import latency
from bench.common import Figure
from crm_runtime import db
from crm_runtime.embedded import free_port
from crm_runtime.http.auth import mint_token
from crm_runtime.mailcatcher import MailStore
from crm_runtime.services import SERVICES
from crm_runtime.settings import Settings

READY = "The CRM platform is up."
_TOKEN = re.compile(r"/public/consent/confirm\?token=([A-Za-z0-9._~%-]+)")


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB, from /proc (Linux); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _label(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    line = " ".join(argv)
    for verb, what in (("serve", "API (uvicorn, 1 worker)"), ("relay", "outbox relay")):
        if f"crm_runtime.cli {verb} " in line:
            return f"{argv[argv.index(verb) + 1]} {what}"
    if "crm_runtime.cli analytics-worker" in line:
        return "analytics worker (faust)"
    if "crm_runtime.cli up" in line:
        return "`crm up` supervisor"
    if "crm_runtime.mailcatcher" in line:
        return "mail catcher (development SMTP server)"
    if "delivery.smtp_worker" in line:
        return "marketing SMTP worker"
    return None


def _descendants(root: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    todo = list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def platform_rss(root: int) -> dict[str, float]:
    """RSS (MB) of each known process under ``root`` (the `crm up` process), by label."""
    found: dict[str, float] = {}
    for pid in [root, *_descendants(root)]:
        label = _label(pid)
        rss = rss_mb(pid)
        if label is not None and rss is not None:
            found[label] = found.get(label, 0.0) + rss
    return found


async def _wait_banner(up: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY in log.read_text(errors="replace"):
            return
        if up.poll() is not None:
            break
        await asyncio.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"platform bench: `crm up` did not come up; its output ends:\n{tail}")


async def _ok(response: Any) -> Any:
    r = await response
    if r.status_code >= 300:
        raise RuntimeError(
            f"platform bench: {r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
        )
    return r.json() if r.content else None


async def _until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"platform bench: {what} within {timeout:.0f} s")


async def _traffic(ports: dict[str, int], mail: MailStore, leads: int) -> str:
    """The run. Returns a note on what it did."""
    token = mint_token(Settings().jwt_secret, "bench", ["admin"])
    clients = {
        name: httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        for name, port in ports.items()
    }
    sales, desk = clients["sales"], clients["service-desk"]
    mkt, ana = clients["marketing"], clients["analytics"]
    run = uuid.uuid4().hex[:8]
    try:
        customers: list[str] = []
        counter = iter(range(leads))

        async def capture() -> None:
            for i in counter:
                lead = await _ok(
                    sales.post(
                        "/leads",
                        json={
                            "name": f"Bench Person{i}",
                            "email": f"p{i}.{run}@bench.example.com",
                            "source": "web_form",
                        },
                    )
                )
                customers.append(lead["customer_id"])

        await asyncio.gather(*(capture() for _ in range(8)))
        tickets = leads // 4
        for i in range(tickets):
            await _ok(
                desk.post(
                    "/tickets",
                    json={
                        "subject": f"Order {i} has not arrived",
                        "description": "Ordered last week, still nothing.",
                        "customer_email": f"p{i}.{run}@bench.example.com",
                        "product": "webshop",
                    },
                )
            )
        # Marketing: opt-ins for a fifth of the people, then a campaign to them.
        invited = customers[: max(1, leads // 5)]

        async def profiles_arrived() -> bool:
            r = await mkt.get(f"/audience/{invited[-1]}")
            return r.status_code == 200

        await _until("the leads' profiles reached marketing", profiles_arrived, 60)
        for cid in invited:
            for _ in range(40):  # each profile arrives from the sales feed
                r = await mkt.post(f"/audience/{cid}/consents/email/request")
                if r.status_code != 404:
                    break
                await asyncio.sleep(0.25)
            if r.status_code not in (200, 202):
                raise RuntimeError(f"platform bench: consent request: {r.status_code} {r.text}")

        def links() -> list[str]:
            found = []
            for summary in mail.list(limit=100_000):
                raw = mail.raw(summary.id).decode(errors="replace").replace("=\r\n", "")
                found += _TOKEN.findall(raw.replace("=3D", "="))
            return found

        async def mailed() -> bool:  # each mail has the link twice (text and HTML part)
            return len(set(links())) >= len(invited)

        await _until("the opt-in mails arrived", mailed, 60)
        for token_value in set(links()):
            r = await mkt.post("/public/consent/confirm", data={"token": token_value})
            if r.status_code != 200:
                raise RuntimeError(f"platform bench: consent confirm: {r.status_code}")
        template = await _ok(
            mkt.post(
                "/templates",
                json={
                    "name": f"Bench {run}",
                    "channel": "email",
                    "content": {
                        "subject": "{{ first_name | default('Hello') }}, news from the shop",
                        "html": "<p>Hi {{ first_name }}, see <a href='https://shop.example/'>"
                        "the shop</a>.</p><p><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
                    },
                },
            )
        )
        segment = await _ok(mkt.post("/segments", json={"name": f"Bench {run}", "kind": "static"}))
        await _ok(mkt.post(f"/segments/{segment['id']}/members", json={"customer_ids": invited}))
        campaign = await _ok(
            mkt.post(
                "/campaigns",
                json={
                    "name": f"Bench {run}",
                    "template_id": template["id"],
                    "segment_id": segment["id"],
                    "channel": "email",
                },
            )
        )
        before = len(mail.list(limit=100_000))
        await _ok(mkt.post(f"/campaigns/{campaign['id']}/schedule"))

        async def campaign_sent() -> bool:
            return len(mail.list(limit=100_000)) >= before + len(invited)

        await _until("the campaign was sent", campaign_sent, 120)
        # Analytics: timelines and the sales dashboards.
        for cid in customers[:100]:
            await _ok(ana.get(f"/customers/{cid}/timeline"))
        for path in ("/analytics/sales/pipeline", "/analytics/sales/forecast"):
            await _ok(ana.get(path))
        return (
            f"the run: {leads:,} leads, {tickets:,} tickets, {len(invited):,} double opt-ins and"
            f" a campaign to them, {min(100, leads)} timelines read"
        )
    finally:
        for c in clients.values():
            await c.aclose()


async def run(server_url: str, bootstrap: str, *, smoke: bool, logs: Path) -> list[Figure]:
    leads = 100 if smoke else 1000
    home = Path(tempfile.mkdtemp(prefix="crm-bench-platform-"))
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "CRM_HOME": str(home),
        "DATABASE_URL": server_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_EMBEDDED": "true",
        "LOG_LEVEL": "WARNING",
        "MAIL_SMTP_PORT": str(free_port()),
        "MAIL_HTTP_PORT": str(free_port()),
        "SERVICE_DESK_INBOUND_SMTP_PORT": str(free_port()),
        # the campaign goes out now, whatever the hour, unthrottled
        "MARKETING_QUIET_HOURS_START": "00:00",
        "MARKETING_QUIET_HOURS_END": "00:00",
        "MARKETING_SEND_RATE": "0",
        **{f"{name.upper().replace('-', '_')}_PORT": str(port) for name, port in ports.items()},
    }
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "platform-up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "crm_runtime.cli", "up"],
        env=env,
        cwd=str(home),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await _wait_banner(up, log, 240)
        await asyncio.sleep(3 if smoke else 10)  # settled: the worker has its partitions
        idle = platform_rss(up.pid)
        analytics_db = Settings.for_service("analytics").database_name
        timeline = await latency.measure(
            ports["sales"],
            db.with_database(server_url, analytics_db),
            smoke=smoke,
            setting="the whole platform, `crm up`",
        )
        note = await _traffic(ports, MailStore(home / "mail"), leads)
        await asyncio.sleep(1)
        after = platform_rss(up.pid)
    finally:
        started = _descendants(up.pid)  # its children run in sessions of their own
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)  # as Ctrl-C: `crm up` stops what it started
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        for pid in started:  # whatever `crm up` could not stop (or if it died first)
            if _label(pid) is not None:  # still one of ours (not a reused pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    figures = []
    for label in sorted(set(idle) | set(after), key=_order):
        if label in idle:
            figures.append(
                Figure(
                    f"RSS of {label}",
                    idle[label],
                    "MB idle",
                    goal="<= 150 MB idle",
                    notes=f"{after[label]:.0f} MB after the run" if label in after else "",
                )
            )
        else:
            figures.append(
                Figure(
                    f"RSS of {label}, after the run",
                    after[label],
                    "MB",
                    notes="started by the run's campaign, so not there idle",
                )
            )
    if figures:
        figures[0].notes += ("; " if figures[0].notes else "") + note
    return timeline + figures


def _order(label: str) -> tuple[int, str]:
    """Services in their order (API, then relay), then the worker and the rest."""
    for i, name in enumerate(SERVICES):
        if label.startswith(f"{name} "):
            return (i, label)
    return (len(SERVICES), label)
