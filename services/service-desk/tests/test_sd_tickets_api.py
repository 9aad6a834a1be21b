"""The ticket API on real PostgreSQL and real SMTP: open, list, read, history, change,
converse, resolve, merge, returns, permissions and the operational views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sd_support import ORIGIN, SITE_KEY, Desk, configure_routing, desk_stack

from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


def ticket_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "incident",
        "subject": "Checkout fails",
        "description": "Error 500 after the card step",
        "customer_email": "ada@example.com",
        "customer_name": "Ada Lovelace",
        "priority": "high",
        "product": "webshop",
        "language": "en",
        "region": "EMEA",
    }
    body.update(kw)
    return body


async def test_open_read_list_history_and_patch(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    r = await meg.post("/tickets", json=ticket_body(), headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["id"].startswith("T-") and t["status"] == "new" and t["channel"] == "api"
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == f"/tickets/{t['id']}"
    again = await meg.post("/tickets", json=ticket_body(), headers={"Idempotency-Key": "k1"})
    assert again.json()["id"] == t["id"] and again.headers["Idempotent-Replayed"] == "true"
    # an unknown address minted a provisional customer and a person.sighted event
    sighted = await sd.ctx.store.read_stream(f"person-{t['customer_id']}")
    assert [e.type for e in sighted] == ["crm.service.person.sighted"]
    assert sighted[0].data["sighted_as"] == "customer" and sighted[0].subject == t["customer_id"]
    # the same address again: the same customer, no second sighting
    second = (await meg.post("/tickets", json=ticket_body(subject="Other"))).json()
    assert second["customer_id"] == t["customer_id"]
    assert len(await sd.ctx.store.read_stream(f"person-{t['customer_id']}")) == 1

    bad = await meg.post(
        "/tickets",
        json=ticket_body(kind="product_return", customer_email="nope", priority="asap"),
    )
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"customer_email", "priority"} <= fields

    before = datetime.now(UTC)
    patched = await meg.patch(
        f"/tickets/{t['id']}", json={"priority": "urgent"}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 200 and patched.json()["priority"] == "urgent"
    stale = await meg.patch(
        f"/tickets/{t['id']}", json={"priority": "low"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert (await meg.patch(f"/tickets/{t['id']}", json={"priority": None})).status_code == 422
    old = await meg.get(f"/tickets/{t['id']}", params={"as_of": before.isoformat()})
    assert old.json()["priority"] == "high" and old.headers["ETag"] == '"1"'
    history = (await meg.get(f"/tickets/{t['id']}/history")).json()
    assert [h["type"] for h in history] == [
        "crm.service.ticket.opened",
        "crm.service.ticket.updated",
    ]
    assert history[0]["actor"] == "meg" and history[1]["data"]["changed"] == ["priority"]
    assert (await meg.get("/tickets/T-0000000000")).status_code == 404

    page1 = (await meg.get("/tickets", params={"limit": 1})).json()
    assert len(page1["items"]) == 1 and page1["next_cursor"]
    page2 = (await meg.get("/tickets", params={"limit": 1, "cursor": page1["next_cursor"]})).json()
    assert {page1["items"][0]["id"], page2["items"][0]["id"]} == {t["id"], second["id"]}
    urgent = (await meg.get("/tickets", params={"priority": "urgent"})).json()["items"]
    assert [i["id"] for i in urgent] == [t["id"]]
    assert (await meg.get("/tickets", params={"cursor": "garbage!"})).status_code == 422


async def test_a_time_out_of_range_is_a_422_naming_it(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        r = await meg.get(f"/tickets/{t['id']}", params={"as_of": value})
        assert r.status_code == 422, r.text
        assert [(e["field"], e["in"]) for e in r.json()["errors"]] == [("as_of", "query")]
        assert "out of range" in r.json()["errors"][0]["reason"]


async def test_conversation_mail_notes_and_first_response(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    note = await meg.post(f"/tickets/{t['id']}/notes", json={"body": "internal: VIP"})
    assert note.status_code == 200
    r = await meg.post(f"/tickets/{t['id']}/replies", json={"body": "We are on it."})
    assert r.status_code == 200 and r.json()["status"] == "in_progress"
    mails = await sd.mail_to("ada@example.com")
    assert len(mails) == 1
    mail = mails[0]
    assert f"[#{t['id']}]" in (mail.subject or "")
    assert "We are on it." in (mail.text or "") and "internal" not in (mail.text or "")
    headers = {h.name: h.value for h in mail.headers}
    assert headers["From"] == "support@desk.example.com"
    history = (await meg.get(f"/tickets/{t['id']}/history")).json()
    replied = next(h for h in history if h["type"] == "crm.service.ticket.replied")
    assert replied["data"]["message_id"] == headers["Message-ID"]
    assert replied["data"]["first_response"] is True
    row = (await meg.get("/tickets", params={"customer_id": t["customer_id"]})).json()["items"][0]
    assert row["first_response_at"] is not None and row["last_agent_reply_at"] is not None
    comments = (await meg.get(f"/tickets/{t['id']}/comments")).json()
    assert [(c["author_kind"], c["public"]) for c in comments] == [
        ("agent", False),
        ("agent", True),
    ]
    wait = await meg.post(
        f"/tickets/{t['id']}/replies", json={"body": "Which order?", "wait_on_customer": True}
    )
    assert wait.json()["status"] == "waiting_on_customer"
    spans = await sd.ctx.pool.fetch(
        "SELECT status, ended_at FROM ticket_status_spans WHERE ticket_id = $1 ORDER BY started_at",
        t["id"],
    )
    assert [s["status"] for s in spans] == ["new", "in_progress", "waiting_on_customer"]
    assert spans[-1]["ended_at"] is None and spans[0]["ended_at"] is not None


async def test_resolve_sends_survey_close_and_409s(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    res = await meg.post(f"/tickets/{t['id']}/resolve", json={"resolution": "Fixed the bug"})
    assert res.status_code == 200 and res.json()["status"] == "resolved"
    survey = await sd.mail_to("ada@example.com")
    assert len(survey) == 1 and "/survey/" in (survey[0].text or "")
    assert (await meg.post(f"/tickets/{t['id']}/resolve", json={})).status_code == 409
    closed = await meg.post(f"/tickets/{t['id']}/close", json={})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    version = closed.json()["version"]
    refused = await meg.post(f"/tickets/{t['id']}/replies", json={"body": "hello?"})
    assert refused.status_code == 409 and "closed" in refused.json()["detail"]
    assert (await meg.post(f"/tickets/{t['id']}/reopen", json={})).status_code == 409
    assert (await meg.get(f"/tickets/{t['id']}")).json()["version"] == version  # nothing changed
    assert len(await sd.mail_to("ada@example.com")) == 1  # and nothing was sent


async def test_ticket_mail_has_date_and_message_id(sd: Desk) -> None:
    """RFC 5322 3.6: every message carries one Date (when it was written, in UTC) and one
    Message-ID: the acknowledgement of a portal ticket, an agent's reply, the CSAT survey."""
    before = datetime.now(UTC).replace(microsecond=0)  # a Date has whole seconds
    form = {"email": "grace@example.com", "subject": "Parcel lost", "message": "SO-77 is late."}
    r = await sd.client.post(
        "/portal/tickets", json=form, headers={"X-Site-Key": SITE_KEY, "Origin": ORIGIN}
    )
    assert r.status_code == 202, r.text
    meg = sd.user("service_manager", user="meg")
    [t] = (await meg.get("/tickets")).json()["items"]
    assert (await meg.post(f"/tickets/{t['id']}/replies", json={"body": "On it"})).is_success
    assert (await meg.post(f"/tickets/{t['id']}/resolve", json={})).is_success
    mails = await sd.mail_to("grace@example.com", count=3)
    after = datetime.now(UTC)
    assert len(mails) == 3
    ids = set()
    for mail in mails:
        names = [h.name.lower() for h in mail.headers]
        assert names.count("date") == 1 and names.count("message-id") == 1, names
        headers = {h.name.lower(): h.value for h in mail.headers}
        sent = parsedate_to_datetime(headers["date"])
        assert sent.utcoffset() == timedelta(0), headers["date"]
        assert before <= sent <= after, (headers["date"], before, after)
        assert headers["message-id"].endswith("@desk.example.com>")
        ids.add(headers["message-id"])
    assert len(ids) == 3
    outbox = await sd.ctx.pool.fetch("SELECT purpose FROM ticket_outbox")
    assert sorted(r["purpose"] for r in outbox) == ["acknowledgement", "reply", "survey"]


