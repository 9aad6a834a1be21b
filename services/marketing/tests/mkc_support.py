"""Helpers of the campaign / tracking / trigger tests (MK-C): the app beside a mail catcher that
bounces one domain, audience rows, templates and segments through their APIs."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from crm_marketing.app import create_app
from crm_marketing.delivery.settings import DeliverySettings, use_settings
from crm_runtime.context import ServiceContext
from crm_runtime.mailcatcher import CapturingHandler, MailCatcher
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller

BOUNCE_DOMAIN = "bounce.example"
BASE = "http://marketing.test"


class BouncingHandler(CapturingHandler):
    """The mail catcher, refusing every recipient at BOUNCE_DOMAIN with 550 (a hard bounce)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower().endswith("@" + BOUNCE_DOMAIN):
            return "550 5.1.1 <" + address + "> mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def quiet_free(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "public_base_url": BASE,
        "send_rate": 0,
        "frequency_cap": 0,
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "retry_seconds": 0,
    }
    values.update(overrides)
    return DeliverySettings(**values)


@dataclass
class Stack:
    client: httpx.AsyncClient
    catcher: MailCatcher
    ctx: ServiceContext
    marketer: ApiCaller
    database_url: str

    @property
    def pool(self) -> asyncpg.Pool:
        return self.ctx.pool

    def configure(self, **overrides: Any) -> DeliverySettings:
        cfg = quiet_free(**overrides)
        use_settings(self.ctx, cfg)
        return cfg


@pytest.fixture
async def stack(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Stack]:
    catcher = MailCatcher(tmp_path / "mail")
    catcher.handler = BouncingHandler(catcher.store)
    async with catcher:
        url = await fresh_db("crm_runtime.people", "crm_marketing")
        settings = settings_for(
            "marketing",
            database_url=url,
            scheduler_enabled=False,
            consumers_enabled=False,
            smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
            mail_from="news@shop.example",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            ctx: ServiceContext = app.state.ctx
            use_settings(ctx, quiet_free())
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                marketer = ApiCaller(client, token("marketer", user="mara"))
                yield Stack(client, catcher, ctx, marketer, url)


# --- audience rows (MK-B's tables, as agreed) -------------------------------------------------


async def add_people(
    pool: asyncpg.Pool,
    people: Iterable[dict[str, Any]],
) -> list[str]:
    """Profiles with consents: each dict has email/phone/first_name/timezone and `consents`
    (channel -> status). Returns the customer ids."""
    ids: list[str] = []
    profiles: list[tuple[Any, ...]] = []
    consents: list[tuple[Any, ...]] = []
    devices: list[tuple[Any, ...]] = []
    now = datetime.now(UTC)
    for p in people:
        cid = p.get("customer_id") or str(uuid.uuid4())
        ids.append(cid)
        profiles.append(
            (
                cid,
                p.get("email"),
                p.get("phone"),
                p.get("first_name"),
                p.get("timezone"),
                p.get("country"),
            )
        )
        for channel, status in (p.get("consents") or {}).items():
            # SMS consent names the number it was given for (digits and + only)
            number = re.sub(r"[^0-9+]", "", p.get("phone") or "") or None
            consents.append((cid, channel, status, now, number if channel == "sms" else None))
        if p.get("push_token"):
            devices.append((cid, p["push_token"], "ios", now))
    async with pool.acquire() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "profiles",
            records=profiles,
            columns=["customer_id", "email", "phone", "first_name", "timezone", "country"],
        )
        if consents:
            await conn.copy_records_to_table(
                "consents",
                records=consents,
                columns=["customer_id", "channel", "status", "changed_at", "address"],
            )
        if devices:
            await conn.copy_records_to_table(
                "push_devices",
                records=devices,
                columns=["customer_id", "token", "platform", "registered_at"],
            )
    return ids


