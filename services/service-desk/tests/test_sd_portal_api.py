"""What customers reach without a token: the portal form (site key, origins, honeypot, rate
limit, size), their ticket through a signed link, and the CSAT survey (once per ticket)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sd_support import ORIGIN, SITE_KEY, Desk, link_in

from crm_service_desk.application.tickets_links import Links

pytestmark = pytest.mark.integration


HEADERS = {"X-Site-Key": SITE_KEY, "Origin": ORIGIN}


def form(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": "grace@example.com",
        "name": "Grace Hopper",
        "subject": "My order never arrived",
        "message": "Order SO-77 was due last week.",
    }
    body.update(kw)
    return body


async def count_tickets(sd: Desk) -> int:
    return int(await sd.ctx.pool.fetchval("SELECT count(*) FROM tickets"))


async def test_portal_form_opens_a_ticket_and_mails_the_link(sd: Desk) -> None:
    r = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
    assert r.status_code == 202, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    ref = r.json()["ticket_ref"]
    meg = sd.user("service_manager")
    t = (await meg.get(f"/tickets/{ref}")).json()
    assert (t["channel"], t["customer_email"], t["customer_name"]) == (
        "portal",
        "grace@example.com",
        "Grace Hopper",
    )
    ack = await sd.mail_to("grace@example.com")
    assert len(ack) == 1 and f"[#{ref}]" in (ack[0].subject or "")
    headers = {h.name: h.value for h in ack[0].headers}
    assert headers["Auto-Submitted"] == "auto-generated"
    # the customer follows the link: its ticket, no notes
    await meg.post(f"/tickets/{ref}/notes", json={"body": "internal only"})
    await meg.post(f"/tickets/{ref}/replies", json={"body": "It ships today."})
    link = link_in(ack[0].text, "customer/tickets")
    view = await sd.client.get(f"/customer/tickets/{link}")
    assert view.status_code == 200
    bodies = [c["body"] for c in view.json()["conversation"]]
    assert bodies == ["It ships today."]
    assert "customer_email" not in view.json()
    # and replies through it (a resolved ticket reopens)
    await meg.post(f"/tickets/{ref}/resolve", json={})
    again = await sd.client.post(f"/customer/tickets/{link}/replies", json={"body": "Not here yet"})
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "new"  # reopened, nobody assigned
    assert [c["author_kind"] for c in again.json()["conversation"]] == ["agent", "customer"]
    hist = [h["type"] for h in (await meg.get(f"/tickets/{ref}/history")).json()]
    assert hist[-2:] == ["crm.service.ticket.customer_replied", "crm.service.ticket.reopened"]


async def test_portal_refusals(sd: Desk) -> None:
    post = sd.client.post
    assert (await post("/portal/tickets", json=form())).status_code == 403  # no site key
    wrong_key = {"X-Site-Key": "nope", "Origin": ORIGIN}
    assert (await post("/portal/tickets", json=form(), headers=wrong_key)).status_code == 403
    evil = {"X-Site-Key": SITE_KEY, "Origin": "https://evil.example"}
    assert (await post("/portal/tickets", json=form(), headers=evil)).status_code == 403
    big = await post("/portal/tickets", json=form(message="x" * 40_000), headers=HEADERS)
    assert big.status_code == 413
    bad = await post(
        "/portal/tickets", json=form(email="not-an-address", subject=""), headers=HEADERS
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"email", "subject"}
    assert await count_tickets(sd) == 0
    preflight = await sd.client.options(
        "/portal/tickets", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_portal_honeypot_and_rate_limit(sd: Desk) -> None:
    bot = await sd.client.post("/portal/tickets", json=form(website="http://spam"), headers=HEADERS)
    assert bot.status_code == 202 and bot.json()["ticket_ref"] is None
    assert await count_tickets(sd) == 0 and sd.catcher.store.list() == []
    # the limit is 3 per window (the honeypot hit counted): 2 more, then 429
    for _ in range(2):
        ok = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
        assert ok.status_code == 202
    limited = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert await count_tickets(sd) == 2


async def test_links_are_signed_per_ticket_and_purpose(sd: Desk) -> None:
    r = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
    ref = r.json()["ticket_ref"]
    meg = sd.user("service_manager")
    link = (await meg.get(f"/tickets/{ref}/customer-link")).json()
    assert link["url"].startswith("http://desk.test/customer/tickets/")
    tok = link["token"]
    assert (await sd.client.get(f"/customer/tickets/{tok}")).status_code == 200
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    assert (await sd.client.get(f"/customer/tickets/{forged}")).status_code == 403
    assert (await sd.client.get(f"/survey/{tok}")).status_code == 403  # wrong purpose
    other = Links("another-secret-of-at-least-32-chars!!", "x", 1, 1).sign(ref, "ticket")
    assert (await sd.client.get(f"/customer/tickets/{other}")).status_code == 403
    expired = Links(sd.ctx.settings.jwt_secret, "x", 1, 1).sign(ref, "ticket", now=0)
    assert (await sd.client.get(f"/customer/tickets/{expired}")).status_code == 403
    # a bearer token is not a link, and a link is not a bearer token
    bearer = sd.token("service_manager")
    assert (await sd.client.get(f"/customer/tickets/{bearer}")).status_code == 403
    as_bearer = await sd.client.get("/tickets", headers={"Authorization": f"Bearer {tok}"})
    assert as_bearer.status_code == 401


async def test_csat_survey_once_per_ticket(sd: Desk) -> None:
    r = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
    ref = r.json()["ticket_ref"]
    meg = sd.user("service_manager")
    await meg.post(f"/tickets/{ref}/resolve", json={"resolution": "Reshipped"})
    mails = await sd.mail_to("grace@example.com", count=2)
    survey_mail = [m for m in mails if "/survey/" in (m.text or "")]
    assert len(survey_mail) == 1
    link = link_in(survey_mail[0].text, "survey")
    seen = await sd.client.get(f"/survey/{link}")
    assert seen.status_code == 200 and seen.json() == {
        "ticket_id": ref,
        "subject": "My order never arrived",
        "rated": False,
        "score": None,
    }
    assert (await sd.client.post(f"/survey/{link}", json={"score": 6})).status_code == 422
    rated = await sd.client.post(f"/survey/{link}", json={"score": 4, "comment": "Quick"})
    assert rated.status_code == 201 and rated.json()["score"] == 4
    second = await sd.client.post(f"/survey/{link}", json={"score": 1})
    assert second.status_code == 409
    t = (await meg.get(f"/tickets/{ref}")).json()
    assert t["score"] == 4
    hist = (await meg.get(f"/tickets/{ref}/history")).json()
    rated_events = [h for h in hist if h["type"] == "crm.service.ticket.rated"]
    assert len(rated_events) == 1 and rated_events[0]["data"]["comment"] == "Quick"
    assert json.dumps(rated_events[0]["data"])  # plain JSON
