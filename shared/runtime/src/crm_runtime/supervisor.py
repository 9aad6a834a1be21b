"""`crm up`: the embedded stack plus every service, relay and processor, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from crm_runtime import db
from crm_runtime.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    PortInUse,
    require_port,
)
from crm_runtime.http.auth import mint_token
from crm_runtime.services import SERVICES
from crm_runtime.settings import Settings

HOME = Path(os.environ.get("CRM_HOME", ".crm"))
RUNNING_DATABASE_FILE = HOME / "database_url"
MAIL_SMTP_PORT = int(os.environ.get("MAIL_SMTP_PORT", "1025"))
MAIL_HTTP_PORT = int(os.environ.get("MAIL_HTTP_PORT", "8025"))
BROKER_PORT = int(os.environ.get("BROKER_PORT", "9092"))


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_start: int = 0  # where this run's lines begin in the (appended) log

    @property
    def log(self) -> Path:
        return HOME / "logs" / f"{self.name}.log"


def _say(text: str) -> None:
    print(text, flush=True)


def inbound_mail_port(env: dict[str, str]) -> int | None:
    """The service desk's inbound SMTP port (mail to support becomes tickets), if it runs."""
    if env.get("SERVICE_DESK_INBOUND_SMTP_ENABLED", "true").lower() in ("false", "0", "no"):
        return None
    return int(env.get("SERVICE_DESK_INBOUND_SMTP_PORT", "2525"))


def _service_port(name: str) -> int:
    return Settings.for_service(name).port


