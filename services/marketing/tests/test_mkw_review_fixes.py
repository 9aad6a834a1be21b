"""Review fixes of the public website endpoints: a form cannot overwrite a known customer or
take their SMS (consent is tied to the number), the proxy's X-Forwarded-For entry counts, and
double opt-in mails to one address are capped."""

from __future__ import annotations

import re
from typing import Any

import pytest
from mkb_support import Mkb, mkb  # noqa: F401
from starlette.requests import Request

from crm_marketing.audience import api
from crm_marketing.audience.commands import AudienceCommands
from crm_marketing.delivery.messages import reach
from crm_marketing.settings import MarketingSettings
from crm_marketing.web.public import client_ip
from crm_runtime.eventstore import Metadata

pytestmark = pytest.mark.integration

FIELDS: list[dict[str, Any]] = [
    {"name": "email", "label": "E-mail", "type": "email", "required": True, "maps_to": "email"},
    {"name": "first_name", "label": "First name", "maps_to": "first_name"},
    {"name": "last_name", "label": "Last name", "maps_to": "last_name"},
    {"name": "phone", "label": "Phone", "type": "tel", "maps_to": "phone"},
]
ADA_PHONE = "+44 20 7946 0000"


async def _sms(mkb: Mkb, cid: str) -> tuple[str | None, bool, str | None, str | None]:  # noqa: F811
    """contact_point, has_consent, and the bulk reach() query's consent and address."""
    async with mkb.ctx.pool.acquire() as conn:
        [r] = await reach(conn, [(cid, "sms")])
        return (
            await api.contact_point(conn, cid, "sms"),
            await api.has_consent(conn, cid, "sms"),
            r.consent,
            None if r.skip_reason() else r.address,
        )


async def test_a_form_cannot_overwrite_a_known_customer_or_take_their_sms(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key, fields=FIELDS)
    ada = {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}
    r = await mkb.submit(key, form_id, {**ada, "phone": ADA_PHONE, "texts": "on"})
    assert r.status_code == 202
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    assert await _sms(mkb, cid) == (ADA_PHONE, True, "granted", ADA_PHONE)
    row = await mkb.ctx.pool.fetchrow("SELECT status, address FROM consents WHERE channel='sms'")
    assert row is not None and (row["status"], row["address"]) == ("granted", "+442079460000")

    # someone else uses her address, with their own name and number, and ticks SMS
    r = await mkb.submit(
        key,
        form_id,
        {
            "email": " ADA@example.com",
            "first_name": "Mallory",
            "last_name": "Evil",
            "phone": "+1 555 0100",
            "texts": "on",
        },
    )
    assert r.status_code == 202
    shown = (await mkb.marketer.get(f"/audience/{cid}")).json()
    assert (shown["first_name"], shown["last_name"], shown["phone"]) == (
        "Ada",
        "Lovelace",
        ADA_PHONE,
    )
    assert shown["consents"]["sms"]["address"] == "+442079460000"
    assert await _sms(mkb, cid) == (ADA_PHONE, True, "granted", ADA_PHONE)

    # the profile's number changes: consent given for the old number does not follow it
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        await AudienceCommands(mkb.ctx.store).update_attributes(
            conn, cid, {"phone": "+1 555 0100"}, Metadata()
        )
    assert await _sms(mkb, cid) == (None, False, "pending", None)
    # a new opt-in is for the new number
    again = await mkb.marketer.post(f"/audience/{cid}/consents/sms/opt-in", json={})
    assert again.json()["consents"]["sms"]["address"] == "+15550100"
    assert await _sms(mkb, cid) == ("+1 555 0100", True, "granted", "+1 555 0100")

    # a known customer without a number: the form fills it in, and the consent is for it
    r = await mkb.submit(key, form_id, {"email": "bob@example.com", "first_name": "Bob"})
    bob = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles WHERE first_name='Bob'")
    assert await _sms(mkb, bob) == (None, False, None, None)
    r = await mkb.submit(
        key,
        form_id,
        {"email": "bob@example.com", "first_name": "B.", "phone": "+49 30 55555", "texts": "on"},
    )
    assert r.status_code == 202
    assert (await mkb.marketer.get(f"/audience/{bob}")).json()["first_name"] == "Bob"
    assert await _sms(mkb, bob) == ("+49 30 55555", True, "granted", "+49 30 55555")


