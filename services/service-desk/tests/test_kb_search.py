"""Knowledge-base search and suggestions on real PostgreSQL full-text search: ranking (a title
match outranks a body match), states (archived never found), languages and their stemming,
search-box syntax, cursor pages, and suggestions from a text and from a ticket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

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
def agent(client: httpx.AsyncClient, token: Callable[..., str]) -> ApiCaller:
    return ApiCaller(client, token("service_agent", user="agnes"))


@pytest.fixture
def rep(client: httpx.AsyncClient, token: Callable[..., str]) -> ApiCaller:
    return ApiCaller(client, token("sales_rep", user="rita"))


async def write(agent: ApiCaller, title: str, body: str, **over: Any) -> str:
    r = await agent.post(
        "/kb/articles", json={"title": title, "body": body, "publish": True, **over}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def search(caller: ApiCaller, q: str, **params: Any) -> list[str]:
    r = await caller.get("/kb/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["items"]]


async def test_a_title_match_outranks_a_body_match(agent: ApiCaller, rep: ApiCaller) -> None:
    filler = "Check the cable and the power supply of the device before calling support."
    in_body = await write(agent, "Device checklist", f"{filler} The router may need a reset.")
    in_title = await write(agent, "Router reset", f"{filler} Hold the button for ten seconds.")
    await write(agent, "Unrelated", filler)
    r = await rep.get("/kb/search", params={"q": "router"})
    hits = r.json()["items"]
    assert [h["id"] for h in hits] == [in_title, in_body]
    assert hits[0]["rank"] > hits[1]["rank"] > 0
    assert "**router**" in hits[1]["snippet"].lower()
    # the body's own bold does not double the marks
    bold = await write(agent, "Failed payments", "When **payment** fails, retry the card later.")
    [hit] = (await rep.get("/kb/search", params={"q": "payment"})).json()["items"]
    assert hit["id"] == bold
    assert "When **payment** fails" in hit["snippet"] and "****" not in hit["snippet"]
    # order of writing does not matter: the same holds the other way round
    in_body_2 = await write(agent, "Overheating", "Sometimes the modem gets hot.")
    in_title_2 = await write(agent, "Modem lights explained", "What the lights mean.")
    assert await search(rep, "modem") == [in_title_2, in_body_2]


async def test_snippets_keep_literal_double_asterisks(agent: ApiCaller, rep: ApiCaller) -> None:
    """Only Markdown bold is left out of a snippet (so a match in bold is not ``****word****``);
    ``**`` inside a word or between spaces is text: ``2**3`` stays ``2**3`` (it was ``23``)."""
    power = await write(
        agent,
        "Powers in formulas",
        "In the price formula 2**3 means eight; write 2 ** 3 with spaces if you like."
        " **Note:** the **exponent** comes second.",
    )
    [hit] = (await rep.get("/kb/search", params={"q": "exponent"})).json()["items"]
    assert hit["id"] == power
    snippet = hit["snippet"]
    assert "2**3 means" in snippet and "2 ** 3 with" in snippet
    assert "Note: the **exponent** comes" in snippet and "****" not in snippet
    # a match next to a literal ** is marked once, not doubled
    [digit] = (await rep.get("/kb/search", params={"q": "formula 3"})).json()["items"]
    assert "****" not in digit["snippet"] and "**formula**" in digit["snippet"]


async def test_archived_never_found_and_drafts_only_by_staff(
    agent: ApiCaller, rep: ApiCaller
) -> None:
    live = await write(agent, "Toner replacement", "Replace the toner cartridge.")
    gone = await write(agent, "Old toner guide", "The toner of the old model.")
    draft = (
        await agent.post("/kb/articles", json={"title": "Toner draft", "body": "toner soon"})
    ).json()["id"]
    assert (await agent.post(f"/kb/articles/{gone}/archive")).status_code == 200
    assert await search(rep, "toner") == [live]
    assert await search(agent, "toner") == [live]
    assert set(await search(agent, "toner", include_drafts="true")) == {live, draft}
    r = await rep.get("/kb/search", params={"q": "toner", "include_drafts": "true"})
    assert r.status_code == 403
    # restored (a draft again), then published: found again
    await agent.post(f"/kb/articles/{gone}/restore")
    assert await search(rep, "toner") == [live]
    await agent.post(f"/kb/articles/{gone}/publish")
    assert set(await search(rep, "toner")) == {live, gone}


async def test_published_articles_are_found_by_their_published_revision(
    agent: ApiCaller, rep: ApiCaller
) -> None:
    aid = await write(agent, "Scanner setup", "Install the driver.")
    await agent.patch(f"/kb/articles/{aid}", json={"body": "Install the firmware update."})
    assert await search(rep, "firmware") == []  # the edit is not published yet
    assert await search(rep, "driver") == [aid]
    await agent.post(f"/kb/articles/{aid}/publish")
    assert await search(rep, "firmware") == [aid]
    assert await search(rep, "driver") == []


async def test_languages_stemming_and_fallback(
    app: FastAPI, agent: ApiCaller, rep: ApiCaller
) -> None:
    en = await write(agent, "Paper jams", "When the printer jammed twice, clean the rollers.")
    de = await write(
        agent,
        "Papierstau beheben",
        "Wenn der Drucker Papier staut, die Walzen reinigen.",
        language="de",
    )
    ja = await write(agent, "紙詰まり", "プリンター printer-ja manual", language="ja")
    assert await search(rep, "jamming") == [en]  # english stemming: jamming ~ jammed ~ jams
    assert await search(rep, "Druckers", language="de") == [de]  # german stemming
    assert await search(rep, "walze") == [de]  # found without a language too
    assert await search(rep, "printer", language="en") == [en]
    assert await search(rep, "紙詰まり") == [ja]
    async with app.state.ctx.pool.acquire() as conn:
        configs = dict(await conn.fetch("SELECT article_id, ts_config::text FROM kb_articles"))
    assert configs == {en: "english", de: "german", ja: "simple"}


async def test_search_box_syntax(agent: ApiCaller, rep: ApiCaller) -> None:
    wifi = await write(agent, "Wireless setup", "Connect the printer to the office network.")
    cable = await write(agent, "Cable setup", "Connect the printer with a network cable.")
    assert set(await search(rep, "printer network")) == {wifi, cable}
    assert await search(rep, "printer network -cable") == [wifi]
    assert await search(rep, '"office network"') == [wifi]
    assert set(await search(rep, "wireless or cable")) == {wifi, cable}
    assert await search(rep, "the") == []  # stop words alone match nothing
    r = await rep.get("/kb/search", params={"q": "   "})
    assert r.status_code == 422 and "q" in r.text
    r = await rep.get("/kb/search", params={"q": "x", "cursor": "bad"})
    assert r.status_code == 422 and "cursor" in r.text


async def test_search_pages_with_a_cursor(agent: ApiCaller, rep: ApiCaller) -> None:
    ids = {
        await write(agent, f"Battery tip {i}", "Charge the battery " * (i + 1)) for i in range(7)
    }
    seen: list[str] = []
    ranks: list[float] = []
    cursor = None
    while True:
        r = await rep.get("/kb/search", params={"q": "battery", "limit": 3, "cursor": cursor})
        page = r.json()
        seen += [h["id"] for h in page["items"]]
        ranks += [h["rank"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
    assert ranks == sorted(ranks, reverse=True)


async def test_suggestions_from_text(agent: ApiCaller, rep: ApiCaller) -> None:
    jam = await write(agent, "Paper jam", "Remove the jammed paper from the tray.")
    toner = await write(agent, "Toner low", "Order a new toner cartridge.")
    await write(agent, "Holiday calendar", "Office closed on public holidays.")
    text = "Hello, my printer shows a paper jam again and the tray is stuck. Regards"
    r = await rep.get("/kb/suggestions", params={"text": text})
    assert r.status_code == 200
    assert [h["id"] for h in r.json()["items"]] == [jam]
    # any word is enough; more shared words rank higher
    r = await rep.get("/kb/suggestions", params={"text": "paper jam, and toner is low"})
    assert [h["id"] for h in r.json()["items"]] == [jam, toner]
    r = await rep.get("/kb/suggestions", params={"text": "the and a"})
    assert r.json()["items"] == []


async def test_suggestions_for_a_ticket(app: FastAPI, agent: ApiCaller, rep: ApiCaller) -> None:
    jam = await write(agent, "Paper jam", "Remove the jammed paper from the tray.")
    stau = await write(
        agent, "Papierstau", "Entfernen Sie das gestaute Papier aus dem Fach.", language="de"
    )
    wifi = await write(agent, "Wireless printing", "Connect the printer to wifi.")
    r = await agent.post(
        "/tickets",
        json={
            "kind": "incident",
            "subject": "Printer broken",
            "description": "There is jammed paper in the tray and it will not print over wifi.",
            "customer_email": "ada@example.com",
            "language": "en",
        },
    )
    assert r.status_code == 201, r.text
    ticket_id = r.json()["id"]
    r = await rep.get(f"/tickets/{ticket_id}/suggested-articles")
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["items"]] == [jam, wifi]  # English only: the ticket's
    assert stau not in [h["id"] for h in r.json()["items"]]
    await agent.post(f"/kb/articles/{jam}/links", json={"ticket_id": ticket_id})
    r = await rep.get(f"/tickets/{ticket_id}/suggested-articles")
    assert [h["id"] for h in r.json()["items"]] == [wifi]  # already linked: left out
    assert (await rep.get("/tickets/nope/suggested-articles")).status_code == 404