def up(*, reset: bool = False) -> int:
    if reset and HOME.exists():
        shutil.rmtree(HOME)
    (HOME / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    embedded_db = not env.get("DATABASE_URL")
    embedded_broker = not env.get("KAFKA_BOOTSTRAP_SERVERS")
    embedded_mail = not env.get("SMTP_URL")
    try:
        for name in SERVICES:
            require_port(
                _service_port(name), f"{name} API", f"{name.upper().replace('-', '_')}_PORT"
            )
        if (inbound := inbound_mail_port(env)) is not None:
            require_port(
                inbound, "service-desk inbound SMTP endpoint", "SERVICE_DESK_INBOUND_SMTP_PORT"
            )
        if embedded_broker:
            require_port(BROKER_PORT, "embedded Kafka broker", "BROKER_PORT")
        if embedded_mail:
            require_port(MAIL_SMTP_PORT, "capturing SMTP server", "MAIL_SMTP_PORT")
            require_port(MAIL_HTTP_PORT, "captured-mail web API", "MAIL_HTTP_PORT")
    except PortInUse as exc:
        print(f"crm up: {exc}", file=sys.stderr)
        return 1

    postgres = broker = None
    mail_process: subprocess.Popen[bytes] | None = None
    children: list[Child] = []
    try:
        if embedded_db:
            _say("starting PostgreSQL (embedded, data in .crm/pg) ...")
            postgres = EmbeddedPostgres((HOME / "pg").resolve()).start()
            env["DATABASE_URL"] = postgres.url
            # So that tools run beside (`crm-sales import`, `crm migrate`) find the database.
            RUNNING_DATABASE_FILE.write_text(postgres.url + "\n")
        if embedded_broker:
            _say(
                "starting the Kafka-compatible broker (embedded Tansu)"
                f" on 127.0.0.1:{BROKER_PORT} ..."
            )
            broker = EmbeddedBroker(BROKER_PORT, HOME / "logs" / "broker.log").start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            env["KAFKA_EMBEDDED"] = "true"
        if embedded_mail:
            env["SMTP_URL"] = f"smtp://127.0.0.1:{MAIL_SMTP_PORT}"
            mail_process = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "crm_runtime.mailcatcher",
                    "--dir",
                    str(HOME / "mail"),
                    "--smtp-port",
                    str(MAIL_SMTP_PORT),
                    "--http-port",
                    str(MAIL_HTTP_PORT),
                ],
                stdout=open(HOME / "logs" / "mail.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _say("migrating the service databases ...")
        asyncio.run(_migrate_all(env["DATABASE_URL"]))

        crm = [sys.executable, "-m", "crm_runtime.cli"]
        for name, spec in SERVICES.items():
            children.append(Child(name, [*crm, "serve", name]))
            if spec.relays:
                children.append(Child(f"{name}-relay", [*crm, "relay", name]))
        children.append(Child("analytics-worker", [*crm, "analytics-worker"]))
        for child in children:
            _spawn(child, env)
        _say("waiting for the services to be ready ...")
        if not _wait_ready(children, timeout=120):
            return 1
        worker = next(c for c in children if c.name == "analytics-worker")
        if not _wait_worker(worker, timeout=60):
            _say("(the analytics worker is still joining its consumer group: timelines fill in")
            _say(" once it has; see .crm/logs/analytics-worker.log)")
        _banner(env, embedded_mail)
        return _watch(children, env)
    except KeyboardInterrupt:
        return 0
    finally:
        _say("stopping ...")
        _stop([c.process for c in children if c.process] + ([mail_process] if mail_process else []))
        if broker:
            broker.stop()
        if postgres:
            RUNNING_DATABASE_FILE.unlink(missing_ok=True)
            postgres.stop()
        _say("stopped.")


async def _migrate_all(server_url: str) -> None:
    for name, spec in SERVICES.items():
        settings = Settings.for_service(name)
        await db.ensure_database(server_url, settings.database_name)
        await db.migrate_url(
            db.with_database(server_url, settings.database_name), ["crm_runtime", spec.migrations]
        )


def _wait_ready(children: list[Child], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pending = {name: _service_port(name) for name in SERVICES}
    while pending and time.monotonic() < deadline:
        for child in children:
            if child.process and child.process.poll() is not None:
                print(
                    f"crm up: {child.name} exited early; last lines of {child.log}:",
                    file=sys.stderr,
                )
                print(_tail(child.log), file=sys.stderr)
                return False
        for name, port in list(pending.items()):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if r.status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    if pending:
        print(
            f"crm up: not ready after {timeout}s: {', '.join(pending)} (see .crm/logs/)",
            file=sys.stderr,
        )
        return False
    return True


WORKER_READY = "[^Worker]: Ready"  # faust logs it once the group has given it its partitions


def _wait_worker(worker: Child, timeout: float) -> bool:
    """Until the analytics worker consumes: an event sent before it has its partitions shows on
    the timeline only seconds later (a first call right after the banner would find nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            return False  # it exited; the watch loop reports it
        try:
            with open(worker.log, "rb") as f:
                f.seek(worker.log_start)
                if WORKER_READY.encode() in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _banner(env: dict[str, str], embedded_mail: bool) -> None:
    token = mint_token(Settings().jwt_secret, "admin", ["admin"])
    lines = ["", "The CRM platform is up.", ""]
    for name in SERVICES:
        port = _service_port(name)
        lines.append(
            f"  {name:<13} http://127.0.0.1:{port}   API docs: http://127.0.0.1:{port}/docs"
        )
    if embedded_mail:
        lines.append(
            f"  captured mail http://127.0.0.1:{MAIL_HTTP_PORT}/messages   (or: crm mail list)"
        )
    if (inbound := inbound_mail_port(env)) is not None:
        # the service desk's default (crm_service_desk.config.DeskSettings.support_address)
        support = env.get("SERVICE_DESK_SUPPORT_ADDRESS") or "support@localhost"
        lines.append(
            f"  support mail  smtp://127.0.0.1:{inbound}   mail to {support} (any recipient"
            " is taken) -> tickets"
        )
    lines += [
        f"  Kafka         {env['KAFKA_BOOTSTRAP_SERVERS']}",
        "  logs          .crm/logs/",
        "",
        "A development admin token (valid 12 h; mint others with",
        "`.venv/bin/crm token --role sales_rep --user alice`):",
        "",
        f"  export TOKEN={token}",
        "",
        "Try:",
        '  curl -s -X POST http://127.0.0.1:8001/leads -H "Authorization: Bearer $TOKEN" \\',
        "       -H 'Content-Type: application/json' \\",
        """       -d '{"name": "Ada Lovelace", "source": "web_form"}'""",
        "",
        "Press Ctrl-C to stop.",
    ]
    _say("\n".join(lines))


def _spawn(child: Child, env: dict[str, str]) -> None:
    try:
        child.log_start = child.log.stat().st_size
    except OSError:
        child.log_start = 0
    child.process = subprocess.Popen(  # noqa: S603
        child.argv,
        stdout=open(child.log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _watch(children: list[Child], env: dict[str, str]) -> int:
    """Wait for Ctrl-C; restart a process that dies (a few times), with its log's last lines."""
    stop = {"flag": False}
    restarts: dict[str, list[float]] = {}

    def _handler(*_: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    while not stop["flag"]:
        for child in children:
            if child.process and child.process.poll() is not None:
                recent = [t for t in restarts.get(child.name, []) if time.monotonic() - t < 300]
                print(
                    f"crm up: {child.name} stopped (exit {child.process.returncode}); "
                    f"last lines of {child.log}:\n{_tail(child.log)}",
                    file=sys.stderr,
                )
                if len(recent) >= 5:
                    print(f"crm up: {child.name} keeps failing; stopping.", file=sys.stderr)
                    return 1
                restarts[child.name] = [*recent, time.monotonic()]
                print(f"crm up: restarting {child.name}", file=sys.stderr)
                _spawn(child, env)
        time.sleep(0.5)
    return 0


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in processes:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
