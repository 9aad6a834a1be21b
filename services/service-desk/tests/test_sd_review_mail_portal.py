"""Review fixes: ticket subjects stay one mail header line (422 on the API and the portal; folded
inbound subjects become one line), one broken outbox row does not stop the others, and the
portal's rate limit is keyed (HMAC) and proxy-aware only when told to trust the proxy."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sd_support import ORIGIN, SITE_KEY, Desk, desk_stack

from crm_runtime.mail import Mailer
from crm_runtime.settings import Settings
from crm_service_desk.application import tickets_mail
from crm_service_desk.entrypoints.api.portal import rate_bucket
from crm_service_desk.inbound import InboundEndpoint, InboundMail

pytestmark = pytest.mark.integration

HEADERS = {"X-Site-Key": SITE_KEY, "Origin": ORIGIN}
BREAKS = ["Hi\nthere", "Hi\r\nBcc: evil@example.com", "Hi\rthere", "Hi\u2028there", "Hi\x00"]


def form(**kw: Any) -> dict[str, Any]:
    return {
        "email": "grace@example.com",
        "subject": "My order never arrived",
        "message": "Order SO-77 was due last week.",
        **kw,
    }


async def count(sd: Desk, table: str) -> int:
    return int(await sd.ctx.pool.fetchval(f"SELECT count(*) FROM {table}"))


# --- finding 1: subjects with line breaks ---------------------------------------------------


@pytest.fixture
async def roomy(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Desk]:
    """A desk whose portal rate limit leaves room for many refused forms."""
    async with desk_stack(tmp_path, fresh_db, settings_for, token, portal_rate_limit=100) as d:
        yield d


async def test_subjects_with_line_breaks_are_422_on_api_and_portal(roomy: Desk) -> None:
    sd = roomy
    meg = sd.user("service_manager")
    for subject in BREAKS:
        r = await meg.post(
            "/tickets", json={"subject": subject, "customer_email": "ada@example.com"}
        )
        assert r.status_code == 422, (subject, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["subject"]
        r = await sd.client.post("/portal/tickets", json=form(subject=subject), headers=HEADERS)
        assert r.status_code == 422, (subject, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["subject"]
    assert await count(sd, "tickets") == 0 and await count(sd, "ticket_outbox") == 0

    r = await meg.post("/tickets", json={"subject": "Fine", "customer_email": "ada@example.com"})
    assert r.status_code == 201
    tid = r.json()["id"]
    before = len(await sd.ctx.store.read_stream(f"ticket-{tid}"))
    r = await meg.patch(f"/tickets/{tid}", json={"subject": "Still\nfine?"})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["subject"]
    assert len(await sd.ctx.store.read_stream(f"ticket-{tid}")) == before
    assert (await meg.get(f"/tickets/{tid}")).json()["subject"] == "Fine"
    # non-ASCII text is still a fine subject
    r = await meg.patch(f"/tickets/{tid}", json={"subject": "Größe falsch — Bestellung 7"})
    assert r.status_code == 200, r.text


async def insert_outbox(sd: Desk, *, created: datetime, **over: Any) -> str:
    row: dict[str, Any] = {
        "mail_id": str(uuid.uuid4()),
        "ticket_id": "T-REVIEW0001",
        "purpose": "reply",
        "to_address": "ada@example.com",
        "subject": "Re: Checkout [#T-REVIEW0001]",
        "body": "Hello",
        "message_id": tickets_mail.new_message_id("support@desk.example.com"),
        "in_reply_to": None,
        "created_at": created,
        **over,
    }
    await sd.ctx.pool.execute(
        f"INSERT INTO ticket_outbox ({', '.join(row)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(row) + 1))})",
        *row.values(),
    )
    return str(row["mail_id"])


async def test_one_unbuildable_mail_does_not_stop_the_others(sd: Desk) -> None:
    now = datetime.now(UTC)
    # oldest first: a row whose headers cannot be built, a legacy subject with a line break
    # (written before subjects were checked), and a plain one
    broken = await insert_outbox(
        sd, created=now - timedelta(minutes=3), in_reply_to="<a@x>\nBcc: ada@example.com"
    )
    legacy = await insert_outbox(
        sd, created=now - timedelta(minutes=2), subject="Re: Hi\nthere [#T-REVIEW0001]"
    )
    plain = await insert_outbox(sd, created=now - timedelta(minutes=1))
    mailer = Mailer(sd.ctx.settings.smtp_url, sd.desk.support_address)

    assert await tickets_mail.send_pending(sd.ctx.pool, mailer, now) == 2
    rows = {
        r["mail_id"]: r
        for r in await sd.ctx.pool.fetch(
            "SELECT mail_id, sent_at, attempts, last_error, claimed_until FROM ticket_outbox"
        )
    }
    bad = rows[broken]
    assert bad["sent_at"] is None and bad["attempts"] == 1 and bad["claimed_until"] is None
    assert bad["last_error"] == "build: ValueError"  # no address, no header text
    for mail_id in (legacy, plain):
        assert rows[mail_id]["sent_at"] is not None and rows[mail_id]["last_error"] is None
    caught = await sd.mail_to("ada@example.com", count=2)
    assert sorted(m.subject or "" for m in caught) == [
        "Re: Checkout [#T-REVIEW0001]",
        "Re: Hi there [#T-REVIEW0001]",
    ]
    # the broken row is tried again on the next run (no lease left), and counted again
    assert await tickets_mail.send_pending(sd.ctx.pool, mailer, now) == 0
    assert (
        await sd.ctx.pool.fetchval("SELECT attempts FROM ticket_outbox WHERE mail_id = $1", broken)
        == 2
    )


async def test_folded_and_encoded_inbound_subjects_become_one_line(sd: Desk) -> None:
    endpoint = InboundEndpoint(InboundMail.for_context(sd.ctx, sd.desk), port=0)
    raw = (
        b"From: Linus <linus@example.com>\r\n"
        b"To: support@desk.example.com\r\n"
        b"Subject: Printer\r\n on =?utf-8?q?fire=0D=0Aagain?=\r\n"
        b"Message-ID: <folded@example.com>\r\n"
        b"\r\n"
        b"It smokes.\r\n"
    )
    async with endpoint:
        await aiosmtplib.send(
            raw,
            sender="linus@example.com",
            recipients=["support@desk.example.com"],
            hostname="127.0.0.1",
            port=endpoint.port,
            timeout=10,
        )
        await endpoint.inbound.idle()
    [subject] = [r["subject"] for r in await sd.ctx.pool.fetch("SELECT subject FROM tickets")]
    assert subject == "Printer on fire again"
    [ack] = await sd.mail_to("linus@example.com")
    assert (ack.subject or "").endswith("Printer on fire again")


# --- finding 10: the portal's rate-limit bucket ---------------------------------------------


async def test_rate_limit_bucket_is_keyed_and_not_a_plain_hash_of_the_address(sd: Desk) -> None:
    r = await sd.client.post("/portal/tickets", json=form(), headers=HEADERS)
    assert r.status_code == 202
    [bucket] = [r["bucket"] for r in await sd.ctx.pool.fetch("SELECT bucket FROM portal_hits")]
    ip = "203.0.113.7"  # the test client's address (sd_support)
    assert bucket != hashlib.sha256(f"{SITE_KEY}\x00{ip}".encode()).hexdigest()[:32]
    assert ip not in bucket
    secret = sd.desk.link_secret or sd.ctx.settings.jwt_secret
    assert bucket == rate_bucket(secret, SITE_KEY, ip)
    assert rate_bucket(secret + "x", SITE_KEY, ip) != bucket


async def test_forwarded_for_is_ignored_unless_trusted(sd: Desk) -> None:
    assert sd.desk.portal_trust_forwarded_for is False  # the default
    # the limit is 3; a client making up X-Forwarded-For values is still one client
    for i in range(3):
        spoof = {**HEADERS, "X-Forwarded-For": f"198.51.100.{i}"}
        r = await sd.client.post("/portal/tickets", json=form(), headers=spoof)
        assert r.status_code == 202
    spoof = {**HEADERS, "X-Forwarded-For": "198.51.100.99"}
    r = await sd.client.post("/portal/tickets", json=form(), headers=spoof)
    assert r.status_code == 429


async def test_trusted_proxy_the_right_most_forwarded_entry_is_the_client(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> None:
    async with desk_stack(
        tmp_path, fresh_db, settings_for, token, portal_trust_forwarded_for=True
    ) as sd:

        async def post(forwarded: str) -> int:
            headers = {**HEADERS, "X-Forwarded-For": forwarded}
            return (
                await sd.client.post("/portal/tickets", json=form(), headers=headers)
            ).status_code

        # the client picks the left entries; the proxy appended the right-most one
        for i in range(3):
            assert await post(f"10.0.0.{i}, 192.0.2.10") == 202
        assert await post("10.0.0.99, 192.0.2.10") == 429
        assert await post("192.0.2.10") == 429
        # another client behind the same proxy has its own limit
        assert await post("10.0.0.1, 192.0.2.20") == 202
