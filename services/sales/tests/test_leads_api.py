"""The sales API on real PostgreSQL: auth, problems, idempotency, If-Match, as_of, lists, feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crm_runtime.settings import Settings
from crm_sales.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    url = await fresh_db("crm_sales")
    app = create_app(settings_for("sales", database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sales") as c:
            yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


LEAD = {"name": "Ada Lovelace", "email": "ada@example.com", "source": "web_form"}


def lead_no(i: int) -> dict[str, str]:
    return {**LEAD, "email": f"ada{i}@example.com"}


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    metrics = await client.get("/metrics")
    assert "crm_http_requests_total" in metrics.text


async def test_401_without_token_and_with_a_bad_one(client: httpx.AsyncClient) -> None:
    r = await client.post("/leads", json=LEAD)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.post("/leads", json=LEAD, headers=auth("not.a.jwt"))
    assert r.status_code == 401


async def test_403_without_the_role(client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    r = await client.post("/leads", json=LEAD, headers=auth(token("marketer")))
    assert r.status_code == 403
    assert r.json()["title"] == "Forbidden"


async def test_422_names_the_field_and_changes_nothing(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    r = await client.post(
        "/leads", json={**LEAD, "email": "not-an-email", "source": "x"}, headers=h
    )
    assert r.status_code == 422
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"email", "source"}
    assert all(e["reason"] for e in body["errors"])
    assert (await client.get("/leads", headers=h)).json()["items"] == []


async def test_blank_lead_text_is_a_422_naming_the_field_and_text_is_stored_trimmed(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    for body, field in (
        ({**LEAD, "name": "   "}, "name"),
        ({**LEAD, "name": "\t\n "}, "name"),
        ({**LEAD, "name": ""}, "name"),
        ({**LEAD, "company": "  "}, "company"),
        ({**LEAD, "name": "\u200b\u00a0"}, "name"),  # invisible only: blank too
    ):
        r = await client.post("/leads", json=body, headers=h)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in r.json()["errors"]] == [field]
        assert "whitespace" in r.json()["errors"][0]["reason"]
    assert (await client.get("/leads", headers=h)).json()["items"] == []

    body = {**LEAD, "name": "  Ada Lovelace \n", "company": " Analytical Engines  "}
    lead = (await client.post("/leads", json=body, headers=h)).json()
    assert (lead["name"], lead["company"]) == ("Ada Lovelace", "Analytical Engines")
    listed = (await client.get("/leads", headers=h)).json()["items"]
    assert [(i["name"], i["company"]) for i in listed] == [("Ada Lovelace", "Analytical Engines")]
    # a name that is only within the limit once trimmed is taken
    padded = {**lead_no(2), "name": "  " + "x" * 200 + "  "}
    assert (await client.post("/leads", json=padded, headers=h)).status_code == 201

    url = f"/leads/{lead['id']}"
    r = await client.post(f"{url}/disqualify", json={"reason": "  "}, headers=h)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["reason"]
    got = (await client.get(url, headers=h)).json()
    assert (got["status"], got["version"]) == ("new", lead["version"])  # nothing changed


async def test_a_time_out_of_range_is_a_422_naming_it_and_changes_nothing(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    lead = (await client.post("/leads", json=LEAD, headers=h)).json()
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        r = await client.get(f"/leads/{lead['id']}", params={"as_of": value}, headers=h)
        assert r.status_code == 422, r.text
        assert [(e["field"], e["in"]) for e in r.json()["errors"]] == [("as_of", "query")]
        assert "out of range" in r.json()["errors"][0]["reason"]
        task = await client.post("/tasks", json={"title": "Call back", "due_at": value}, headers=h)
        assert task.status_code == 422, task.text
        assert [e["field"] for e in task.json()["errors"]] == ["due_at"]
    assert (await client.get("/tasks", params={"assignee_id": "any"}, headers=h)).json()[
        "items"
    ] == []


async def test_a_body_over_the_limit_is_a_413_problem_and_changes_nothing(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    big = {**LEAD, "company": "x" * (4 * 1024 * 1024)}
    r = await client.post("/leads", json=big, headers=h)
    assert r.status_code == 413, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == (
        "the request body is larger than this endpoint takes (4,194,304 bytes)"
    )
    assert (await client.get("/leads", headers=h)).json()["items"] == []


async def test_capture_read_history_and_as_of(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_rep", user="alice"))
    r = await client.post("/leads", json=LEAD, headers={**h, "X-Correlation-ID": "corr-123"})
    assert r.status_code == 201, r.text
    lead = r.json()
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"/leads/{lead['id']}"
    assert lead["owner_id"] == "alice" and lead["status"] == "new"
    before_qualify = datetime.now(UTC)
    await asyncio.sleep(0.01)
    r = await client.post(
        f"/leads/{lead['id']}/qualify", json={"score": 80}, headers={**h, "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    now = (await client.get(f"/leads/{lead['id']}", headers=h)).json()
    assert now["status"] == "qualified" and now["version"] == 2
    then = await client.get(
        f"/leads/{lead['id']}", params={"as_of": before_qualify.isoformat()}, headers=h
    )
    assert then.json()["status"] == "new" and then.json()["version"] == 1
    history = (await client.get(f"/leads/{lead['id']}/history", headers=h)).json()
    assert [e["type"] for e in history] == ["crm.sales.lead.captured", "crm.sales.lead.qualified"]
    assert history[0]["correlation_id"] == "corr-123"
    assert history[0]["actor"] == "alice"


async def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    lead = (await client.post("/leads", json=LEAD, headers=h)).json()
    ok = await client.post(
        f"/leads/{lead['id']}/qualify", json={"score": 10}, headers={**h, "If-Match": '"1"'}
    )
    assert ok.status_code == 200
    stale = await client.post(
        f"/leads/{lead['id']}/disqualify", json={"reason": "x"}, headers={**h, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2
    assert (await client.get(f"/leads/{lead['id']}", headers=h)).json()["status"] == "qualified"


async def test_409_on_a_business_rule_and_404_on_unknown(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    lead = (await client.post("/leads", json=LEAD, headers=h)).json()
    await client.post(f"/leads/{lead['id']}/disqualify", json={"reason": "spam"}, headers=h)
    r = await client.post(f"/leads/{lead['id']}/qualify", json={"score": 5}, headers=h)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/leads/nope", headers=h)).status_code == 404


async def test_idempotency_key_creates_once_and_rejects_a_different_body(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = {**auth(token("sales_manager")), "Idempotency-Key": "create-ada-1"}
    first, second = await asyncio.gather(
        client.post("/leads", json=LEAD, headers=h), client.post("/leads", json=LEAD, headers=h)
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    third = await client.post("/leads", json=LEAD, headers=h)
    assert third.json()["id"] == first.json()["id"]
    assert third.headers["idempotent-replayed"] == "true"
    listed = (await client.get("/leads", headers=auth(token("sales_manager")))).json()["items"]
    assert len(listed) == 1
    other = await client.post("/leads", json={**LEAD, "name": "Someone Else"}, headers=h)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_reps_see_their_own_leads_and_lists_page_by_cursor(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    alice, bob = auth(token("sales_rep", user="alice")), auth(token("sales_rep", user="bob"))
    ids = [
        (await client.post("/leads", json=lead_no(i), headers=alice)).json()["id"] for i in range(5)
    ]
    bobs = (await client.post("/leads", json=lead_no(5), headers=bob)).json()["id"]
    assert (await client.get(f"/leads/{bobs}", headers=alice)).status_code == 403
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/leads", params=params, headers=alice)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    bad = await client.get("/leads", params={"cursor": "%%%"}, headers=alice)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


async def test_event_feed_pages_in_commit_order(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    for i in range(5):
        await client.post("/leads", json=lead_no(i), headers=h)
    assert (await client.get("/events", headers=auth(token("sales_rep")))).status_code == 403
    got: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after:
            params["after"] = after
        page = (await client.get("/events", params=params, headers=h)).json()
        got += page["items"]
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert len(got) == 5
    assert all(i["event"]["type"] == "crm.sales.lead.captured" for i in got)
    assert all(i["event"]["specversion"] == "1.0" for i in got)
    r = await client.get("/events", params={"after": "garbage"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"


async def test_duplicate_lead_or_known_contact_is_a_409_naming_it(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    h = auth(token("sales_manager"))
    first = (await client.post("/leads", json=LEAD, headers=h)).json()
    again = await client.post("/leads", json={**LEAD, "email": " ADA@example.com"}, headers=h)
    assert again.status_code == 409 and again.json()["existing_id"] == first["id"]
    assert again.json()["existing"] == f"/leads/{first['id']}"
    # two concurrent captures of a new address: exactly one wins
    both = await asyncio.gather(
        *(client.post("/leads", json=lead_no(99), headers=h) for _ in range(2))
    )
    assert sorted(r.status_code for r in both) == [201, 409]
    # a disqualified lead no longer blocks; an existing contact does
    await client.post(f"/leads/{first['id']}/disqualify", json={"reason": "spam"}, headers=h)
    contact = (
        await client.post(
            "/contacts", json={"last_name": "K", "emails": ["grace@example.com"]}, headers=h
        )
    ).json()
    known = await client.post("/leads", json={**LEAD, "email": "grace@example.com"}, headers=h)
    assert known.status_code == 409 and known.json()["existing_id"] == contact["id"]
    assert (await client.post("/leads", json=LEAD, headers=h)).status_code == 201


async def test_capture_runs_without_fastapis_dependency_solver(
    client: httpx.AsyncClient, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /leads takes CommandRoute's straight-line handler; reads keep FastAPI's way."""
    from fastapi import routing as fastapi_routing

    solved: list[str] = []
    original = fastapi_routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        solved.append(kwargs["request"].method)
        return await original(**kwargs)

    monkeypatch.setattr(fastapi_routing, "solve_dependencies", counting)
    h = {**auth(token("sales_rep", user="rep-1")), "Idempotency-Key": "capture-1"}
    first = await client.post("/leads", json=LEAD, headers=h)
    assert first.status_code == 201, first.text
    assert first.json()["owner_id"] == "rep-1"
    again = await client.post("/leads", json=LEAD, headers=h)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert (await client.get("/leads", headers=h)).status_code == 200
    assert solved == ["GET"]


