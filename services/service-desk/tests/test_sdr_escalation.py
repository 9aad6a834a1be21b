"""Escalation end to end: tickets opened over the API, left unanswered past their SLA, escalate
exactly once per rule to the manager's mailbox (real SMTP capture), across scheduler ticks and a
restart; a breach on a top-tier customer tells sales by a public event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sdr_support import Stack

from crm_runtime.scheduler import ManualClock, Scheduler
from crm_service_desk.application.sla import sla_jobs

pytestmark = pytest.mark.integration
MANAGER = "manager@desk.example"
LEAD = "lead@desk.example"
VIP = "vip-desk@desk.example"


async def configure(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    calls = [
        ("/queues/emea", {"name": "EMEA"}),
        ("/agents/ana", {"email": "ana@desk.example", "languages": ["en"], "queues": ["emea"]}),
        ("/routing-rules", {"rules": [], "default_queue_id": "emea"}),
        (
            "/calendars/always",
            {
                "name": "24x7",
                "timezone": "UTC",
                "hours": [
                    {"weekday": d, "intervals": [["00:00", "24:00"]]}
                    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
                ],
            },
        ),
        *[
            (
                f"/sla-policies/{p}",
                {"calendar_id": "always", "first_response_minutes": 60, "resolution_minutes": 480},
            )
            for p in ("normal", "high")
        ],
        (
            "/escalation-rules",
            {
                "rules": [
                    {
                        "rule_id": "late-first-response",
                        "kind": "sla_breach",
                        "targets": ["first_response"],
                        "notify_emails": [MANAGER],
                    },
                    {
                        "rule_id": "unanswered-2d",
                        "kind": "no_public_answer",
                        "after_days": 2,
                        "notify_emails": [MANAGER, LEAD],
                    },
                    {
                        "rule_id": "top-tier-breach",
                        "kind": "sla_breach",
                        "targets": ["resolution"],
                        "customer_tiers": ["Top"],
                        "notify_emails": [VIP],
                        "notify_account_owner": True,
                    },
                ]
            },
        ),
    ]
    for url, body in calls:
        r = await meg.put(url, json=body)
        assert r.status_code in (200, 201), (url, r.text)


def mails(stack: Stack, to: str) -> list[Any]:
    return [stack.catcher.store.get(m.id) for m in stack.catcher.store.list(to=to)]


async def test_unanswered_ticket_escalates_once_per_rule_across_ticks_and_a_restart(
    stack: Stack,
) -> None:
    await configure(stack)
    meg = stack.user("service_manager", user="meg")
    ana = stack.user("service_agent", user="ana")
    bad_rules = await meg.put(
        "/escalation-rules",
        json={"rules": [{"rule_id": "x", "kind": "no_public_answer", "notify_emails": [MANAGER]}]},
    )
    assert bad_rules.status_code == 422
    assert bad_rules.json()["errors"][0]["field"] == "rules.0.after_days"
    nobody = await meg.put(
        "/escalation-rules", json={"rules": [{"rule_id": "x", "kind": "sla_breach"}]}
    )
    assert nobody.status_code == 422
    assert (await ana.get("/escalation-rules")).json()["version"] == 1

    opened = await meg.post(
        "/tickets",
        json={
            "kind": "incident",
            "subject": "Checkout fails",
            "customer_email": "ada@example.com",
            "language": "en",
        },
    )
    assert opened.status_code == 201, opened.text
    lonely = opened.json()
    assert lonely["assignee_id"] == "ana"  # routed by SD-B's default queue
    vip = await meg.post(
        "/tickets",
        json={
            "kind": "complaint",
            "subject": "Invoice wrong",
            "customer_email": "grace@bigco.example",
            "priority": "high",
            "customer_tier": "top",
        },
    )
    assert vip.status_code == 201, vip.text
    vip_id = vip.json()["id"]
    answered = await ana.post(f"/tickets/{vip_id}/replies", json={"body": "Looking into it."})
    assert answered.status_code in (200, 201), answered.text

    start = datetime.now(UTC)
    clock = ManualClock(start)
    scheduler = Scheduler(stack.ctx.pool, sla_jobs(stack.ctx), clock)

    async def tick(**after: float) -> dict[str, int]:
        clock.current = start + timedelta(**after)
        return await scheduler.tick()

    assert (await tick(minutes=30))["sla.escalation_mail"] == 0
    done = await tick(minutes=61)  # the lonely ticket missed its first-response target
    assert done["sla.evaluate"] >= 1 and done["sla.escalation_mail"] == 1
    got = mails(stack, MANAGER)
    assert len(got) == 1 and got[0].rcpt_tos == [MANAGER]
    assert lonely["id"] in (got[0].subject or "") and "Checkout fails" in (got[0].subject or "")
    assert "late-first-response" in (got[0].text or "")
    assert "first response target breached" in (got[0].text or "")
    for minutes in (62, 90, 120):
        assert (await tick(minutes=minutes))["sla.escalation_mail"] == 0
    assert len(mails(stack, MANAGER)) == 1

    # a restart: a new scheduler (and new jobs) over the same database sends nothing again
    scheduler = Scheduler(stack.ctx.pool, sla_jobs(stack.ctx), clock)
    assert (await tick(minutes=121))["sla.escalation_mail"] == 0
    assert len(mails(stack, MANAGER)) == 1

    # 8 hours: both tickets miss resolution; only the top-tier customer's escalates
    assert (await tick(hours=8, minutes=1))["sla.escalation_mail"] == 1
    vip_mail = mails(stack, VIP)
    assert len(vip_mail) == 1 and vip_id in (vip_mail[0].subject or "")
    assert len(mails(stack, MANAGER)) == 1

    # two days without a public answer: the manager and the team lead, once
    assert (await tick(days=2, minutes=1))["sla.escalation_mail"] == 1
    to_manager = mails(stack, MANAGER)
    assert len(to_manager) == 2 and "no public answer" in (to_manager[0].text or "")
    assert len(mails(stack, LEAD)) == 1
    scheduler = Scheduler(stack.ctx.pool, sla_jobs(stack.ctx), clock)  # another restart
    for days in (2.5, 3, 10):
        done = await tick(days=days)
        assert done["sla.escalate"] == 0 and done["sla.escalation_mail"] == 0
    assert len(mails(stack, MANAGER)) == 2 and len(mails(stack, VIP)) == 1

    # the escalations, as events sales and analytics consume (public, keyed by the customer)
    async with stack.ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject, payload FROM events WHERE event_type = 'crm.service.ticket.escalated'"
            " ORDER BY position"
        )
    escalated = [(r["subject"], json.loads(r["payload"])) for r in rows]
    assert [(p["ticket_id"], p["rule_id"]) for _, p in escalated] == [
        (lonely["id"], "late-first-response"),
        (vip_id, "top-tier-breach"),
        (lonely["id"], "unanswered-2d"),
    ]
    top = escalated[1][1]
    assert top["notify_account_owner"] is True and top["customer_tier"] == "top"
    assert escalated[1][0] == top["customer_id"] == vip.json()["customer_id"]
    listed = (await meg.get("/escalations", params={"ticket_id": lonely["id"]})).json()["items"]
    assert [e["rule_id"] for e in listed] == ["late-first-response", "unanswered-2d"]
    assert all(e["mailed_at"] is not None for e in listed)
