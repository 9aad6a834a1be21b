"""The `crm up` banner names where support mail goes (the inbound port and the address), and
comes once the analytics worker consumes (its Ready line in this run's log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_runtime import supervisor


def test_banner_names_the_support_address_and_port(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "SERVICE_DESK_INBOUND_SMTP_PORT": "2626"}
    supervisor._banner(env, embedded_mail=False)
    line = next(x for x in capsys.readouterr().out.splitlines() if "support mail" in x)
    assert "smtp://127.0.0.1:2626" in line and "support@localhost" in line
    env["SERVICE_DESK_SUPPORT_ADDRESS"] = "help@shop.example.com"
    supervisor._banner(env, embedded_mail=False)
    line = next(x for x in capsys.readouterr().out.splitlines() if "support mail" in x)
    assert "help@shop.example.com" in line and "any recipient" in line


def test_the_worker_counts_as_joined_only_by_this_runs_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "HOME", tmp_path)
    (tmp_path / "logs").mkdir()
    worker = supervisor.Child("analytics-worker", [])
    worker.log.write_text(f"earlier run {supervisor.WORKER_READY}\n")
    worker.log_start = worker.log.stat().st_size
    assert not supervisor._wait_worker(worker, timeout=0.6)  # an earlier run's line is not it
    with open(worker.log, "a") as f:
        f.write(f"[2026-11-26 11:48:43,448] [1] [INFO] {supervisor.WORKER_READY}\n")
    assert supervisor._wait_worker(worker, timeout=5)
