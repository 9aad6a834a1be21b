"""Calendars, SLA policies and the SLA job over real PostgreSQL, driven by a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sdr_support import Stack, insert_ticket, set_status

from crm_runtime.scheduler import ManualClock, Scheduler
from crm_runtime.testing import ApiCaller
from crm_service_desk.application.sla import sla_jobs

pytestmark = pytest.mark.integration
T0 = datetime(2030, 1, 7, 9, tzinfo=UTC)  # a Monday, 09:00 UTC
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


async def configure(meg: ApiCaller) -> None:
    always = {
        "name": "Round the clock",
        "timezone": "UTC",
        "hours": [
            {"weekday": d, "intervals": [["00:00", "24:00"]]} for d in (*WEEKDAYS, "sat", "sun")
        ],
    }
    office = {
        "name": "London office",
        "timezone": "Europe/London",
        "hours": [{"weekday": d, "intervals": [["09:00", "17:00"]]} for d in WEEKDAYS],
        "holidays": [{"day": "2030-01-08", "name": "company day"}],
    }
    assert (await meg.put("/calendars/always", json=always)).status_code == 201
    assert (await meg.put("/calendars/office", json=office)).status_code == 201
    for priority, cal, first, resolve in (
        ("high", "always", 60, 240),
        ("normal", "office", 120, 960),
    ):
        r = await meg.put(
            f"/sla-policies/{priority}",
            json={
                "calendar_id": cal,
                "first_response_minutes": first,
                "resolution_minutes": resolve,
            },
        )
        assert r.status_code == 201, r.text


async def test_calendar_and_policy_api(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    agent = stack.user("service_agent", user="ana")
    await configure(meg)

    bad_zone = await meg.put(
        "/calendars/x",
        json={
            "name": "x",
            "timezone": "Mars/Base",
            "hours": [{"weekday": "mon", "intervals": [["09:00", "17:00"]]}],
        },
    )
    assert bad_zone.status_code == 422 and bad_zone.json()["errors"][0]["field"] == "timezone"
    bad_hours = await meg.put(
        "/calendars/x",
        json={
            "name": "x",
            "timezone": "UTC",
            "hours": [{"weekday": "mon", "intervals": [["17:00", "09:00"]]}],
        },
    )
    assert bad_hours.status_code == 422
    assert bad_hours.json()["errors"][0]["field"] == "hours.0.intervals.0"
    bad_day = await meg.put(
        "/calendars/x",
        json={"name": "x", "timezone": "UTC", "hours": [{"weekday": "funday", "intervals": []}]},
    )
    assert bad_day.status_code == 422 and bad_day.json()["errors"][0]["field"] == "hours.0.weekday"
    assert (await meg.get("/calendars/x")).status_code == 404  # nothing was created

    no_cal = await meg.put(
        "/sla-policies/low",
        json={"calendar_id": "nope", "first_response_minutes": 10, "resolution_minutes": 20},
    )
    assert no_cal.status_code == 422 and no_cal.json()["errors"][0]["field"] == "calendar_id"
    assert (
        await meg.put(
            "/sla-policies/critical",
            json={"calendar_id": "office", "first_response_minutes": 10, "resolution_minutes": 20},
        )
    ).status_code == 422
    zero = await meg.put(
        "/sla-policies/low",
        json={"calendar_id": "office", "first_response_minutes": 0, "resolution_minutes": 20},
    )
    assert zero.status_code == 422 and zero.json()["errors"][0]["field"] == "first_response_minutes"
    assert (
        await agent.put(
            "/sla-policies/low",
            json={"calendar_id": "office", "first_response_minutes": 10, "resolution_minutes": 20},
        )
    ).status_code == 403

    high = await agent.get("/sla-policies/high")
    assert high.status_code == 200 and high.json()["at_risk_percent"] == 80
    changed = await meg.put(
        "/sla-policies/high",
        json={
            "calendar_id": "always",
            "first_response_minutes": 60,
            "resolution_minutes": 240,
            "at_risk_percent": 75,
        },
        headers={"If-Match": '"1"'},
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2
    assert [p["priority"] for p in (await agent.get("/sla-policies")).json()] == ["high", "normal"]
    assert len((await agent.get("/sla-policies/high/history")).json()) == 2

    # business time of a calendar: Monday 16:00 London (= UTC in winter) + 2 business hours
    # skips the night and the company day (Tuesday) to Wednesday 10:00
    bt = await agent.get(
        "/calendars/office/business-time",
        params={"start": "2030-01-07T16:00:00Z", "end": "2030-01-09T10:00:00Z", "add_minutes": 120},
    )
    assert bt.status_code == 200, bt.text
    assert bt.json()["business_minutes"] == 120
    assert bt.json()["reached_at"].startswith("2030-01-09T10:00:00")
    cals = (await agent.get("/calendars")).json()
    assert [c["calendar_id"] for c in cals] == ["always", "office"]


async def test_a_first_response_target_longer_than_resolution_is_refused(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    await configure(meg)
    longer = await meg.put(
        "/sla-policies/low",
        json={"calendar_id": "office", "first_response_minutes": 500, "resolution_minutes": 480},
    )
    assert longer.status_code == 422, longer.text
    assert longer.headers["content-type"].startswith("application/problem+json")
    [error] = longer.json()["errors"]
    assert error["field"] == "first_response_minutes"
    assert "resolution_minutes (480)" in error["reason"]
    assert (await meg.get("/sla-policies/low")).status_code == 404  # nothing was created
    # per priority: changing high (60/240) to a first response of 300 is refused, v1 stays
    changed = await meg.put(
        "/sla-policies/high",
        json={"calendar_id": "always", "first_response_minutes": 300, "resolution_minutes": 240},
    )
    assert changed.status_code == 422 and changed.json()["errors"][0]["field"] == (
        "first_response_minutes"
    )
    high = (await meg.get("/sla-policies/high")).json()
    assert (high["version"], high["first_response_minutes"]) == (1, 60)
    # equal targets are allowed (the first response may be the resolution)
    same = await meg.put(
        "/sla-policies/low",
        json={"calendar_id": "office", "first_response_minutes": 480, "resolution_minutes": 480},
    )
    assert same.status_code == 201, same.text


async def test_sla_job_warns_breaches_once_pauses_and_counts_reopenings(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    await configure(meg)  # high: 24x7, 60/240 min; normal: office hours, 120/960; low: none
    pool = stack.ctx.pool
    async with pool.acquire() as conn:
        for ticket_id, priority in (
            ("hi", "high"),
            ("paused", "high"),
            ("office", "normal"),
            ("low", "low"),
        ):
            await insert_ticket(
                conn,
                ticket_id,
                priority=priority,
                created_at=T0,
                queue_id="emea",
                assignee_id="ana",
            )
            await set_status(conn, ticket_id, "new", T0)
    clock = ManualClock(T0)
    scheduler = Scheduler(pool, sla_jobs(stack.ctx), clock)

    async def tick_at(minutes: float) -> int:
        clock.current = T0 + timedelta(minutes=minutes)
        return (await scheduler.tick())["sla.evaluate"]

    async def change(ticket_id: str, status: str, minutes: float, **cols: Any) -> None:
        async with pool.acquire() as conn:
            await set_status(conn, ticket_id, status, T0 + timedelta(minutes=minutes), **cols)

    assert await tick_at(30) == 0
    await change("paused", "waiting_on_customer", 40)
    assert await tick_at(50) == 1  # hi: 50 of 60 first-response minutes -> at risk
    assert await tick_at(65) == 1  # hi: first response breached
    assert await tick_at(66) == 0  # nothing twice
    await change("hi", "in_progress", 70, first_response_at=T0 + timedelta(minutes=70))
    assert await tick_at(210) == 2  # hi: resolution at risk (210/240); office: 210/120 breached
    await change("hi", "resolved", 220, resolved_at=T0 + timedelta(minutes=220))
    assert await tick_at(240) == 0  # hi resolved in time: met
    await change("hi", "in_progress", 300)  # reopened: a new resolution episode
    assert await tick_at(540) == 1  # 240 minutes into episode 2: breached
    # office hours: Monday 09-17 (480 min), Tuesday a holiday, Wednesday from 09:00
    wednesday = (datetime(2030, 1, 9, 10, tzinfo=UTC) - T0).total_seconds() / 60
    assert await tick_at(wednesday) == 0  # 540 of 960
    assert await tick_at(wednesday + 240) == 1  # 780 >= 768 (80 %): at risk

    agent = stack.user("service_agent", user="ana")
    hi = (await agent.get("/sla/tickets/hi")).json()
    states = {(t["target"], t["episode"]): t for t in hi["targets"]}
    assert states[("first_response", 1)]["status"] == "breached"
    assert states[("first_response", 1)]["stopped_at"] is not None
    assert states[("resolution", 1)]["status"] == "met"
    assert states[("resolution", 1)]["elapsed_minutes"] == 220
    assert states[("resolution", 2)]["status"] == "breached"
    assert [(e["type"], e["data"]["target"], e["data"]["episode"]) for e in hi["events"]] == [
        ("crm.service.sla.at_risk_flagged", "first_response", 1),
        ("crm.service.sla.breached", "first_response", 1),
        ("crm.service.sla.at_risk_flagged", "resolution", 1),
        ("crm.service.sla.breached", "resolution", 2),
    ]
    paused = {
        (t["target"], t["episode"]): t
        for t in (await agent.get("/sla/tickets/paused")).json()["targets"]
    }
    assert paused[("first_response", 1)]["status"] == "paused"
    assert paused[("first_response", 1)]["elapsed_minutes"] == 40
    assert (await agent.get("/sla/tickets/low")).status_code == 404  # no policy for low

    risky = (await agent.get("/sla/at-risk", params={"include_breached": "false"})).json()
    risky = risky["items"]
    assert [(r["ticket_id"], r["target"]) for r in risky] == [("office", "resolution")]
    # both at-risk lists list the same, at risk and breached by default, at risk only if asked
    for include_breached, expected in ((None, 3), ("true", 3), ("false", 1)):
        params = {} if include_breached is None else {"include_breached": include_breached}
        sla_list = (await agent.get("/sla/at-risk", params=params)).json()["items"]
        view = (await agent.get("/views/at-risk", params=params)).json()["items"]
        assert len(sla_list) == expected, (include_breached, sla_list)
        assert [(i["id"], i["target"], i["sla_status"]) for i in view] == [
            (r["ticket_id"], r["target"], r["status"]) for r in sla_list
        ]
    first = (await agent.get("/views/at-risk", params={"limit": 1})).json()["items"]
    assert [(i["id"], i["target"]) for i in first] == [("office", "first_response")]  # soonest
    assert risky[0]["due_at"].startswith("2030-01-09T17:00:00")  # 180 business minutes left
    assert risky[0]["queue_id"] == "emea" and risky[0]["subject"] == "Ticket office"
    everything = (
        await agent.get("/sla/at-risk", params={"include_breached": "true", "limit": 1})
    ).json()
    assert len(everything["items"]) == 1 and everything["next_cursor"]
    rest = (
        await agent.get(
            "/sla/at-risk",
            params={"include_breached": "true", "limit": 10, "cursor": everything["next_cursor"]},
        )
    ).json()
    seen = {(r["ticket_id"], r["target"]) for r in everything["items"] + rest["items"]}
    assert seen == {("office", "resolution"), ("office", "first_response"), ("hi", "resolution")}

    # a restarted scheduler (new instance) fires nothing again
    again = Scheduler(pool, sla_jobs(stack.ctx), clock)
    assert (await again.tick())["sla.evaluate"] == 0
    # the events are in the service's feed with the customer as subject
    async with pool.acquire() as conn:
        subjects = await conn.fetch(
            "SELECT DISTINCT subject FROM events WHERE event_type LIKE 'crm.service.sla.%'"
        )
    assert {r["subject"] for r in subjects} == {"c-hi", "c-office"}


async def test_sla_state_comes_with_the_ticket_command_not_a_tick_later(stack: Stack) -> None:
    """Opening a ticket, changing its priority, replying and waiting on the customer set its SLA
    state in the same command (it appeared only at the next scheduler tick, up to 60 s later).
    A breach the command itself causes is recorded (and escalated) as the job records it, once:
    the next tick records nothing again and only mails the escalation."""
    meg = stack.user("service_manager", user="meg")
    await configure(meg)  # high: 24x7, 60/240 min; normal: office hours
    for priority, first, resolve in (("low", 120, 480), ("urgent", 30, 120)):
        r = await meg.put(
            f"/sla-policies/{priority}",
            json={
                "calendar_id": "always",
                "first_response_minutes": first,
                "resolution_minutes": resolve,
            },
        )
        assert r.status_code == 201, r.text
    rules = {
        "rules": [
            {
                "rule_id": "late",
                "kind": "sla_breach",
                "targets": ["first_response"],
                "notify_emails": ["manager@desk.example"],
            }
        ]
    }
    assert (await meg.put("/escalation-rules", json=rules)).status_code == 200

    async def states(ticket_id: str) -> dict[str, Any]:
        r = await meg.get(f"/sla/tickets/{ticket_id}")
        assert r.status_code == 200, r.text
        return {
            "targets": {t["target"]: t for t in r.json()["targets"]},
            "events": [(e["type"], e["data"]["target"]) for e in r.json()["events"]],
        }

    def due(state: dict[str, Any]) -> timedelta:
        return datetime.fromisoformat(state["due_at"]) - datetime.fromisoformat(state["started_at"])

    body = {"kind": "incident", "subject": "Checkout fails", "customer_email": "ada@example.com"}
    opened = await meg.post("/tickets", json={**body, "priority": "high"})
    assert opened.status_code == 201, opened.text
    t = opened.json()
    sla = await states(t["id"])  # no tick has run
    first, resolution = sla["targets"]["first_response"], sla["targets"]["resolution"]
    assert (first["status"], first["target_minutes"], first["priority"]) == ("running", 60, "high")
    created = await stack.ctx.pool.fetchval(
        "SELECT created_at FROM tickets WHERE ticket_id = $1", t["id"]
    )
    assert datetime.fromisoformat(first["started_at"]) == created
    assert due(first) == timedelta(minutes=60) and due(resolution) == timedelta(minutes=240)
    assert sla["events"] == []

    # a new priority brings its policy's targets at once
    low = await meg.patch(f"/tickets/{t['id']}", json={"priority": "low"})
    assert low.status_code == 200, low.text
    first = (await states(t["id"]))["targets"]["first_response"]
    assert (first["priority"], first["target_minutes"]) == ("low", 120)
    assert due(first) == timedelta(minutes=120)
    # the first public reply stops the first-response clock; waiting pauses the resolution one
    r = await meg.post(
        f"/tickets/{t['id']}/replies", json={"body": "Which card?", "wait_on_customer": True}
    )
    assert r.status_code == 200, r.text
    sla = await states(t["id"])
    assert sla["targets"]["first_response"]["status"] == "met"
    assert sla["targets"]["first_response"]["due_at"] is None
    assert sla["targets"]["resolution"]["status"] == "paused"

    # an older ticket made urgent has missed its 30 minutes: breached with the command
    old = (await meg.post("/tickets", json={**body, "priority": "low"})).json()
    opened_at = datetime.now(UTC) - timedelta(minutes=50)
    async with stack.ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE tickets SET created_at = $2 WHERE ticket_id = $1", old["id"], opened_at
        )
        await conn.execute(
            "UPDATE ticket_status_spans SET started_at = $2 WHERE ticket_id = $1",
            old["id"],
            opened_at,
        )
    urgent = await meg.patch(f"/tickets/{old['id']}", json={"priority": "urgent"})
    assert urgent.status_code == 200, urgent.text
    sla = await states(old["id"])
    first, resolution = sla["targets"]["first_response"], sla["targets"]["resolution"]
    assert (first["status"], first["target_minutes"]) == ("breached", 30)
    assert datetime.fromisoformat(first["due_at"]) == opened_at + timedelta(minutes=30)
    assert resolution["status"] == "running"  # 50 of 120 minutes: not at risk yet
    assert sla["events"] == [("crm.service.sla.breached", "first_response")]
    listed = (await meg.get("/sla/at-risk")).json()["items"]
    assert [(i["ticket_id"], i["target"]) for i in listed] == [(old["id"], "first_response")]
    view = (await meg.get("/views/at-risk")).json()["items"]
    assert [(i["id"], i["target"], i["sla_status"]) for i in view] == [
        (old["id"], "first_response", "breached")
    ]
    escalations = (await meg.get("/escalations")).json()["items"]
    assert [(e["ticket_id"], e["rule_id"]) for e in escalations] == [(old["id"], "late")]

    # the scheduler keeps time-driven breaches and the escalation mail; nothing applies twice
    clock = ManualClock(datetime.now(UTC))
    scheduler = Scheduler(stack.ctx.pool, sla_jobs(stack.ctx), clock)
    done = await scheduler.tick()
    assert (done["sla.evaluate"], done["sla.escalation_mail"]) == (0, 1)
    clock.advance(minutes=1)
    done = await scheduler.tick()
    assert (done["sla.evaluate"], done["sla.escalation_mail"]) == (0, 0)
    assert (await states(old["id"]))["events"] == [("crm.service.sla.breached", "first_response")]
    assert len((await meg.get("/escalations")).json()["items"]) == 1
    assert len(stack.catcher.store.list(to="manager@desk.example")) == 1


async def test_due_at_stays_the_deadline_after_a_breach(stack: Stack) -> None:
    """An urgent ticket with a 1-minute first-response target opened at 10:23:53 was due at
    10:24:53: the state, the at-risk lists and the view keep that time on every later tick
    (not the tick's time, which put due_at after breached_at)."""
    meg = stack.user("service_manager", user="meg")
    await configure(meg)
    r = await meg.put(
        "/sla-policies/urgent",
        json={"calendar_id": "always", "first_response_minutes": 1, "resolution_minutes": 60},
    )
    assert r.status_code == 201, r.text
    opened = datetime(2030, 1, 7, 10, 23, 53, tzinfo=UTC)
    due = opened + timedelta(minutes=1)
    pool = stack.ctx.pool
    async with pool.acquire() as conn:
        await insert_ticket(conn, "u1", priority="urgent", created_at=opened, queue_id="emea")
        await set_status(conn, "u1", "new", opened)
    clock = ManualClock(opened)
    scheduler = Scheduler(pool, sla_jobs(stack.ctx), clock)
    agent = stack.user("service_agent", user="ana")

    for tick, signals in (
        (datetime(2030, 1, 7, 10, 25, 27, tzinfo=UTC), 1),
        (due + timedelta(minutes=2), 0),
    ):
        clock.current = tick
        assert (await scheduler.tick())["sla.evaluate"] == signals
        state = {t["target"]: t for t in (await agent.get("/sla/tickets/u1")).json()["targets"]}[
            "first_response"
        ]
        assert state["status"] == "breached"
        assert datetime.fromisoformat(state["due_at"]) == due
        assert datetime.fromisoformat(state["breached_at"]) == datetime(
            2030, 1, 7, 10, 25, 27, tzinfo=UTC
        )
        listed = (await agent.get("/sla/at-risk", params={"include_breached": "true"})).json()
        assert [(i["target"], datetime.fromisoformat(i["due_at"])) for i in listed["items"]] == [
            ("first_response", due)
        ]
        view = (await agent.get("/views/at-risk")).json()["items"]
        assert [(i["id"], i["sla_status"], datetime.fromisoformat(i["due_at"])) for i in view] == [
            ("u1", "breached", due)
        ]
