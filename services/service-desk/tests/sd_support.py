"""Helpers of the ticket tests (SD-A): the service-desk app over a fresh database with a real
mail catcher, its settings, and callers with roles."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from crm_runtime.context import ServiceContext
from crm_runtime.mailcatcher import CapturedMail, MailCatcher
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_service_desk.app import create_app
from crm_service_desk.config import DeskSettings

SITE_KEY = "site-test"
ORIGIN = "https://shop.example.com"


@dataclass
class Desk:
    client: httpx.AsyncClient
    catcher: MailCatcher
    ctx: ServiceContext
    desk: DeskSettings
    token: Callable[..., str]

    def user(self, *roles: str, user: str = "u-test", team: str | None = None) -> ApiCaller:
        return ApiCaller(self.client, self.token(*roles, user=user, team=team))

    async def mail_to(
        self, address: str, count: int = 1, timeout: float = 10.0
    ) -> list[CapturedMail]:
        """The mail caught for ``address`` once there are ``count`` (mail is sent after commit)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [
                self.catcher.store.get(m.id) for m in reversed(self.catcher.store.list(to=address))
            ]
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)


def desk_settings(**overrides: Any) -> DeskSettings:
    values: dict[str, Any] = {
        "support_address": "support@desk.example.com",
        "inbound_smtp_enabled": False,
        "public_base_url": "http://desk.test",
        "portal_sites": {SITE_KEY: [ORIGIN]},
        "portal_rate_limit": 3,
    }
    values.update(overrides)
    return DeskSettings(**values)


@contextlib.asynccontextmanager
async def desk_stack(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
    **desk_overrides: Any,
) -> AsyncIterator[Desk]:
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
        desk = desk_settings(**desk_overrides)
        app = create_app(settings, desk)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://desk.test") as c:
                yield Desk(c, catcher, app.state.ctx, desk, token)


def link_in(text: str | None, kind: str) -> str:
    """The token of the first ``/customer/tickets/<token>`` or ``/survey/<token>`` link."""
    m = re.search(rf"/{kind}/([A-Za-z0-9_\-.]+)", text or "")
    assert m, f"no {kind} link in {text!r}"
    return m.group(1)


async def configure_routing(
    ctx: ServiceContext,
    *,
    queues: list[str],
    agents: dict[str, dict[str, Any]],
    rules: list[dict[str, Any]],
    default_queue_id: str | None = None,
) -> None:
    """Queues, agent profiles and routing rules through SD-B's routing module."""
    from crm_events.schemas.service_routing import RoutingRule
    from crm_runtime.eventstore import Metadata
    from crm_service_desk.application import routing

    meta = Metadata(actor="test")
    async with ctx.pool.acquire() as conn, conn.transaction():
        for q in queues:
            await routing.QueueHandlers(ctx.store).set(
                conn, q, meta, name=q, description=None, active=True, expected=None
            )
        for agent_id, profile in agents.items():
            await routing.AgentHandlers(ctx.store).set_profile(
                conn,
                agent_id,
                meta,
                email=profile.get("email"),
                display_name=None,
                skills=profile.get("skills", []),
                languages=profile.get("languages", []),
                queues=profile.get("queues", []),
                active=True,
                expected=None,
            )
        await routing.set_rules(
            conn,
            ctx.store,
            [RoutingRule(**r) for r in rules],
            default_queue_id,
            meta,
            None,
        )
