"""Outgoing e-mail over SMTP (``SMTP_URL``; locally the embedded capturing server).

``smtp://host:port`` plain, ``smtps://`` implicit TLS, ``smtp+starttls://`` STARTTLS; user and
password in the URL when the server needs them. Addresses are personal data: they go into the
message, never into logs or metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

log = logging.getLogger(__name__)


class MailError(RuntimeError):
    """The SMTP server refused or could not be reached."""


@dataclass(frozen=True)
class OutgoingMail:
    to: list[str]
    subject: str
    text: str
    html: str | None = None
    reply_to: str | None = None


class Mailer:
    def __init__(self, smtp_url: str, sender: str, timeout: float = 15.0) -> None:
        url = urlsplit(smtp_url)
        if url.scheme not in ("smtp", "smtps", "smtp+starttls"):
            raise ValueError("SMTP_URL must start with smtp://, smtps:// or smtp+starttls://")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (465 if url.scheme == "smtps" else 25)
        self.use_tls = url.scheme == "smtps"
        self.start_tls = url.scheme == "smtp+starttls"
        self.username = unquote(url.username) if url.username else None
        self.password = unquote(url.password) if url.password else None
        self.sender = sender
        self.timeout = timeout

    def build(self, mail: OutgoingMail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(mail.to)
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(usegmt=True)  # RFC 5322 requires it of every message
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        if mail.reply_to:
            msg["Reply-To"] = mail.reply_to
        msg.set_content(mail.text)
        if mail.html is not None:
            msg.add_alternative(mail.html, subtype="html")
        return msg

    async def send(self, mail: OutgoingMail) -> str:
        """Send one message; return its Message-ID. Raises MailError on failure."""
        msg = self.build(mail)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls if self.start_tls else False,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("mail not sent", extra={"error": type(exc).__name__})
            raise MailError(f"the SMTP server did not accept the message: {exc}") from exc
        return str(msg["Message-ID"])
