"""Products, quotes, invoices and payments over the API on real PostgreSQL, with the quote e-mail
captured by the local SMTP catcher. Every refused command is checked to have changed nothing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm_runtime.context import ServiceContext
from crm_runtime.eventstore import Metadata
from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller as Caller
from crm_sales.app import create_app
from crm_sales.application.billing import BillingHandlers, mark_overdue, send_lock_key

pytestmark = pytest.mark.integration

YEAR = datetime.now(UTC).year
BUYERS = itertools.count(1)


@pytest.fixture
async def catcher(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    async with MailCatcher(tmp_path / "mail") as running:
        yield running


@pytest.fixture
async def app(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings], catcher: MailCatcher
) -> AsyncIterator[FastAPI]:
    url = await fresh_db("crm_sales")
    application = create_app(
        settings_for(
            "sales",
            database_url=url,
            smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
            mail_from="sales@crm.example",
        )
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sales") as c:
        yield c


@pytest.fixture
def user(client: httpx.AsyncClient, token: Callable[..., str]) -> Callable[..., Caller]:
    def make(*roles: str, user: str = "u-test", team: str | None = None) -> Caller:
        return Caller(client, token(*roles, user=user, team=team))

    return make


@pytest.fixture
def alice(user: Callable[..., Caller]) -> Caller:
    return user("sales_rep", user="alice", team="emea")


@pytest.fixture
def meg(user: Callable[..., Caller]) -> Caller:
    return user("sales_manager", user="meg", team="emea")


def ctx_of(app: FastAPI) -> ServiceContext:
    ctx: ServiceContext = app.state.ctx
    return ctx


# --- helpers ------------------------------------------------------------------------------------


async def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def product(meg: Caller, sku: str = "SEAT", **extra: Any) -> dict[str, Any]:
    body = {"sku": sku, "name": f"{sku} licence", "tax_rate": "19", "prices": {"EUR": 120_000}}
    return await ok(await meg.post("/products", json={**body, **extra}), 201)


async def contact(alice: Caller, email: str | None = "ada@example.com") -> dict[str, Any]:
    body: dict[str, Any] = {"first_name": "Ada", "last_name": "Lovelace"}
    if email:
        body["emails"] = [email]
    return await ok(await alice.post("/contacts", json=body), 201)


async def deal(alice: Caller, contact_id: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "40 seats", "contact_id": contact_id, "currency": "EUR", **extra}
    return await ok(await alice.post("/deals", json=body), 201)


async def quote(alice: Caller, deal_id: str, **extra: Any) -> dict[str, Any]:
    lines = [
        {"name": "Consulting", "quantity": "1.5", "unit_price_minor": 100_000, "tax_rate": "19"}
    ]
    body = {"deal_id": deal_id, "lines": lines, **extra}
    return await ok(await alice.post("/quotes", json=body), 201)


async def sent_quote(alice: Caller, **extra: Any) -> dict[str, Any]:
    c = await contact(alice, email=f"buyer-{next(BUYERS)}@example.com")
    d = await deal(alice, c["id"])
    q = await quote(alice, d["id"], **extra)
    return await ok(await alice.post(f"/quotes/{q['id']}/send"))


async def accepted(alice: Caller, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    q = await sent_quote(alice, **extra)
    result = await ok(await alice.post(f"/quotes/{q['id']}/accept"))
    return result["quote"], result["invoice"]


async def types(caller: Caller, url: str) -> list[str]:
    return [h["type"] for h in await ok(await caller.get(f"{url}/history"))]  # type: ignore[index]


# --- products -----------------------------------------------------------------------------------


async def test_products_and_the_price_book(
    meg: Caller, alice: Caller, user: Callable[..., Caller]
) -> None:
    p = await product(meg, "seat-pro", prices={"EUR": 120_000, "JPY": 19_000_000}, unit="seat")
    assert p["sku"] == "seat-pro" and p["tax_rate"] == "19" and p["active"] is True
    assert p["prices"] == {"EUR": 120_000, "JPY": 19_000_000}
    url = f"/products/{p['id']}"
    assert (await alice.post("/products", json={"sku": "X", "name": "x"})).status_code == 403

    dup = problem(await meg.post("/products", json={"sku": " SEAT-PRO ", "name": "again"}), 422)
    assert dup["errors"][0]["field"] == "sku"  # leading blank: not a SKU
    dup = problem(await meg.post("/products", json={"sku": "SEAT-PRO", "name": "again"}), 409)
    assert dup["existing_id"] == p["id"] and dup["existing"] == url and p["id"] in dup["detail"]
    bad = problem(await meg.post("/products", json={"sku": "B", "name": "b", "tax_rate": 150}), 422)
    assert bad["errors"][0]["field"] == "tax_rate"
    bad = problem(
        await meg.post("/products", json={"sku": "B", "name": "b", "prices": {"eur": 1}}), 422
    )
    assert "prices" in bad["errors"][0]["field"]
    assert len((await ok(await alice.get("/products")))["items"]) == 1  # nothing else was added

    before = datetime.now(UTC)
    stale = await meg.patch(url, json={"prices": {"EUR": 1}}, headers={"If-Match": '"7"'})
    assert problem(stale, 412)["current_version"] == 1
    changed = await ok(
        await meg.patch(
            url, json={"prices": {"EUR": 125_000, "USD": 135_000}}, headers={"If-Match": '"1"'}
        )
    )
    assert changed["prices"] == {"EUR": 125_000, "USD": 135_000} and changed["version"] == 2
    other = await product(meg, "OTHER")
    clash = problem(await meg.patch(f"/products/{other['id']}", json={"sku": "Seat-Pro"}), 409)
    assert clash["existing_id"] == p["id"]
    assert (await ok(await alice.get(f"/products/{other['id']}")))["sku"] == "OTHER"
    assert problem(await meg.patch(url, json={"name": None}), 422)["errors"][0]["field"] == "name"

    old = await ok(await alice.get(url, params={"as_of": before.isoformat()}))
    assert old["prices"] == {"EUR": 120_000, "JPY": 19_000_000} and old["version"] == 1

    off = await ok(await meg.post(f"{url}/deactivate", json={"reason": "replaced"}))
    assert off["active"] is False and off["deactivation_reason"] == "replaced"
    assert problem(await meg.post(f"{url}/deactivate"), 409)["detail"].endswith("already inactive")
    assert (await ok(await meg.post(f"{url}/activate")))["active"] is True
    assert await types(alice, url) == [
        "crm.sales.product.created",
        "crm.sales.product.updated",
        "crm.sales.product.deactivated",
        "crm.sales.product.activated",
    ]
    listed = await ok(await alice.get("/products", params={"currency": "USD"}))
    assert [i["id"] for i in listed["items"]] == [p["id"]]
    listed = await ok(await alice.get("/products", params={"q": "other", "active": True}))
    assert [i["sku"] for i in listed["items"]] == ["OTHER"]
    page = await ok(await alice.get("/products", params={"limit": 1}))
    rest = await ok(await alice.get("/products", params={"cursor": page["next_cursor"]}))
    assert len(page["items"]) == len(rest["items"]) == 1 and rest["next_cursor"] is None
    for path in ("/products/nope", "/products/nope/history"):
        assert problem(await alice.get(path), 404)["detail"] == "product nope does not exist"
    assert (await meg.patch("/products/nope", json={"name": "x"})).status_code == 404
    assert (await user("marketer").get("/products")).status_code == 403


# --- quotes -------------------------------------------------------------------------------------


async def test_blank_product_text_and_unknown_currencies_are_a_422(meg: Caller) -> None:
    body = {"sku": "SEAT", "name": "Seat", "prices": {"EUR": 100}}
    for wrong, field in (
        ({"name": "   "}, "name"),
        ({"description": " \n "}, "description"),
        ({"unit": "  "}, "unit"),
        ({"prices": {"EUR": 100, "XXX": 100}}, "prices.XXX.[key]"),
        ({"prices": {"ABC": 100}}, "prices.ABC.[key]"),
    ):
        p = problem(await meg.post("/products", json={**body, **wrong}), 422)
        assert [e["field"] for e in p["errors"]] == [field], wrong
    assert (await ok(await meg.get("/products")))["items"] == []

    created = {**body, "name": "  Seat (annual) ", "description": " One user\n", "unit": " seat "}
    p = await ok(await meg.post("/products", json=created), 201)
    assert (p["name"], p["description"], p["unit"]) == ("Seat (annual)", "One user", "seat")
    url = f"/products/{p['id']}"
    for wrong, field in (
        ({"name": "\t"}, "name"),
        ({"description": " "}, "description"),
        ({"prices": {"XTS": 1}}, "prices.XTS.[key]"),
    ):
        bad = problem(await meg.patch(url, json=wrong), 422)
        assert [e["field"] for e in bad["errors"]] == [field], wrong
    assert (await ok(await meg.get(url)))["version"] == 1  # nothing changed
    renamed = await ok(await meg.patch(url, json={"name": " Seat (2027) "}))
    assert renamed["name"] == "Seat (2027)"


async def test_a_quote_drafted_from_a_deal_with_exact_totals(meg: Caller, alice: Caller) -> None:
    seat = await product(meg, "SEAT", prices={"EUR": 120_000, "USD": 130_000})
    hours = await product(meg, "HOUR", prices={"EUR": 3_333}, tax_rate="8.875", unit="hour")
    c = await contact(alice)
    d = await deal(
        alice,
        c["id"],
        lines=[
            {"product_id": seat["id"], "name": "Seat", "quantity": 40, "unit_price_minor": 110_000}
        ],
    )
    # No lines given: the deal's products, at the deal's prices, with the product's tax.
    q = await ok(await alice.post("/quotes", json={"deal_id": d["id"]}), 201)
    assert q["number"] == f"Q-{YEAR}-000001" and q["revision"] == 1 and q["status"] == "draft"
    assert q["customer_id"] == c["customer_id"] and q["contact_id"] == c["id"]
    assert q["title"] == "40 seats" and q["currency"] == "EUR" and q["payment_terms_days"] == 30
    [line] = q["lines"]
    assert (line["sku"], line["quantity"], line["unit_price_minor"], line["tax_rate"]) == (
        "SEAT", "40", 110_000, "19",
    )  # fmt: skip
    assert q["total_minor"] == 4_400_000 + 836_000

    # Given lines: prices default from the price book; decimal quantities; per-line rounding.
    body = {
        "deal_id": d["id"],
        "lines": [
            {"product_id": seat["id"], "quantity": 3, "discount_percent": "12.5"},
            {"product_id": hours["id"], "quantity": "1.5", "discount_percent": "12.5"},
            {"name": "Travel", "quantity": 1, "unit_price_minor": 9_999},
        ],
    }
    q2 = await ok(await alice.post("/quotes", json=body), 201)
    nets = [line["net_minor"] for line in q2["lines"]]
    taxes = [line["tax_minor"] for line in q2["lines"]]
    assert nets == [315_000, 4_375, 9_999]  # 1.5 x 33.33 x 0.875 = 43.745625 -> 43.75
    assert taxes == [59_850, 388, 0]  # 8.875 % of 43.75 = 3.8828125 -> 3.88
    assert q2["subtotal_minor"] == sum(nets) and q2["tax_minor"] == sum(taxes)
    assert q2["total_minor"] == q2["subtotal_minor"] + q2["tax_minor"]
    assert q2["discount_minor"] == 45_000 + 625  # round(1.5 x 33.33 = 49.995) = 50.00 - 43.75
    assert {t["rate"]: t["tax_minor"] for t in q2["taxes"]} == {"19": 59_850, "8.875": 388, "0": 0}
    assert q2["number"] == f"Q-{YEAR}-000002"

    # In JPY: the price book's JPY price, no minor digits.
    jpy = await ok(
        await alice.post(
            "/quotes",
            json={
                "deal_id": d["id"],
                "currency": "JPY",
                "lines": [
                    {"name": "Setup", "quantity": "0.5", "unit_price_minor": 3, "tax_rate": 10}
                ],
            },
        ),
        201,
    )
    assert (jpy["lines"][0]["net_minor"], jpy["lines"][0]["tax_minor"]) == (
        2,
        0,
    )  # 1.5 -> 2, 0.2 -> 0


async def test_bad_quote_input_is_named_and_changes_nothing(meg: Caller, alice: Caller) -> None:
    seat = await product(meg, "SEAT", prices={"EUR": 120_000})
    retired = await product(meg, "OLD")
    await ok(await meg.post(f"/products/{retired['id']}/deactivate"))
    c = await contact(alice)
    d = await deal(alice, c["id"])

    def lines(*items: dict[str, Any]) -> dict[str, Any]:
        return {"deal_id": d["id"], "lines": list(items)}

    free = {"name": "x", "unit_price_minor": 5}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"deal_id": "nope"}, 422, "deal_id"),
        ({**lines({"product_id": seat["id"]}), "currency": "USD"}, 422, "lines.0.unit_price_minor"),
        (lines({"product_id": "nope"}), 422, "lines.0.product_id"),
        (lines(free, {"product_id": retired["id"]}), 422, "lines.1.product_id"),
        (lines({"name": "no price"}), 422, "lines.0.unit_price_minor"),
        (lines({"unit_price_minor": 5}), 422, "lines.0.name"),
        (lines({**free, "quantity": 0}), 422, "lines.0.quantity"),
        (lines({**free, "discount_percent": 101}), 422, "lines.0.discount_percent"),
        (lines({**free, "quantity": "0.0000001"}), 422, "lines.0.quantity"),
        ({"deal_id": d["id"], "valid_until": "2000-01-01"}, 422, "valid_until"),
        ({"deal_id": d["id"], "contact_id": "nope"}, 422, "contact_id"),
        ({"deal_id": d["id"], "currency": "eur"}, 422, "currency"),
        ({"deal_id": d["id"], "currency": "XXX"}, 422, "currency"),
        ({"deal_id": d["id"], "currency": "ABC"}, 422, "currency"),
        ({"deal_id": d["id"], "title": "   "}, 422, "title"),
        (lines({**free, "name": " \t "}), 422, "lines.0.name"),
        (lines({**free, "description": "  "}), 422, "lines.0.description"),
        (lines({**free, "unit": " "}), 422, "lines.0.unit"),
        ({"deal_id": d["id"], "valid_until": "2201-01-01"}, 422, "valid_until"),
    ]
    for body, status, field in cases:
        p = problem(await alice.post("/quotes", json=body), status)
        assert p["errors"][0]["field"] == field, (body, p)
    reason = problem(await alice.post("/quotes", json=cases[1][0]), 422)["errors"][0]["reason"]
    assert "has no price in USD" in reason and "EUR" in reason
    reason = problem(await alice.post("/quotes", json=cases[3][0]), 422)["errors"][0]["reason"]
    assert "inactive" in reason
    reason = problem(await alice.post("/quotes", json=cases[13][0]), 422)["errors"][0]["reason"]
    assert "ISO 4217" in reason and "ABC" not in reason
    reason = problem(await alice.post("/quotes", json=cases[-1][0]), 422)["errors"][0]["reason"]
    assert "between 1900-01-01 and 2200-12-31" in reason
    assert (await ok(await alice.get("/quotes")))["items"] == []
    # ... and no quote number was used up by them
    assert (await quote(alice, d["id"]))["number"] == f"Q-{YEAR}-000001"
    await ok(
        await alice.post(f"/deals/{d['id']}/stage", json={"stage": "lost", "reason": "budget"})
    )
    assert "lost" in problem(await alice.post("/quotes", json={"deal_id": d["id"]}), 409)["detail"]


async def test_sending_with_an_idempotency_key_sends_once(
    alice: Caller, catcher: MailCatcher
) -> None:
    """The same Idempotency-Key twice sent two e-mails (and recorded a re-send)."""
    c = await contact(alice, email="ada@example.com")
    q = await quote(alice, (await deal(alice, c["id"]))["id"])
    url = f"/quotes/{q['id']}/send"
    key = {"Idempotency-Key": "send-1"}
    first = await alice.post(url, json={"message": "Hi"}, headers=key)
    assert first.status_code == 200, first.text
    again = await alice.post(url, json={"message": "Hi"}, headers=key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.headers["ETag"] == first.headers["ETag"]
    # two at once with a new key: the second waits for the first, then replays it
    both = await asyncio.gather(
        *(alice.post(url, headers={"Idempotency-Key": "send-2"}) for _ in range(2))
    )
    assert sorted(r.status_code for r in both) == [200, 200]
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in both) == 1
    assert len(catcher.store.list()) == 2  # send-1 once, send-2 once
    assert await types(alice, f"/quotes/{q['id']}") == [
        "crm.sales.quote.drafted", "crm.sales.quote.sent", "crm.sales.quote.sent",
    ]  # fmt: skip
    other = await alice.post(url, json={"message": "Other"}, headers=key)
    assert problem(other, 422)["errors"][0]["field"] == "Idempotency-Key"
    long_key = {"Idempotency-Key": "k" * 201}
    assert problem(await alice.post(url, headers=long_key), 422)["errors"][0]["field"] == (
        "Idempotency-Key"
    )
    assert len(catcher.store.list()) == 2


async def test_sending_e_mails_the_rendered_quote_and_freezes_it(
    app: FastAPI, alice: Caller, catcher: MailCatcher
) -> None:
    c = await contact(alice, email="ada@example.com")
    d = await deal(alice, c["id"])
    q = await quote(
        alice, d["id"], title="Seats <script>alert(1)</script>", notes="Thanks & <b>regards</b>"
    )
    url = f"/quotes/{q['id']}"
    stale = await alice.post(f"{url}/send", headers={"If-Match": '"9"'})
    assert problem(stale, 412)["current_version"] == 1
    assert catcher.store.list() == []
    # While a quote's e-mail is on its way (the sender's lock), it neither changes nor goes twice.
    async with ctx_of(app).pool.acquire() as conn:
        key = send_lock_key(q["id"])
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
        try:
            assert "right now" in problem(await alice.post(f"{url}/send"), 409)["detail"]
            busy = await alice.put(f"{url}/lines", json={"lines": []})
            assert "being e-mailed" in problem(busy, 409)["detail"]
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    assert catcher.store.list() == []

    s = await ok(
        await alice.post(
            f"{url}/send", json={"message": "As discussed."}, headers={"If-Match": '"1"'}
        )
    )
    assert s["status"] == "sent" and s["sent_to_contact_id"] == c["id"] and s["version"] == 2
    [summary] = catcher.store.list()
    mail = catcher.store.get(summary.id)
    assert mail.rcpt_tos == ["ada@example.com"] and mail.mail_from == "sales@crm.example"
    assert mail.subject == f"Quote {q['number']} (revision 1): Seats <script>alert(1)</script>"
    assert mail.html is not None and mail.text is not None
    assert q["number"] in mail.html
    assert "1,500.00 EUR" in mail.html and "1,785.00 EUR" in mail.html  # net; total with 19 %
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert "Thanks &amp; &lt;b&gt;regards&lt;/b&gt;" in mail.html
    assert "As discussed." in mail.html and "As discussed." in mail.text
    assert "Dear Ada Lovelace" in mail.text and "half-up" in mail.html

    # Once sent, it does not change except by a new revision.
    before = await types(alice, url)
    lines = {"lines": [{"name": "Other", "unit_price_minor": 1}]}
    assert "revise" in problem(await alice.put(f"{url}/lines", json=lines), 409)["detail"]
    assert "revise" in problem(await alice.patch(url, json={"notes": "x"}), 409)["detail"]
    assert await types(alice, url) == before == ["crm.sales.quote.drafted", "crm.sales.quote.sent"]

    html = await alice.get(f"{url}/html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert q["number"] in html.text and "&lt;script&gt;" in html.text
    # the customer reads how totals are rounded, not the API's "integers in the minor unit"
    assert "rounded half-up to the currency" in html.text and "minor unit" not in html.text
    assert (await alice.get(f"{url}/html", params={"revision": 2})).status_code == 404

    # A re-send goes out again and is recorded as such.
    again = await ok(await alice.post(f"{url}/send"))
    assert again["version"] == 3 and len(catcher.store.list()) == 2
    history = await ok(await alice.get(f"{url}/history"))
    assert history[-1]["data"]["resent"] is True and "ada@" not in str(history)  # type: ignore[index]

    # Every event of the quote is on the customer's timeline (subject = the deal's customer).
    async with ctx_of(app).pool.acquire() as conn:
        subjects = await conn.fetch(
            "SELECT DISTINCT subject FROM events WHERE stream_id = $1", f"quote-{q['id']}"
        )
    assert [r["subject"] for r in subjects] == [c["customer_id"]]


async def test_a_refused_mail_is_a_502_and_records_nothing(
    alice: Caller, catcher: MailCatcher
) -> None:
    c = await contact(alice)
    d = await deal(alice, c["id"])
    q = await quote(alice, d["id"])
    url = f"/quotes/{q['id']}"
    await catcher.stop()  # the mail server is gone
    failed = problem(await alice.post(f"{url}/send"), 502)
    assert "nothing was recorded" in failed["detail"] and "example.com" not in str(failed)
    after = await ok(await alice.get(url))
    assert after["status"] == "draft" and after["version"] == 1
    assert await types(alice, url) == ["crm.sales.quote.drafted"]


async def test_sending_needs_a_contact_with_an_address(alice: Caller) -> None:
    c = await contact(alice, email=None)
    d = await deal(alice, c["id"])
    q = await quote(alice, d["id"])
    p = problem(await alice.post(f"/quotes/{q['id']}/send"), 409)
    assert "no e-mail address" in p["detail"] and p["contact_id"] == c["id"]
    empty = await ok(await alice.post("/quotes", json={"deal_id": d["id"], "lines": []}), 201)
    assert "no lines" in problem(await alice.post(f"/quotes/{empty['id']}/send"), 409)["detail"]
    # a quote goes only to the deal's people: a stranger is refused, a colleague at the
    # deal's account is fine
    stranger = await contact(alice, email="bea@example.com")
    refused = problem(
        await alice.patch(f"/quotes/{q['id']}", json={"contact_id": stranger["id"]}), 422
    )
    assert refused["errors"][0]["field"] == "contact_id"
    acct = await ok(await alice.post("/accounts", json={"name": "Engines"}), 201)
    d2 = await deal(alice, c["id"], account_id=acct["id"])
    q2 = await quote(alice, d2["id"])
    colleague = await ok(
        await alice.post(
            "/contacts",
            json={
                "last_name": "Colleague",
                "emails": ["col@example.com"],
                "account_id": acct["id"],
            },
        ),
        201,
    )
    moved = await ok(await alice.patch(f"/quotes/{q2['id']}", json={"contact_id": colleague["id"]}))
    assert moved["contact_id"] == colleague["id"]
    assert (await ok(await alice.post(f"/quotes/{q2['id']}/send")))["status"] == "sent"


async def test_reject_revise_and_accept(alice: Caller, catcher: MailCatcher) -> None:
    q = await sent_quote(alice)
    url = f"/quotes/{q['id']}"
    assert problem(await alice.post(f"{url}/reject", json={"reason": ""}), 422)
    r = await ok(await alice.post(f"{url}/reject", json={"reason": "too expensive"}))
    assert r["status"] == "rejected" and r["rejection_reason"] == "too expensive"
    version = r["version"]
    p = problem(await alice.post(f"{url}/accept"), 409)
    assert "rejected and cannot be accepted" in p["detail"]
    assert problem(await alice.post(f"{url}/reject", json={"reason": "again"}), 409)
    assert (await ok(await alice.get(url)))["version"] == version
    assert (await ok(await alice.get("/invoices")))["items"] == []

    lines = [
        {"name": "Consulting", "quantity": 1, "unit_price_minor": 100_000, "discount_percent": 5}
    ]
    v2 = await ok(
        await alice.post(
            f"{url}/revise", json={"lines": lines}, headers={"If-Match": f'"{version}"'}
        )
    )
    assert (v2["number"], v2["revision"], v2["status"]) == (q["number"], 2, "draft")
    assert [(r["revision"], r["status"]) for r in v2["revisions"]] == [
        (1, "superseded"),
        (2, "draft"),
    ]
    assert v2["total_minor"] == 95_000
    assert "still a draft" in problem(await alice.post(f"{url}/revise"), 409)["detail"]
    changed = await ok(
        await alice.put(
            f"{url}/lines", json={"lines": [*lines, {"name": "Extra", "unit_price_minor": 500}]}
        )
    )
    assert changed["total_minor"] == 95_500 and changed["revision"] == 2
    sent2 = await ok(await alice.post(f"{url}/send"))
    assert sent2["status"] == "sent"
    html_v1 = await alice.get(f"{url}/html", params={"revision": 1})
    assert "revision 1" in html_v1.text and "1,500.00 EUR" in html_v1.text

    old = problem(await alice.post(f"{url}/accept", json={"revision": 1}), 409)
    assert "superseded by revision 2" in old["detail"] and old["current_revision"] == 2
    stale = await alice.post(f"{url}/accept", headers={"If-Match": '"1"'})
    assert problem(stale, 412)
    assert (await ok(await alice.get("/invoices")))["items"] == []

    result = await ok(await alice.post(f"{url}/accept", json={"revision": 2, "note": "PO 4711"}))
    assert result["quote"]["status"] == "accepted"
    invoice = result["invoice"]
    assert result["quote"]["invoice_id"] == invoice["id"]
    assert invoice["number"] == f"INV-{YEAR}-000001" and invoice["quote_revision"] == 2
    assert invoice["total_minor"] == 95_500 and invoice["status"] == "issued"
    assert invoice["due_date"] == (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    assert "already accepted" in problem(await alice.post(f"{url}/accept"), 409)["detail"]
    assert "final" in problem(await alice.post(f"{url}/revise"), 409)["detail"]
    assert (
        "final" in problem(await alice.post(f"{url}/reject", json={"reason": "x"}), 409)["detail"]
    )
    assert await types(alice, url) == [
        "crm.sales.quote.drafted",
        "crm.sales.quote.sent",
        "crm.sales.quote.rejected",
        "crm.sales.quote.revised",
        "crm.sales.quote.lines_changed",
        "crm.sales.quote.sent",
        "crm.sales.quote.accepted",
    ]
    listed = await ok(await alice.get("/quotes", params={"status": "accepted"}))
    assert [i["id"] for i in listed["items"]] == [q["id"]]


async def test_a_deal_is_billed_once_until_its_invoice_is_voided(
    alice: Caller, meg: Caller
) -> None:
    c = await contact(alice)
    d = await deal(alice, c["id"])
    first = await quote(alice, d["id"])
    second = await quote(alice, d["id"])
    for q in (first, second):
        await ok(await alice.post(f"/quotes/{q['id']}/send"))
    inv = (await ok(await alice.post(f"/quotes/{first['id']}/accept")))["invoice"]
    p = problem(await alice.post(f"/quotes/{second['id']}/accept"), 409)
    assert p["existing_id"] == first["id"] and "void its invoice" in p["detail"]
    assert (await ok(await alice.get(f"/quotes/{second['id']}")))["status"] == "sent"
    await ok(await meg.post(f"/invoices/{inv['id']}/void", json={"reason": "wrong scope"}))
    again = await ok(await alice.post(f"/quotes/{second['id']}/accept"))
    assert again["invoice"]["number"] == f"INV-{YEAR}-000002"


# --- invoices -----------------------------------------------------------------------------------


async def test_partial_and_full_payment(alice: Caller, user: Callable[..., Caller]) -> None:
    _, inv = await accepted(alice)
    url = f"/invoices/{inv['id']}"
    assert inv["total_minor"] == 178_500 and inv["balance_minor"] == 178_500

    over = problem(await alice.post(f"{url}/payments", json={"amount_minor": 178_501}), 409)
    assert over["amount_due_minor"] == 178_500 and "1,785.00 EUR" in over["detail"]
    bad = problem(await alice.post(f"{url}/payments", json={"amount_minor": 0}), 422)
    assert bad["errors"][0]["field"] == "amount_minor"
    bad = problem(
        await alice.post(f"{url}/payments", json={"amount_minor": 1, "currency": "USD"}), 422
    )
    assert bad["errors"][0]["field"] == "currency"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    bad = problem(
        await alice.post(f"{url}/payments", json={"amount_minor": 1, "received_at": future}), 422
    )
    assert bad["errors"][0]["field"] == "received_at"
    for wrong, field in (
        ({"currency": "XXX"}, "currency"),
        ({"received_at": "1899-12-31T12:00:00Z"}, "received_at"),
    ):
        bad = problem(await alice.post(f"{url}/payments", json={"amount_minor": 1, **wrong}), 422)
        assert [e["field"] for e in bad["errors"]] == [field]
    stale = await alice.post(
        f"{url}/payments", json={"amount_minor": 1}, headers={"If-Match": '"5"'}
    )
    assert problem(stale, 412)
    assert await types(alice, url) == ["crm.sales.invoice.issued"]  # nothing changed

    key = {"Idempotency-Key": "pay-1"}
    body = {"amount_minor": 78_500, "method": "card", "reference": "tx-1"}
    part = await ok(
        await alice.post(f"{url}/payments", json=body, headers={**key, "If-Match": '"1"'}), 201
    )
    assert part["status"] == "partially_paid" and part["balance_minor"] == 100_000
    replay = await alice.post(f"{url}/payments", json=body, headers={**key, "If-Match": '"1"'})
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert len((await ok(await alice.get(url)))["payments"]) == 1

    over = problem(await alice.post(f"{url}/payments", json={"amount_minor": 100_001}), 409)
    assert over["amount_due_minor"] == 100_000
    paid = await ok(await alice.post(f"{url}/payments", json={"amount_minor": 100_000}), 201)
    assert paid["status"] == "paid" and paid["balance_minor"] == 0 and paid["paid_at"]
    assert [p["amount_minor"] for p in paid["payments"]] == [78_500, 100_000]
    assert (
        "paid in full"
        in problem(await alice.post(f"{url}/payments", json={"amount_minor": 1}), 409)["detail"]
    )
    assert await types(alice, url) == [
        "crm.sales.invoice.issued",
        "crm.sales.invoice.payment_received",
        "crm.sales.invoice.payment_received",
        "crm.sales.invoice.paid",
    ]
    assert [
        i["status"]
        for i in (await ok(await alice.get("/invoices", params={"status": "paid"})))["items"]
    ] == ["paid"]
    bob = user("sales_rep", user="bob", team="apac")
    assert (await bob.get(url)).status_code == 403
    assert (await bob.post(f"{url}/payments", json={"amount_minor": 1})).status_code == 403
    assert (await ok(await bob.get("/invoices")))["items"] == []


async def test_void_issues_a_credit_note(alice: Caller, meg: Caller) -> None:
    _, inv = await accepted(alice)
    url = f"/invoices/{inv['id']}"
    await ok(await alice.post(f"{url}/payments", json={"amount_minor": 50_000}), 201)
    assert (await alice.post(f"{url}/void", json={"reason": "x"})).status_code == 403  # managers
    assert problem(await meg.get(f"{url}/credit-note"), 404)
    assert problem(
        await meg.post(f"{url}/void", json={"reason": "x"}, headers={"If-Match": '"1"'}), 412
    )
    result = await ok(await meg.post(f"{url}/void", json={"reason": "billed the wrong entity"}))
    invoice, note = result["invoice"], result["credit_note"]
    assert invoice["status"] == "void" and invoice["balance_minor"] == 0
    assert (
        invoice["refund_due_minor"] == 50_000
        and invoice["void_reason"] == "billed the wrong entity"
    )
    assert note["number"] == f"CN-{YEAR}-000001" and note["invoice_number"] == inv["number"]
    assert note["total_minor"] == inv["total_minor"] and note["refund_due_minor"] == 50_000
    assert invoice["credit_note_number"] == note["number"]
    assert (await ok(await meg.get(f"{url}/credit-note")))["id"] == note["id"]
    version = invoice["version"]
    assert (
        "already void"
        in problem(await meg.post(f"{url}/void", json={"reason": "again"}), 409)["detail"]
    )
    assert (
        "void"
        in problem(await alice.post(f"{url}/payments", json={"amount_minor": 1}), 409)["detail"]
    )
    assert (await ok(await meg.get(url)))["version"] == version
    assert (await types(meg, url))[-1] == "crm.sales.invoice.voided"
    void_list = await ok(await meg.get("/invoices", params={"status": "void"}))
    assert [i["credit_note_id"] for i in void_list["items"]] == [note["id"]]


async def test_unknown_ids_are_404(alice: Caller, meg: Caller) -> None:
    for path in ("/quotes/nope", "/quotes/nope/history", "/quotes/nope/html", "/invoices/nope",
                 "/invoices/nope/history", "/invoices/nope/credit-note"):  # fmt: skip
        assert problem(await alice.get(path), 404)["detail"].endswith("nope does not exist")
    for path, body in (
        ("/quotes/nope/send", {}),
        ("/quotes/nope/accept", {}),
        ("/quotes/nope/reject", {"reason": "x"}),
        ("/quotes/nope/revise", {}),
        ("/invoices/nope/payments", {"amount_minor": 1}),
    ):
        assert problem(await alice.post(path, json=body), 404)
    assert problem(await alice.put("/quotes/nope/lines", json={"lines": []}), 404)
    assert problem(await meg.post("/invoices/nope/void", json={"reason": "x"}), 404)


async def test_quotes_follow_their_deal_s_owner_and_team(
    alice: Caller, user: Callable[..., Caller]
) -> None:
    c = await contact(alice)
    d = await deal(alice, c["id"])
    q = await quote(alice, d["id"])
    url = f"/quotes/{q['id']}"
    bob = user("sales_rep", user="bob", team="apac")
    assert (await bob.get(url)).status_code == 403
    assert (await ok(await bob.get("/quotes")))["items"] == []
    assert (await bob.post("/quotes", json={"deal_id": d["id"]})).status_code == 403
    teammate = user("sales_rep", user="tom", team="emea")
    assert (await ok(await teammate.get(url)))["id"] == q["id"]
    assert (await teammate.post(f"{url}/send")).status_code == 403
    # Reassigning the deal takes its quotes along.
    await ok(
        await user("admin", user="root").post(
            f"/deals/{d['id']}/reassign", json={"owner_id": "bob", "team_id": "apac"}
        )
    )
    assert (await ok(await bob.get(url)))["id"] == q["id"]
    assert (await alice.get(url)).status_code == 403


async def test_as_of_shows_a_quote_as_it_was(alice: Caller) -> None:
    c = await contact(alice)
    d = await deal(alice, c["id"])
    q = await quote(alice, d["id"])
    await asyncio.sleep(0.01)
    between = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await ok(await alice.post(f"/quotes/{q['id']}/send"))
    old = await ok(await alice.get(f"/quotes/{q['id']}", params={"as_of": between.isoformat()}))
    assert old["status"] == "draft" and old["version"] == 1
    early = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert problem(await alice.get(f"/quotes/{q['id']}", params={"as_of": early}), 404)


# --- numbering and the scheduler ----------------------------------------------------------------


async def test_invoice_numbers_are_gap_free_under_concurrency(app: FastAPI, alice: Caller) -> None:
    quotes = [await sent_quote(alice, title=f"Deal {i}") for i in range(11)]
    results = await asyncio.gather(*(alice.post(f"/quotes/{q['id']}/accept") for q in quotes[:10]))
    numbers = sorted(r.json()["invoice"]["number"] for r in results)
    assert all(r.status_code == 200 for r in results)
    assert numbers == [f"INV-{YEAR}-{n:06d}" for n in range(1, 11)]

    # A transaction that takes a number and then fails gives it back.
    ctx = ctx_of(app)
    handlers = BillingHandlers(ctx.store)
    last = quotes[10]
    taken: list[str] = []

    async def accept_then_fail() -> None:
        async with ctx.pool.acquire() as conn, conn.transaction():
            loaded = await handlers.quotes.load(last["id"], conn=conn)
            _, invoice = await handlers.accept(
                conn, loaded, Metadata(actor="test"), None, revision=None, note=None
            )
            taken.append(invoice.number)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await accept_then_fail()
    assert taken == [f"INV-{YEAR}-000011"]
    assert (await ok(await alice.get(f"/quotes/{last['id']}")))["status"] == "sent"
    result = await ok(await alice.post(f"/quotes/{last['id']}/accept"))
    assert result["invoice"]["number"] == f"INV-{YEAR}-000011"
    async with ctx.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM invoices") == 11


async def test_mark_overdue_flags_each_invoice_once(app: FastAPI, alice: Caller) -> None:
    _, late = await accepted(alice)
    _, paid = await accepted(alice, payment_terms_days=0)
    await ok(
        await alice.post(
            f"/invoices/{paid['id']}/payments", json={"amount_minor": paid["total_minor"]}
        ),
        201,
    )
    _, soon = await accepted(alice, payment_terms_days=60)
    ctx = ctx_of(app)
    due = datetime.fromisoformat(late["due_date"]).replace(tzinfo=UTC)
    async with ctx.pool.acquire() as conn:
        assert await mark_overdue(conn, ctx.store, due + timedelta(hours=23)) == 0  # the due day
        assert await mark_overdue(conn, ctx.store, due + timedelta(days=1)) == 1
        assert await mark_overdue(conn, ctx.store, due + timedelta(days=2)) == 0  # never twice
    got = await ok(await alice.get(f"/invoices/{late['id']}"))
    assert got["overdue"] is True and got["status"] == "issued"
    assert (await types(alice, f"/invoices/{late['id']}")).count("crm.sales.invoice.overdue") == 1
    assert (await ok(await alice.get(f"/invoices/{soon['id']}")))["overdue"] is False
    listed = await ok(await alice.get("/invoices", params={"status": "overdue"}))
    assert [i["id"] for i in listed["items"]] == [late["id"]]
    # Paying it off clears the overdue state; the flag is not raised again.
    await ok(await alice.post(f"/invoices/{late['id']}/payments", json={"amount_minor": 1}), 201)
    assert (await ok(await alice.get(f"/invoices/{late['id']}")))["overdue"] is True
    await ok(
        await alice.post(
            f"/invoices/{late['id']}/payments", json={"amount_minor": late["total_minor"] - 1}
        ),
        201,
    )
    assert (await ok(await alice.get(f"/invoices/{late['id']}")))["overdue"] is False
    async with ctx.pool.acquire() as conn:
        assert await mark_overdue(conn, ctx.store, due + timedelta(days=90)) == 1  # only `soon`
        assert await mark_overdue(conn, ctx.store, due + timedelta(days=91)) == 0
    assert (await ok(await alice.get("/invoices", params={"status": "overdue"})))["items"][0][
        "id"
    ] == soon["id"]


async def test_a_stale_if_match_is_412_and_changes_nothing(alice: Caller, meg: Caller) -> None:
    p = await product(meg)
    c = await contact(alice)
    d = await deal(alice, c["id"])
    draft = await quote(alice, d["id"])
    sent = await sent_quote(alice)
    stale = {"If-Match": '"99"'}
    product_url, draft_url, sent_url = (
        f"/products/{p['id']}",
        f"/quotes/{draft['id']}",
        f"/quotes/{sent['id']}",
    )
    attempts: list[tuple[Caller, str, str, dict[str, Any] | None, str]] = [
        (meg, "PATCH", product_url, {"name": "x"}, product_url),
        (meg, "POST", f"{product_url}/deactivate", None, product_url),
        (alice, "PUT", f"{draft_url}/lines", {"lines": []}, draft_url),
        (alice, "PATCH", draft_url, {"notes": "x"}, draft_url),
        (alice, "POST", f"{sent_url}/reject", {"reason": "x"}, sent_url),
        (alice, "POST", f"{sent_url}/revise", None, sent_url),
        (alice, "POST", f"{sent_url}/accept", None, sent_url),
    ]
    for caller, method, path, body, url in attempts:
        before = await ok(await alice.get(url))
        p412 = problem(await caller.request(method, path, json=body, headers=stale), 412)
        assert p412["current_version"] == before["version"], path
        assert await ok(await alice.get(url)) == before
    assert (await ok(await alice.get("/invoices")))["items"] == []
    # Rule conflicts leave things as they were too.
    accepted_ = await ok(await alice.post(f"/quotes/{sent['id']}/accept"))
    before = await ok(await alice.get(f"/quotes/{sent['id']}"))
    assert problem(await alice.post(f"/quotes/{sent['id']}/accept"), 409)
    assert await ok(await alice.get(f"/quotes/{sent['id']}")) == before
    invoices = (await ok(await alice.get("/invoices")))["items"]
    assert [i["id"] for i in invoices] == [accepted_["invoice"]["id"]]
    await ok(await meg.post(f"/products/{p['id']}/deactivate"))
    before = await ok(await alice.get(f"/products/{p['id']}"))
    assert problem(await meg.post(f"/products/{p['id']}/deactivate"), 409)
    assert await ok(await alice.get(f"/products/{p['id']}")) == before
