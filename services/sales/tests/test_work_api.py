"""Assignment, activities, tasks and reminders over the API on real PostgreSQL and real SMTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.scheduler import ManualClock, Scheduler
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller as Caller
from crm_sales.app import create_app
from crm_sales.jobs import jobs_for

pytestmark = pytest.mark.integration


async def profile(meg: Caller, user: str, **body: Any) -> None:
    r = await meg.put(f"/reps/{user}", json=body)
    assert r.status_code == 200, r.text


async def test_rules_route_leads_by_region_and_product_then_least_open_work(
    as_user: Callable[..., Caller],
) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    await profile(meg, "alice", team_id="emea", regions=["EMEA"], product_lines=["analytics"])
    await profile(meg, "bob", team_id="emea", regions=["EMEA"], product_lines=["analytics", "crm"])
    await profile(meg, "carl", team_id="us", regions=["US"], product_lines=["crm"])
    rules = {
        "rules": [
            {"rule_id": "us", "applies_to": ["lead", "deal"], "region": "US"},
            {
                "rule_id": "emea-analytics",
                "applies_to": ["lead"],
                "region": "emea",
                "product_line": "analytics",
            },
            {"rule_id": "rest", "applies_to": ["lead"], "strategy": "round_robin"},
        ]
    }
    put = await meg.put("/assignment-rules", json=rules, headers={"If-Match": '"0"'})
    assert put.status_code == 200, put.text
    assert (
        await meg.put("/assignment-rules", json=rules, headers={"If-Match": '"0"'})
    ).status_code == 412

    async def capture(**extra: Any) -> dict[str, Any]:
        r = await meg.post("/leads", json={"name": "Lead", "source": "web_form", **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())

    us = await capture(region="US", product_line="crm")
    assert (us["owner_id"], us["team_id"]) == ("carl", "us")
    a1 = await capture(region="EMEA", product_line="analytics")
    a2 = await capture(region="EMEA", product_line="analytics")
    assert {a1["owner_id"], a2["owner_id"]} == {"alice", "bob"}  # least open work balances
    hist = (await meg.get(f"/leads/{a1['id']}/history")).json()
    assert hist[-1]["type"] == "crm.sales.lead.assigned"
    assert hist[-1]["data"]["rule_id"] == "emea-analytics"
    # alice goes on holiday: she gets nothing new
    away = await meg.post(
        "/reps/alice/availability", json={"available": False, "reason": "holiday"}
    )
    assert away.status_code == 200 and away.json()["available"] is False
    for _ in range(3):
        assert (await capture(region="EMEA", product_line="analytics"))["owner_id"] == "bob"
    # round robin over everyone available, in turn
    owners = [(await capture())["owner_id"] for _ in range(4)]
    assert owners == ["bob", "carl", "bob", "carl"]
    # a rep's own lead is not routed
    alice = as_user("sales_rep", user="alice", team="emea")
    own = await alice.post("/leads", json={"name": "Mine", "region": "US"})
    assert own.json()["owner_id"] == "alice"
    # manual reassignment by a manager; the team comes from the rep's profile
    moved = await meg.post(f"/leads/{a1['id']}/assign", json={"owner_id": "carl"})
    assert moved.status_code == 200 and (moved.json()["owner_id"], moved.json()["team_id"]) == (
        "carl",
        "us",
    )
    assert (
        await alice.post(f"/leads/{own.json()['id']}/assign", json={"owner_id": "bob"})
    ).status_code == 403
    # a rep may set its own availability, not another's
    assert (
        await alice.post("/reps/alice/availability", json={"available": True})
    ).status_code == 200
    assert (
        await alice.post("/reps/bob/availability", json={"available": False})
    ).status_code == 403
    # a rep keeps its e-mail current but does not route work to itself
    mine = await alice.put(
        "/reps/alice",
        json={
            "email": "alice@crm.example",
            "team_id": "emea",
            "regions": ["EMEA"],
            "product_lines": ["analytics"],
        },
    )
    assert mine.status_code == 200 and mine.json()["email"] == "alice@crm.example"
    grab = await alice.put("/reps/alice", json={"team_id": "us", "regions": ["US"]})
    assert grab.status_code == 403 and "sales manager" in grab.json()["detail"]
    bad = await meg.put(
        "/assignment-rules", json={"rules": [{"rule_id": "Bad Id!", "applies_to": []}]}
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} >= {"rules.0.rule_id", "rules.0.applies_to"}


async def test_deals_without_owner_are_routed(as_user: Callable[..., Caller]) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    await profile(meg, "alice", team_id="emea", regions=["EMEA"])
    await meg.put(
        "/assignment-rules",
        json={"rules": [{"rule_id": "emea", "applies_to": ["deal"], "region": "EMEA"}]},
    )
    c = (await meg.post("/contacts", json={"last_name": "X", "region": "EMEA"})).json()
    d = await meg.post("/deals", json={"name": "d", "contact_id": c["id"], "currency": "EUR"})
    assert d.status_code == 201 and d.json()["owner_id"] == "alice"
    types = [h["type"] for h in (await meg.get(f"/deals/{d.json()['id']}/history")).json()]
    assert types == ["crm.sales.deal.opened", "crm.sales.deal.assigned"]


async def test_activities_and_tasks(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice", team="emea")
    carol = as_user("sales_rep", user="carol", team="apac")
    acct = (await alice.post("/accounts", json={"name": "Engines"})).json()
    c = (await alice.post("/contacts", json={"last_name": "Ada", "account_id": acct["id"]})).json()
    r = await alice.post(
        "/activities",
        json={
            "kind": "call",
            "subject": "Discovery",
            "duration_minutes": 30,
            "direction": "outbound",
            "about": {"contact_id": c["id"]},
        },
    )
    assert r.status_code == 201, r.text
    act = r.json()
    assert act["customer_id"] == c["customer_id"]  # the person is the customer
    assert act["about"]["account_id"] == acct["id"]  # filled in from the contact
    listed = (await alice.get("/activities", params={"account_id": acct["id"]})).json()["items"]
    assert [i["id"] for i in listed] == [act["id"]]
    assert (
        await carol.post(
            "/activities", json={"kind": "note", "subject": "x", "about": {"contact_id": c["id"]}}
        )
    ).status_code == 403
    bad = await alice.post("/activities", json={"kind": "note", "subject": "x", "about": {}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "about"
    missing = await alice.post(
        "/activities", json={"kind": "note", "subject": "x", "about": {"deal_id": "nope"}}
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "about.deal_id"
    note_dir = await alice.post(
        "/activities",
        json={
            "kind": "note",
            "subject": "x",
            "direction": "inbound",
            "about": {"contact_id": c["id"]},
        },
    )
    assert note_dir.status_code == 409

    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    t = await alice.post(
        "/tasks",
        json={"title": "Send proposal", "due_at": due, "about": {"account_id": acct["id"]}},
    )
    assert t.status_code == 201, t.text
    task = t.json()
    assert task["assignee_id"] == "alice" and task["customer_id"] == acct["customer_id"]
    mine = (await alice.get("/tasks", params={"done": "false"})).json()["items"]
    assert [i["id"] for i in mine] == [task["id"]]
    assert (await carol.get(f"/tasks/{task['id']}")).status_code == 403
    assert (
        await alice.post("/tasks", json={"title": "x", "assignee_id": "bob"})
    ).status_code == 403
    p = await alice.patch(
        f"/tasks/{task['id']}", json={"priority": "high"}, headers={"If-Match": '"1"'}
    )
    assert p.status_code == 200 and p.json()["priority"] == "high"
    done = await alice.post(f"/tasks/{task['id']}/complete", json={"outcome": "sent"})
    assert done.status_code == 200 and done.json()["done"] is True
    assert (await alice.post(f"/tasks/{task['id']}/complete", json={})).status_code == 409
    assert (await alice.patch(f"/tasks/{task['id']}", json={"title": "y"})).status_code == 409
    assert (await alice.post(f"/tasks/{task['id']}/reopen")).json()["done"] is False
    types = [h["type"] for h in (await alice.get(f"/tasks/{task['id']}/history")).json()]
    assert types == [
        "crm.sales.task.created",
        "crm.sales.task.updated",
        "crm.sales.task.completed",
        "crm.sales.task.reopened",
    ]


async def test_null_for_a_required_task_field_is_a_422_and_logs_nothing(
    as_user: Callable[..., Caller], caplog: pytest.LogCaptureFixture
) -> None:
    """A null title or priority was a NOT NULL violation: a 500, and PostgreSQL's "Failing row
    contains (…)" — the task's text, a person's name and address — in the log."""
    meg = as_user("sales_manager", user="meg", team="emea")
    title = "Call Grace Hopper at grace@navy.example.com"
    task = (await meg.post("/tasks", json={"title": title})).json()
    url = f"/tasks/{task['id']}"
    for field in ("title", "priority"):
        r = await meg.patch(url, json={field: None})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in r.json()["errors"]] == [field]
    got = (await meg.get(url)).json()
    assert (got["title"], got["priority"], got["version"]) == (title, "normal", 1)  # unchanged
    # the fields that may be empty still clear with null
    r = await meg.patch(url, json={"due_at": None, "assignee_id": None})
    assert r.status_code == 200 and r.json()["assignee_id"] is None
    assert not [rec for rec in caplog.records if rec.levelno >= 40], caplog.text
    assert "grace" not in caplog.text.lower()


