"""E-mail double opt-in over real SMTP (the mail catcher): request, signed link, confirmation."""

from __future__ import annotations

import re

import pytest
from mkb_support import Mkb, mkb  # noqa: F401

from crm_marketing.audience import api, consent_mail
from crm_marketing.audience.commands import AudienceCommands
from crm_marketing.audience.confirmations import links_of, retry_job
from crm_runtime.eventstore import Metadata
from crm_runtime.mail import Mailer

pytestmark = pytest.mark.integration


def link_in(mkb: Mkb, index: int = 0) -> str:  # noqa: F811
    """The link in a captured mail (0: the newest)."""
    mails = mkb.catcher.store.list()
    text = mkb.catcher.store.get(mails[index].id).text or ""
    found = re.search(r"https://crm\.example\.com(/public/consent/confirm\?token=\S+)", text)
    assert found, text
    return found.group(1)


async def point(mkb: Mkb, cid: str, channel: str = "email") -> str | None:  # noqa: F811
    async with mkb.ctx.pool.acquire() as conn:
        return await api.contact_point(conn, cid, channel)


async def test_newsletter_sign_up_needs_the_link_in_the_mail(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    r = await mkb.submit(key, form_id, {"email": "Ada@Example.com", "newsletter": True})
    assert r.status_code == 202
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    [mail] = mkb.catcher.store.list()
    assert mail.rcpt_tos == ["ada@example.com"]
    assert mail.subject == "Please confirm your subscription"
    # pending: nothing may be sent yet
    assert await point(mkb, cid) is None
    profile = (await mkb.marketer.get(f"/audience/{cid}")).json()
    assert profile["consents"]["email"]["status"] == "pending"

    path = link_in(mkb)
    token = path.split("token=", 1)[1]
    assert "ada" not in consent_mail._unb64(token.split(".")[0]).decode()  # no address inside
    page = await mkb.client.get(path)  # a mail scanner opening the link changes nothing
    assert page.status_code == 200 and "<form method=post" in page.text
    assert await point(mkb, cid) is None

    confirmed = await mkb.client.post("/public/consent/confirm", data={"token": token})
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert await point(mkb, cid) == "ada@example.com"
    twice = await mkb.client.post("/public/consent/confirm", data={"token": token})
    assert twice.status_code == 200
    consents = (await mkb.marketer.get(f"/audience/{cid}/consents")).json()
    assert consents["current"]["email"]["status"] == "granted"
    assert [h["type"] for h in consents["history"]] == [
        "crm.marketing.consent.requested",
        "crm.marketing.consent.granted",
    ]
    [granted] = await mkb.events_of("crm.marketing.consent.granted")
    assert (granted["subject"], granted["method"], granted["source"]) == (
        cid,
        "double_opt_in",
        f"form:{form_id}",
    )

    # signing up again while confirmed sends nothing new
    await mkb.submit(key, form_id, {"email": "ada@example.com", "newsletter": True})
    assert len(mkb.catcher.store.list()) == 1

    # withdrawn: the old link grants nothing any more
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        assert await api.withdraw_consent(
            conn, mkb.ctx.store, cid, "email", reason="unsubscribe_link", metadata=_meta()
        )
        assert not await api.withdraw_consent(
            conn, mkb.ctx.store, cid, "email", reason="unsubscribe_link", metadata=_meta()
        )
    stale = await mkb.client.post("/public/consent/confirm", data={"token": token})
    assert stale.status_code == 400
    assert await point(mkb, cid) is None


async def test_forged_or_expired_links_grant_nothing(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    await mkb.submit(key, form_id, {"email": "bea@example.com", "newsletter": "on"})
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    token = link_in(mkb).split("token=", 1)[1]
    body, mac = token.split(".")
    forged = consent_mail._b64(consent_mail._unb64(body).replace(cid.encode(), b"someone-else"))
    for bad in (f"{forged}.{mac}", f"{body}.{mac[:-2]}xx", "garbage", ""):
        r = await mkb.client.post("/public/consent/confirm", data={"token": bad})
        assert r.status_code == 400
        assert (
            await mkb.client.get("/public/consent/confirm", params={"token": bad})
        ).status_code == 400
    mkb.clock.advance(days=8)  # links live 7 days
    assert (
        await mkb.client.post("/public/consent/confirm", data={"token": token})
    ).status_code == 400
    assert await point(mkb, cid) is None


async def test_a_marketer_can_ask_again_and_a_failed_mail_is_retried(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    await mkb.submit(key, form_id, {"email": "cy@example.com"})  # no checkbox: no mail
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    assert mkb.catcher.store.list() == []
    r = await mkb.marketer.post(f"/audience/{cid}/consents/email/request")
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert len(mkb.catcher.store.list()) == 1
    assert (
        await mkb.caller("analyst").post(f"/audience/{cid}/consents/email/request")
    ).status_code == 403

    # the SMTP server is unreachable for the next request: the mail stays queued ...
    async with mkb.ctx.pool.acquire() as conn, conn.transaction():
        request_id = await AudienceCommands(mkb.ctx.store).request_email_consent(
            conn, cid, "api", _meta()
        )
    assert request_id is not None
    down = Mailer("smtp://127.0.0.1:9", "crm@localhost", timeout=2)
    sent = await consent_mail.send_pending(
        mkb.ctx.pool, down, links_of(mkb.ctx), mkb.clock.now(), [request_id]
    )
    assert sent == 0
    row = await mkb.ctx.pool.fetchrow(
        "SELECT attempts, sent_at FROM consent_mails WHERE request_id = $1", request_id
    )
    assert row is not None and (row["attempts"], row["sent_at"]) == (1, None)
    # ... and the retry job sends it; its link confirms (the earlier request's does not)
    assert await retry_job(mkb.ctx)(mkb.ctx.pool, mkb.clock.now()) == 1
    assert await retry_job(mkb.ctx)(mkb.ctx.pool, mkb.clock.now()) == 0
    old_token = link_in(mkb, 1).split("token=", 1)[1]
    assert (
        await mkb.client.post("/public/consent/confirm", data={"token": old_token})
    ).status_code == 400
    new_token = link_in(mkb, 0).split("token=", 1)[1]
    assert (
        await mkb.client.post("/public/consent/confirm", data={"token": new_token})
    ).status_code == 200
    assert await point(mkb, cid) == "cy@example.com"
    again = await mkb.marketer.post(f"/audience/{cid}/consents/email/request")
    assert again.status_code == 200 and again.json()["status"] == "granted"


def _meta() -> Metadata:
    return Metadata(actor="test")
