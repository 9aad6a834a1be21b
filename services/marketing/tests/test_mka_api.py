"""The /audience API and the audience functions campaigns and templates use."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mkb_support import Mkb, mkb  # noqa: F401

from crm_marketing.audience import api
from crm_marketing.audience.commands import AudienceCommands
from crm_runtime.eventstore import Metadata

pytestmark = pytest.mark.integration


async def person(mkb: Mkb, email: str, **answers: str) -> str:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    r = await mkb.submit(key, form_id, {"email": email, **answers})
    assert r.status_code == 202, r.text
    cid = await mkb.ctx.pool.fetchval(
        "SELECT customer_id FROM profiles WHERE email = $1", email.lower()
    )
    assert cid is not None
    return str(cid)


async def test_marketers_set_attributes_with_history_and_versions(mkb: Mkb) -> None:  # noqa: F811
    cid = await person(mkb, "ada@example.com", first_name="Ada", last_name="Lovelace")
    got = await mkb.marketer.get(f"/audience/{cid}")
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    before = datetime.now(UTC)

    patch = {"country": "de", "language": "de", "age_band": "25-34", "company_size": "11-50"}
    r = await mkb.marketer.patch(f"/audience/{cid}", json=patch, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"'
    body = r.json()
    assert (body["country"], body["language"], body["age_band"]) == ("DE", "de", "25-34")
    stale = await mkb.marketer.patch(
        f"/audience/{cid}", json={"city": "Berlin"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    cleared = await mkb.marketer.patch(f"/audience/{cid}", json={"age_band": None})
    assert cleared.json()["age_band"] is None

    then = (await mkb.marketer.get(f"/audience/{cid}", params={"as_of": before.isoformat()})).json()
    assert then["country"] is None and then["version"] == 1
    history = (await mkb.marketer.get(f"/audience/{cid}/history")).json()
    assert [h["type"] for h in history] == [
        "crm.marketing.profile.created",
        "crm.marketing.profile.updated",
        "crm.marketing.profile.updated",
    ]
    assert history[1]["actor"] == "mia"
    assert history[1]["data"]["source"] == "api"

    bad = await mkb.marketer.patch(
        f"/audience/{cid}", json={"country": "Germany", "age_band": "young", "email": "x@y.z"}
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"country", "age_band", "email"}
    assert (await mkb.marketer.patch("/audience/nobody", json={"city": "Rome"})).status_code == 404

    # the read model follows
    row = await mkb.ctx.pool.fetchrow("SELECT * FROM profiles WHERE customer_id = $1", cid)
    assert row is not None
    assert (row["country"], row["language"], row["age_band"]) == ("DE", "de", None)
    listed = (await mkb.marketer.get("/audience", params={"country": "de"})).json()
    assert [p["customer_id"] for p in listed["items"]] == [cid]
    assert (await mkb.marketer.get("/audience", params={"country": "FR"})).json()["items"] == []


async def test_other_roles_get_403_on_the_audience(mkb: Mkb) -> None:  # noqa: F811
    cid = await person(mkb, "bea@example.com")
    for role in ("sales_rep", "sales_manager", "service_agent", "service_manager", "analyst"):
        caller = mkb.caller(role)
        assert (await caller.get("/audience")).status_code == 403
        assert (await caller.get(f"/audience/{cid}")).status_code == 403
        assert (await caller.patch(f"/audience/{cid}", json={"city": "Rome"})).status_code == 403
        assert (
            await caller.post(f"/audience/{cid}/consents/sms/opt-in", json={})
        ).status_code == 403
    assert (await mkb.admin.patch(f"/audience/{cid}", json={"city": "Rome"})).status_code == 200
    assert (await mkb.client.get(f"/audience/{cid}")).status_code == 401


async def test_consent_per_channel_gates_every_contact_point(mkb: Mkb) -> None:  # noqa: F811
    cid = await person(mkb, "cy@example.com", first_name="Cy", last_name="Young")
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():  # as a form with a phone would
        await AudienceCommands(mkb.ctx.store).upsert_person(
            conn, cid, {"phone": "+49 30 1234567"}, Metadata()
        )
    async with mkb.ctx.pool.acquire() as conn:
        assert [await api.contact_point(conn, cid, ch) for ch in ("email", "sms", "push")] == [
            None,
            None,
            None,
        ]
        assert not await api.has_consent(conn, cid, "sms")

    refused = await mkb.marketer.post(f"/audience/{cid}/consents/email/opt-in", json={})
    assert refused.status_code == 409  # e-mail only by double opt-in
    sms = await mkb.marketer.post(
        f"/audience/{cid}/consents/sms/opt-in", json={"source": "keyword"}
    )
    assert sms.json()["consents"]["sms"] == {
        "status": "granted",
        "address": "+49301234567",  # the number it was given for
        "source": "keyword",
    }
    device = await mkb.marketer.post(
        f"/audience/{cid}/devices", json={"token": "fcm:abc", "platform": "android"}
    )
    assert device.json()["push_devices"] == [{"token": "fcm:abc", "platform": "android"}]
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.contact_point(conn, cid, "sms") == "+49 30 1234567"
        assert await api.contact_point(conn, cid, "push") is None  # a device, but no consent
    await mkb.marketer.post(f"/audience/{cid}/consents/push/opt-in", json={})
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.contact_point(conn, cid, "push") == "fcm:abc"
        assert await api.has_consent(conn, cid, "push")

    withdrawn = await mkb.marketer.post(
        f"/audience/{cid}/consents/sms/withdraw", json={"reason": "asked by phone"}
    )
    assert withdrawn.json()["consents"]["sms"]["status"] == "withdrawn"
    gone = await mkb.marketer.post(f"/audience/{cid}/devices/unregister", json={"token": "fcm:abc"})
    assert gone.json()["push_devices"] == []
    again = await mkb.marketer.post(
        f"/audience/{cid}/devices/unregister", json={"token": "fcm:abc"}
    )
    assert again.status_code == 404
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.contact_point(conn, cid, "sms") is None
        assert await api.contact_point(conn, cid, "push") is None
        with pytest.raises(ValueError, match="channel"):
            await api.contact_point(conn, cid, "fax")
    consents = (await mkb.marketer.get(f"/audience/{cid}/consents")).json()
    assert [(h["channel"], h["type"].rsplit(".", 1)[1]) for h in consents["history"]] == [
        ("sms", "granted"),
        ("push", "granted"),
        ("sms", "withdrawn"),
    ]
    rows = await mkb.ctx.pool.fetch(
        "SELECT channel, status FROM consents WHERE customer_id = $1", cid
    )
    assert dict((r["channel"], r["status"]) for r in rows) == {
        "sms": "withdrawn",
        "push": "granted",
    }
    granted = (await mkb.marketer.get("/audience", params={"consent": "push"})).json()["items"]
    assert [p["customer_id"] for p in granted] == [cid]


async def test_an_address_change_needs_a_new_confirmation(mkb: Mkb) -> None:  # noqa: F811
    cid = await person(mkb, "dan@example.com")
    await mkb.ctx.pool.execute(
        "INSERT INTO consents (customer_id, channel, status, changed_at, address)"
        " VALUES ($1, 'email', 'granted', now(), 'dan@example.com')",
        cid,
    )
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.contact_point(conn, cid, "email") == "dan@example.com"
    await mkb.ctx.pool.execute(
        "UPDATE profiles SET email = 'dan@new.example' WHERE customer_id = $1", cid
    )
    async with mkb.ctx.pool.acquire() as conn:
        assert await api.contact_point(conn, cid, "email") is None
        assert not await api.has_consent(conn, cid, "email")


async def test_profile_variables_for_templates(mkb: Mkb) -> None:  # noqa: F811
    cid = await person(mkb, "eve@example.com", first_name="Eve", last_name="Adams", country="at")
    async with mkb.ctx.pool.acquire() as conn:
        variables = await api.profile_variables(conn, cid)
        unknown = await api.profile_variables(conn, "nobody")
    assert variables["first_name"] == "Eve"
    assert variables["full_name"] == "Eve Adams"
    assert variables["country"] == "AT"
    assert variables["email"] == "eve@example.com"
    assert set(variables) == set(api.VARIABLES)
    assert unknown["customer_id"] == "nobody" and unknown["first_name"] is None
