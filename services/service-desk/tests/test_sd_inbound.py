"""Inbound e-mail over real SMTP (aiosmtplib client -> the aiosmtpd endpoint): new tickets,
replies threaded by In-Reply-To or the subject token, and everything refused or ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sd_support import Desk, desk_stack

from crm_runtime import db
from crm_runtime.settings import Settings
from crm_service_desk.inbound import InboundEndpoint, InboundMail

pytestmark = pytest.mark.integration

SUPPORT = "support@desk.example.com"


@dataclass
class Inbound:
    sd: Desk
    endpoint: InboundEndpoint

    async def send(self, msg: EmailMessage, sender: str | None = None) -> None:
        await aiosmtplib.send(
            msg,
            hostname="127.0.0.1",
            port=self.endpoint.port,
            sender=sender,
            recipients=[SUPPORT],
            timeout=10,
        )
        await self.endpoint.inbound.idle()  # the acknowledgement is sent after the commit

    async def tickets(self) -> list[dict[str, Any]]:
        rows = await self.sd.ctx.pool.fetch("SELECT * FROM tickets ORDER BY created_at")
        return [dict(r) for r in rows]

    async def history(self, ticket_id: str) -> list[str]:
        return [e.type for e in await self.sd.ctx.store.read_stream(f"ticket-{ticket_id}")]


@pytest.fixture
async def inbound(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Inbound]:
    async with desk_stack(
        tmp_path, fresh_db, settings_for, token, inbound_max_bytes=64 * 1024
    ) as sd:
        endpoint = InboundEndpoint(InboundMail.for_context(sd.ctx, sd.desk), port=0)
        async with endpoint:
            yield Inbound(sd, endpoint)


def message(
    subject: str = "Printer on fire",
    body: str = "It smokes when I print.",
    sender: str = "Linus Example <linus@example.com>",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content(body)  # (drops Content-* headers: set them after)
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    return msg


async def test_new_mail_opens_a_ticket_and_replies_thread_onto_it(inbound: Inbound) -> None:
    first = message(Content_Language="de-DE")
    await inbound.send(first)
    [t] = await inbound.tickets()
    assert (t["channel"], t["customer_email"], t["subject"], t["status"], t["language"]) == (
        "email",
        "linus@example.com",
        "Printer on fire",
        "new",
        "de-de",
    )
    opened = (await inbound.sd.ctx.store.read_stream(f"ticket-{t['ticket_id']}"))[0]
    assert opened.data["description"] == "It smokes when I print."
    assert opened.data["customer_name"] == "Linus Example"
    assert opened.data["source_message_id"] == first["Message-ID"]
    assert opened.subject == t["customer_id"]
    sighted = await inbound.sd.ctx.store.read_stream(f"person-{t['customer_id']}")
    assert sighted[0].data["email"] == "linus@example.com"
    [ack] = await inbound.sd.mail_to("linus@example.com")
    assert f"[#{t['ticket_id']}]" in (ack.subject or "")
    ack_id = {h.name: h.value for h in ack.headers}["Message-ID"]

    # a reply to our acknowledgement (In-Reply-To), quoting it
    reply = message(
        "Re: Printer on fire",
        "Now it is out.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> Thank you for contacting us",
        In_Reply_To=ack_id,
        References=f"{first['Message-ID']} {ack_id}",
    )
    await inbound.send(reply)
    assert len(await inbound.tickets()) == 1
    assert (await inbound.history(t["ticket_id"]))[-1] == "crm.service.ticket.customer_replied"
    comment = (await inbound.sd.ctx.store.read_stream(f"ticket-{t['ticket_id']}"))[-1]
    assert comment.data["body"] == "Now it is out." and comment.data["channel"] == "email"

    # the agent answers and waits; a reply by subject token only brings it back to work
    meg = inbound.sd.user("service_manager")
    await meg.post(
        f"/tickets/{t['ticket_id']}/replies", json={"body": "Model?", "wait_on_customer": True}
    )
    await inbound.send(message(f"Re: something [#{t['ticket_id']}]", "Model X1"))
    assert (await meg.get(f"/tickets/{t['ticket_id']}")).json()["status"] == "in_progress"

    # a reply to a resolved ticket reopens it
    await meg.post(f"/tickets/{t['ticket_id']}/resolve", json={})
    await inbound.send(message(f"Re: [#{t['ticket_id']}]", "It burns again"))
    assert (await meg.get(f"/tickets/{t['ticket_id']}")).json()["status"] == "new"
    assert (await inbound.history(t["ticket_id"]))[-1] == "crm.service.ticket.reopened"
    assert len(await inbound.tickets()) == 1

    # the same message delivered twice: ignored
    events_before = await inbound.history(t["ticket_id"])
    await inbound.send(reply)
    assert await inbound.history(t["ticket_id"]) == events_before
    comments = await inbound.sd.ctx.pool.fetchval(
        "SELECT count(*) FROM ticket_comments WHERE ticket_id = $1 AND author_kind = 'customer'",
        t["ticket_id"],
    )
    assert comments == 3


async def test_token_from_someone_else_merged_and_closed_tickets(inbound: Inbound) -> None:
    await inbound.send(message("First"))
    await inbound.send(message("Second, same problem"))
    a, b = await inbound.tickets()
    meg = inbound.sd.user("service_manager")
    # a stranger quoting the token gets a ticket of its own
    await inbound.send(message(f"Re: [#{a['ticket_id']}]", "me too", sender="eve@evil.example"))
    tickets = await inbound.tickets()
    assert len(tickets) == 3 and tickets[-1]["customer_email"] == "eve@evil.example"
    # mail to a merged duplicate goes to the survivor
    await meg.post(f"/tickets/{b['ticket_id']}/merge", json={"into": a["ticket_id"]})
    await inbound.send(message(f"Re: [#{b['ticket_id']}]", "any news?"))
    assert (await inbound.history(a["ticket_id"]))[-1] == "crm.service.ticket.customer_replied"
    assert (await inbound.history(b["ticket_id"]))[-1] == "crm.service.ticket.merged_into"
    # mail to a closed ticket opens a follow-up
    await meg.post(f"/tickets/{a['ticket_id']}/resolve", json={})
    await meg.post(f"/tickets/{a['ticket_id']}/close", json={})
    await inbound.send(message(f"Re: [#{a['ticket_id']}]", "it is back"))
    tickets = await inbound.tickets()
    assert len(tickets) == 4
    follow = (await meg.get(f"/tickets/{tickets[-1]['ticket_id']}")).json()
    assert follow["follow_up_of"] == a["ticket_id"] and follow["customer_id"] == a["customer_id"]


@pytest.mark.parametrize(
    ("headers", "sender", "envelope"),
    [
        ({"Auto_Submitted": "auto-replied"}, "linus@example.com", None),
        ({"Precedence": "bulk"}, "linus@example.com", None),
        ({"Precedence": "auto_reply"}, "linus@example.com", None),
        ({"X_Autoreply": "yes"}, "linus@example.com", None),
        ({}, "MAILER-DAEMON@mx.example.com", None),
        ({}, "linus@example.com", ""),
        ({}, SUPPORT, None),
        ({"X_CRM_Ticket": "T-0000000000"}, "linus@example.com", None),
    ],
    ids=[
        "auto-submitted",
        "precedence-bulk",
        "precedence-auto-reply",
        "x-autoreply",
        "mailer-daemon",
        "null-sender",
        "own-address",
        "own-mail-looped",
    ],
)
async def test_loops_are_accepted_and_ignored(
    inbound: Inbound, headers: dict[str, str], sender: str, envelope: str | None
) -> None:
    await inbound.send(message(sender=sender, **headers), sender=envelope)
    assert await inbound.tickets() == []
    assert inbound.sd.catcher.store.list() == []  # nothing answered


async def test_malformed_and_oversize_are_refused_and_the_endpoint_goes_on(
    inbound: Inbound,
) -> None:
    no_from = EmailMessage()
    no_from["Subject"] = "who am I"
    no_from.set_content("x")
    with pytest.raises(aiosmtplib.SMTPException) as refused:
        await aiosmtplib.send(
            no_from,
            hostname="127.0.0.1",
            port=inbound.endpoint.port,
            sender="someone@example.com",
            recipients=[SUPPORT],
        )
    assert getattr(refused.value, "code", 0) == 550
    garbage = b"\x00\xff not a message at all \r\n\r\n"
    with pytest.raises(aiosmtplib.SMTPException):
        await aiosmtplib.send(
            garbage,
            hostname="127.0.0.1",
            port=inbound.endpoint.port,
            sender="someone@example.com",
            recipients=[SUPPORT],
        )
    huge = message(body="x" * (80 * 1024))
    with pytest.raises(aiosmtplib.SMTPException) as too_big:
        await inbound.send(huge)
    assert getattr(too_big.value, "code", 0) == 552
    assert await inbound.tickets() == []
    # and it still works
    await inbound.send(message())
    assert len(await inbound.tickets()) == 1


async def test_receive_directly_reports_failures_without_raising(
    inbound: Inbound, pg_server: str
) -> None:
    sd = inbound.sd
    direct = InboundMail.for_context(sd.ctx, sd.desk)
    ok = await direct.receive("linus@example.com", [SUPPORT], message().as_bytes(), flush=False)
    assert ok.outcome == "created" and ok.smtp_reply.startswith("250")
    ignored = await direct.receive(
        "linus@example.com", [SUPPORT], message(Auto_Submitted="auto-generated").as_bytes()
    )
    assert (ignored.outcome, ignored.reason) == ("ignored", "auto-submitted")
    bounce = await direct.receive("", [SUPPORT], message().as_bytes())
    assert (bounce.outcome, bounce.reason) == ("ignored", "bounce (null sender)")
    own = await direct.receive(SUPPORT, [SUPPORT], message(sender=SUPPORT).as_bytes())
    assert (own.outcome, own.reason) == ("ignored", "mail from our own address")
    # a database that went away: 451 (try later), no exception
    pool = await db.create_pool(str(sd.ctx.settings.service_database_url))
    await pool.close()
    broken = InboundMail(pool, sd.ctx.store, sd.ctx.settings, sd.desk)
    failed = await broken.receive("linus@example.com", [SUPPORT], message().as_bytes())
    assert failed.outcome == "failed" and failed.smtp_reply.startswith("451")


NUL_MESSAGES = {
    "raw-subject": b"From: Linus <linus@example.com>\r\nTo: support@desk.example.com\r\n"
    b"Subject: Printer\x00on fire\r\nMessage-ID: <nul1@example.com>\r\n\r\nIt smokes.\r\n",
    "raw-body": b"From: linus@example.com\r\nTo: support@desk.example.com\r\n"
    b"Subject: Printer\r\n\r\nIt\x00smokes.\r\n",
    "encoded-subject": b"From: linus@example.com\r\n"
    b"Subject: =?utf-8?q?Printer=00fire?=\r\n\r\nx\r\n",
    "quoted-printable-body": b"From: linus@example.com\r\nSubject: Printer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nIt=00smokes.\r\n",
}
BAD_SENDERS = {
    "not-utf8": b"From: \xff\xfe@example.com\r\nSubject: Printer\r\n\r\nIt smokes.\r\n",
    "not-utf8-in-angle-brackets": b"From: Linus <l\xc3\x28nus@example.com>\r\nSubject: Printer"
    b"\r\n\r\nIt smokes.\r\n",
    "two-dots": b"From: lin..us@example.com\r\nSubject: Printer\r\n\r\nIt smokes.\r\n",
    "no-domain-dot-atom": b"From: linus@-example-.com\r\nSubject: Printer\r\n\r\nIt smokes.\r\n",
}


async def test_nul_bytes_are_refused_for_good_not_retried(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL can never be stored: 550 (not 451 forever), nothing created, nothing mailed."""
    sd = inbound.sd
    direct = InboundMail.for_context(sd.ctx, sd.desk)
    for name, raw in NUL_MESSAGES.items():
        result = await direct.receive("linus@example.com", [SUPPORT], raw, flush=False)
        assert (result.outcome, result.reason) == (
            "rejected",
            "malformed message (NUL character)",
        ), name
        assert result.smtp_reply.startswith("550 5.6.0"), name
    # over SMTP too
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(
            NUL_MESSAGES["raw-subject"],
            hostname="127.0.0.1",
            port=inbound.endpoint.port,
            sender="linus@example.com",
            recipients=[SUPPORT],
        )
    assert refused.value.code == 550
    assert await inbound.tickets() == []
    assert await sd.ctx.pool.fetchval("SELECT count(*) FROM people") == 0
    assert sd.catcher.store.list() == []
    logged = [r for r in caplog.records if r.name == "crm_service_desk.inbound"]
    assert any(getattr(r, "reason", None) == "malformed message (NUL character)" for r in logged)
    assert all("linus" not in str(r.__dict__) for r in logged)


