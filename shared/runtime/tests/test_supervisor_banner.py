"""The `crm up` banner names where support mail goes: the inbound port and the address."""

from __future__ import annotations

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
