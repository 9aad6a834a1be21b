"""The website integration: site keys, forms and the public endpoints' protections."""

from __future__ import annotations

import pytest
from mkb_support import ORIGIN, Mkb, mkb  # noqa: F401

pytestmark = pytest.mark.integration

ADA = {
    "email": "Ada@Example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "country": "gb",
    "utm_source": "google",
    "utm_campaign": "spring",
}


async def test_marketers_manage_site_keys_and_forms_others_may_not(mkb: Mkb) -> None:  # noqa: F811
    body = {"name": "shop", "allowed_origins": ["https://Shop.example.com/"]}
    first = await mkb.marketer.post("/site-keys", json=body, headers={"Idempotency-Key": "k1"})
    again = await mkb.marketer.post("/site-keys", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    key = first.json()
    assert key["site_key_id"].startswith("pk_")
    assert key["allowed_origins"] == ["https://shop.example.com"]
    assert len((await mkb.marketer.get("/site-keys")).json()["items"]) == 1

    bad = await mkb.marketer.post(
        "/site-keys", json={"name": "x", "allowed_origins": ["https://shop.example.com/path"]}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "allowed_origins"

    for role in ("sales_rep", "sales_manager", "service_agent", "analyst"):
        caller = mkb.caller(role)
        assert (await caller.post("/site-keys", json=body)).status_code == 403
        assert (await caller.get("/forms")).status_code == 403
        assert (await caller.get("/web/activity")).status_code == 403
    assert (await mkb.admin.get("/site-keys")).status_code == 200
    assert (await mkb.client.get("/site-keys")).status_code == 401

    form_id = await mkb.form(key["site_key_id"])
    no_email = await mkb.marketer.post(
        "/forms",
        json={
            "site_key_id": key["site_key_id"],
            "name": "x",
            "fields": [{"name": "first_name", "label": "Name", "maps_to": "first_name"}],
        },
    )
    assert no_email.status_code == 422
    assert "e-mail" in no_email.json()["errors"][0]["reason"]
    unknown_key = await mkb.marketer.post(
        "/forms",
        json={
            "site_key_id": "pk_nope",
            "name": "x",
            "fields": [{"name": "email", "label": "E", "required": True, "maps_to": "email"}],
        },
    )
    assert unknown_key.status_code == 422

    form = await mkb.marketer.get(f"/forms/{form_id}")
    assert form.headers["ETag"] == '"1"'
    stale = await mkb.marketer.patch(
        f"/forms/{form_id}", json={"name": "News"}, headers={"If-Match": '"7"'}
    )
    assert stale.status_code == 412
    renamed = await mkb.marketer.patch(
        f"/forms/{form_id}", json={"name": "News"}, headers={"If-Match": '"1"'}
    )
    assert renamed.json()["name"] == "News"
    history = (await mkb.marketer.get(f"/forms/{form_id}/history")).json()
    assert [h["type"] for h in history] == [
        "crm.marketing.form.created",
        "crm.marketing.form.updated",
    ]
    archived = await mkb.marketer.post(f"/forms/{form_id}/archive")
    assert archived.json()["archived"] is True
    # an archived form takes nothing
    assert (await mkb.submit(key["site_key_id"], form_id, ADA)).status_code == 404


async def test_only_allowed_origins_with_a_live_key_get_in(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)

    ok = await mkb.submit(key, form_id, ADA)
    assert ok.status_code == 202
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN

    evil = await mkb.submit(key, form_id, ADA, origin="https://evil.example")
    assert evil.status_code == 403
    assert "Access-Control-Allow-Origin" not in evil.headers
    no_origin = await mkb.client.post(
        f"/public/forms/{form_id}/submissions", params={"key": key}, json=ADA
    )
    assert no_origin.status_code == 403
    assert (await mkb.submit("pk_unknown", form_id, ADA)).status_code == 403
    no_key = await mkb.client.post(
        f"/public/forms/{form_id}/submissions", json=ADA, headers={"Origin": ORIGIN}
    )
    assert no_key.status_code == 403

    preflight = await mkb.client.options(
        f"/public/forms/{form_id}/submissions",
        params={"key": key},
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    refused = await mkb.client.options(
        "/public/activity",
        params={"key": key},
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers

    revoked = await mkb.marketer.post(f"/site-keys/{key}/revoke", json={"reason": "gone"})
    assert revoked.json()["revoked"] is True
    assert (await mkb.submit(key, form_id, ADA)).status_code == 403
    # a form is bound to its site's key: another site's key does not reach it
    other = await mkb.site()
    assert (await mkb.submit(other, form_id, ADA)).status_code == 404


async def test_floods_get_429_with_retry_after_per_key_and_client(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site(rate=3)
    form_id = await mkb.form(key)
    answers = [(await mkb.submit(key, form_id, {"email": "x"})).status_code for _ in range(3)]
    assert answers == [422, 422, 422]  # bad requests count too
    flooded = await mkb.submit(key, form_id, ADA)
    assert flooded.status_code == 429
    assert flooded.headers["Retry-After"] == "50"  # the clock stands at 10:00:10
    assert flooded.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 0
    # the activity endpoint has its own bucket
    page = [{"type": "page_view", "url": "https://shop.example.com/"}]
    assert (await mkb.activity(key, "visitor-0001", page)).status_code == 202
    # another client (IP) is not held back by this one
    import httpx

    transport = httpx.ASGITransport(app=mkb.client._transport.app, client=("203.0.113.9", 4000))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://marketing") as other:
        r = await other.post(
            f"/public/forms/{form_id}/submissions",
            params={"key": key},
            json=ADA,
            headers={"Origin": ORIGIN},
        )
        assert r.status_code == 202
    # the next minute lets the first client in again
    mkb.clock.advance(seconds=50)
    assert (await mkb.submit(key, form_id, ADA)).status_code == 202
    # no IP address is stored anywhere
    buckets = [r["bucket"] for r in await mkb.ctx.pool.fetch("SELECT bucket FROM rate_limits")]
    assert buckets and not any("127.0.0.1" in b or "203.0.113.9" in b for b in buckets)
    dump = await mkb.ctx.pool.fetchval(
        "SELECT string_agg(payload::text || metadata::text, ' ') FROM events"
    )
    assert "127.0.0.1" not in dump and "203.0.113.9" not in dump


async def test_oversize_bodies_get_413_and_change_nothing(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    big = {**ADA, "message": "x" * 5000}
    r = await mkb.submit(key, form_id, big)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    events = [{"type": "page_view", "url": "https://shop.example.com/" + "p" * 1900}] * 10
    assert (await mkb.activity(key, "visitor-0001", events)).status_code == 413
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 0
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM web_activity") == 0


async def test_a_filled_honeypot_looks_accepted_but_stores_nothing(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    before = await mkb.ctx.pool.fetchval("SELECT count(*) FROM events")
    bot = await mkb.submit(
        key, form_id, {**ADA, "website": "http://spam.example", "newsletter": True}
    )
    human = await mkb.submit(key, form_id, {**ADA, "email": "grace@example.com"})
    assert bot.status_code == human.status_code == 202
    assert bot.json() == human.json()
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 1
    after = await mkb.ctx.pool.fetch("SELECT event_type FROM events WHERE position > 0")
    assert len(after) > before
    assert not await mkb.ctx.pool.fetchval(
        "SELECT count(*) FROM events WHERE payload::text ILIKE '%ada@example.com%'"
    )
    assert len(mkb.catcher.store.list()) == 0  # no opt-in mail to the bot's address either


async def test_invalid_submissions_get_422_naming_each_field(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    r = await mkb.submit(
        key,
        form_id,
        {"email": "not-an-address", "country": "Germany", "message": "m" * 51, "visitor_id": "x"},
    )
    assert r.status_code == 422
    errors = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert set(errors) == {"email", "country", "message", "visitor_id"}
    assert "e-mail" in errors["email"]
    missing = await mkb.submit(key, form_id, {"first_name": "Ada"})
    assert missing.json()["errors"] == [{"field": "email", "reason": "is required"}]
    typed = await mkb.submit(key, form_id, {"email": ["a@b.c"]})
    assert typed.json()["errors"] == [{"field": "email", "reason": "must be text"}]
    not_json = await mkb.client.post(
        f"/public/forms/{form_id}/submissions",
        params={"key": key},
        content=b"{nope",
        headers={"Origin": ORIGIN, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 0


async def test_a_submission_creates_the_person_and_sales_gets_a_sighting(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    first = await mkb.submit(key, form_id, {**ADA, "texts": "on"})
    assert first.status_code == 202
    sighted = await mkb.events_of("crm.marketing.person.sighted")
    assert len(sighted) == 1
    cid = sighted[0]["customer_id"]
    assert sighted[0]["subject"] == cid
    assert sighted[0]["email"] == "ada@example.com"
    assert sighted[0]["sighted_as"] == "prospect"
    assert sighted[0]["source_detail"] == form_id
    assert sighted[0]["attribution"] == {"utm_source": "google", "utm_campaign": "spring"}
    assert (sighted[0]["first_name"], sighted[0]["last_name"]) == ("Ada", "Lovelace")

    profile = (await mkb.marketer.get(f"/audience/{cid}")).json()
    assert (profile["email"], profile["country"], profile["first_name"]) == (
        "ada@example.com",
        "GB",
        "Ada",
    )
    # the SMS box was ticked, but the form asks for no number: no SMS consent (it is given
    # for a number only)
    assert "sms" not in profile["consents"]

    # the same person again (another spelling of the address): one customer, no new sighting
    second = await mkb.submit(
        key, form_id, {**ADA, "email": " ADA@example.COM ", "first_name": "A."}
    )
    assert second.status_code == 202
    assert second.json() == first.json()  # nothing tells whether the address was known
    assert len(await mkb.events_of("crm.marketing.person.sighted")) == 1
    submitted = await mkb.events_of("crm.marketing.form.submitted")
    assert [s["subject"] for s in submitted] == [cid, cid]
    assert [s["new_person"] for s in submitted] == [True, False]
    assert submitted[0]["values"]["email"] == "Ada@Example.com"
    # a form never overwrites what a known person's profile has (anyone can use the address)
    assert (await mkb.marketer.get(f"/audience/{cid}")).json()["first_name"] == "Ada"
    subs = (await mkb.marketer.get(f"/forms/{form_id}/submissions")).json()["items"]
    assert [s["customer_id"] for s in subs] == [cid, cid]
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 1


async def test_form_encoded_posts_work_too(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    r = await mkb.client.post(
        f"/public/forms/{form_id}/submissions",
        params={"key": key},
        data={"email": "lin@example.com", "first_name": "Lin", "website": ""},
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 202
    assert await mkb.ctx.pool.fetchval("SELECT first_name FROM profiles") == "Lin"


async def test_concurrent_sign_ups_of_one_address_make_one_customer(mkb: Mkb) -> None:  # noqa: F811
    import asyncio

    key = await mkb.site()
    form_id = await mkb.form(key)
    results = await asyncio.gather(
        *[
            mkb.submit(key, form_id, {"email": f"{c}@example.com"})
            for c in ["Zed", "zed", "ZED"] * 3
        ]
    )
    assert {r.status_code for r in results} == {202}
    assert await mkb.ctx.pool.fetchval("SELECT count(*) FROM profiles") == 1
    assert len(await mkb.events_of("crm.marketing.person.sighted")) == 1
    assert len(await mkb.events_of("crm.marketing.form.submitted")) == 9
