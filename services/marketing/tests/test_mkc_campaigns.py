"""Campaigns over the API on real PostgreSQL, mail through a real SMTP server (the catcher)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mkc_support import (
    BOUNCE_DOMAIN,
    Stack,
    add_people,
    campaign,
    email_template,
    header,
    static_segment,
    template,
    tracking_paths,
)
from mkc_support import stack as stack

from crm_marketing.delivery.sender import Deliverer
from crm_marketing.delivery.settings import delivery_settings
from crm_marketing.jobs import jobs_for
from crm_runtime.scheduler import ManualClock, Scheduler
from crm_runtime.testing import ApiCaller


def scheduler(s: Stack, start: datetime | None = None) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock(start or datetime.now(UTC))
    return Scheduler(s.pool, jobs_for(s.ctx), clock), clock


async def test_campaign_lifecycle_permissions_and_bad_input(
    stack: Stack, token: Callable[..., str]
) -> None:
    m = stack.marketer
    analyst = ApiCaller(stack.client, token("analyst", user="ann"))
    agent = ApiCaller(stack.client, token("service_agent", user="sam"))
    tpl = await email_template(m)
    seg = await static_segment(m, await add_people(stack.pool, [{"email": "a@example.com"}]))
    body = {"name": "Spring", "template_id": tpl, "segment_id": seg, "channel": "email"}

    assert (await analyst.post("/campaigns", json=body)).status_code == 403
    bad = await m.post("/campaigns", json={**body, "channel": "fax"})
    assert bad.status_code == 422 and "channel" in bad.text
    first = await m.post("/campaigns", json=body, headers={"Idempotency-Key": "k1"})
    again = await m.post("/campaigns", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    cid = first.json()["id"]
    assert first.json()["status"] == "draft" and first.headers["ETag"] == '"1"'

    # every role reads campaigns and results; only marketers change them
    assert (await agent.get(f"/campaigns/{cid}")).status_code == 200
    assert (await agent.get(f"/campaigns/{cid}/results")).json()["recipients"] == 0
    assert (await agent.post(f"/campaigns/{cid}/schedule", json={})).status_code == 403
    assert (await agent.get(f"/campaigns/{cid}/recipients")).status_code == 403
    assert (await analyst.get("/triggers")).status_code == 403
    assert (await analyst.get("/delivery/outbox")).status_code == 403

    # a time in the past is refused (a typo in the year would send at once), nothing changes
    past = await m.post(f"/campaigns/{cid}/schedule", json={"send_at": "2020-01-01T09:00:00Z"})
    assert past.status_code == 422
    assert [e["field"] for e in past.json()["errors"]] == ["send_at"]
    assert (await m.get(f"/campaigns/{cid}")).json()["status"] == "draft"

    later = datetime.now(UTC) + timedelta(days=2)
    stale = await m.post(
        f"/campaigns/{cid}/schedule",
        json={"send_at": later.isoformat()},
        headers={"If-Match": '"7"'},
    )
    assert stale.status_code == 412
    scheduled = await m.post(
        f"/campaigns/{cid}/schedule",
        json={"send_at": later.isoformat()},
        headers={"If-Match": '"1"'},
    )
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    naive = await m.post(f"/campaigns/{cid}/schedule", json={"send_at": "tomorrow"})
    assert naive.status_code == 422 and "send_at" in naive.text
    edge = await m.post(f"/campaigns/{cid}/schedule", json={"send_at": "9999-12-31T23:59:59-12:00"})
    assert edge.status_code == 422
    assert [(e["field"], "out of range" in e["reason"]) for e in edge.json()["errors"]] == [
        ("send_at", True)
    ]

    listed = (await analyst.get("/campaigns", params={"status": "scheduled"})).json()
    assert [c["id"] for c in listed["items"]] == [cid]
    assert (await analyst.get("/campaigns", params={"status": "sent"})).json()["items"] == []
    assert (await m.get("/campaigns", params={"cursor": "nonsense!"})).status_code == 422

    cancelled = await m.post(f"/campaigns/{cid}/cancel", json={"reason": "wrong week"})
    assert cancelled.json()["status"] == "cancelled"
    assert (await m.post(f"/campaigns/{cid}/cancel", json={})).status_code == 409
    assert (await m.post(f"/campaigns/{cid}/schedule", json={})).status_code == 409
    history = (await m.get(f"/campaigns/{cid}/history")).json()
    assert [h["type"] for h in history] == [
        "crm.marketing.campaign.created",
        "crm.marketing.campaign.scheduled",
        "crm.marketing.campaign.cancelled",
    ]
    before = datetime.fromisoformat(history[1]["recorded_at"]) + timedelta(microseconds=1)
    past = (await m.get(f"/campaigns/{cid}", params={"as_of": before.isoformat()})).json()
    assert past["status"] == "scheduled" and past["version"] == 2
    assert (await m.get("/campaigns/nope")).status_code == 404

    # a cancelled campaign never sends, even once its time comes
    sched, clock = scheduler(stack)
    clock.advance(days=3)
    done = await sched.tick()
    assert done["campaigns.start"] == 0 and stack.catcher.store.list() == []
    # no body at all schedules now, as an empty one does
    other = (await m.post("/campaigns", json={**body, "name": "Summer"})).json()["id"]
    now_ = await m.post(f"/campaigns/{other}/schedule")
    assert now_.status_code == 200, now_.text
    assert now_.json()["status"] == "scheduled"


async def test_a_campaign_reaches_only_consenting_members_and_records_every_status(
    stack: Stack,
) -> None:
    m = stack.marketer
    people = [
        {"email": "ada@example.com", "first_name": "Ada", "consents": {"email": "granted"}},
        {"email": "bob@example.com", "first_name": "Bob", "consents": {"email": "pending"}},
        {"email": "cy@example.com", "first_name": "Cy", "consents": {"email": "withdrawn"}},
        {"email": None, "first_name": "Dee", "consents": {"email": "granted"}},
        {"email": "eve@example.com", "first_name": "Eve"},
        {"email": f"gone@{BOUNCE_DOMAIN}", "first_name": "Gus", "consents": {"email": "granted"}},
    ]
    ids = await add_people(stack.pool, people)
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    assert (await m.post(f"/campaigns/{cid}/schedule", json={})).json()["status"] == "scheduled"

    sched, clock = scheduler(stack)
    clock.advance(seconds=1)
    done = await sched.tick()
    assert done["campaigns.start"] == 1 and done["messages.deliver"] == 2
    assert done["campaigns.complete"] == 1

    mails = stack.catcher.store.list()
    assert [x.rcpt_tos for x in mails] == [["ada@example.com"]]
    mail = stack.catcher.store.get(mails[0].id)
    assert mail.subject == "Hello Ada" and mail.mail_from == "news@shop.example"
    message_id = header(mail, "Message-ID")
    assert message_id and message_id.endswith("@shop.example>")
    unsubscribe = header(mail, "List-Unsubscribe")
    assert unsubscribe and "/t/u/" in unsubscribe
    assert header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    html = mail.html or ""
    assert "https://shop.example/phones" not in html  # every link goes through the redirect
    paths = tracking_paths(html)
    assert [p[:5] for p in paths] == ["/t/c/", "/t/c/", "/t/u/", "/t/o/"]
    assert "/t/c/" in (mail.text or "") and "https://shop.example" not in (mail.text or "")

    results = (await m.get(f"/campaigns/{cid}/results")).json()
    assert results["status"] == "sent"
    assert results["recipients"] == 6 and results["sent"] == 2 and results["bounced"] == 1
    assert results["skipped"] == {"no_consent": 2, "consent_withdrawn": 1, "no_contact_point": 1}
    assert results["open_rate"] == 0.0

    recipients = (await m.get(f"/campaigns/{cid}/recipients", params={"limit": 2})).json()
    assert len(recipients["items"]) == 2 and recipients["next_cursor"]
    rest = (
        await m.get(f"/campaigns/{cid}/recipients", params={"cursor": recipients["next_cursor"]})
    ).json()
    assert len(rest["items"]) == 4 and rest["next_cursor"] is None
    bounced = (await m.get(f"/campaigns/{cid}/recipients", params={"status": "bounced"})).json()
    assert [r["customer_id"] for r in bounced["items"]] == [ids[5]]
    assert "@" not in str(bounced)  # no addresses in the API's recipient list

    async with stack.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT event_type, subject, payload::text AS data FROM events"
            " WHERE stream_type = 'message' ORDER BY position"
        )
    kinds = sorted((e["event_type"].rsplit(".", 1)[1], e["subject"]) for e in events)
    assert ("sent", ids[0]) in kinds and ("bounced", ids[5]) in kinds
    assert sum(1 for k, _ in kinds if k == "skipped") == 4
    addresses = [p["email"] for p in people if p["email"]]
    assert not any(a in e["data"] for e in events for a in addresses)  # no address in events
    campaign_events = [h["type"] for h in (await m.get(f"/campaigns/{cid}/history")).json()]
    assert campaign_events[-2:] == [
        "crm.marketing.campaign.sending_started",
        "crm.marketing.campaign.sent",
    ]

    # nothing is sent twice: more ticks change nothing
    clock.advance(minutes=5)
    await sched.tick()
    assert len(stack.catcher.store.list()) == 1


async def test_quiet_hours_defer_and_the_frequency_cap_skips(stack: Stack) -> None:
    m = stack.marketer
    # 21:00-08:00 quiet; the clock at 22:00 UTC: Tokyo is at 07:00 (quiet), London at 22:00
    # (quiet), Los Angeles at 14:00 or 15:00 (fine).
    stack.configure(
        quiet_hours_start="21:00",
        quiet_hours_end="08:00",
        frequency_cap=1,
        frequency_window_hours=24,
    )
    people = [
        {
            "email": "la@example.com",
            "timezone": "America/Los_Angeles",
            "consents": {"email": "granted"},
        },
        {"email": "tokyo@example.com", "timezone": "Asia/Tokyo", "consents": {"email": "granted"}},
        {"email": "ldn@example.com", "timezone": None, "consents": {"email": "granted"}},
    ]
    la, tokyo, london = await add_people(stack.pool, people)
    tpl = await email_template(m)
    seg = await static_segment(m, [la, tokyo, london])
    first = await campaign(m, tpl, seg)
    await m.post(f"/campaigns/{first}/schedule", json={})
    sched, clock = scheduler(stack, datetime(2030, 1, 15, 22, 0, tzinfo=UTC))
    await sched.tick()
    assert [x.rcpt_tos[0] for x in stack.catcher.store.list()] == ["la@example.com"]
    assert (await m.get(f"/campaigns/{first}")).json()["status"] == "sending"

    clock.advance(hours=1)  # 08:00 in Tokyo
    await sched.tick()
    assert {x.rcpt_tos[0] for x in stack.catcher.store.list()} == {
        "la@example.com",
        "tokyo@example.com",
    }
    clock.advance(hours=9)  # 08:00 in London (the default zone, UTC)
    await sched.tick()
    assert len(stack.catcher.store.list()) == 3
    assert (await m.get(f"/campaigns/{first}")).json()["status"] == "sent"

    # a second campaign the same day: everyone is at the cap of 1 per 24 h
    second = await campaign(m, tpl, seg)
    await m.post(f"/campaigns/{second}/schedule", json={})
    clock.advance(hours=2)  # 10:00 UTC: Tokyo and London are capped, LA (02:00) waits
    await sched.tick()
    assert (await m.get(f"/campaigns/{second}/results")).json()["skipped"] == {"frequency_cap": 2}
    clock.advance(hours=6)  # 08:00 in LA: its last mail went out 18 h ago
    await sched.tick()
    results = (await m.get(f"/campaigns/{second}/results")).json()
    assert results["skipped"] == {"frequency_cap": 3} and results["status"] == "sent"
    assert len(stack.catcher.store.list()) == 3

    # a day later the window has passed (Tokyo is asleep again: deferred, not capped)
    third = await campaign(m, tpl, seg)
    await m.post(f"/campaigns/{third}/schedule", json={})
    clock.advance(hours=24)
    await sched.tick()
    assert {x.rcpt_tos[0] for x in stack.catcher.store.list()[:2]} == {
        "la@example.com",
        "ldn@example.com",
    }
    assert len(stack.catcher.store.list()) == 5


async def test_sms_and_push_go_to_the_local_provider_outbox(stack: Stack) -> None:
    m = stack.marketer
    people = [
        {
            "phone": "+4915112345678",
            "first_name": "Ada",
            "consents": {"sms": "granted", "push": "granted"},
            "push_token": "tok-ada",
        },
        {"phone": "+4915100000000", "first_name": "Bob", "consents": {"sms": "withdrawn"}},
    ]
    ids = await add_people(stack.pool, people)
    seg = await static_segment(m, ids)
    sms = await campaign(
        m, await template(m, "sms", {"text": "Hi {{ first_name }}, phones -20%"}), seg, "sms"
    )
    push = await campaign(
        m,
        await template(m, "push", {"title": "Phones", "body": "Hi {{ first_name }}"}),
        seg,
        "push",
    )
    for c in (sms, push):
        await m.post(f"/campaigns/{c}/schedule", json={})
    sched, clock = scheduler(stack)
    clock.advance(seconds=1)
    await sched.tick()

    texts = (await m.get("/delivery/outbox", params={"channel": "sms"})).json()["items"]
    assert [(t["recipient"], t["body"]) for t in texts] == [
        ("+4915112345678", "Hi Ada, phones -20%")
    ]
    pushes = (await m.get("/delivery/outbox", params={"channel": "push"})).json()["items"]
    assert [(p["recipient"], p["title"], p["body"]) for p in pushes] == [
        ("tok-ada", "Phones", "Hi Ada")
    ]
    page = (await m.get("/delivery/outbox", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    assert (await m.get("/delivery/outbox", params={"channel": "fax"})).status_code == 422
    for c in (sms, push):
        r = (await m.get(f"/campaigns/{c}/results")).json()
        assert r["delivered"] == 1 and r["status"] == "sent"
    assert stack.catcher.store.list() == []


async def test_cancelling_a_sending_campaign_drops_the_unsent(stack: Stack) -> None:
    m = stack.marketer
    ids = await add_people(
        stack.pool,
        [{"email": f"p{i}@example.com", "consents": {"email": "granted"}} for i in range(5)],
    )
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    sched, clock = scheduler(stack, datetime.now(UTC) + timedelta(seconds=1))
    # started (recipients materialised), but nothing sent yet
    assert await jobs_for(stack.ctx)["campaigns.start"](stack.pool, clock.now()) == 1
    cancelled = (await m.post(f"/campaigns/{cid}/cancel", json={"reason": "typo"})).json()
    assert cancelled["status"] == "cancelled"
    await sched.tick()
    assert stack.catcher.store.list() == []
    r = (await m.get(f"/campaigns/{cid}/results")).json()
    assert r["skipped"] == {"cancelled": 5}


async def test_two_senders_at_once_send_each_message_once(stack: Stack) -> None:
    m = stack.marketer
    ids = await add_people(
        stack.pool,
        [{"email": f"r{i}@example.com", "consents": {"email": "granted"}} for i in range(120)],
    )
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    now = datetime.now(UTC) + timedelta(seconds=1)
    jobs = jobs_for(stack.ctx)
    await jobs["campaigns.start"](stack.pool, now)
    cfg = stack.configure(batch_size=7)
    senders = [Deliverer(stack.pool, stack.ctx.store, stack.ctx.settings, cfg) for _ in range(3)]
    counts = await asyncio.gather(*(s.drain(now) for s in senders))
    for s in senders:
        await s.close()
    assert sum(counts) == 120
    rcpts = [x.rcpt_tos[0] for x in stack.catcher.store.list(limit=1000)]
    assert len(rcpts) == 120 and len(set(rcpts)) == 120
    assert delivery_settings(stack.ctx).batch_size == 7
