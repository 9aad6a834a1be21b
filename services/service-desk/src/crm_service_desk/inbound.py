"""Inbound e-mail: an SMTP endpoint (aiosmtpd) that turns mail into tickets and comments.

- A new message opens a ticket (channel ``email``); the sender is resolved to a customer by
  address (``crm_runtime.people``; an unknown address mints one and records a sighting).
- A reply — In-Reply-To / References naming a Message-ID we sent or received for a ticket, or
  the ticket token ``[#T-XXXXXXXXXX]`` in the subject — from the ticket's customer becomes a
  customer comment on it (a resolved ticket reopens; a merged one hands it to its survivor; a
  closed one gets a follow-up ticket).
- Refused (5xx, nothing created): oversize or malformed messages: no valid sender address
  (also one that is not valid UTF-8), a NUL character (PostgreSQL could never store it, so a
  451 "try again" would repeat forever).
- Accepted and ignored (250, nothing created, so no bounce loops): auto-replies and bulk mail
  (Auto-Submitted, Precedence, X-Autoreply...), bounces (null sender, mailer-daemon, delivery
  reports), mail from our own address, a message already received.
- Any unexpected error answers 451 (try later) and the endpoint keeps serving.

``InboundMail.receive`` does the work and is what tests call directly; ``InboundEndpoint`` is the
SMTP server; ``background(desk)`` runs it beside the API on ``SERVICE_DESK_INBOUND_SMTP_PORT``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
from email_validator import EmailNotValidError, validate_email
from prometheus_client import Counter

from crm_runtime import people
from crm_runtime.context import ServiceContext
from crm_runtime.errors import CrmError
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.http.app import BackgroundTask
from crm_runtime.mail import Mailer
from crm_runtime.settings import Settings
from crm_service_desk.adapters import tickets_view
from crm_service_desk.application import tickets_mail
from crm_service_desk.application.tickets import OpenTicket, TicketHandlers
from crm_service_desk.application.tickets_links import Links
from crm_service_desk.config import DeskSettings
from crm_service_desk.domain.ticket import Ticket, find_token

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

INBOUND = Counter("crm_service_inbound_mail_total", "Inbound e-mail by outcome", ["outcome"])

Outcome = Literal["created", "commented", "ignored", "rejected", "duplicate", "failed"]
_PARSER = BytesParser(_class=EmailMessage, policy=policy.default)
_MSGID = re.compile(r"<[^<>\s]+>")
_QUOTE_START = re.compile(
    r"^(On .{0,200} wrote:|-{2,} ?Original Message ?-{2,}|From: .+|_{10,})\s*$", re.IGNORECASE
)
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
_BULK = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
MAX_BODY = 20000
MAX_SUBJECT = 300


@dataclass(frozen=True)
class InboundResult:
    outcome: Outcome
    reason: str
    ticket_id: str | None = None

    @property
    def smtp_reply(self) -> str:
        if self.outcome == "rejected":
            if "size" in self.reason:
                return "552 5.3.4 Message size exceeds fixed maximum message size"
            return f"550 5.6.0 Message refused: {self.reason}"
        if self.outcome == "failed":
            return "451 4.3.0 Requested action aborted: try again later"
        return "250 Message accepted for delivery"


class InboundMail:
    """Turns one received message into a ticket, a comment, or nothing (with the reason)."""

    def __init__(
        self, pool: asyncpg.Pool, store: EventStore, settings: Settings, desk: DeskSettings
    ) -> None:
        self.pool = pool
        self.store = store
        self.desk = desk
        self.own = {a.lower() for a in (desk.support_address, settings.mail_from)}
        self.links = Links.of(settings, desk)
        self.handlers = TicketHandlers(store, desk, self.links)
        self.mailer = Mailer(settings.smtp_url, desk.support_address)
        self._flushes: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_context(cls, ctx: ServiceContext, desk: DeskSettings) -> InboundMail:
        return cls(ctx.pool, ctx.store, ctx.settings, desk)

    async def receive(
        self,
        mail_from: str | None,
        rcpt_tos: list[str],
        content: bytes,
        *,
        now: datetime | None = None,
        flush: bool = True,
    ) -> InboundResult:
        """Handle one message; never raises (an unexpected error is the outcome ``failed``)."""
        try:
            result = await self._receive(mail_from, content, now or datetime.now(UTC))
        except Exception as exc:
            # no traceback: its messages can quote addresses (personal data stays out of logs)
            log.error("inbound mail failed", extra={"error": type(exc).__name__})
            result = InboundResult("failed", f"internal error ({type(exc).__name__})")
        INBOUND.labels(result.outcome).inc()
        # the reason is a fixed category, never an address or other text of the message
        level = logging.WARNING if result.outcome == "rejected" else logging.INFO
        log.log(level, "inbound mail", extra={"outcome": result.outcome, "reason": result.reason})
        if flush and result.ticket_id and result.outcome in ("created", "commented"):
            task = asyncio.create_task(self._flush(result.ticket_id))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return result

    async def idle(self) -> None:
        """Wait until the mail the last messages caused (acknowledgements) has been sent."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)

    async def _flush(self, ticket_id: str) -> None:
        try:
            await tickets_mail.send_pending(
                self.pool, self.mailer, datetime.now(UTC), ticket_id=ticket_id
            )
        except Exception as exc:  # the scheduler retries
            log.warning("ticket mail flush failed", extra={"error": type(exc).__name__})

    async def _receive(self, mail_from: str | None, content: bytes, now: datetime) -> InboundResult:
        if len(content) > self.desk.inbound_max_bytes:
            return InboundResult("rejected", "message size over the limit")
        if b"\x00" in content:  # PostgreSQL stores no NUL: it could never succeed
            return InboundResult("rejected", "malformed message (NUL character)")
        try:
            msg = _PARSER.parsebytes(content)
            sender_name, sender = parseaddr(str(msg.get("From", "")))
            subject = " ".join(str(msg.get("Subject", "")).split())[:MAX_SUBJECT]
            message_id = _first_id(str(msg.get("Message-ID", "")))
            replied_ids = _MSGID.findall(
                f"{msg.get('In-Reply-To', '')} {msg.get('References', '')}"
            )
        except Exception:
            return InboundResult("rejected", "the message could not be parsed")
        sender = sender.strip().lower()
        if not msg.keys() or "@" not in sender or len(sender) > 254:
            return InboundResult("rejected", "no valid From address")
        if not _storable(sender) or "\ufffd" in sender:
            return InboundResult("rejected", "From address is not valid UTF-8")
        if not _valid_address(sender):
            return InboundResult("rejected", "no valid From address")
        body = _text_of(msg)
        texts = (sender_name, subject, body, message_id or "")
        if any("\x00" in v for v in texts):
            return InboundResult("rejected", "malformed message (NUL character)")
        if not all(_storable(v) for v in texts):
            return InboundResult("rejected", "malformed message (text is not valid UTF-8)")
        replied_ids = [i for i in replied_ids if _storable(i)]
        loop = self._loop_reason(msg, mail_from, sender)
        if loop:
            return InboundResult("ignored", loop)
        meta = Metadata(actor="inbound-email", correlation_id=str(uuid.uuid4()))
        async with self.pool.acquire() as conn, conn.transaction():
            if message_id:  # one delivery of a message at a time, then only the first counts
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", message_id
                )
                if await tickets_view.ticket_of_messages(conn, [message_id]):
                    return InboundResult("duplicate", "this Message-ID was received already")
            ticket = await self._ticket_replied_to(conn, replied_ids, subject, sender)
            if ticket is not None and ticket.status != "closed":
                ticket, _ = await self.handlers.customer_reply(
                    conn,
                    ticket,
                    _strip_quoted(body) or "(empty message)",
                    "email",
                    meta,
                    now,
                    message_id=message_id,
                    from_email=sender,
                )
                return InboundResult("commented", "reply to a ticket", ticket.id)
            opened = await self.handlers.open(
                conn,
                OpenTicket(
                    kind="query",
                    subject=subject or "(no subject)",
                    description=body,
                    channel="email",
                    customer_email=sender,
                    customer_name=sender_name.strip()[:200] or None,
                    language=_language(msg),
                    source_message_id=message_id,
                    follow_up_of=ticket.id if ticket is not None else None,
                    source_detail="service-desk:email",
                ),
                meta,
                now,
            )
            return InboundResult("created", "new ticket", opened.id)

    def _loop_reason(self, msg: EmailMessage, mail_from: str | None, sender: str) -> str | None:
        """Why this message must not get a ticket (or an answer), if it must not."""
        auto = str(msg.get("Auto-Submitted", "")).strip().lower()
        if auto and auto != "no":
            return "auto-submitted"
        if str(msg.get("Precedence", "")).strip().lower() in _BULK:
            return "bulk or auto-reply precedence"
        for header in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Loop"):
            if msg.get(header) is not None:
                return "auto-reply header"
        if msg.get("X-CRM-Ticket") is not None:
            return "our own ticket mail came back"
        if mail_from is not None and mail_from.strip() in ("", "<>"):
            return "bounce (null sender)"
        if sender.partition("@")[0] in _BOUNCE_SENDERS:
            return "bounce (mailer-daemon)"
        if msg.get_content_type() == "multipart/report":
            return "delivery report"
        if sender in self.own or (mail_from or "").strip("<>").lower() in self.own:
            return "mail from our own address"
        return None

    async def _ticket_replied_to(
        self, conn: Any, ids: list[str], subject: str, sender: str
    ) -> Ticket | None:
        """The (surviving) ticket this message answers, if it is the ticket's customer's."""
        ticket_id = await tickets_view.ticket_of_messages(conn, ids) or find_token(subject)
        if ticket_id is None:
            return None
        try:
            ticket = await self.handlers.tickets.load(ticket_id, conn=conn)
        except CrmError:
            return None
        ticket = await self.handlers.survivor(conn, ticket)
        if not await _same_customer(conn, ticket, sender):
            return None  # someone else quoting the token: their own ticket
        return ticket