async def test_a_legacy_sms_consent_without_a_number_counts_for_nobody(mkb: Mkb) -> None:  # noqa: F811
    cid = "c-legacy"
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        await AudienceCommands(mkb.ctx.store).upsert_person(
            conn, cid, {"email": "l@example.com", "phone": "+1 2"}, Metadata()
        )
        await conn.execute(
            "INSERT INTO consents (customer_id, channel, status, changed_at)"
            " VALUES ($1, 'sms', 'granted', now())",
            cid,
        )
    assert await _sms(mkb, cid) == (None, False, "pending", None)


def _request(forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", v.encode()) for v in forwarded]
    return Request({"type": "http", "headers": headers, "client": ("10.0.0.1", 4711)})


def test_the_client_ip_is_the_entry_the_trusted_proxy_appended() -> None:
    assert client_ip(_request(["6.6.6.6, 203.0.113.7"]), True) == "203.0.113.7"
    assert client_ip(_request(["6.6.6.6", "203.0.113.7 "]), True) == "203.0.113.7"
    assert client_ip(_request(["203.0.113.7,"]), True) == "203.0.113.7"
    assert client_ip(_request([]), True) == "10.0.0.1"
    assert client_ip(_request(["6.6.6.6, 203.0.113.7"]), False) == "10.0.0.1"


async def test_spoofed_forwarded_for_entries_do_not_escape_the_rate_limit(mkb: Mkb) -> None:  # noqa: F811
    mkb.ctx.extras["marketing_settings"] = MarketingSettings(
        public_base_url="https://crm.example.com", trust_forwarded_for=True
    )
    key = await mkb.site(rate=3)
    event = [{"type": "page_view", "url": "https://shop.example.com/"}]

    async def post(forwarded: str) -> int:
        r = await mkb.client.post(
            "/public/activity",
            params={"key": key},
            json={"visitor_id": "v-spoofer-01", "events": event},
            headers={"Origin": "https://shop.example.com", "X-Forwarded-For": forwarded},
        )
        return r.status_code

    # the client makes up a new left-most entry each time; the proxy appends the real address
    codes = [await post(f"198.51.100.{i}, 203.0.113.7") for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    assert await post("198.51.100.1, 203.0.113.8") == 202  # another client


async def test_double_opt_in_mails_to_one_address_are_capped(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    codes = [
        (
            await mkb.submit(key, form_id, {"email": "eve@example.com", "newsletter": "on"})
        ).status_code
        for _ in range(5)
    ]
    assert codes == [202] * 5  # accepted all the same
    assert len(mkb.catcher.store.list(to="eve@example.com")) == 3
    assert len(await mkb.events_of("crm.marketing.consent.requested")) == 3
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    refused = await mkb.marketer.post(f"/audience/{cid}/consents/email/request")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert len(mkb.catcher.store.list(to="eve@example.com")) == 3

    # an hour later the address may get another one
    await mkb.ctx.pool.execute(
        "UPDATE consent_mails SET created_at = created_at - interval '61 min'"
    )
    r = await mkb.submit(key, form_id, {"email": "eve@example.com", "newsletter": "on"})
    assert r.status_code == 202
    assert len(mkb.catcher.store.list(to="eve@example.com")) == 4

    # the newest link works (requests over the cap recorded nothing that replaced it)
    [newest] = mkb.catcher.store.list(limit=1, to="eve@example.com")
    text = mkb.catcher.store.get(newest.id).text or ""
    found = re.search(r"token=(\S+)", text)
    assert found
    confirmed = await mkb.client.post("/public/consent/confirm", data={"token": found.group(1)})
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
