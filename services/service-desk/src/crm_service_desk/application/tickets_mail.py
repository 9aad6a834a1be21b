"""Mail to customers through an outbox: written in the command's transaction, sent after commit.

Each message keeps the Message-ID chosen when it was written (and recorded in the ticket's
event), so a customer's reply (In-Reply-To / References) finds its ticket, and is dated (Date,
RFC 5322) when it was written, so a retry sends the same message. A failed send stays
pending and the scheduler retries it; replicas claim rows with SKIP LOCKED and a lease.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib
import asyncpg

from crm_runtime.db import Conn
from crm_runtime.mail import Mailer
from crm_service_desk.adapters import tickets_view

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
LEASE = timedelta(minutes=2)


def new_message_id(sender: str) -> str:
    return make_msgid(domain=sender.rpartition("@")[2] or "localhost")


async def enqueue(
    conn: Conn,
    *,
    ticket_id: str,
    purpose: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    now: datetime,
    in_reply_to: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO ticket_outbox (mail_id, ticket_id, purpose, to_address, subject, body,"
        " message_id, in_reply_to, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        str(uuid.uuid4()),
        ticket_id,
        purpose,
        to,
        subject,
        body,
        message_id,
        in_reply_to,
        now,
    )
    await tickets_view.remember_message(conn, message_id, ticket_id, "out")


def one_line(text: str) -> str:
    """``text`` as one header line: line breaks and other whitespace runs become one space."""
    return " ".join(text.split())


def failure(exc: BaseException, stage: str) -> str:
    """What went wrong, for ``last_error``: the kind of error only. Messages are left out
    because an SMTP reply or a refused header may quote the customer's address or text."""
    code = getattr(exc, "code", None)
    return f"{stage}: {type(exc).__name__}" + (f" {code}" if isinstance(code, int) else "")


def build(mailer: Mailer, row: asyncpg.Record) -> EmailMessage:
    """The message of an outbox row: every mail the service desk sends a customer (the
    acknowledgement, agents' replies, the survey) is built here."""
    msg = EmailMessage()
    msg["From"] = mailer.sender
    msg["To"] = row["to_address"]
    msg["Subject"] = one_line(row["subject"])
    msg["Date"] = format_datetime(row["created_at"].astimezone(UTC))
    msg["Message-ID"] = row["message_id"]
    if row["in_reply_to"]:
        msg["In-Reply-To"] = row["in_reply_to"]
        msg["References"] = row["in_reply_to"]
    if row["purpose"] != "reply":  # machine-written: auto-responders must not answer it
        msg["Auto-Submitted"] = "auto-generated"
    msg["X-CRM-Ticket"] = row["ticket_id"]
    msg.set_content(row["body"])
    return msg


async def send_pending(
    pool: asyncpg.Pool, mailer: Mailer, now: datetime, *, ticket_id: str | None = None
) -> int:
    """Send what is due (of one ticket, or all); return how many were sent."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """
            UPDATE ticket_outbox SET claimed_until = $1::timestamptz + $4::interval
            WHERE mail_id IN (
                SELECT mail_id FROM ticket_outbox
                WHERE sent_at IS NULL AND attempts < $2
                  AND (claimed_until IS NULL OR claimed_until < $1)
                  AND ($3::text IS NULL OR ticket_id = $3)
                ORDER BY created_at LIMIT 100
                FOR UPDATE SKIP LOCKED)
            RETURNING *
            """,
            now,
            MAX_ATTEMPTS,
            ticket_id,
            LEASE,
        )
    sent = 0
    for row in sorted(rows, key=lambda r: r["created_at"]):
        # Whatever goes wrong with one row is a failed attempt of that row alone: it is counted,
        # its lease released, and the others are still sent.
        error: str | None = None
        stage = "build"
        try:
            msg = build(mailer, row)
            stage = "send"
            await aiosmtplib.send(
                msg,
                hostname=mailer.host,
                port=mailer.port,
                username=mailer.username,
                password=mailer.password,
                use_tls=mailer.use_tls,
                start_tls=mailer.start_tls if mailer.start_tls else False,
                timeout=mailer.timeout,
            )
        except Exception as exc:
            error = failure(exc, stage)[:500]
            log.warning("ticket mail not sent", extra={"error": type(exc).__name__, "stage": stage})
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE ticket_outbox SET sent_at = $2, last_error = $3,"
                    " attempts = attempts + 1, claimed_until = NULL WHERE mail_id = $1",
                    row["mail_id"],
                    None if error else now,
                    error,
                )
        except Exception as exc:  # the lease runs out; the row is tried again then
            log.warning("ticket mail outcome not saved", extra={"error": type(exc).__name__})
            continue
        sent += error is None
    return sent
