"""Event-based triggers: the API, and (issue 4, integration b at service level) anonymous
browsing, then identification, then the trigger fires and the e-mail arrives over SMTP."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from mkb_support import Mkb, mkb  # noqa: F401
from mkc_support import Stack, quiet_free
from mkc_support import stack as stack

from crm_events.schemas.marketing import PurchaseRecorded
from crm_marketing.delivery.messages import new_event
from crm_marketing.delivery.settings import use_settings
from crm_marketing.jobs import jobs_for
from crm_runtime.eventstore import Metadata
from crm_runtime.scheduler import Scheduler
from crm_runtime.testing import ApiCaller

VISITOR = "v-5c1d2e3f4a5b"


def rule(template_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "category": "phones",
        "min_views": 3,
        "within_seconds": 7 * 86400,
        "template_id": template_id,
        "channel": "email",
        "delay_seconds": 3600,
        **overrides,
    }


async def test_trigger_api(stack: Stack, token: Callable[..., str]) -> None:
    m = stack.marketer
    analyst = ApiCaller(stack.client, token("analyst", user="ann"))
    body = {"name": "Phone browsers", "rule": rule("tpl-1")}
    assert (await analyst.post("/triggers", json=body)).status_code == 403
    for bad, field in (
        ({**body, "rule": rule("tpl-1", min_views=0)}, "min_views"),
        ({**body, "rule": rule("tpl-1", channel="fax")}, "channel"),
        ({**body, "rule": rule("tpl-1", within_seconds=5)}, "within_seconds"),
        ({"name": "", "rule": rule("tpl-1")}, "name"),
    ):
        r = await m.post("/triggers", json=bad)
        assert r.status_code == 422 and field in r.text, r.text
    created = await m.post("/triggers", json=body, headers={"Idempotency-Key": "t1"})
    assert created.status_code == 201 and created.json()["active"] is True
    replay = await m.post("/triggers", json=body, headers={"Idempotency-Key": "t1"})
    tid = created.json()["id"]
    assert replay.json()["id"] == tid

    changed = await m.put(
        f"/triggers/{tid}",
        json={"name": "Phone fans", "rule": rule("tpl-1", min_views=4)},
        headers={"If-Match": '"1"'},
    )
    assert changed.status_code == 200 and changed.json()["rule"]["min_views"] == 4
    stale = await m.put(f"/triggers/{tid}", json=body, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert (await m.post(f"/triggers/{tid}/pause")).json()["active"] is False
    assert (await m.post(f"/triggers/{tid}/pause")).status_code == 409
    assert (await m.post(f"/triggers/{tid}/resume")).json()["active"] is True
    assert (await m.get("/triggers", params={"active": False})).json()["items"] == []
    assert [t["id"] for t in (await m.get("/triggers")).json()["items"]] == [tid]
    history = (await m.get(f"/triggers/{tid}/history")).json()
    assert [h["type"].rsplit(".", 1)[1] for h in history] == [
        "defined",
        "changed",
        "paused",
        "resumed",
    ]
    first = (await m.get(f"/triggers/{tid}", params={"as_of": history[0]["recorded_at"]})).json()
    assert first["name"] == "Phone browsers" and first["rule"]["min_views"] == 3
    assert (await m.get("/triggers/trg-nope")).status_code == 404
    assert (await m.get(f"/triggers/{tid}/episodes")).json()["items"] == []


def _confirm_link(mkb: Mkb) -> str:  # noqa: F811
    mail = mkb.catcher.store.get(mkb.catcher.store.list()[0].id)
    found = re.search(
        r"https://crm\.example\.com/public/consent/confirm\?token=(\S+)", mail.text or ""
    )
    assert found, mail.text
    return found.group(1)


@pytest.mark.integration
async def test_browsing_then_identification_fires_the_trigger_once_per_episode(
    mkb: Mkb,  # noqa: F811
) -> None:
    use_settings(mkb.ctx, quiet_free(public_base_url="https://crm.example.com"))
    m = mkb.marketer
    tpl = await m.post(
        "/templates",
        json={
            "name": "Still thinking about phones?",
            "channel": "email",
            "content": {
                "subject": "{{ first_name }}, still looking for a phone?",
                "html": "<p>Hi {{ first_name }}</p><a href='https://shop.example.com/phones'>"
                "Phones</a> <a href='{{ unsubscribe_url }}'>Unsubscribe</a>",
            },
        },
    )
    assert tpl.status_code == 201, tpl.text
    trigger = await m.post("/triggers", json={"name": "Phones", "rule": rule(tpl.json()["id"])})
    tid = trigger.json()["id"]
    scheduler = Scheduler(mkb.ctx.pool, jobs_for(mkb.ctx), mkb.clock)

    # 1. an anonymous visitor looks at phones three times: nobody to write to yet
    key = await mkb.site()
    views = [
        {"type": "product_view", "product_id": f"p-{i}", "category": "phones"} for i in range(3)
    ]
    assert (await mkb.activity(key, VISITOR, views)).status_code == 202
    assert (await scheduler.tick())["triggers.process"] == 0

    # 2. the visitor signs up (the form identifies them) and confirms the newsletter
    form_id = await mkb.form(key)
    signed_up = await mkb.submit(
        key,
        form_id,
        {
            "email": "ada@example.com",
            "first_name": "Ada",
            "newsletter": True,
            "visitor_id": VISITOR,
        },
    )
    assert signed_up.status_code == 202
    confirmed = await mkb.client.post("/public/consent/confirm", data={"token": _confirm_link(mkb)})
    assert confirmed.status_code == 200
    mkb.catcher.store.clear()
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")

    # 3. the earlier views joined the customer: the trigger fires, the mail waits for the delay
    done = await scheduler.tick()
    assert done["triggers.process"] == 1 and done["messages.deliver"] == 0
    episodes = (await m.get(f"/triggers/{tid}/episodes")).json()["items"]
    assert [(e["customer_id"], e["fired"], e["ended_at"]) for e in episodes] == [(cid, True, None)]
    assert mkb.catcher.store.list() == []
    mkb.clock.advance(minutes=59)
    await scheduler.tick()
    assert mkb.catcher.store.list() == []
    mkb.clock.advance(minutes=2)
    assert (await scheduler.tick())["messages.deliver"] == 1
    [mail] = mkb.catcher.store.list()
    assert (
        mail.rcpt_tos == ["ada@example.com"] and mail.subject == "Ada, still looking for a phone?"
    )
    html = mkb.catcher.store.get(mail.id).html or ""
    assert "https://crm.example.com/t/c/" in html and "https://shop.example.com" not in html

    # more views in the same episode fire nothing
    await mkb.activity(key, VISITOR, views[:2])
    assert (await scheduler.tick())["triggers.process"] == 0
    async with mkb.ctx.pool.acquire() as conn:
        fired = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'crm.marketing.trigger.fired'"
        )
        assert fired == 1
        assert (
            await conn.fetchval(
                "SELECT subject FROM events WHERE event_type = 'crm.marketing.trigger.fired'"
            )
            == cid
        )

    # 4. a week later the views aged out: the episode ends; new interest is a new episode
    mkb.clock.advance(days=8)
    assert (await scheduler.tick())["triggers.expire"] == 1
    assert (await mkb.activity(key, VISITOR, views)).status_code == 202
    assert (await scheduler.tick())["triggers.process"] == 1
    episodes = (await m.get(f"/triggers/{tid}/episodes")).json()["items"]
    assert [e["end_reason"] for e in episodes] == [None, "below_threshold"]

    # 5. ... but the customer buys a phone before the delayed mail goes out: no mail
    purchase = PurchaseRecorded(
        customer_id=cid,
        purchase_id=f"deal:{uuid.uuid4()}:1",
        source="deal",
        source_id="d-1",
        product_id="p-1",
        category="phones",
        occurred_at=mkb.clock.now(),
    )
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO purchases (purchase_id, customer_id, product_id, category, occurred_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            purchase.purchase_id,
            cid,
            "p-1",
            "phones",
            purchase.occurred_at,
        )
        await mkb.ctx.store.append(
            conn,
            f"purchase-{purchase.purchase_id}",
            "purchase",
            0,
            [new_event(purchase, cid)],
            Metadata(actor="test"),
        )
    mkb.clock.advance(hours=2)
    done = await scheduler.tick()
    assert done["triggers.process"] == 1 and done["messages.deliver"] == 0
    episodes = (await m.get(f"/triggers/{tid}/episodes")).json()["items"]
    assert episodes[0]["end_reason"] == "purchased"
    assert len(mkb.catcher.store.list()) == 1
    async with mkb.ctx.pool.acquire() as conn:
        skipped = await conn.fetchval(
            "SELECT skip_reason FROM messages WHERE message_id = $1::uuid",
            episodes[0]["message_id"],
        )
    assert skipped == "no_longer_qualifies"