async def test_sender_not_utf8_or_not_an_address_gets_no_ticket_and_no_answer(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    sd = inbound.sd
    for name, raw in BAD_SENDERS.items():
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(
                raw,
                hostname="127.0.0.1",
                port=inbound.endpoint.port,
                sender="someone@example.com",
                recipients=[SUPPORT],
            )
        assert refused.value.code == 550, name
        await inbound.endpoint.inbound.idle()
    assert await inbound.tickets() == []
    assert await sd.ctx.pool.fetchval("SELECT count(*) FROM people") == 0
    assert sd.catcher.store.list() == []  # no acknowledgement to a garbled address
    reasons = {
        getattr(r, "reason", None) for r in caplog.records if r.name == "crm_service_desk.inbound"
    }
    assert {"From address is not valid UTF-8", "no valid From address"} <= reasons
    assert all(
        "example.com" not in str(r.__dict__)
        for r in caplog.records
        if r.name == "crm_service_desk.inbound"
    )
    # a proper (international) address still works, whatever recipient the mail names
    await aiosmtplib.send(
        message(sender="Léa <léa@example.com>"),
        hostname="127.0.0.1",
        port=inbound.endpoint.port,
        recipients=["help@anything.example"],
        timeout=10,
    )
    await inbound.endpoint.inbound.idle()
    (ticket,) = await inbound.tickets()
    assert ticket["status"] == "new"
