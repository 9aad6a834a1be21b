"""Knowledge-base API on real PostgreSQL: categories, articles with revisions, publish, archive,
as_of and history, permissions, links to tickets and "this helped" feedback. Every refused
command is checked to have changed nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from crm_runtime.context import ServiceContext
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_service_desk.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[FastAPI]:
    url = await fresh_db("crm_runtime.people", "crm_service_desk")
    application = create_app(
        settings_for(
            "service-desk", database_url=url, scheduler_enabled=False, consumers_enabled=False
        )
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service-desk") as c:
        yield c


@pytest.fixture
def user(client: httpx.AsyncClient, token: Callable[..., str]) -> Callable[..., ApiCaller]:
    def make(*roles: str, user: str = "u-test") -> ApiCaller:
        return ApiCaller(client, token(*roles, user=user))

    return make


@pytest.fixture
def agent(user: Callable[..., ApiCaller]) -> ApiCaller:
    return user("service_agent", user="agnes")


@pytest.fixture
def rep(user: Callable[..., ApiCaller]) -> ApiCaller:
    return user("sales_rep", user="rita")


def ctx_of(app: FastAPI) -> ServiceContext:
    ctx: ServiceContext = app.state.ctx
    return ctx


async def open_ticket(
    agent: ApiCaller, *, subject: str, customer_id: str = "cust-1", email: str = "ada@example.com"
) -> str:
    """A ticket opened through the ticket API, for a customer sales already knows."""
    r = await agent.post(
        "/tickets",
        json={"subject": subject, "customer_email": email, "customer_id": customer_id},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def new_article(agent: ApiCaller, publish: bool = True, **over: Any) -> dict[str, Any]:
    body = {"title": "Reset a jammed printer", "body": "Open the front cover.", **over}
    r = await agent.post("/kb/articles", json={**body, "publish": publish})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def events_of(app: FastAPI, stream_prefix: str) -> list[str]:
    async with ctx_of(app).pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_type FROM events WHERE stream_id LIKE $1 ORDER BY position",
            stream_prefix + "%",
        )
    return [r["event_type"] for r in rows]


async def test_article_lifecycle_with_revisions_as_of_and_history(
    app: FastAPI, agent: ApiCaller, rep: ApiCaller
) -> None:
    r = await agent.post("/kb/categories", json={"name": "Printers"})
    assert r.status_code == 201
    category = r.json()["id"]
    a = await new_article(agent, publish=False, category_id=category, tags=["Printer"])
    aid = a["id"]
    assert (a["state"], a["revision"], a["published_revision"], a["tags"]) == (
        "draft",
        1,
        None,
        ["printer"],
    )
    assert (await rep.get(f"/kb/articles/{aid}")).status_code == 404  # drafts: staff only
    assert (await rep.get("/kb/articles")).json()["items"] == []

    r = await agent.post(f"/kb/articles/{aid}/publish", json={})
    assert r.status_code == 200 and r.json()["state"] == "published"
    published_at = datetime.now(UTC)
    v = r.headers["ETag"]

    # an edit is a new revision; readers keep the published one until it is published
    r = await agent.patch(
        f"/kb/articles/{aid}",
        json={"body": "Switch it off first, then open the front cover.", "note": "safety"},
        headers={"If-Match": v},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["revision"], r.json()["published_revision"]) == (2, 1)
    assert r.json()["has_unpublished_changes"] is True
    seen = (await rep.get(f"/kb/articles/{aid}")).json()
    assert (seen["revision"], seen["body"]) == (1, "Open the front cover.")
    # stale If-Match: 412, nothing changes
    r = await agent.patch(f"/kb/articles/{aid}", json={"title": "x"}, headers={"If-Match": v})
    assert r.status_code == 412
    r = await agent.post(f"/kb/articles/{aid}/publish", json={"revision": 2})
    assert r.status_code == 200 and r.json()["published_revision"] == 2
    assert (await rep.get(f"/kb/articles/{aid}")).json()["body"].startswith("Switch it off")

    revisions = (await agent.get(f"/kb/articles/{aid}/revisions")).json()
    assert [(x["revision"], x["published"], x["note"], x["author"]) for x in revisions] == [
        (1, False, None, "agnes"),
        (2, True, "safety", "agnes"),
    ]
    old = (await agent.get(f"/kb/articles/{aid}/revisions/1")).json()
    assert old["body"] == "Open the front cover."
    assert (await rep.get(f"/kb/articles/{aid}/revisions")).status_code == 403

    # as_of: the article as it was after the first publication
    then = await rep.get(f"/kb/articles/{aid}", params={"as_of": published_at.isoformat()})
    assert (then.json()["revision"], then.json()["published_revision"]) == (1, 1)
    history = (await agent.get(f"/kb/articles/{aid}/history")).json()
    assert [h["type"].rsplit(".", 1)[1] for h in history] == [
        "created",
        "published",
        "revised",
        "published",
    ]
    assert history[0]["actor"] == "agnes"
    assert (await rep.get(f"/kb/articles/{aid}/history")).status_code == 403


async def test_archive_restore_and_refusals_change_nothing(
    app: FastAPI, agent: ApiCaller, rep: ApiCaller
) -> None:
    aid = (await new_article(agent))["id"]
    r = await agent.post(f"/kb/articles/{aid}/archive", json={"reason": "discontinued"})
    assert r.status_code == 200 and r.json()["state"] == "archived"
    before = await events_of(app, f"kb_article-{aid}")
    for method, path, body in [
        ("POST", f"/kb/articles/{aid}/archive", {}),
        ("POST", f"/kb/articles/{aid}/publish", {}),
        ("PATCH", f"/kb/articles/{aid}", {"title": "New"}),
    ]:
        r = await agent.request(method, path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert await events_of(app, f"kb_article-{aid}") == before
    assert (await rep.get(f"/kb/articles/{aid}")).status_code == 404
    assert (await rep.get("/kb/articles", params={"state": "archived"})).status_code == 403
    listed = (await agent.get("/kb/articles", params={"state": "archived"})).json()["items"]
    assert [x["id"] for x in listed] == [aid]
    r = await agent.post(f"/kb/articles/{aid}/restore")
    assert r.status_code == 200 and r.json()["state"] == "draft"


async def test_as_of_does_not_show_readers_an_article_taken_down_since(
    agent: ApiCaller, rep: ApiCaller
) -> None:
    aid = (await new_article(agent))["id"]
    published_at = datetime.now(UTC).isoformat()
    assert (await rep.get(f"/kb/articles/{aid}", params={"as_of": published_at})).status_code == 200
    r = await agent.post(f"/kb/articles/{aid}/archive", json={"reason": "wrong advice"})
    assert r.status_code == 200
    r = await rep.get(f"/kb/articles/{aid}", params={"as_of": published_at})
    assert r.status_code == 404, r.text
    # staff still look into the past
    then = await agent.get(f"/kb/articles/{aid}", params={"as_of": published_at})
    assert then.status_code == 200 and then.json()["state"] == "published"
    # restored to a draft: still not published now, so still hidden
    assert (await agent.post(f"/kb/articles/{aid}/restore")).status_code == 200
    r = await rep.get(f"/kb/articles/{aid}", params={"as_of": published_at})
    assert r.status_code == 404


async def test_bad_input_is_422_with_the_field(agent: ApiCaller, rep: ApiCaller) -> None:
    cases = [
        ({"title": "", "body": "x"}, "title"),
        ({"title": "T", "body": "x", "language": "english!"}, "language"),
        ({"title": "T", "body": "x", "category_id": "nope"}, "category_id"),
        ({"title": "T", "body": "x", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        r = await agent.post("/kb/articles", json=body)
        assert r.status_code == 422, body
        assert field in r.text
    r = await rep.post("/kb/articles", json={"title": "T", "body": "x"})
    assert r.status_code == 403
    aid = (await new_article(agent))["id"]
    r = await agent.post(f"/kb/articles/{aid}/publish", json={"revision": 9})
    assert r.status_code == 422 and "revision" in r.text
    r = await agent.patch(f"/kb/articles/{aid}", json={"title": None})
    assert r.status_code == 422 and "title" in r.text


async def test_create_is_idempotent_with_a_key(app: FastAPI, agent: ApiCaller) -> None:
    body = {"title": "Once", "body": "only once"}
    headers = {"Idempotency-Key": "k-1"}
    first = await agent.post("/kb/articles", json=body, headers=headers)
    again = await agent.post("/kb/articles", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len((await agent.get("/kb/articles")).json()["items"]) == 1


async def test_list_filters_and_cursor_pagination(agent: ApiCaller, rep: ApiCaller) -> None:
    parent = (await agent.post("/kb/categories", json={"name": "Hardware"})).json()["id"]
    child = (
        await agent.post("/kb/categories", json={"name": "Printers", "parent_id": parent})
    ).json()["id"]
    dup = await agent.post("/kb/categories", json={"name": "printers", "parent_id": parent})
    assert dup.status_code == 409
    ids = []
    for i in range(5):
        a = await new_article(
            agent,
            title=f"Article {i}",
            category_id=child if i % 2 else None,
            language="de" if i == 4 else "en",
        )
        ids.append(a["id"])
    await new_article(agent, publish=False, title="Draft")
    seen, cursor = [], None
    while True:
        page = (await rep.get("/kb/articles", params={"limit": 2, "cursor": cursor})).json()
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first; the draft is not for the rep
    in_hardware = (await rep.get("/kb/articles", params={"category_id": parent})).json()
    assert {x["id"] for x in in_hardware["items"]} == {ids[1], ids[3]}
    german = (await rep.get("/kb/articles", params={"language": "de"})).json()["items"]
    assert [x["id"] for x in german] == [ids[4]]
    cats = (await rep.get("/kb/categories")).json()["items"]
    assert {c["name"]: c["article_count"] for c in cats} == {"Hardware": 0, "Printers": 2}
    r = await rep.get("/kb/articles", params={"cursor": "garbage!"})
    assert r.status_code == 422 and "cursor" in r.text


async def test_links_both_ways(app: FastAPI, agent: ApiCaller, rep: ApiCaller) -> None:
    a = (await new_article(agent))["id"]
    b = (await new_article(agent, title="Second"))["id"]
    draft = (await new_article(agent, publish=False, title="Draft"))["id"]
    t1 = await open_ticket(agent, subject="Printer jammed", customer_id="cust-9")
    t2 = await open_ticket(agent, subject="Another", email="bo@example.com")
    for article, ticket in [(a, t1), (b, t1), (a, t2)]:
        r = await agent.post(f"/kb/articles/{article}/links", json={"ticket_id": ticket})
        assert r.status_code == 201, r.text
    assert (await agent.post(f"/kb/articles/{a}/links", json={"ticket_id": t1})).status_code == 409
    r = await agent.post(f"/kb/articles/{draft}/links", json={"ticket_id": t1})
    assert r.status_code == 409
    r = await agent.post(f"/kb/articles/{a}/links", json={"ticket_id": "no-such-ticket"})
    assert r.status_code == 404
    assert (await rep.post(f"/kb/articles/{b}/links", json={"ticket_id": t2})).status_code == 403

    on_ticket = (await rep.get(f"/tickets/{t1}/kb-articles")).json()
    assert [(x["article_id"], x["revision"]) for x in on_ticket] == [(a, 1), (b, 1)]
    page = (await rep.get(f"/kb/articles/{a}/links", params={"limit": 1})).json()
    rest = (await rep.get(f"/kb/articles/{a}/links", params={"cursor": page["next_cursor"]})).json()
    assert [x["ticket_id"] for x in page["items"] + rest["items"]] == [t1, t2]
    assert rest["next_cursor"] is None

    async with ctx_of(app).pool.acquire() as conn:
        subject = await conn.fetchval(
            "SELECT subject FROM events WHERE event_type = 'crm.service.kb_article_link.created'"
            " ORDER BY position LIMIT 1"
        )
    assert subject == "cust-9"  # the link is on the ticket's customer's timeline

    assert (await agent.request("DELETE", f"/kb/articles/{a}/links/{t1}")).status_code == 204
    assert (await agent.request("DELETE", f"/kb/articles/{a}/links/{t1}")).status_code == 404
    assert [x["article_id"] for x in (await rep.get(f"/tickets/{t1}/kb-articles")).json()] == [b]
    r = await agent.post(f"/kb/articles/{a}/links", json={"ticket_id": t1})  # link again
    assert r.status_code == 201


async def test_feedback_once_per_customer_user_or_link(
    app: FastAPI, agent: ApiCaller, rep: ApiCaller, client: httpx.AsyncClient
) -> None:
    aid = (await new_article(agent))["id"]
    r = await rep.post(f"/kb/articles/{aid}/feedback", json={"helped": True})
    assert r.status_code == 201
    assert (r.json()["helpful_count"], r.json()["not_helpful_count"]) == (1, 0)
    assert (
        await rep.post(f"/kb/articles/{aid}/feedback", json={"helped": False})
    ).status_code == 409
    r = await rep.post(f"/kb/articles/{aid}/feedback", json={"helped": True, "customer_id": "c1"})
    assert r.status_code == 403  # only staff speak for a customer
    r = await agent.post(
        f"/kb/articles/{aid}/feedback", json={"helped": False, "customer_id": "cust-7"}
    )
    assert r.status_code == 201 and r.json()["not_helpful_count"] == 1

    # a signed link naming the same customer: already counted
    t = await open_ticket(agent, subject="Jam", customer_id="cust-7", email="cy@example.com")
    link = (await agent.post(f"/kb/articles/{aid}/feedback-links", json={"ticket_id": t})).json()
    url = urlsplit(link["url"]).path
    r = await client.post(url, json={"token": link["token"], "helped": True})
    assert r.status_code == 409, r.text
    # an anonymous link counts once per link, without a bearer token
    anon = (await agent.post(f"/kb/articles/{aid}/feedback-links", json={})).json()
    path = f"/kb/public/articles/{aid}/feedback"
    replies = await asyncio.gather(
        *(client.post(path, json={"token": anon["token"], "helped": True}) for _ in range(3))
    )
    assert sorted(x.status_code for x in replies) == [201, 409, 409]
    r = await client.post(path, json={"token": anon["token"] + "x", "helped": True})
    assert r.status_code == 422 and "token" in r.text
    other = (await new_article(agent, title="Other"))["id"]
    r = await client.post(
        f"/kb/public/articles/{other}/feedback", json={"token": anon["token"], "helped": True}
    )
    assert r.status_code == 422 and "another article" in r.text

    seen = (await rep.get(f"/kb/articles/{aid}")).json()
    assert (seen["helpful_count"], seen["not_helpful_count"]) == (2, 1)
    async with ctx_of(app).pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject, payload->>'channel' AS channel FROM events"
            " WHERE event_type = 'crm.service.kb_feedback.recorded' ORDER BY position"
        )
    assert [(x["subject"], x["channel"]) for x in rows] == [
        (None, "api"),
        ("cust-7", "api"),
        (None, "signed_link"),
    ]

    draft = (await new_article(agent, publish=False, title="Draft"))["id"]
    assert (
        await rep.post(f"/kb/articles/{draft}/feedback", json={"helped": True})
    ).status_code == 404
    r = await agent.post(f"/kb/articles/{draft}/feedback", json={"helped": True})
    assert r.status_code == 409
    assert (await agent.post(f"/kb/articles/{draft}/feedback-links", json={})).status_code == 409


async def test_public_read_needs_no_token_and_shows_only_published(
    agent: ApiCaller, client: httpx.AsyncClient
) -> None:
    pub = (await new_article(agent, body="Open the front cover and pull the paper."))["id"]
    draft = (await new_article(agent, publish=False, title="Secret draft"))["id"]
    r = await client.get(f"/kb/public/articles/{pub}")
    assert r.status_code == 200 and r.json()["revision"] == 1
    assert (await client.get(f"/kb/public/articles/{draft}")).status_code == 404
    assert (await client.get(f"/kb/articles/{pub}")).status_code == 401
    hits = (await client.get("/kb/public/search", params={"q": "paper"})).json()["items"]
    assert [h["id"] for h in hits] == [pub]