async def test_a_rep_cannot_change_a_lead_reassigned_after_the_check_before_the_command(
    sales: httpx.AsyncClient,
    sales_app: Any,
    token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check before the transaction may read an older owner (a command run again after a
    lost race always does): the command checks the caller again on the state it changes."""
    from crm_sales.entrypoints.api import leads as leads_api

    rep = auth(token("sales_rep", user="rep-a"))
    manager = auth(token("admin", user="root"))
    created = (await sales.post("/leads", json=LEAD, headers=rep)).json()
    stale = await leads_api.LeadHandlers(sales_app.state.ctx.store).leads.load(created["id"])
    moved = await sales.post(
        f"/leads/{created['id']}/assign", json={"owner_id": "rep-b"}, headers=manager
    )
    assert moved.status_code == 200, moved.text

    async def stale_read(handlers: Any, lead_id: str) -> Any:
        return stale  # as read before the reassignment

    monkeypatch.setattr(leads_api, "_existing", stale_read)
    for path, body in (
        ("qualify", {"score": 80}),
        ("disqualify", {"reason": "no budget"}),
        ("convert", {}),
    ):
        r = await sales.post(f"/leads/{created['id']}/{path}", json=body, headers=rep)
        assert r.status_code == 403, (path, r.text)
    after = (await sales.get(f"/leads/{created['id']}", headers=manager)).json()
    assert after["status"] == "new" and after["owner_id"] == "rep-b" and after["version"] == 2
