"""Input checks through the API (``crm_runtime.http.inputs``): blank required text and implausible
times are a 422 problem naming the field, on create and on update, and change nothing; short
text is stored trimmed, bodies as sent."""

from __future__ import annotations

import httpx
import pytest
from sd_support import ORIGIN, SITE_KEY, Desk

from crm_runtime.testing import ApiCaller
from crm_runtime.testing import assert_refused as refused

pytestmark = pytest.mark.integration

# empty, spaces, a tab and a line break, a no-break space and a zero-width space
BLANKS = ("", "   ", " \t\n ", "\u00a0\u200b")
TICKET = {"kind": "incident", "subject": "Checkout fails", "customer_email": "ada@example.com"}
CALENDAR = {
    "name": "Office",
    "timezone": "UTC",
    "hours": [{"weekday": "mon", "intervals": [["09:00", "17:00"]]}],
}


def blank(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == [field], errors


async def count(sd: Desk, table: str) -> int:
    return int(await sd.ctx.pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_blank_ticket_text_is_refused_naming_the_field(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    for value in BLANKS:
        blank(await meg.post("/tickets", json={**TICKET, "subject": value}), "subject")
    refused(await meg.post("/tickets", json={**TICKET, "subject": "  "}), "subject", "blank")
    product_return = {"order_ref": "SO-1", "product_ref": "P-1", "reason": " \t "}
    r = await meg.post(
        "/tickets",
        json={**TICKET, "kind": "product_return", "product_return": product_return},
    )
    refused(r, "product_return.reason", "blank")
    refused(await meg.post("/tickets", json={**TICKET, "product": "  "}), "product", "blank")
    assert await count(sd, "tickets") == 0

    t = (await meg.post("/tickets", json=TICKET)).json()
    for value in BLANKS:
        blank(await meg.patch(f"/tickets/{t['id']}", json={"subject": value}), "subject")
    refused(await meg.patch(f"/tickets/{t['id']}", json={"region": "\u3000"}), "region", "blank")
    for path in ("replies", "notes"):
        r = await meg.post(f"/tickets/{t['id']}/{path}", json={"body": "\n\n  "})
        refused(r, "body", "blank")
    refused(await meg.post(f"/tickets/{t['id']}/merge", json={"into": "  "}), "into", "blank")
    after = await meg.get(f"/tickets/{t['id']}")
    assert after.json()["subject"] == "Checkout fails" and after.headers["ETag"] == '"1"'
    assert await count(sd, "ticket_comments") == 0

    headers = {"X-Site-Key": SITE_KEY, "Origin": ORIGIN}
    portal = {"email": "grace@example.com", "subject": "Late order", "message": "Where is it?"}
    for field in ("subject", "message"):
        r = await sd.client.post("/portal/tickets", json={**portal, field: "  "}, headers=headers)
        refused(r, field, "blank")
    assert await count(sd, "tickets") == 1


async def test_blank_names_of_queues_calendars_and_skills_are_refused(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    refused(await meg.put("/queues/support", json={"name": "   "}), "name", "blank")
    assert (await meg.get("/queues/support")).status_code == 404
    assert (await meg.put("/queues/support", json={"name": "Support"})).status_code == 201
    refused(await meg.put("/queues/support", json={"name": "\t"}), "name", "blank")
    assert (await meg.get("/queues/support")).json()["name"] == "Support"

    refused(await meg.put("/calendars/office", json={**CALENDAR, "name": " "}), "name", "blank")
    assert (await meg.get("/calendars/office")).status_code == 404
    assert (await meg.put("/calendars/office", json=CALENDAR)).status_code == 201
    refused(await meg.put("/calendars/office", json={**CALENDAR, "name": ""}), "name", "")
    assert (await meg.get("/calendars/office")).json()["version"] == 1

    r = await meg.put("/agents/ana", json={"skills": ["billing", "  "]})
    refused(r, "skills.1", "blank")
    assert (await meg.get("/agents/ana")).status_code == 404


async def test_blank_kb_titles_category_names_and_tags_are_refused(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    article = {"title": "Reset a jammed printer", "body": "Open the front cover."}
    for value in BLANKS:
        blank(await meg.post("/kb/articles", json={**article, "title": value}), "title")
    refused(await meg.post("/kb/articles", json={**article, "title": "\u200b"}), "title", "blank")
    r = await meg.post("/kb/articles", json={**article, "tags": ["printer", " "]})
    refused(r, "tags.1", "blank")
    assert await count(sd, "kb_articles") == 0

    a = (await meg.post("/kb/articles", json=article)).json()
    refused(await meg.patch(f"/kb/articles/{a['id']}", json={"title": "  "}), "title", "blank")
    assert (await meg.get(f"/kb/articles/{a['id']}")).json()["title"] == article["title"]
    assert len((await meg.get(f"/kb/articles/{a['id']}/revisions")).json()) == 1

    refused(await meg.post("/kb/categories", json={"name": " \u00a0 "}), "name", "blank")
    c = (await meg.post("/kb/categories", json={"name": "Printers"})).json()
    refused(await meg.patch(f"/kb/categories/{c['id']}", json={"name": "\n"}), "name", "blank")
    assert (await meg.get(f"/kb/categories/{c['id']}")).json()["name"] == "Printers"


async def test_times_outside_1900_to_2200_are_refused_naming_the_field(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    t = (await meg.post("/tickets", json=TICKET)).json()
    assert (await meg.put("/queues/support", json={"name": "Support"})).status_code == 201
    a = (await meg.post("/kb/articles", json={"title": "Printers", "body": "x"})).json()
    assert (await meg.put("/calendars/office", json=CALENDAR)).status_code == 201
    readers: list[tuple[ApiCaller, str]] = [
        (meg, f"/tickets/{t['id']}"),
        (meg, "/queues/support"),
        (meg, "/calendars/office"),
        (meg, f"/kb/articles/{a['id']}"),
    ]
    for value in ("1899-12-31T23:59:59Z", "2201-01-01T00:00:00Z", "0100-01-01T00:00:00Z"):
        for caller, path in readers:
            r = await caller.get(path, params={"as_of": value})
            refused(r, "as_of", "between 1900-01-01 and 2200-12-31")
        r = await meg.get("/calendars/office/business-time", params={"start": value})
        refused(r, "start", "between 1900-01-01 and 2200-12-31")
        r = await meg.get(
            "/calendars/office/business-time",
            params={"start": "2030-01-07T09:00:00Z", "end": value},
        )
        refused(r, "end", "between 1900-01-01 and 2200-12-31")
    # the bounds themselves are accepted
    for value in ("1900-01-01T00:00:00Z", "2200-12-31T00:00:00Z"):
        r = await meg.get(f"/tickets/{t['id']}", params={"as_of": value})
        assert r.status_code != 422, r.text

    for day in ("1850-12-25", "2300-12-25"):
        holidays = [{"day": "2030-12-25"}, {"day": day, "name": "typo"}]
        r = await meg.put("/calendars/office", json={**CALENDAR, "holidays": holidays})
        refused(r, "holidays.1.day", "between 1900-01-01 and 2200-12-31")
    assert (await meg.get("/calendars/office")).json()["version"] == 1
    holidays = [{"day": "2030-12-25", "name": "Christmas Day"}]
    r = await meg.put("/calendars/office", json={**CALENDAR, "holidays": holidays})
    assert r.status_code == 200, r.text
    assert r.json()["holidays"] == holidays


async def test_short_text_is_stored_trimmed_and_bodies_as_sent(sd: Desk) -> None:
    meg = sd.user("service_manager", user="meg")
    details = {"order_ref": " SO-1 ", "product_ref": "P-1\n", "reason": " Broke on arrival "}
    r = await meg.post(
        "/tickets",
        json={
            **TICKET,
            "subject": " Checkout fails\r\n",
            "product": "\tPrinters ",
            "kind": "product_return",
            "product_return": details,
        },
    )
    assert r.status_code == 201, r.text
    t = r.json()
    assert (t["subject"], t["product"]) == ("Checkout fails", "Printers")
    returned = {k: t["product_return"][k] for k in details}
    assert returned == {"order_ref": "SO-1", "product_ref": "P-1", "reason": "Broke on arrival"}
    # one line: a break inside a subject is refused, naming the field
    r = await meg.patch(f"/tickets/{t['id']}", json={"subject": "Checkout\nfails"})
    refused(r, "subject", "one line")

    body = "  Try this:\n\n    reset the printer\n"
    r = await meg.post(f"/tickets/{t['id']}/replies", json={"body": body})
    assert r.status_code == 200, r.text
    comments = (await meg.get(f"/tickets/{t['id']}/comments")).json()
    assert [c["body"] for c in comments] == [body]

    a = await meg.post("/kb/articles", json={"title": " Printers ", "body": "x", "tags": [" ink"]})
    assert a.status_code == 201, a.text
    assert (a.json()["title"], a.json()["tags"]) == ("Printers", ["ink"])