async def test_blank_titles_and_subjects_are_a_422_and_are_stored_trimmed(
    as_user: Callable[..., Caller],
) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    account = (await meg.post("/accounts", json={"name": "Fair Co"})).json()
    note = {"kind": "note", "about": {"account_id": account["id"]}}
    for r, field in (
        (await meg.post("/tasks", json={"title": "  "}), "title"),
        (await meg.post("/tasks", json={"title": ""}), "title"),
        (await meg.post("/activities", json={**note, "subject": "\n\t"}), "subject"),
    ):
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
        assert "whitespace" in r.json()["errors"][0]["reason"]
    assert (await meg.get("/tasks", params={"assignee_id": "meg"})).json()["items"] == []
    assert (await meg.get("/activities")).json()["items"] == []

    task = (await meg.post("/tasks", json={"title": "  Call back "})).json()
    assert task["title"] == "Call back"
    url = f"/tasks/{task['id']}"
    r = await meg.patch(url, json={"title": "   "})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["title"]
    assert (await meg.get(url)).json()["version"] == 1
    assert (await meg.patch(url, json={"title": " Call again"})).json()["title"] == "Call again"

    # a rep's regions and product lines are labels: trimmed, refused when blank
    r = await meg.put("/reps/alice", json={"regions": ["EMEA", "\u200b "]})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["regions.1"]
    assert "whitespace" in r.json()["errors"][0]["reason"]
    assert (await meg.get("/reps/alice")).status_code == 404  # nothing recorded
    rep = await meg.put("/reps/alice", json={"regions": [" EMEA "], "product_lines": ["crm\n"]})
    assert rep.status_code == 200, rep.text
    assert (rep.json()["regions"], rep.json()["product_lines"]) == (["EMEA"], ["crm"])


