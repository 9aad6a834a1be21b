"""The SLA jobs against ticket commands that commit while a tick is under way, interleaved
deterministically: the job's read of the tickets is wrapped so that the command commits right
after it, and every time is chosen (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sdr_support import Stack, insert_ticket, set_status

from crm_runtime.db import Conn
from crm_service_desk.adapters import sla_view
from crm_service_desk.application import sla

pytestmark = pytest.mark.integration
T0 = datetime(2030, 1, 7, 9, tzinfo=UTC)
MANAGER = "manager@desk.example"


async def round_the_clock_policy(stack: Stack) -> None:
    """high: a 24x7 calendar, 60 minutes to the first response, 240 to the resolution."""
    meg = stack.user("service_manager", user="meg")
    always = {
        "name": "Round the clock",
        "timezone": "UTC",
        "hours": [
            {"weekday": d, "intervals": [["00:00", "24:00"]]}
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        ],
    }
    assert (await meg.put("/calendars/always", json=always)).status_code == 201
    policy = {"calendar_id": "always", "first_response_minutes": 60, "resolution_minutes": 240}
    assert (await meg.put("/sla-policies/high", json=policy)).status_code == 201


async def open_at_t0(stack: Stack, ticket_id: str) -> None:
    async with stack.ctx.pool.acquire() as conn:
        await insert_ticket(conn, ticket_id, priority="high", created_at=T0)
        await set_status(conn, ticket_id, "new", T0)


async def wait_on_customer(stack: Stack, ticket_id: str, at: datetime, now: datetime) -> None:
    """What the status command does: the row and span, then the ticket's SLA evaluation at the
    command's ``now``, in one transaction."""
    async with stack.ctx.pool.acquire() as conn, conn.transaction():
        await set_status(conn, ticket_id, "waiting_on_customer", at, waiting_since=at)
        await sla.evaluate_ticket(conn, stack.ctx.store, ticket_id, now)


async def states(stack: Stack, ticket_id: str) -> dict[str, dict[str, Any]]:
    async with stack.ctx.pool.acquire() as conn:
        return {s["target"]: s for s in await sla_view.states_for_ticket(conn, ticket_id)}


async def test_a_tick_never_overwrites_a_fresher_command_evaluation(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick at 09:40 lists the ticket; before it gets to it, a command at 09:50 puts the
    ticket on hold (waiting on the customer) and evaluates it then (50 of 60 first-response
    minutes: at risk, paused). The tick's evaluation must not bring back the 09:40 picture
    (40 minutes, running, evaluated at 09:40)."""
    await round_the_clock_policy(stack)
    await open_at_t0(stack, "t1")
    listed = sla_view.tickets_to_evaluate
    command_at = T0 + timedelta(minutes=50)

    async def list_then_command(conn: Conn, priorities: Any) -> list[sla_view.TicketRow]:
        tickets = await listed(conn, priorities)
        await wait_on_customer(stack, "t1", command_at, command_at)
        return tickets

    monkeypatch.setattr(sla_view, "tickets_to_evaluate", list_then_command)
    await sla.evaluate_slas(stack.ctx.pool, stack.ctx.store, T0 + timedelta(minutes=40))

    first = (await states(stack, "t1"))["first_response"]
    assert first["evaluated_at"] == command_at
    assert first["status"] == "paused"
    assert first["elapsed_minutes"] == 50
    assert first["at_risk_at"] == command_at
    # the at-risk signal was recorded once, by the command
    events = (await stack.user("service_manager").get("/sla/tickets/t1")).json()["events"]
    assert [(e["type"], e["data"]["target"]) for e in events] == [
        ("crm.service.sla.at_risk_flagged", "first_response")
    ]


async def test_a_command_evaluated_after_a_later_tick_keeps_its_change_and_the_later_time(
    stack: Stack,
) -> None:
    """A command that read its time (09:45) before a tick at 09:50 evaluated the ticket, and
    evaluates after it: its pause must reach the state, measured at 09:50 (the later time), not
    dropped and not measured at 09:45."""
    await round_the_clock_policy(stack)
    await open_at_t0(stack, "t2")
    tick = T0 + timedelta(minutes=50)
    await sla.evaluate_slas(stack.ctx.pool, stack.ctx.store, tick)
    assert (await states(stack, "t2"))["first_response"]["status"] == "at_risk"

    paused_at = T0 + timedelta(minutes=45)
    await wait_on_customer(stack, "t2", paused_at, paused_at)

    first = (await states(stack, "t2"))["first_response"]
    assert first["status"] == "paused"
    assert first["elapsed_minutes"] == 45  # the clock stopped counting at the pause
    assert first["evaluated_at"] == tick


async def test_the_state_upsert_refuses_an_older_evaluation(stack: Stack) -> None:
    await round_the_clock_policy(stack)
    await open_at_t0(stack, "t3")
    later = T0 + timedelta(minutes=30)
    await sla.evaluate_slas(stack.ctx.pool, stack.ctx.store, later)
    before = (await states(stack, "t3"))["resolution"]
    async with stack.ctx.pool.acquire() as conn:
        await sla_view.upsert_state(
            conn,
            {
                **before,
                "status": "running",
                "elapsed_minutes": 10.0,
                "evaluated_at": later - timedelta(minutes=20),
            },
        )
    assert (await states(stack, "t3"))["resolution"] == before


async def test_an_answer_given_during_the_tick_stops_the_unanswered_escalation(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The escalation job lists the open tickets; an agent then answers one publicly before the
    job gets to it. The job decides from the ticket as it is then: only the other, still
    unanswered ticket escalates."""
    meg = stack.user("service_manager", user="meg")
    rules = {
        "rules": [
            {
                "rule_id": "unanswered-2d",
                "kind": "no_public_answer",
                "after_days": 2,
                "notify_emails": [MANAGER],
            }
        ]
    }
    assert (await meg.put("/escalation-rules", json=rules)).status_code == 200
    body = {"kind": "incident", "subject": "Checkout fails", "customer_email": "ada@example.com"}
    answered = (await meg.post("/tickets", json=body)).json()["id"]
    lonely = (await meg.post("/tickets", json={**body, "subject": "Invoice wrong"})).json()["id"]
    listed = sla_view.open_tickets

    async def list_then_answer(conn: Conn) -> list[sla_view.TicketRow]:
        tickets = await listed(conn)
        assert {t.ticket_id for t in tickets} == {answered, lonely}
        r = await meg.post(f"/tickets/{answered}/replies", json={"body": "On it."})
        assert r.status_code in (200, 201), r.text
        return tickets

    monkeypatch.setattr(sla_view, "open_tickets", list_then_answer)
    later = datetime.now(UTC) + timedelta(days=2, minutes=1)
    assert await sla.escalate_unanswered(stack.ctx.pool, stack.ctx.store, later) == 1

    escalations = (await meg.get("/escalations")).json()["items"]
    assert [(e["ticket_id"], e["rule_id"]) for e in escalations] == [(lonely, "unanswered-2d")]
