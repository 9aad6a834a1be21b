"""The mailed customer links opened in a browser: the CSAT survey and the customer's ticket as
HTML pages with forms posting form-encoded (escaped, no scripts), next to the unchanged JSON."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from sd_support import Desk, link_in

from crm_service_desk.application.tickets_links import Links

pytestmark = pytest.mark.integration

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON = {"Accept": "application/json"}
FORM = "application/x-www-form-urlencoded"
EVIL_SUBJECT = "Broken <script>alert(\"x\")</script> & 'more'"


class Page(HTMLParser):
    """The tags (with attributes) and the visible text of a page."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.parts: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]


def html_page(r: httpx.Response, status: int = 200) -> Page:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "<script" not in r.text.lower()  # escaped, never markup
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"  # the URL carries the signed link
    assert "http://" not in r.text and "https://" not in r.text  # no external assets
    return Page(r.text)


async def open_ticket(sd: Desk, **kw: Any) -> str:
    body = {
        "kind": "query",
        "subject": EVIL_SUBJECT,
        "description": "My order <b>SO-77</b> never came.\nPlease help.",
        "customer_email": "grace@example.com",
        "customer_name": "Grace Hopper",
    }
    body.update(kw)
    r = await sd.user("service_manager").post("/tickets", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def survey_link(sd: Desk, ticket_id: str) -> str:
    return Links(sd.ctx.settings.jwt_secret, "x", 1, 30).sign(ticket_id, "survey")


async def test_mailed_survey_link_is_a_form_in_a_browser(sd: Desk) -> None:
    ref = await open_ticket(sd)
    meg = sd.user("service_manager")
    await meg.post(f"/tickets/{ref}/resolve", json={"resolution": "Reshipped"})
    mails = await sd.mail_to("grace@example.com", count=2)
    link = link_in(next(m.text for m in mails if "/survey/" in (m.text or "")), "survey")

    page = html_page(await sd.client.get(f"/survey/{link}", headers=BROWSER))
    assert EVIL_SUBJECT in page.text  # shown as text, escaped in the markup
    assert "&lt;script&gt;" in (await sd.client.get(f"/survey/{link}", headers=BROWSER)).text
    (form,) = page.find("form")
    assert form["method"] == "post" and form.get("enctype") == FORM
    assert form.get("action") is None  # posts to the survey link itself
    scores = page.find("input", type="radio", name="score")
    assert [s["value"] for s in scores] == ["1", "2", "3", "4", "5"]
    assert page.find("textarea", name="comment")
    # an API client still gets JSON (and no Accept, or */*, too)
    for headers in (JSON, {}, {"Accept": "*/*"}):
        r = await sd.client.get(f"/survey/{link}", headers=headers)
        assert r.status_code == 200 and r.json()["rated"] is False, headers

    # the browser posts the form: a thank-you page, the rating recorded once
    thanks = await sd.client.post(
        f"/survey/{link}",
        content="score=4&comment=Quick+%3Cb%3Eservice%3C%2Fb%3E",
        headers={**BROWSER, "Content-Type": FORM},
    )
    page = html_page(thanks, 201)
    assert "Thank you" in page.text and "4 out of 5" in page.text
    t = (await meg.get(f"/tickets/{ref}")).json()
    assert t["score"] == 4
    hist = (await meg.get(f"/tickets/{ref}/history")).json()
    rated = [h["data"] for h in hist if h["type"] == "crm.service.ticket.rated"]
    assert rated == [{"ticket_id": ref, "score": 4, "comment": "Quick <b>service</b>"}]

    # again: a page saying it was rated already (409), nothing recorded
    again = await sd.client.post(
        f"/survey/{link}", content="score=1", headers={**BROWSER, "Content-Type": FORM}
    )
    assert "already rated" in html_page(again, 409).text
    assert (
        "already rated" in html_page(await sd.client.get(f"/survey/{link}", headers=BROWSER)).text
    )
    as_json = await sd.client.post(f"/survey/{link}", json={"score": 1}, headers=JSON)
    assert as_json.status_code == 409
    assert as_json.headers["content-type"].startswith("application/problem+json")
    hist = (await meg.get(f"/tickets/{ref}/history")).json()
    assert len([h for h in hist if h["type"] == "crm.service.ticket.rated"]) == 1


async def test_survey_form_input_errors_and_json_clients(sd: Desk) -> None:
    meg = sd.user("service_manager")
    ref = await open_ticket(sd)
    await meg.post(f"/tickets/{ref}/resolve", json={})
    link = survey_link(sd, ref)
    # no score chosen: the form again with the reason (422), nothing recorded
    missing = await sd.client.post(
        f"/survey/{link}", content="comment=hm", headers={**BROWSER, "Content-Type": FORM}
    )
    page = html_page(missing, 422)
    assert "choose a score" in page.text and page.find("input", type="radio", name="score")
    out_of_range = await sd.client.post(
        f"/survey/{link}", content="score=9", headers={"Content-Type": FORM, **JSON}
    )
    assert out_of_range.status_code == 422
    assert [e["field"] for e in out_of_range.json()["errors"]] == ["score"]
    assert (await meg.get(f"/tickets/{ref}")).json()["score"] is None
    # a form from a non-browser client gets JSON; an empty comment is no comment
    ok = await sd.client.post(
        f"/survey/{link}", content="score=5&comment=", headers={"Content-Type": FORM}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json() == {"ticket_id": ref, "subject": EVIL_SUBJECT, "rated": True, "score": 5}
    hist = (await meg.get(f"/tickets/{ref}/history")).json()
    rated = [h["data"] for h in hist if h["type"] == "crm.service.ticket.rated"]
    assert rated == [{"ticket_id": ref, "score": 5, "comment": None}]
    # a forged link: a page for the browser, problem+json for the API (403 both)
    forged = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    assert "link" in html_page(await sd.client.get(f"/survey/{forged}", headers=BROWSER), 403).text
    assert (await sd.client.get(f"/survey/{forged}", headers=JSON)).status_code == 403


async def test_ticket_link_is_the_conversation_with_a_reply_form(sd: Desk) -> None:
    meg = sd.user("service_manager")
    ref = await open_ticket(sd)
    await meg.post(f"/tickets/{ref}/notes", json={"body": "internal: VIP, refund quietly"})
    await meg.post(f"/tickets/{ref}/replies", json={"body": "It ships <today> & tomorrow."})
    link = (await meg.get(f"/tickets/{ref}/customer-link")).json()["token"]

    r = await sd.client.get(f"/customer/tickets/{link}", headers=BROWSER)
    page = html_page(r)
    assert "internal" not in page.text and "VIP" not in page.text  # never a note
    assert EVIL_SUBJECT in page.text and "&lt;script&gt;" in r.text
    assert "It ships <today> & tomorrow." in page.text and "&lt;today&gt; &amp;" in r.text
    # the customer's own message first, then the answer
    first = page.text.index("My order <b>SO-77</b> never came.")
    assert first < page.text.index("It ships")
    assert "<b>SO-77" not in r.text
    (form,) = page.find("form")
    assert form["method"] == "post" and form["enctype"] == FORM
    assert form["action"] == f"{link}/replies"  # relative: /customer/tickets/<link>/replies
    assert page.find("textarea", name="body")
    # JSON stays as it was
    as_json = await sd.client.get(f"/customer/tickets/{link}", headers=JSON)
    assert [c["body"] for c in as_json.json()["conversation"]] == ["It ships <today> & tomorrow."]

    # the browser posts the form (resolved: it reopens)
    await meg.post(f"/tickets/{ref}/resolve", json={})
    sent = await sd.client.post(
        f"/customer/tickets/{link}/replies",
        content="body=Still+not+here+%3Ci%3E%21%3C%2Fi%3E%0AGrace",
        headers={**BROWSER, "Content-Type": FORM},
    )
    page = html_page(sent)
    assert "your reply was added" in page.text and "Still not here <i>!</i>" in page.text
    assert "&lt;i&gt;" in sent.text
    (form,) = page.find("form")
    assert form["action"] == "replies"  # relative to .../<link>/replies: the same endpoint
    t = (await meg.get(f"/tickets/{ref}")).json()
    assert t["status"] == "new"
    hist = [h["type"] for h in (await meg.get(f"/tickets/{ref}/history")).json()]
    assert hist[-2:] == ["crm.service.ticket.customer_replied", "crm.service.ticket.reopened"]
    # an empty reply: the page with the reason (422), nothing added
    empty = await sd.client.post(
        f"/customer/tickets/{link}/replies",
        content="body=",
        headers={**BROWSER, "Content-Type": FORM},
    )
    assert "write your reply" in html_page(empty, 422).text
    # a JSON client may post a form too
    r = await sd.client.post(
        f"/customer/tickets/{link}/replies", content="body=Thanks", headers={"Content-Type": FORM}
    )
    assert r.status_code == 200 and r.json()["conversation"][-1]["body"] == "Thanks"
    # closed: no form; a post says why (409)
    await meg.post(f"/tickets/{ref}/resolve", json={})
    closed = await meg.post(f"/tickets/{ref}/close", json={})
    assert closed.status_code == 200 and closed.json()["status"] == "closed", closed.text
    page = html_page(await sd.client.get(f"/customer/tickets/{link}", headers=BROWSER))
    assert not page.find("form") and "closed" in page.text
    late = await sd.client.post(
        f"/customer/tickets/{link}/replies",
        content="body=Hello",
        headers={**BROWSER, "Content-Type": FORM},
    )
    assert "could not be added" in html_page(late, 409).text
    late_json = await sd.client.post(f"/customer/tickets/{link}/replies", json={"body": "Hello"})
    assert late_json.status_code == 409
    hist_after = [h["type"] for h in (await meg.get(f"/tickets/{ref}/history")).json()]
    assert hist_after.count("crm.service.ticket.customer_replied") == 2