async def test_product_return_and_merge(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    ret = (
        await meg.post(
            "/tickets",
            json=ticket_body(
                kind="product_return",
                product_return={"order_ref": "SO-1", "product_ref": "BLX", "reason": "broken"},
            ),
        )
    ).json()
    assert ret["return_status"] == "requested" and ret["product_return"]["order_ref"] == "SO-1"
    for step in ("approved", "received", "refunded"):
        r = await meg.post(f"/tickets/{ret['id']}/return", json={"status": step})
        assert r.status_code == 200 and r.json()["return_status"] == step
    twice = await meg.post(f"/tickets/{ret['id']}/return", json={"status": "refunded"})
    assert twice.status_code == 409
    assert (
        await meg.post(f"/tickets/{ret['id']}/return", json={"status": "lost"})
    ).status_code == 422
    missing = await meg.post("/tickets", json=ticket_body(kind="product_return"))
    assert missing.status_code == 422

    a = (await meg.post("/tickets", json=ticket_body(subject="Dup 1"))).json()
    b = (await meg.post("/tickets", json=ticket_body(subject="Dup 2"))).json()
    merged = await meg.post(f"/tickets/{b['id']}/merge", json={"into": a["id"]})
    assert merged.status_code == 200, merged.text
    out = merged.json()
    assert out["duplicate"]["status"] == "merged" and out["duplicate"]["merged_into"] == a["id"]
    assert out["survivor"]["duplicates"] == [b["id"]]
    assert (await meg.post(f"/tickets/{b['id']}/replies", json={"body": "x"})).status_code == 409
    assert (await meg.post(f"/tickets/{a['id']}/merge", json={"into": a["id"]})).status_code == 409
    assert (
        await meg.post(f"/tickets/{a['id']}/merge", json={"into": "T-0000000000"})
    ).status_code == 409
    listed = (await meg.get("/tickets", params={"status": "merged"})).json()["items"]
    assert [i["id"] for i in listed] == [b["id"]]


async def test_permissions_queues_and_manual_reassignment(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    ann = sd.user("service_agent", user="ann", team="billing")  # no profile: team = its queue
    bob = sd.user("service_agent", user="bob", team="tech")
    analyst = sd.user("analyst", user="al")
    rep = sd.user("sales_rep", user="rita")
    # others read, change nothing
    assert (await analyst.get(f"/tickets/{t['id']}")).status_code == 200
    assert (await rep.get("/tickets")).status_code == 200
    assert (await analyst.post(f"/tickets/{t['id']}/notes", json={"body": "x"})).status_code == 403
    assert (await rep.post("/tickets", json=ticket_body())).status_code == 403
    # unqueued: agents cannot work it
    assert (await ann.post(f"/tickets/{t['id']}/notes", json={"body": "x"})).status_code == 403
    await configure_routing(sd.ctx, queues=["billing", "tech"], agents={}, rules=[])
    moved = await meg.post(f"/tickets/{t['id']}/assign", json={"queue_id": "billing"})
    assert moved.status_code == 200 and moved.json()["queue_id"] == "billing"
    assert (await ann.post(f"/tickets/{t['id']}/notes", json={"body": "mine"})).status_code == 200
    assert (await bob.post(f"/tickets/{t['id']}/notes", json={"body": "no"})).status_code == 403
    # an agent may not hand a ticket to someone else
    handoff = await ann.post(f"/tickets/{t['id']}/assign", json={"assignee_id": "bob"})
    assert handoff.status_code == 403
    # taking it needs an agent profile (SD-B validates); with one, the agent takes it
    await configure_routing(
        sd.ctx,
        queues=["billing", "tech"],
        agents={"ann": {"queues": ["billing"]}, "bob": {"queues": ["tech"]}},
        rules=[],
    )
    take = await ann.post(f"/tickets/{t['id']}/assign", json={"assignee_id": "ann"})
    assert take.status_code == 200, take.text
    assert (take.json()["assignee_id"], take.json()["status"]) == ("ann", "assigned")
    assigned = [
        h
        for h in (await meg.get(f"/tickets/{t['id']}/history")).json()
        if h["type"] == "crm.service.ticket.assigned"
    ]
    assert assigned[-1]["data"]["manual"] is True
    # the manager moves it to bob: bob's queue comes with it (his profile)
    to_bob = await meg.post(f"/tickets/{t['id']}/assign", json={"assignee_id": "bob"})
    assert to_bob.status_code == 200
    assert (to_bob.json()["assignee_id"], to_bob.json()["queue_id"]) == ("bob", "tech")
    assert (await bob.post(f"/tickets/{t['id']}/notes", json={"body": "ok"})).status_code == 200
    assert (await ann.post(f"/tickets/{t['id']}/notes", json={"body": "no"})).status_code == 403
    nobody = await meg.post(f"/tickets/{t['id']}/assign", json={"assignee_id": "ghost"})
    assert nobody.status_code == 422
    assert [e["field"] for e in nobody.json()["errors"]] == ["assignee_id"]


async def test_assign_to_an_unknown_queue_or_agent_is_422_and_changes_nothing(sd: Desk) -> None:
    await configure_routing(
        sd.ctx, queues=["billing"], agents={"ann": {"queues": ["billing"]}}, rules=[]
    )
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    before = await sd.ctx.store.read_stream(f"ticket-{t['id']}")

    async def refused(body: dict[str, Any], field: str, reason: str) -> None:
        r = await meg.post(f"/tickets/{t['id']}/assign", json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 422 and problem["errors"] == [
            {"field": field, "reason": reason}
        ]

    # as PUT /routing-rules and PUT /agents answer an unknown queue
    await refused({"queue_id": "nope"}, "queue_id", "queue nope does not exist")
    await refused(
        {"queue_id": "nope", "assignee_id": "ann"}, "queue_id", "queue nope does not exist"
    )
    # an assignee without an agent profile: the request's field is named
    await refused(
        {"assignee_id": "ghost"}, "assignee_id", "ghost has no agent profile in the service desk"
    )
    await refused(
        {"queue_id": "billing", "assignee_id": "ghost"},
        "assignee_id",
        "ghost has no agent profile in the service desk",
    )
    # nothing changed: the ticket, its events, no routing decision recorded
    now = (await meg.get(f"/tickets/{t['id']}")).json()
    assert (now["queue_id"], now["assignee_id"], now["status"], now["version"]) == (
        None,
        None,
        "new",
        t["version"],
    )
    assert len(await sd.ctx.store.read_stream(f"ticket-{t['id']}")) == len(before)
    assert (await meg.get(f"/routing/tickets/{t['id']}")).status_code == 404
    # a queue that exists, and then taking it off every queue, still work
    moved = await meg.post(f"/tickets/{t['id']}/assign", json={"queue_id": "billing"})
    assert moved.status_code == 200 and moved.json()["queue_id"] == "billing"
    off = await meg.post(f"/tickets/{t['id']}/assign", json={"queue_id": None})
    assert off.status_code == 200 and off.json()["queue_id"] is None


async def test_routing_on_open(sd: Desk) -> None:
    await configure_routing(
        sd.ctx,
        queues=["returns", "support"],
        agents={
            "ann": {"queues": ["returns"], "skills": ["blender"], "languages": ["en"]},
            "bob": {"queues": ["support"], "languages": ["de"]},
        },
        rules=[
            {"rule_id": "returns", "kinds": ["product_return"], "queue_id": "returns"},
            {"rule_id": "german", "languages": ["de"], "queue_id": "support"},
        ],
    )
    meg = sd.user("service_manager", user="meg")
    ret = await meg.post(
        "/tickets",
        json=ticket_body(
            kind="product_return",
            product="blender",
            product_return={"order_ref": "SO-9", "product_ref": "BLX", "reason": "cracked"},
        ),
    )
    t = ret.json()
    assert (t["queue_id"], t["assignee_id"], t["status"]) == ("returns", "ann", "assigned")
    hist = (await meg.get(f"/tickets/{t['id']}/history")).json()
    assert hist[1]["type"] == "crm.service.ticket.assigned"
    assert hist[1]["data"]["rule_id"] == "returns"
    de = (await meg.post("/tickets", json=ticket_body(language="de", product=None))).json()
    assert (de["queue_id"], de["assignee_id"]) == ("support", "bob")
    other = (await meg.post("/tickets", json=ticket_body(language="fr", product=None))).json()
    assert other["queue_id"] is None and other["status"] == "new"  # no rule, no default


async def test_operational_views(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    a = (await meg.post("/tickets", json=ticket_body(subject="A"))).json()
    b = (await meg.post("/tickets", json=ticket_body(subject="B"))).json()
    c = (await meg.post("/tickets", json=ticket_body(subject="C"))).json()
    await configure_routing(sd.ctx, queues=["billing"], agents={}, rules=[])
    await meg.post(f"/tickets/{a['id']}/assign", json={"queue_id": "billing"})
    await meg.post(f"/tickets/{c['id']}/replies", json={"body": "?", "wait_on_customer": True})
    await meg.post(f"/tickets/{b['id']}/resolve", json={})
    # make A the oldest waiting
    await sd.ctx.pool.execute(
        "UPDATE tickets SET created_at = $2 WHERE ticket_id = $1",
        a["id"],
        datetime.now(UTC) - timedelta(hours=5),
    )
    analyst = sd.user("analyst")
    backlog = (await analyst.get("/views/backlog")).json()
    assert backlog["open"] == 2
    assert backlog["by_status"] == {
        "new": 1,
        "assigned": 0,
        "in_progress": 0,
        "waiting_on_customer": 1,
    }
    assert {(q["key"], q["open"]) for q in backlog["by_queue"]} == {("billing", 1), (None, 1)}
    waiting = (await analyst.get("/views/oldest-waiting")).json()
    assert [w["id"] for w in waiting] == [a["id"]]  # C waits on the customer, B is resolved
    assert waiting[0]["waiting_seconds"] >= 5 * 3600 - 5
    risk = (await analyst.get("/views/at-risk")).json()
    assert risk == {"sla_available": True, "items": []}
    now = datetime.now(UTC)
    await sd.ctx.pool.execute(  # what SD-B's SLA job keeps: A's first response is at risk
        "INSERT INTO sla_states (ticket_id, target, episode, priority, status, started_at,"
        " elapsed_minutes, target_minutes, at_risk_percent, due_at, at_risk_at, evaluated_at)"
        " VALUES ($1, 'first_response', 1, 'high', 'at_risk', $2, 50, 60, 80, $3, $2, $2)",
        a["id"],
        now,
        now + timedelta(minutes=10),
    )
    risk = (await analyst.get("/views/at-risk")).json()
    assert [(i["id"], i["target"], i["sla_status"]) for i in risk["items"]] == [
        (a["id"], "first_response", "at_risk")
    ]


async def test_routing_and_sla_do_not_hang_on_an_import_that_may_fail(
    sd: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing and the SLA jobs are part of the service, not optional plug-ins: they were
    imported late under ``except ImportError`` (from when they were written apart), so a
    routing or SLA module that failed to import silently let a ticket open unrouted, a manual
    assignment skip its checks (an unknown queue was taken) and the scheduler drop the SLA
    jobs. Now they are plain imports: such a failure stops the service from starting."""
    import sys

    import crm_service_desk.application as application
    from crm_service_desk.jobs import jobs_for

    await configure_routing(
        sd.ctx, queues=["billing"], agents={}, rules=[], default_queue_id="billing"
    )
    for name in ("routing", "sla"):  # what a module that fails to import looks like from here
        monkeypatch.delattr(application, name)
        monkeypatch.setitem(sys.modules, f"crm_service_desk.application.{name}", None)
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=ticket_body())).json()
    assert t["queue_id"] == "billing"  # routed (it stayed unrouted)
    r = await meg.post(f"/tickets/{t['id']}/assign", json={"queue_id": "nope"})
    assert r.status_code == 422, r.text  # checked (it was a 200)
    assert "sla.evaluate" in jobs_for(sd.ctx, sd.desk)  # scheduled (it was left out)


async def test_mail_is_retried_and_resolved_tickets_close_on_schedule(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> None:
    from crm_runtime.embedded import free_port
    from crm_runtime.mailcatcher import MailCatcher
    from crm_runtime.scheduler import ManualClock, Scheduler
    from crm_service_desk.jobs import jobs_for

    async with desk_stack(tmp_path, fresh_db, settings_for, token) as sd:
        port = free_port()  # the SMTP server is down
        sd.ctx.settings = sd.ctx.settings.model_copy(
            update={"smtp_url": f"smtp://127.0.0.1:{port}"}
        )
        meg = sd.user("service_manager")
        t = (await meg.post("/tickets", json=ticket_body())).json()
        r = await meg.post(f"/tickets/{t['id']}/replies", json={"body": "Answer"})
        assert r.status_code == 200  # the reply is recorded; its mail waits
        pending = await sd.ctx.pool.fetchval(
            "SELECT count(*) FROM ticket_outbox WHERE sent_at IS NULL AND attempts = 1"
        )
        assert pending == 1
        clock = ManualClock(datetime.now(UTC) + timedelta(minutes=5))
        scheduler = Scheduler(sd.ctx.pool, jobs_for(sd.ctx, sd.desk), clock)
        async with MailCatcher(tmp_path / "later", smtp_port=port) as later:
            assert (await scheduler.tick())["tickets.mail"] == 1
            assert (await scheduler.tick())["tickets.mail"] == 0  # sent once
            [mail] = later.store.list()
            assert mail.rcpt_tos == ["ada@example.com"] and f"[#{t['id']}]" in (mail.subject or "")
            # dated when the reply was written, not when a retry got it out
            written = await sd.ctx.pool.fetchval("SELECT created_at FROM ticket_outbox")
            date = {h.name: h.value for h in later.store.get(mail.id).headers}["Date"]
            assert parsedate_to_datetime(date) == written.replace(microsecond=0)
            await meg.post(f"/tickets/{t['id']}/resolve", json={})
            clock.advance(days=6)
            assert (await scheduler.tick())["tickets.auto_close"] == 0
            clock.advance(days=2)
            assert (await scheduler.tick())["tickets.auto_close"] == 1
            assert (await meg.get(f"/tickets/{t['id']}")).json()["status"] == "closed"
            assert (await scheduler.tick())["tickets.auto_close"] == 0