async def enrol(ctx: ServiceContext, people: Iterable[dict[str, Any]]) -> list[str]:
    """Profiles and consents through the audience's own commands (events and all): e-mail
    consent by double opt-in (requested, then confirmed), SMS/push by opt-in, `withdrawn` after
    an opt-in. Slower than `add_people`; needed where the audience must know the profile."""
    from crm_marketing.audience.commands import AudienceCommands
    from crm_marketing.audience.consent_mail import LinkClaims
    from crm_runtime.eventstore import Metadata

    commands = AudienceCommands(ctx.store)
    meta = Metadata(actor="test")
    ids: list[str] = []
    for p in people:
        cid = p.get("customer_id") or str(uuid.uuid4())
        ids.append(cid)
        values = {k: p.get(k) for k in ("email", "phone", "first_name", "timezone") if p.get(k)}
        async with ctx.pool.acquire() as conn, conn.transaction():
            await commands.upsert_person(conn, cid, values, meta)
            for channel, status in (p.get("consents") or {}).items():
                if channel == "email":
                    request = await commands.request_email_consent(conn, cid, "test", meta)
                    if status in ("granted", "withdrawn") and request is not None:
                        claims = LinkClaims(cid, request, datetime.now(UTC))
                        await commands.confirm_email_consent(conn, claims, meta)
                else:
                    await commands.opt_in(conn, cid, channel, "test", meta)
                if status == "withdrawn":
                    await commands.withdraw(conn, cid, channel, "test", "test", meta)
            if p.get("push_token"):
                await commands.register_device(conn, cid, p["push_token"], "ios", meta)
    return ids


# --- templates and segments (MK-A's APIs) -----------------------------------------------------

EMAIL_TEMPLATE = {
    "subject": "Hello {{ first_name }}",
    "html": (
        "<html><body><p>Hi {{ first_name }}, new phones are in.</p>"
        '<p><a href="https://shop.example/phones?utm=spring">See the phones</a></p>'
        '<p><a href="https://shop.example/help">Help</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    ),
    "text": "Hi {{ first_name }}, see https://shop.example/phones?utm=spring\n"
    "Unsubscribe: {{ unsubscribe_url }}\n",
}


async def email_template(marketer: ApiCaller, content: dict[str, str] | None = None) -> str:
    r = await marketer.post(
        "/templates",
        json={
            "name": f"Spring {uuid.uuid4().hex[:8]}",
            "channel": "email",
            "content": content or EMAIL_TEMPLATE,
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def template(marketer: ApiCaller, channel: str, content: dict[str, str]) -> str:
    r = await marketer.post(
        "/templates",
        json={"name": f"{channel} {uuid.uuid4().hex[:8]}", "channel": channel, "content": content},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def static_segment(marketer: ApiCaller, customer_ids: list[str]) -> str:
    r = await marketer.post(
        "/segments", json={"name": f"Everyone {uuid.uuid4().hex[:8]}", "kind": "static"}
    )
    assert r.status_code == 201, r.text
    segment_id = str(r.json()["id"])
    for i in range(0, len(customer_ids), 10_000):
        added = await marketer.post(
            f"/segments/{segment_id}/members", json={"customer_ids": customer_ids[i : i + 10_000]}
        )
        assert added.status_code == 200, added.text
    return segment_id


async def campaign(
    marketer: ApiCaller, template_id: str, segment_id: str, channel: str = "email"
) -> str:
    r = await marketer.post(
        "/campaigns",
        json={
            "name": "Spring phones",
            "template_id": template_id,
            "segment_id": segment_id,
            "channel": channel,
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --- reading mail back --------------------------------------------------------------------------

_TRACKED = re.compile(r"http://marketing\.test(/t/[couv]/[A-Za-z0-9_-]+(?:\.gif)?)")


def tracking_paths(text: str) -> list[str]:
    """The tracking paths in a message body, in order (clicks, the pixel, unsubscribe)."""
    return [m.group(1) for m in _TRACKED.finditer(text)]


def header(mail: Any, name: str) -> str | None:
    for h in mail.headers:
        if h.name.lower() == name.lower():
            return str(h.value)
    return None
