"""Helpers of SD-B's routing and SLA tests: the app over a fresh database with a mail catcher,
and ticket rows written into the agreed columns of SD-A's ``tickets`` read model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_service_desk.app import create_app
from crm_service_desk.config import DeskSettings


@dataclass
class Stack:
    client: httpx.AsyncClient
    catcher: MailCatcher
    ctx: ServiceContext
    token: Callable[..., str]

    def user(self, *roles: str, user: str = "u-test", team: str | None = None) -> ApiCaller:
        return ApiCaller(self.client, self.token(*roles, user=user, team=team))


@contextlib.asynccontextmanager
async def sdr_stack(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Stack]:
    async with MailCatcher(tmp_path / "mail") as catcher:
        url = await fresh_db("crm_runtime.people", "crm_service_desk")
        settings = settings_for(
            "service-desk",
            database_url=url,
            scheduler_enabled=False,
            consumers_enabled=False,
            smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
            mail_from="crm@desk.example.com",
        )
        desk = DeskSettings(
            support_address="support@desk.example.com",
            inbound_smtp_enabled=False,
            acknowledge_new_tickets=False,
        )
        app = create_app(settings, desk)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://desk.test") as c:
                yield Stack(c, catcher, app.state.ctx, token)


async def insert_ticket(conn: Conn, ticket_id: str, **columns: Any) -> None:
    """A ``tickets`` row with the agreed columns (and SD-A's other required ones)."""
    now = columns.pop("created_at", datetime.now(UTC))
    row: dict[str, Any] = {
        "ticket_id": ticket_id,
        "customer_id": f"c-{ticket_id}",
        "kind": "incident",
        "status": "new",
        "priority": "normal",
        "subject": f"Ticket {ticket_id}",
        "channel": "api",
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO tickets ({names}) VALUES ({marks})", *row.values())


async def set_status(conn: Conn, ticket_id: str, status: str, at: datetime, **columns: Any) -> None:
    """Move a row to ``status`` at ``at``, closing the open status span (as SD-A does)."""
    await conn.execute(
        "UPDATE ticket_status_spans SET ended_at = $2 WHERE ticket_id = $1 AND ended_at IS NULL",
        ticket_id,
        at,
    )
    await conn.execute(
        "INSERT INTO ticket_status_spans (ticket_id, status, started_at) VALUES ($1, $2, $3)",
        ticket_id,
        status,
        at,
    )
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(columns, start=3))
    await conn.execute(
        f"UPDATE tickets SET status = $2{', ' + sets if sets else ''} WHERE ticket_id = $1",
        ticket_id,
        status,
        *columns.values(),
    )
