"""Fixtures and helpers of the audience and website tests (test_mka_*, test_mkw_*)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_events import CloudEvent, registry
from crm_marketing.app import create_app
from crm_marketing.audience.sales_feed import AudienceFromSales
from crm_marketing.settings import MarketingSettings
from crm_runtime.consumer import ConsumedRecord, EventProcessor
from crm_runtime.context import ServiceContext
from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.scheduler import ManualClock
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller

ORIGIN = "https://shop.example.com"


@dataclass
class Mkb:
    client: httpx.AsyncClient
    ctx: ServiceContext
    catcher: MailCatcher
    clock: ManualClock
    marketer: ApiCaller
    admin: ApiCaller
    token: Callable[..., str]

    def caller(self, *roles: str, user: str = "u-other") -> ApiCaller:
        return ApiCaller(self.client, self.token(*roles, user=user))

    def feed(self) -> EventProcessor:
        return EventProcessor(self.ctx.pool, AudienceFromSales(self.ctx.store), no_letters)

    async def site(self, rate: int = 1000, origins: list[str] | None = None) -> str:
        r = await self.marketer.post(
            "/site-keys",
            json={
                "name": "shop",
                "allowed_origins": origins or [ORIGIN],
                "rate_limit_per_minute": rate,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["site_key_id"])

    async def form(self, key: str, **extra: Any) -> str:
        body = {
            "site_key_id": key,
            "name": "Newsletter",
            "fields": [
                {
                    "name": "email",
                    "label": "E-mail",
                    "type": "email",
                    "required": True,
                    "maps_to": "email",
                },
                {"name": "first_name", "label": "First name", "maps_to": "first_name"},
                {"name": "last_name", "label": "Last name", "maps_to": "last_name"},
                {"name": "country", "label": "Country", "maps_to": "country"},
                {"name": "message", "label": "Message", "type": "textarea", "max_length": 50},
            ],
            "consents": [
                {"field": "newsletter", "channel": "email", "label": "Send me the newsletter"},
                {"field": "texts", "channel": "sms", "label": "Text me offers"},
            ],
            **extra,
        }
        r = await self.marketer.post("/forms", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["form_id"])

    async def submit(
        self, key: str, form_id: str, body: dict[str, Any], origin: str = ORIGIN, **kw: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/public/forms/{form_id}/submissions",
            params={"key": key},
            json=body,
            headers={"Origin": origin, **kw.pop("headers", {})},
            **kw,
        )

    async def activity(
        self, key: str, visitor: str, events: list[dict[str, Any]], origin: str = ORIGIN
    ) -> httpx.Response:
        return await self.client.post(
            "/public/activity",
            params={"key": key},
            json={"visitor_id": visitor, "events": events},
            headers={"Origin": origin},
        )

    async def events_of(self, type_: str) -> list[dict[str, Any]]:
        import json

        rows = await self.ctx.pool.fetch(
            "SELECT subject, payload FROM events WHERE event_type = $1 ORDER BY position", type_
        )
        return [{"subject": r["subject"], **json.loads(r["payload"])} for r in rows]


async def no_letters(*_: Any) -> None:
    raise AssertionError("nothing here is poison")


@pytest.fixture
async def mkb(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Mkb]:
    async with MailCatcher(tmp_path / "mail") as catcher:
        url = await fresh_db("crm_runtime.people", "crm_marketing")
        settings = settings_for(
            "marketing",
            database_url=url,
            scheduler_enabled=False,
            consumers_enabled=False,
            smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            ctx: ServiceContext = app.state.ctx
            clock = ManualClock(datetime(2026, 5, 4, 10, 0, 10, tzinfo=UTC))
            ctx.extras["marketing_clock"] = clock
            ctx.extras["marketing_settings"] = MarketingSettings(
                public_base_url="https://crm.example.com",
                public_form_max_bytes=2048,
                public_activity_max_bytes=8192,
                activity_max_events=20,
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://marketing") as c:
                yield Mkb(
                    c,
                    ctx,
                    catcher,
                    clock,
                    ApiCaller(c, token("marketer", user="mia")),
                    ApiCaller(c, token("admin", user="root")),
                    token,
                )


def sales_event(
    type_: str, data: dict[str, Any], subject: str | None = None, version: int | None = None
) -> CloudEvent:
    """A real sales event (validated against its registered schema)."""
    v = version or registry.current_version(type_)
    registry.decode(type_, v, data)
    return CloudEvent(
        id=uuid.uuid4(),
        source="/crm/sales",
        type=type_,
        time=datetime.now(UTC),
        subject=subject,
        streamid=f"x-{uuid.uuid4()}",
        streamversion=1,
        schemaversion=v,
        data=data,
    )


def record(ce: CloudEvent, offset: int = 0) -> ConsumedRecord:
    k = ce.to_kafka()
    return ConsumedRecord("crm.sales.events", 0, offset, k.key, k.value, k.headers)
