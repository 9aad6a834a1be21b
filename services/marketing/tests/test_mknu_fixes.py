"""A new user's findings (marketing): null rates, visible quiet-hours deferral, no 401 on the
public routes' OpenAPI, every bad template part reported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from mkc_support import Stack, add_people, campaign, email_template, static_segment
from mkc_support import stack as stack

from crm_marketing.jobs import jobs_for
from crm_marketing.templates.rendering import (
    Limits,
    TemplateProblem,
    TemplateProblems,
    problems_of,
    validate,
)
from crm_runtime.scheduler import ManualClock, Scheduler

LIMITS = Limits()


async def test_rates_are_null_while_there_is_nothing_to_divide_by(stack: Stack) -> None:
    m = stack.marketer
    ids = await add_people(
        stack.pool, [{"email": "a@example.com", "consents": {"email": "granted"}}]
    )
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))

    draft = (await m.get(f"/campaigns/{cid}/results")).json()
    assert draft["sent"] == 0
    assert draft["open_rate"] is None and draft["click_rate"] is None
    assert draft["click_to_open_rate"] is None
    assert draft["deferred"] == 0 and draft["next_send_at"] is None

    await m.post(f"/campaigns/{cid}/schedule", json={})
    clock = ManualClock(datetime.now(UTC))
    sched = Scheduler(stack.pool, jobs_for(stack.ctx), clock)
    clock.advance(seconds=1)
    await sched.tick()
    sent = (await m.get(f"/campaigns/{cid}/results")).json()
    assert sent["sent"] == 1 and sent["status"] == "sent"
    # one sent, nothing opened: 0 % opened, but no click-to-open rate (nothing was opened)
    assert sent["open_rate"] == 0.0 and sent["click_rate"] == 0.0
    assert sent["click_to_open_rate"] is None


async def test_recipients_held_back_by_quiet_hours_are_shown_as_deferred(stack: Stack) -> None:
    m = stack.marketer
    stack.configure(quiet_hours_start="21:00", quiet_hours_end="08:00")
    # 22:00 UTC: Los Angeles 14:00 (sends), Tokyo 07:00 (until 08:00 = 23:00 UTC), no zone:
    # the default UTC, 22:00 (until 08:00 UTC the next day).
    people: list[dict[str, Any]] = [
        {"email": "la@example.com", "timezone": "America/Los_Angeles"},
        {"email": "tokyo@example.com", "timezone": "Asia/Tokyo"},
        {"email": "utc@example.com", "timezone": None},
    ]
    ids = await add_people(stack.pool, [{**p, "consents": {"email": "granted"}} for p in people])
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    clock = ManualClock(datetime(2030, 1, 15, 22, 0, tzinfo=UTC))
    stack.ctx.extras["marketing_clock"] = clock
    sched = Scheduler(stack.pool, jobs_for(stack.ctx), clock)

    await sched.tick()
    assert [x.rcpt_tos[0] for x in stack.catcher.store.list()] == ["la@example.com"]
    results = (await m.get(f"/campaigns/{cid}/results")).json()
    assert results["status"] == "sending" and results["deferred"] == 2
    assert datetime.fromisoformat(results["next_send_at"]) == datetime(2030, 1, 15, 23, tzinfo=UTC)
    read = (await m.get(f"/campaigns/{cid}")).json()
    assert read["deferred"] == 2 and read["next_send_at"] == results["next_send_at"]

    clock.advance(hours=1)  # 08:00 in Tokyo
    await sched.tick()
    results = (await m.get(f"/campaigns/{cid}/results")).json()
    assert results["deferred"] == 1
    assert datetime.fromisoformat(results["next_send_at"]) == datetime(2030, 1, 16, 8, tzinfo=UTC)

    clock.advance(hours=9)  # 08:00 UTC
    await sched.tick()
    results = (await m.get(f"/campaigns/{cid}/results")).json()
    assert results["status"] == "sent" and results["deferred"] == 0
    assert results["next_send_at"] is None and len(stack.catcher.store.list()) == 3
    # as_of reads the past from events: no deferral figure there
    past = (await m.get(f"/campaigns/{cid}", params={"as_of": clock.now().isoformat()})).json()
    assert past["deferred"] is None


async def test_public_routes_do_not_document_a_401(stack: Stack) -> None:
    spec = (await stack.client.get("/openapi.json")).json()
    public = {
        (path, method): op["responses"]
        for path, ops in spec["paths"].items()
        if path.startswith(("/public/", "/t/"))
        for method, op in ops.items()
    }
    assert ("/public/forms/{form_id}/submissions", "post") in public
    assert ("/public/activity", "post") in public and ("/t/o/{token}.gif", "get") in public
    assert all("401" not in responses for responses in public.values())
    # a site key's origin check is a 403 of its own; the tracking links answer no 403
    assert "403" in public[("/public/activity", "post")]
    assert "403" not in public[("/t/c/{token}", "get")]
    # routes that take a token keep both
    campaigns = spec["paths"]["/campaigns"]["post"]["responses"]
    assert "401" in campaigns and "403" in campaigns


async def test_a_template_with_two_bad_parts_gets_an_error_for_each(stack: Stack) -> None:
    r = await stack.marketer.post(
        "/templates",
        json={
            "name": "Broken",
            "channel": "email",
            "content": {"subject": "Hi {{ first_name", "html": "<p>{{ shoe_size }}</p>"},
        },
    )
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["content.subject", "content.html"]
    assert "line 1" in errors[0]["reason"] and "shoe_size" in errors[1]["reason"]
    assert (await stack.marketer.get("/templates")).json()["items"] == []  # nothing saved


def test_every_bad_part_is_reported_across_compile_and_render() -> None:
    # the subject compiles but renders too long; the html does not compile
    with pytest.raises(TemplateProblems) as caught:
        validate("email", {"subject": "x" * 300, "html": "{% if %}"}, LIMITS)
    assert [(p.part, p.reason[:7]) for p in caught.value.problems] == [
        ("html", "line 1:"),
        ("subject", "renders"),
    ]
    # push: both parts over their limits
    with pytest.raises(TemplateProblems) as push:
        validate("push", {"title": "t" * 70, "body": "b" * 300}, LIMITS)
    assert [p.part for p in problems_of(push.value)] == ["title", "body"]
    # one bad part: a plain TemplateProblem, as before
    with pytest.raises(TemplateProblem) as one:
        validate("email", {"subject": "Hi", "html": "{{ nope }}"}, LIMITS)
    assert type(one.value) is TemplateProblem and one.value.part == "html"
    assert problems_of(one.value) == [one.value]