async def _same_customer(conn: Any, ticket: Ticket, sender: str) -> bool:
    if ticket.customer_email == sender:
        return True
    known = await people.known(conn, sender)
    return known is not None and known == await people.canonical(conn, ticket.customer_id)


def _storable(value: str) -> bool:
    """Text PostgreSQL can store: no NUL character, nothing that is not UTF-8 (surrogates)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_address(address: str) -> bool:
    """A mailbox we can answer: the syntax the portal form accepts (``EmailStr``)."""
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


def _first_id(value: str) -> str | None:
    found = _MSGID.findall(value)
    return found[0][:300] if found else None


def _language(msg: EmailMessage) -> str | None:
    value = str(msg.get("Content-Language", "")).split(",")[0].strip().lower()
    return value[:20] if re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})*", value) else None


# What a reader never sees (not "head": its end tag is optional, and <title> is all it shows).
_UNSHOWN = frozenset({"script", "style", "title", "template"})
_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})


def _html_to_text(markup: str) -> str:
    """The text a reader of an HTML-only mail sees: no scripts, styles or title."""
    parts: list[str] = []

    class Collect(HTMLParser):
        hidden = 0  # depth inside elements whose content is not shown

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                parts.append(data)

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in _UNSHOWN:
                self.hidden += 1
            elif tag in _BREAKS and not self.hidden:
                parts.append("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in _UNSHOWN and self.hidden:
                self.hidden -= 1
            elif tag in _BREAKS and not self.hidden:  # what follows a block starts a line
                parts.append("\n")

    Collect().feed(markup)
    return re.sub(r"\n{3,}", "\n\n", "".join(parts)).strip()


def _text_of(msg: EmailMessage) -> str:
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
        if not isinstance(content, str):
            return ""
        if part.get_content_subtype() == "html":
            content = _html_to_text(content)
    except Exception:  # undecodable body: the ticket still opens, without text
        return ""
    return content.replace("\r\n", "\n").strip()[:MAX_BODY]


def _strip_quoted(body: str) -> str:
    """The new part of a reply: up to the quote header, without '>' lines."""
    kept: list[str] = []
    for line in body.splitlines():
        if _QUOTE_START.match(line.strip()):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


# --- the SMTP endpoint ---------------------------------------------------------------------------


class _Handler:
    def __init__(self, inbound: InboundMail) -> None:
        self.inbound = inbound

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            raw = envelope.content
            content = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        if not content:
            return "554 5.6.0 No message content"
        result = await self.inbound.receive(
            envelope.mail_from, list(envelope.rcpt_tos), bytes(content)
        )
        return result.smtp_reply


class InboundEndpoint:
    """The inbound SMTP server on the running loop (port 0: an ephemeral port, see ``port``)."""

    def __init__(self, inbound: InboundMail, host: str = "127.0.0.1", port: int = 2525) -> None:
        self.inbound = inbound
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        smtp_log = logging.getLogger("mail.log")  # aiosmtpd logs addresses at INFO
        if smtp_log.getEffectiveLevel() < logging.WARNING:
            smtp_log.setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        handler = _Handler(self.inbound)
        limit = self.inbound.desk.inbound_max_bytes

        def session() -> SMTP:
            smtp = SMTP(
                handler,
                data_size_limit=limit,
                enable_SMTPUTF8=True,
                hostname="crm-service-desk",
                ident="CRM service desk",
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        self._server = await loop.create_server(session, self.host, self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        sessions = list(self._sessions)
        for smtp in sessions:
            if smtp.transport is not None:
                smtp.transport.close()
        deadline = time.monotonic() + 5
        while any(s.transport is not None for s in sessions) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.wait_for(server.wait_closed(), timeout=5)
        await self.inbound.idle()

    async def __aenter__(self) -> InboundEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def enabled(settings: Settings, desk: DeskSettings) -> bool:
    if desk.inbound_smtp_enabled is not None:
        return desk.inbound_smtp_enabled
    return settings.crm_env != "test"


def background(desk: DeskSettings) -> BackgroundTask:
    """The app's background task running the endpoint (``SERVICE_DESK_INBOUND_SMTP_*``)."""

    async def run_inbound(ctx: ServiceContext, stop: asyncio.Event) -> None:
        if not enabled(ctx.settings, desk):
            return
        endpoint = InboundEndpoint(
            InboundMail.for_context(ctx, desk), desk.inbound_smtp_host, desk.inbound_smtp_port
        )
        try:
            await endpoint.start()
        except OSError as exc:
            log.error(
                "inbound SMTP endpoint not started: port %s on %s is not available (%s);"
                " set SERVICE_DESK_INBOUND_SMTP_PORT to a free port",
                desk.inbound_smtp_port,
                desk.inbound_smtp_host,
                exc.strerror or type(exc).__name__,
            )
            return
        log.info("inbound SMTP endpoint listening", extra={"port": endpoint.port})
        try:
            await stop.wait()
        finally:
            await endpoint.stop()

    return run_inbound
