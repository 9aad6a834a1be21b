"""Sales answers the people marketing and the service desk meet (docs/identity.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import httpx
import pytest

from crm_events import CloudEvent
from crm_runtime.consumer import ConsumedRecord, EventProcessor, Outcome
from crm_runtime.context import ServiceContext
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_sales.app import create_app
from crm_sales.application.identity import IdentityDesk

pytestmark = pytest.mark.integration


def sighting(context: str, email: str, sighted_as: str, **extra: Any) -> CloudEvent:
    cid = str(uuid.uuid4())
    return CloudEvent(
        id=uuid.uuid4(),
        source=f"/crm/{context}",
        type=f"crm.{'service' if context == 'service-desk' else context}.person.sighted",
        time="2026-11-01T10:00:00Z",  # type: ignore[arg-type]
        subject=cid,
        streamid=f"person-{cid}",
        streamversion=1,
        schemaversion=1,
        data={"customer_id": cid, "email": email, "sighted_as": sighted_as, **extra},
    )


def record(ce: CloudEvent, offset: int) -> ConsumedRecord:
    k = ce.to_kafka()
    return ConsumedRecord("crm.marketing.events", 0, offset, k.key, k.value, k.headers)


async def no_letters(*_: Any) -> None:
    raise AssertionError("nothing here is poison")


@pytest.fixture
async def app_ctx(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings], token: Callable[..., str]
) -> AsyncIterator[tuple[ApiCaller, ServiceContext, EventProcessor]]:
    url = await fresh_db("crm_sales")
    app = create_app(
        settings_for("sales", database_url=url, scheduler_enabled=False, consumers_enabled=False)
    )
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sales") as c:
            admin = ApiCaller(c, token("admin", user="boss"))
            app.state.manager = ApiCaller(c, token("sales_manager", user="mgr"))
            ctx.extras["manager"] = app.state.manager
            yield admin, ctx, EventProcessor(ctx.pool, IdentityDesk(ctx.store), no_letters)


async def test_a_prospect_nobody_knows_becomes_a_web_lead_with_the_provisional_id(
    app_ctx: tuple[ApiCaller, ServiceContext, EventProcessor],
) -> None:
    admin, _ctx, desk = app_ctx
    seen = sighting(
        "marketing",
        "Ada@Example.com",
        "prospect",
        first_name="Ada",
        last_name="Lovelace",
        company="Engines Ltd",
        source_detail="form-demo",
        attribution={"utm_source": "ads", "utm_campaign": "spring"},
    )
    # delivered twice: one lead
    assert await desk.process_batch([record(seen, 0), record(seen, 1)]) == [
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    leads = (await admin.get("/leads")).json()["items"]
    assert len(leads) == 1
    lead = leads[0]
    assert lead["customer_id"] == seen.data["customer_id"]
    assert (lead["email"], lead["source"], lead["name"]) == (
        "ada@example.com",
        "web_form",
        "Ada Lovelace",
    )
    history = (await admin.get(f"/leads/{lead['id']}/history")).json()
    full = (await admin.get(f"/leads/{lead['id']}")).json()
    assert full["attribution"] == {"utm_source": "ads", "utm_campaign": "spring"}
    captured = history[0] if isinstance(history, list) else history["items"][0]
    assert captured["data"]["source_detail"] == "form-demo"
    assert captured["data"]["attribution"] == {"utm_source": "ads", "utm_campaign": "spring"}


async def test_a_known_address_is_identified_not_duplicated(
    app_ctx: tuple[ApiCaller, ServiceContext, EventProcessor],
) -> None:
    admin, ctx, desk = app_ctx
    contact = (
        await admin.post("/contacts", json={"last_name": "Byron", "emails": ["ada@example.com"]})
    ).json()
    lead = (
        await admin.post(
            "/leads", json={"name": "Bea", "email": "bea@example.com", "source": "referral"}
        )
    ).json()
    by_contact = sighting("service-desk", "ADA@example.com", "customer")
    by_lead = sighting("marketing", "bea@example.com", "prospect")
    await desk.process_batch([record(by_contact, 0), record(by_lead, 1)])
    rows = await ctx.pool.fetch(
        "SELECT subject, payload FROM events WHERE event_type = 'crm.sales.customer.identified'"
        " ORDER BY position"
    )
    got = [(r["subject"], json.loads(r["payload"])) for r in rows]
    assert got[0][0] == contact["customer_id"]
    assert got[0][1]["alias_id"] == by_contact.data["customer_id"]
    assert (got[0][1]["sighted_in"], got[0][1]["matched_by"]) == ("service", "contact_email")
    assert got[1][0] == lead["customer_id"]
    assert (got[1][1]["alias_id"], got[1][1]["matched_by"]) == (
        by_lead.data["customer_id"],
        "lead_email",
    )
    # nothing new was created for either
    assert len((await admin.get("/leads")).json()["items"]) == 1
    assert len((await admin.get("/contacts")).json()["items"]) == 1


async def test_a_support_requester_nobody_knows_becomes_a_contact(
    app_ctx: tuple[ApiCaller, ServiceContext, EventProcessor],
) -> None:
    admin, ctx, desk = app_ctx
    seen = sighting("service-desk", "carol@example.com", "customer", first_name="Carol")
    await desk.process_batch([record(seen, 0)])
    [contact] = (await admin.get("/contacts")).json()["items"]
    # nobody owns it yet: the managers see it in their lists, to hand it out
    manager: ApiCaller = ctx.extras["manager"]  # type: ignore[assignment]
    assert [c["id"] for c in (await manager.get("/contacts")).json()["items"]] == [contact["id"]]
    assert contact["customer_id"] == seen.data["customer_id"]
    full = (await admin.get(f"/contacts/{contact['id']}")).json()
    assert full["emails"] == ["carol@example.com"]
    assert full["last_name"] == "Carol"
    assert (await admin.get("/leads")).json()["items"] == []


async def test_a_breach_on_a_top_tier_customer_becomes_a_task_for_the_account_owner(
    app_ctx: tuple[ApiCaller, ServiceContext, EventProcessor],
) -> None:
    admin, _, desk = app_ctx
    account = (
        await admin.post("/accounts", json={"name": "Big Co", "tier": "top", "owner_id": "olga"})
    ).json()
    contact = (
        await admin.post(
            "/contacts",
            json={"last_name": "Buyer", "emails": ["b@big.co"], "account_id": account["id"]},
        )
    ).json()
    example = json.loads(
        (
            resources.files("crm_events") / "examples" / "crm.service.ticket.escalated" / "v1.json"
        ).read_text()
    )
    data = {
        **example,
        "ticket_id": "T-1",
        "customer_id": contact["customer_id"],
        "rule_kind": "sla_breach",
        "customer_tier": "top",
    }
    ce = CloudEvent(
        id=uuid.uuid4(),
        source="/crm/service-desk",
        type="crm.service.ticket.escalated",
        time="2026-11-01T10:00:00Z",  # type: ignore[arg-type]
        subject=contact["customer_id"],
        streamid="escalation-T-1",
        streamversion=1,
        schemaversion=1,
        data=data,
    )
    await desk.process_batch([record(ce, 0), record(ce, 1)])  # redelivered: one task
    olga = (await admin.get("/tasks", params={"assignee_id": "olga"})).json()["items"]
    assert len(olga) == 1
    assert olga[0]["priority"] == "high" and "T-1" in olga[0]["title"]
