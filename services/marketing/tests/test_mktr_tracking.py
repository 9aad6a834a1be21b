"""Tracking: open pixel, click redirect (only to the message's links), unsubscribe, view in
browser — signed tokens, and nothing that reveals whether an address exists."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from mkc_support import (
    BASE,
    Stack,
    add_people,
    campaign,
    email_template,
    enrol,
    static_segment,
    tracking_paths,
)
from mkc_support import stack as stack

from crm_marketing.delivery.settings import delivery_settings
from crm_marketing.jobs import jobs_for
from crm_marketing.tracking import tokens
from crm_marketing.tracking.api import PIXEL
from crm_runtime.scheduler import ManualClock, Scheduler

CONFIRMATION_SUBJECT = "Please confirm your subscription"


async def _send(stack: Stack, people: list[dict[str, object]]) -> tuple[str, list[str]]:
    m = stack.marketer
    ids = await enrol(stack.ctx, people)
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=1))
    await Scheduler(stack.pool, jobs_for(stack.ctx), clock).tick()
    return cid, ids


def _paths_for(stack: Stack, address: str) -> list[str]:
    # (the audience's job also sends the opt-in confirmation mails of `enrol`: not ours)
    [summary] = [
        x for x in stack.catcher.store.list(to=address) if x.subject != CONFIRMATION_SUBJECT
    ]
    return tracking_paths(stack.catcher.store.get(summary.id).html or "")


async def _message_events(stack: Stack, customer_id: str) -> list[str]:
    async with stack.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_type FROM events WHERE stream_type = 'message' AND subject = $1"
            " ORDER BY position",
            customer_id,
        )
    return [r["event_type"].rsplit(".", 1)[1] for r in rows]


async def test_opens_and_clicks_are_recorded_once_and_redirect_only_to_the_message_links(
    stack: Stack,
) -> None:
    people: list[dict[str, object]] = [
        {"email": f"p{i}@example.com", "first_name": f"P{i}", "consents": {"email": "granted"}}
        for i in range(3)
    ]
    cid, ids = await _send(stack, people)
    client = stack.client
    click0, click1, unsubscribe, pixel = _paths_for(stack, "p0@example.com")

    # the pixel: always the GIF, never cached; the first load is the open
    for _ in range(2):
        r = await client.get(pixel)
        assert r.status_code == 200 and r.content == PIXEL
        assert r.headers["content-type"] == "image/gif" and "no-store" in r.headers["cache-control"]
    assert (await client.get("/t/o/AAAAtampered.gif")).content == PIXEL
    assert await _message_events(stack, ids[0]) == ["sent", "opened"]

    # a click goes to the link that was in the message, and to nothing else
    r = await client.get(click0, cookies={"crm_vid": "v-browser-1"})
    assert (
        r.status_code == 302 and r.headers["location"] == "https://shop.example/phones?utm=spring"
    )
    r = await client.get(click1)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/help"
    assert (await client.get(click0)).status_code == 302  # a repeat redirects, records nothing
    assert await _message_events(stack, ids[0]) == ["sent", "opened", "clicked", "clicked"]

    # the click identified the browser's visitor as this customer
    async with stack.pool.acquire() as conn:
        who = await conn.fetchval(
            "SELECT customer_id FROM visitors WHERE visitor_id = 'v-browser-1'"
        )
    assert who == ids[0]

    # a click without an open first counts as an open too
    other_click = _paths_for(stack, "p1@example.com")[0]
    assert (await client.get(other_click)).status_code == 302
    assert await _message_events(stack, ids[1]) == ["sent", "opened", "clicked"]

    # tampered, foreign, out-of-range and wrong-kind tokens: one and the same 404
    key = delivery_settings(stack.ctx).tracking_key(stack.ctx.settings)
    token = click0.rsplit("/", 1)[1]
    message_id, _ = tokens.verify(key, "c", token) or (None, None)
    assert message_id is not None
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    bad = [
        f"/t/c/{tampered}",
        f"/t/c/{tokens.sign(b'another key', 'c', message_id, 0)}",
        f"/t/c/{tokens.sign(key, 'c', uuid.uuid4(), 0)}",  # no such message
        f"/t/c/{tokens.sign(key, 'c', message_id, 9)}",  # no link 9 in this message
        f"/t/c/{tokens.sign(key, 'o', message_id, 0)}",  # an open token
        "/t/c/" + "A" * 80,
    ]
    answers = [await client.get(path) for path in bad]
    assert {r.status_code for r in answers} == {404}
    assert len({r.text for r in answers}) == 1 and "location" not in answers[0].headers

    results = (await stack.marketer.get(f"/campaigns/{cid}/results")).json()
    assert results["sent"] == 3 and results["opened"] == 2 and results["clicked"] == 2
    assert results["open_rate"] == round(2 / 3, 4) and results["click_rate"] == round(2 / 3, 4)
    assert results["by_status"] == {"clicked": 2, "sent": 1}
    assert unsubscribe.startswith("/t/u/")


async def test_unsubscribe_withdraws_consent_and_reveals_nothing(stack: Stack) -> None:
    people: list[dict[str, object]] = [
        {"email": "una@example.com", "first_name": "Una", "consents": {"email": "granted"}},
        {"email": "ola@example.com", "first_name": "Ola", "consents": {"email": "granted"}},
    ]
    cid, ids = await _send(stack, people)
    client = stack.client
    unsubscribe = _paths_for(stack, "una@example.com")[2]
    assert unsubscribe.startswith("/t/u/")

    page = await client.get(unsubscribe)
    assert page.status_code == 200 and "<form method='post'" in page.text
    assert "una@example.com" not in page.text and "Una" not in page.text
    done = await client.post(unsubscribe)  # what the page's button (or RFC 8058 one-click) does
    assert done.status_code == 200 and "una@example.com" not in done.text
    again = await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and again.text == done.text

    async with stack.pool.acquire() as conn:
        consents = dict(
            await conn.fetch(
                "SELECT customer_id, status FROM consents WHERE channel = 'email'"
                " AND customer_id = ANY($1::text[])",
                ids,
            )
        )
    assert consents == {ids[0]: "withdrawn", ids[1]: "granted"}
    assert await _message_events(stack, ids[0]) == ["sent", "unsubscribed"]
    results = (await stack.marketer.get(f"/campaigns/{cid}/results")).json()
    assert results["unsubscribed"] == 1

    key = delivery_settings(stack.ctx).tracking_key(stack.ctx.settings)
    unknown = f"/t/u/{tokens.sign(key, 'u', uuid.uuid4())}"
    forged = unsubscribe[:-2] + ("AA" if not unsubscribe.endswith("AA") else "BB")
    answers = [await client.get(forged), await client.post(forged), await client.post(unknown)]
    assert {r.status_code for r in answers} == {404} and len({r.text for r in answers}) == 1

    # the next campaign skips the one who left
    m = stack.marketer
    again_cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{again_cid}/schedule", json={})
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=1))
    await Scheduler(stack.pool, jobs_for(stack.ctx), clock).tick()
    r = (await m.get(f"/campaigns/{again_cid}/results")).json()
    assert r["sent"] == 1 and r["skipped"] == {"consent_withdrawn": 1}


async def test_view_in_browser_shows_the_recipients_message(stack: Stack) -> None:
    content = {
        "subject": "Hi {{ first_name }}",
        "html": "<p>Hello {{ first_name }}</p><a href='{{ view_in_browser_url }}'>View</a>",
        "text": "Hello {{ first_name }}",
    }
    m = stack.marketer
    ids = await add_people(
        stack.pool,
        [{"email": "vi@example.com", "first_name": "Vi", "consents": {"email": "granted"}}],
    )
    cid = await campaign(m, await email_template(m, content), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=1))
    await Scheduler(stack.pool, jobs_for(stack.ctx), clock).tick()
    [view] = [p for p in _paths_for(stack, "vi@example.com") if p.startswith("/t/v/")]
    page = await stack.client.get(view)
    assert page.status_code == 200 and "Hello Vi" in page.text
    assert (await stack.client.get(view[:-3] + "xyz")).status_code == 404
    assert BASE in page.text  # its links are tracked like the mail's


async def test_a_click_identifies_only_the_browsers_own_visitor_and_never_relinks(
    stack: Stack,
) -> None:
    people: list[dict[str, object]] = [
        {"email": f"f{i}@example.com", "first_name": f"F{i}", "consents": {"email": "granted"}}
        for i in range(2)
    ]
    _, ids = await _send(stack, people)
    click_a = _paths_for(stack, "f0@example.com")[0]
    click_b = _paths_for(stack, "f1@example.com")[0]
    client = stack.client

    async def who(visitor: str) -> str | None:
        async with stack.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT customer_id FROM visitors WHERE visitor_id = $1", visitor
            )
        return None if found is None else str(found)

    # a visitor id in the URL identifies nobody (it travels with a forwarded mail)
    assert (await client.get(f"{click_a}?vid=v-forwarded-1")).status_code == 302
    assert await who("v-forwarded-1") is None
    # the browser's own cookie does
    assert (await client.get(click_a, cookies={"crm_vid": "v-browser-a1"})).status_code == 302
    assert await who("v-browser-a1") == ids[0]
    # B's mail, forwarded and clicked in A's browser: still A's visitor
    assert (await client.get(click_b, cookies={"crm_vid": "v-browser-a1"})).status_code == 302
    assert await who("v-browser-a1") == ids[0]
    async with stack.pool.acquire() as conn:
        identified = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'crm.marketing.visitor.identified'"
        )
    assert identified == 1
