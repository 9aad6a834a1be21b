"""Review findings 2, 5, 6, 7 of the marketing service: campaigns check their segment and
template and never block the starter loop; naive times are refused; a message keeps the template
revision it was sent with; pausing a trigger drops its delayed messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from mkc_support import (
    EMAIL_TEMPLATE,
    Stack,
    add_people,
    campaign,
    email_template,
    static_segment,
    template,
    tracking_paths,
)
from mkc_support import stack as stack

from crm_events.schemas.marketing_campaigns import TriggerRule
from crm_marketing.campaigns import views
from crm_marketing.campaigns.domain import Campaign
from crm_marketing.jobs import jobs_for
from crm_marketing.triggers import application as triggers
from crm_runtime.eventstore import Metadata
from crm_runtime.repository import Repository


async def test_a_campaign_needs_an_active_segment_and_a_template_of_its_channel(
    stack: Stack,
) -> None:
    m = stack.marketer
    tpl = await email_template(m)
    sms = await template(stack.marketer, "sms", {"text": "Hi {{ first_name }}"})
    seg = await static_segment(m, await add_people(stack.pool, [{"email": "a@example.com"}]))
    body = {"name": "Spring", "template_id": tpl, "segment_id": seg, "channel": "email"}

    for bad, field in (
        ({**body, "segment_id": "no-such-segment"}, "segment_id"),
        ({**body, "template_id": "no-such-template"}, "template_id"),
        ({**body, "template_id": sms}, "template_id"),
    ):
        r = await m.post("/campaigns", json=bad)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
    assert (await m.get("/campaigns")).json()["items"] == []  # nothing was drafted

    # an archived segment cannot be used; one a campaign is scheduled for cannot be archived
    cid = await campaign(m, tpl, seg)
    assert (await m.post(f"/campaigns/{cid}/schedule", json={})).status_code == 200
    refused = await m.post(f"/segments/{seg}/archive")
    assert refused.status_code == 409 and cid in refused.json()["detail"], refused.text
    assert (await m.get(f"/segments/{seg}")).json()["status"] == "active"
    assert (await m.post(f"/campaigns/{cid}/cancel", json={})).status_code == 200
    assert (await m.post(f"/segments/{seg}/archive")).status_code == 200
    archived = await m.post("/campaigns", json=body)
    assert archived.status_code == 409 and "archived" in archived.text

    # the template is checked again when scheduling: archived in between -> 409
    seg2 = await static_segment(m, await add_people(stack.pool, [{"email": "b@example.com"}]))
    draft = await campaign(m, tpl, seg2)
    assert (await m.post(f"/templates/{tpl}/archive")).status_code == 200
    late = await m.post(f"/campaigns/{draft}/schedule", json={})
    assert late.status_code == 409 and "template" in late.text
    assert (await m.get(f"/campaigns/{draft}")).json()["status"] == "draft"


async def test_a_campaign_that_cannot_start_is_cancelled_and_the_next_one_starts(
    stack: Stack,
) -> None:
    m = stack.marketer
    people = [{"email": "c@example.com", "first_name": "Cy", "consents": {"email": "granted"}}]
    ids = await add_people(stack.pool, people)
    tpl = await email_template(m)
    seg = await static_segment(m, ids)
    now = datetime.now(UTC)

    # A campaign from before the checks: its template never existed, due first.
    repo = Repository(stack.ctx.store, Campaign)
    broken = Campaign.create(
        "legacy-1", name="Legacy", template_id="tpl-gone", segment_id=seg, channel="email"
    )
    broken.schedule(now - timedelta(minutes=5))
    async with stack.pool.acquire() as conn, conn.transaction():
        await repo.save(conn, broken, Metadata(actor="test"))
        await views.upsert(conn, broken, now, created_by="test")
    good = await campaign(m, tpl, seg)
    await m.post(f"/campaigns/{good}/schedule", json={})

    start = jobs_for(stack.ctx)["campaigns.start"]
    assert await start(stack.pool, now + timedelta(seconds=1)) == 1
    assert (await m.get(f"/campaigns/{good}")).json()["status"] == "sending"
    assert (await m.get("/campaigns/legacy-1")).json()["status"] == "cancelled"
    history = (await m.get("/campaigns/legacy-1/history")).json()
    assert history[-1]["type"] == "crm.marketing.campaign.cancelled"
    assert "tpl-gone" in history[-1]["data"]["reason"]
    assert await start(stack.pool, now + timedelta(seconds=2)) == 0  # nothing left over


async def test_times_without_a_zone_are_refused_naming_the_field(stack: Stack) -> None:
    m = stack.marketer
    seg = await static_segment(m, await add_people(stack.pool, [{"email": "d@example.com"}]))
    cid = await campaign(m, await email_template(m), seg)
    naive = await m.post(f"/campaigns/{cid}/schedule", json={"send_at": "2030-04-01T09:00:00"})
    assert naive.status_code == 422 and "send_at" in naive.text, naive.text
    assert (await m.get(f"/campaigns/{cid}")).json()["status"] == "draft"
    as_of = await m.get(f"/campaigns/{cid}", params={"as_of": "2030-04-01T09:00:00"})
    assert as_of.status_code == 422 and "as_of" in as_of.text
    aware = await m.post(f"/campaigns/{cid}/schedule", json={"send_at": "2030-04-01T09:00:00Z"})
    assert aware.status_code == 200


async def test_a_message_is_rendered_with_the_template_revision_of_its_campaign(
    stack: Stack,
) -> None:
    m = stack.marketer
    content = {
        **EMAIL_TEMPLATE,
        "html": "<p>Old news for {{ first_name }}</p><a href='{{ view_in_browser_url }}'>View</a>",
        "text": "Old news for {{ first_name }}",
    }
    tpl = await email_template(m, content)
    people = [{"email": "e@example.com", "first_name": "Eve", "consents": {"email": "granted"}}]
    cid = await campaign(m, tpl, await static_segment(m, await add_people(stack.pool, people)))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    jobs = jobs_for(stack.ctx)
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert await jobs["campaigns.start"](stack.pool, now) == 1

    # revised after the campaign started, before its mail went out
    revised = await m.patch(
        f"/templates/{tpl}",
        json={"content": {**content, "html": "<p>New news</p>", "text": "New news"}},
    )
    assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text
    assert await jobs["messages.deliver"](stack.pool, now) == 1
    [mail] = stack.catcher.store.list()
    html = stack.catcher.store.get(mail.id).html or ""
    assert "Old news for Eve" in html and "New news" not in html
    revision = await stack.pool.fetchval(
        "SELECT template_revision FROM messages WHERE campaign_id = $1", cid
    )
    assert revision == 1

    # "view in browser" shows what was sent, not the newer revision
    [view] = [p for p in tracking_paths(html) if p.startswith("/t/v/")]
    page = await stack.client.get(view)
    assert page.status_code == 200 and "Old news for Eve" in page.text
    assert "New news" not in page.text


async def test_pausing_a_trigger_drops_its_delayed_messages(stack: Stack) -> None:
    m = stack.marketer
    tpl = await email_template(m)
    [cid] = await add_people(
        stack.pool,
        [{"email": "f@example.com", "first_name": "Fay", "consents": {"email": "granted"}}],
    )
    rule = {
        "category": "phones",
        "min_views": 3,
        "within_seconds": 7 * 86400,
        "template_id": tpl,
        "channel": "email",
        "delay_seconds": 3600,
    }
    created = await m.post("/triggers", json={"name": "Phones", "rule": rule})
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    now = datetime.now(UTC)
    async with stack.pool.acquire() as conn, conn.transaction():  # it fired: a delayed message
        await triggers._start(conn, stack.ctx.store, tid, TriggerRule(**rule), cid, 3, True, now)
    message_id, revision = await stack.pool.fetchrow(
        "SELECT message_id, template_revision FROM messages WHERE trigger_id = $1", tid
    )
    assert revision == 1

    assert (await m.post(f"/triggers/{tid}/pause")).status_code == 200
    row = await stack.pool.fetchrow(
        "SELECT status, skip_reason, version FROM messages WHERE message_id = $1", message_id
    )
    assert (row["status"], row["skip_reason"], row["version"]) == ("skipped", "cancelled", 1)
    events = await stack.pool.fetch(
        "SELECT event_type, payload, subject FROM events WHERE stream_id = $1 ORDER BY version",
        f"message-{message_id}",
    )
    assert [e["event_type"] for e in events] == ["crm.marketing.message.skipped"]
    payload = events[0]["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["reason"] == "cancelled" and payload["trigger_id"] == tid
    assert events[0]["subject"] == cid

    # nothing goes out when its time comes
    assert await jobs_for(stack.ctx)["messages.deliver"](stack.pool, now + timedelta(hours=2)) == 0
    assert stack.catcher.store.list() == []