async def test_implausible_activity_and_due_times_are_a_422_stating_the_bounds(
    as_user: Callable[..., Caller],
) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    now = datetime.now(UTC)
    account = (await meg.post("/accounts", json={"name": "Fair Co"})).json()
    note = {"kind": "note", "subject": "Met at the fair", "about": {"account_id": account["id"]}}
    for when, why in (
        (now + timedelta(days=2), "more than 1 day ahead"),
        (datetime(1899, 12, 31, tzinfo=UTC), "between 1900-01-01 and 2200-12-31"),
    ):
        r = await meg.post("/activities", json={**note, "occurred_at": when.isoformat()})
        assert r.status_code == 422, r.text
        (error,) = r.json()["errors"]
        assert error["field"] == "occurred_at"
        assert why in error["reason"], error
    assert (await meg.get("/activities")).json()["items"] == []
    # a few hours ahead is a clock that is a little fast: taken
    skewed = await meg.post(
        "/activities", json={**note, "occurred_at": (now + timedelta(hours=20)).isoformat()}
    )
    assert skewed.status_code == 201, skewed.text

    for due in ("1899-12-31T23:00:00Z", "2201-01-01T00:00:00Z", "2200-12-31T23:00:00-05:00"):
        r = await meg.post("/tasks", json={"title": "Call back", "due_at": due})
        assert r.status_code == 422, (due, r.text)
        (error,) = r.json()["errors"]
        assert error["field"] == "due_at"
        assert "1900-01-01" in error["reason"] and "2200-12-31" in error["reason"]
    assert (await meg.get("/tasks", params={"assignee_id": "meg"})).json()["items"] == []
    task = await meg.post("/tasks", json={"title": "Renewal", "due_at": "2200-12-31T12:00:00Z"})
    assert task.status_code == 201, task.text
    url = f"/tasks/{task.json()['id']}"
    r = await meg.patch(url, json={"due_at": "1850-06-01T00:00:00Z"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "due_at"
    assert (await meg.get(url)).json()["due_at"] == task.json()["due_at"]


@pytest.fixture
async def with_mail(
    tmp_path: Path, fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, MailCatcher, Any]]:
    async with MailCatcher(tmp_path / "mail") as catcher:
        url = await fresh_db("crm_sales")
        settings = settings_for(
            "sales",
            database_url=url,
            scheduler_enabled=False,
            smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
            reminder_inactive_days=14,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sales") as c:
                yield c, catcher, app.state.ctx


async def test_inactive_top_account_reminds_its_owner_once_per_lapse(
    with_mail: tuple[httpx.AsyncClient, MailCatcher, Any], token: Callable[..., str]
) -> None:
    client, catcher, ctx = with_mail
    alice = Caller(client, token("sales_rep", user="alice", team="emea"))
    await alice.put("/reps/alice", json={"email": "alice@crm.example"})
    top = (await alice.post("/accounts", json={"name": "Big Co", "tier": "top"})).json()
    small = (await alice.post("/accounts", json={"name": "Small Co"})).json()
    # The scheduler's clock starts in the past and stays there: the API refuses an activity
    # that happened more than a day from now, so the one logged below at clock.now() is real.
    start = datetime.now(UTC) - timedelta(days=40)
    kick_off = await alice.post(
        "/activities",
        json={
            "kind": "call",
            "subject": "kick-off",
            "about": {"account_id": top["id"]},
            "occurred_at": start.isoformat(),
        },
    )
    assert kick_off.status_code == 201, kick_off.text
    clock = ManualClock(start)
    scheduler = Scheduler(ctx.pool, jobs_for(ctx), clock)

    clock.advance(days=13)
    assert (await scheduler.tick())["reminders.flag"] == 0  # not yet
    clock.advance(days=2)
    done = await scheduler.tick()
    assert done["reminders.flag"] == 1 and done["reminders.mail"] == 1
    mails = catcher.store.list()
    assert len(mails) == 1 and mails[0].rcpt_tos == ["alice@crm.example"]
    assert mails[0].subject == "Reminder: Big Co needs attention"
    assert "15 days" in (catcher.store.get(mails[0].id).text or "")
    tasks = (await alice.get("/tasks", params={"account_id": top["id"]})).json()["items"]
    assert (
        len(tasks) == 1
        and tasks[0]["priority"] == "high"
        and tasks[0]["origin"] == "reminder:inactive-top-account"
    )
    assert small["id"] not in {t["account_id"] for t in tasks}

    clock.advance(days=1)
    again = await scheduler.tick()  # same lapse: nothing new
    assert again["reminders.flag"] == 0 and len(catcher.store.list()) == 1

    # a new activity ends the lapse; the next lapse reminds again
    qbr = await alice.post(
        "/activities",
        json={
            "kind": "meeting",
            "subject": "QBR",
            "about": {"account_id": top["id"]},
            "occurred_at": clock.now().isoformat(),
        },
    )
    assert qbr.status_code == 201, qbr.text
    clock.advance(days=10)
    assert (await scheduler.tick())["reminders.flag"] == 0
    clock.advance(days=5)
    assert (await scheduler.tick())["reminders.flag"] == 1
    assert len(catcher.store.list()) == 2


async def test_reminder_mail_is_retried_when_smtp_is_down(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
    tmp_path: Path,
) -> None:
    from crm_runtime.embedded import free_port

    port = free_port()
    url = await fresh_db("crm_sales")
    settings = settings_for(
        "sales",
        database_url=url,
        scheduler_enabled=False,
        smtp_url=f"smtp://127.0.0.1:{port}",
        reminder_inactive_days=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as client:
            alice = Caller(client, token("sales_rep", user="alice"))
            await alice.put("/reps/alice", json={"email": "alice@crm.example"})
            await alice.post("/accounts", json={"name": "Big", "tier": "top"})
            clock = ManualClock(datetime.now(UTC) + timedelta(days=3))
            scheduler = Scheduler(ctx.pool, jobs_for(ctx), clock)
            first = await scheduler.tick()
            assert first["reminders.flag"] == 1 and first["reminders.mail"] == 0  # SMTP down
            async with MailCatcher(tmp_path / "mail", smtp_port=port) as catcher:
                assert (await scheduler.tick())["reminders.mail"] == 1
                assert len(catcher.store.list()) == 1
                assert (await scheduler.tick())["reminders.mail"] == 0  # sent once
