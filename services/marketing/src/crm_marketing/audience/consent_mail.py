"""E-mail double opt-in: signed confirmation links and the mails that carry them.

A link's token is ``<base64url(json)>.<base64url(hmac-sha256)>`` over the customer id, the
request id and an expiry, keyed by a key derived from the service secret. It names no e-mail
address. The mail is queued in ``consent_mails`` in the request's transaction and sent after
commit; a job retries what the SMTP server did not take. One address gets at most
``MAILS_PER_HOUR`` of them an hour.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from crm_runtime.db import Conn
from crm_runtime.errors import TooManyRequests
from crm_runtime.mail import Mailer, MailError, OutgoingMail

log = logging.getLogger(__name__)

SendJob = Callable[[asyncpg.Pool, datetime], Awaitable[int]]


class InvalidLink(ValueError):
    """The token was altered, is not one of ours, or has expired."""


@dataclass(frozen=True)
class LinkClaims:
    customer_id: str
    request_id: str
    expires: datetime


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"crm.marketing.consent-link.v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, customer_id: str, request_id: str, expires: datetime) -> str:
    body = json.dumps(
        {"c": customer_id, "r": request_id, "e": int(expires.timestamp())},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(_key(secret), body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify(secret: str, token: str, now: datetime | None = None) -> LinkClaims:
    try:
        body_text, mac_text = token.split(".", 1)
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise InvalidLink("malformed link") from None
    if not hmac.compare_digest(mac, hmac.new(_key(secret), body, hashlib.sha256).digest()):
        raise InvalidLink("the link's signature does not match")
    try:
        claims = json.loads(body)
        parsed = LinkClaims(
            str(claims["c"]), str(claims["r"]), datetime.fromtimestamp(int(claims["e"]), UTC)
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidLink("malformed link") from None
    if parsed.expires < (now or datetime.now(UTC)):
        raise InvalidLink("the link has expired")
    return parsed


MAILS_PER_HOUR = 3
"""At most this many confirmation mails go to one address in an hour (a form cannot be used to
flood someone's inbox); further requests are accepted and send nothing."""


class TooManyConfirmations(TooManyRequests):
    """The address had its hourly share of confirmation mails."""


async def check_cap(conn: Conn, address: str, per_hour: int = MAILS_PER_HOUR) -> None:
    """TooManyConfirmations if ``address`` had ``per_hour`` confirmation mails in the last hour."""
    wait = await conn.fetchval(
        "SELECT ceil(extract(epoch FROM created_at + interval '1 hour' - now()))::int"
        " FROM consent_mails WHERE address = $1 AND created_at > now() - interval '1 hour'"
        " ORDER BY created_at DESC OFFSET $2 LIMIT 1",
        address,
        per_hour - 1,
    )
    if wait is not None:
        raise TooManyConfirmations(max(1, int(wait)))


async def queue(conn: Conn, request_id: str, customer_id: str, address: str) -> None:
    await conn.execute(
        "INSERT INTO consent_mails (request_id, customer_id, address) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        request_id,
        customer_id,
        address,
    )


@dataclass(frozen=True)
class LinkMaker:
    secret: str
    base_url: str
    ttl: timedelta

    def url(self, customer_id: str, request_id: str, now: datetime) -> str:
        token = sign(self.secret, customer_id, request_id, now + self.ttl)
        return f"{self.base_url}/public/consent/confirm?token={token}"


def compose(address: str, link: str) -> OutgoingMail:
    text = (
        "Hello,\n\nplease confirm that you want to receive e-mail from us by opening this link:\n\n"
        f"{link}\n\nIf you did not ask for this, ignore this message: without your confirmation "
        "we will not write to you.\n"
    )
    html = (
        "<p>Hello,</p><p>please confirm that you want to receive e-mail from us:</p>"
        f'<p><a href="{link}">Yes, subscribe me</a></p>'
        "<p>If you did not ask for this, ignore this message.</p>"
    )
    return OutgoingMail(
        to=[address], subject="Please confirm your subscription", text=text, html=html
    )


async def send_pending(
    pool: asyncpg.Pool,
    mailer: Mailer,
    links: LinkMaker,
    now: datetime,
    request_ids: list[str] | None = None,
    limit: int = 100,
) -> int:
    """Send queued confirmation mails (those named, or the oldest unsent). Returns how many."""
    sent = 0
    async with pool.acquire() as conn:
        if request_ids is None:
            rows = await conn.fetch(
                "SELECT request_id FROM consent_mails WHERE sent_at IS NULL"
                " ORDER BY created_at LIMIT $1",
                limit,
            )
            request_ids = [r["request_id"] for r in rows]
        for request_id in request_ids:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT customer_id, address FROM consent_mails WHERE request_id = $1"
                    " AND sent_at IS NULL FOR UPDATE SKIP LOCKED",
                    request_id,
                )
                if row is None:
                    continue  # sent already, or another replica is sending it
                mail = compose(row["address"], links.url(row["customer_id"], request_id, now))
                try:
                    await mailer.send(mail)
                except MailError as exc:
                    await conn.execute(
                        "UPDATE consent_mails SET attempts = attempts + 1, last_error = $2"
                        " WHERE request_id = $1",
                        request_id,
                        str(exc)[:500],
                    )
                    continue
                await conn.execute(
                    "UPDATE consent_mails SET sent_at = $2, attempts = attempts + 1,"
                    " last_error = NULL WHERE request_id = $1",
                    request_id,
                    now,
                )
                sent += 1
    return sent
