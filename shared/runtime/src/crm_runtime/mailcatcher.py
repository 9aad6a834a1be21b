"""The local capturing SMTP server: keeps every message sent in development so it can be read."""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import functools
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import uvicorn
    from aiosmtpd.smtp import SMTP, Envelope
    from fastapi import APIRouter, FastAPI
    from starlette.responses import Response

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
"""Messages larger than this (bytes, as received) are refused with 552 and not stored."""

_ID = re.compile(r"\A[0-9]{20}-[0-9a-f]{8}\Z")
_EML = ".eml"
_ENVELOPE = ".json"
_TMP = "tmp"
_ORPHAN_AGE = 60.0  # seconds an envelope file may wait for its message before `clear` drops it
_PARSER = BytesParser(_class=EmailMessage, policy=policy.default)


def default_mail_dir() -> Path:
    """Where `crm up` keeps the captured mail: `$CRM_HOME/mail`, by default `.crm/mail`."""
    return Path(os.environ.get("CRM_HOME", ".crm")) / "mail"


class MessageNotFound(LookupError):
    """No captured message has this id (or the id is not of the id format)."""


class MailSummary(BaseModel):
    id: str = Field(description="time-ordered id: <ns timestamp>-<8 hex digits>")
    received_at: datetime
    mail_from: str = Field(description="the envelope sender (MAIL FROM)")
    rcpt_tos: list[str] = Field(description="the envelope recipients (RCPT TO), Bcc included")
    subject: str | None
    size: int = Field(description="bytes, as received")


class Header(BaseModel):
    name: str
    value: str


class Attachment(BaseModel):
    filename: str | None
    content_type: str
    size: int


class CapturedMail(MailSummary):
    headers: list[Header]
    text: str | None = Field(description="the text/plain body, if any")
    html: str | None = Field(description="the text/html body, if any")
    attachments: list[Attachment]
    raw: bytes = Field(exclude=True, repr=False, description="the message as received")


class Cleared(BaseModel):
    deleted: int


class MailStore:
    """Captured messages as `<id>.eml` files (plus `<id>.json` with the envelope) in a directory.

    Every file is written under `tmp/` and renamed into place, and the `.eml` file lands last,
    so a reader in any process sees a message completely or not at all.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    # -- writing ----------------------------------------------------------------------------

    def save(self, mail_from: str, rcpt_tos: Sequence[str], content: bytes) -> str:
        """Store one message; returns its id."""
        tmp = self.directory / _TMP
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        message_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        envelope = json.dumps({"mail_from": mail_from, "rcpt_tos": list(rcpt_tos)}).encode()
        staged: builtins.list[Path] = []
        try:
            for suffix, data in ((_ENVELOPE, envelope), (_EML, content)):
                path = tmp / f"{message_id}.{os.getpid()}{suffix}"
                staged.append(path)
                _write_new(path, data)
            for path, suffix in zip(staged, (_ENVELOPE, _EML), strict=True):
                os.replace(path, self.directory / f"{message_id}{suffix}")
        except BaseException:
            for path in staged:
                path.unlink(missing_ok=True)
            raise
        return message_id

    def clear(self) -> int:
        """Delete every captured message; returns how many there were."""
        deleted = 0
        for message_id in self._ids():
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{message_id}{_EML}").unlink()
                deleted += 1
            (self.directory / f"{message_id}{_ENVELOPE}").unlink(missing_ok=True)
        # Envelopes whose message never landed (a crash between the two renames).
        now = time.time()
        for path in self._files(_ENVELOPE):
            with contextlib.suppress(FileNotFoundError):
                stale = now - path.stat().st_mtime > _ORPHAN_AGE
                if stale and not path.with_suffix(_EML).exists():
                    path.unlink()
        return deleted

    # -- reading ----------------------------------------------------------------------------

    def list(self, limit: int = 100, to: str | None = None) -> builtins.list[MailSummary]:
        """The newest `limit` messages first, only those with `to` among the recipients if given."""
        wanted = to.strip().casefold() if to else None
        found: builtins.list[MailSummary] = []
        if limit <= 0:
            return found
        for message_id in sorted(self._ids(), reverse=True):
            try:
                mail_from, rcpt_tos = self._envelope(message_id)
                if wanted is not None and wanted not in (r.casefold() for r in rcpt_tos):
                    continue
                with (self.directory / f"{message_id}{_EML}").open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    head = _read_head(f)
            except (FileNotFoundError, MessageNotFound):
                continue  # deleted while we were looking
            message = _PARSER.parsebytes(head, headersonly=True)
            found.append(
                MailSummary(
                    id=message_id,
                    received_at=_received_at(message_id),
                    mail_from=mail_from,
                    rcpt_tos=rcpt_tos,
                    subject=_subject(message),
                    size=size,
                )
            )
            if len(found) >= limit:
                break
        return found

    def raw(self, message_id: str) -> bytes:
        """The message exactly as received."""
        self._check(message_id)
        try:
            return (self.directory / f"{message_id}{_EML}").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise MessageNotFound(message_id) from None

    def get(self, message_id: str) -> CapturedMail:
        raw = self.raw(message_id)
        mail_from, rcpt_tos = self._envelope(message_id)
        message = _PARSER.parsebytes(raw)
        return CapturedMail(
            id=message_id,
            received_at=_received_at(message_id),
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            subject=_subject(message),
            size=len(raw),
            headers=[Header(name=name, value=str(value)) for name, value in message.items()],
            text=_body(message, "plain"),
            html=_body(message, "html"),
            attachments=[_attachment(part) for part in _attachments(message)],
            raw=raw,
        )

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _check(message_id: str) -> None:
        if not _ID.match(message_id):
            raise MessageNotFound(message_id)

    def _files(self, suffix: str) -> Iterator[Path]:
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.endswith(suffix) and entry.is_file():
                yield Path(entry.path)

    def _ids(self) -> Iterator[str]:
        for path in self._files(_EML):
            if _ID.match(path.stem):
                yield path.stem

    def _envelope(self, message_id: str) -> tuple[str, builtins.list[str]]:
        self._check(message_id)
        try:
            doc = json.loads((self.directory / f"{message_id}{_ENVELOPE}").read_bytes())
        except FileNotFoundError:
            return "", []
        except ValueError:
            log.warning("unreadable envelope file", extra={"message_id": message_id})
            return "", []
        rcpt_tos = doc.get("rcpt_tos") if isinstance(doc, dict) else None
        mail_from = doc.get("mail_from") if isinstance(doc, dict) else None
        return (
            mail_from if isinstance(mail_from, str) else "",
            [r for r in rcpt_tos if isinstance(r, str)] if isinstance(rcpt_tos, list) else [],
        )


def _write_new(path: Path, data: bytes) -> None:
    # Captured mail holds personal data: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_head(f: BinaryIO) -> bytes:
    lines: list[bytes] = []
    for line in f:
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
    return b"".join(lines)


def _received_at(message_id: str) -> datetime:
    return datetime.fromtimestamp(int(message_id[:20]) / 1e9, tz=UTC)


def _subject(message: EmailMessage) -> str | None:
    subject = message.get("Subject")
    return None if subject is None else str(subject)


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if not isinstance(part, EmailMessage):
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown or lying charset
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        content = payload.decode("utf-8", "replace")
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _attachments(message: EmailMessage) -> Iterator[EmailMessage]:
    for part in message.iter_attachments():
        if isinstance(part, EmailMessage):
            yield part


def _attachment(part: EmailMessage) -> Attachment:
    payload = part.get_payload(decode=True)
    return Attachment(
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        size=len(payload) if isinstance(payload, bytes) else 0,
    )


# -- SMTP -----------------------------------------------------------------------------------


class CapturingHandler:
    """An aiosmtpd handler that stores every message it is given, envelope included."""

    def __init__(self, store: MailStore, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.store = store
        self.max_message_size = max_message_size

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            raw = envelope.content
            content = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        if content is None:
            return "554 5.6.0 No message content"
        if len(content) > self.max_message_size:
            log.info(
                "refused a message over the size limit",
                extra={"size": len(content), "limit": self.max_message_size},
            )
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        rcpt_tos = list(envelope.rcpt_tos)
        try:
            message_id = await asyncio.to_thread(
                self.store.save, envelope.mail_from or "", rcpt_tos, content
            )
        except OSError as exc:
            log.error("could not store a captured message: %s", type(exc).__name__)
            return "451 4.3.0 Requested action aborted: could not store the message"
        log.info(
            "captured a message",
            extra={"message_id": message_id, "size": len(content), "recipients": len(rcpt_tos)},
        )
        return "250 Message accepted for delivery"


# -- HTTP -----------------------------------------------------------------------------------


def mail_router(store: MailStore) -> APIRouter:
    """`/messages`: list, read and delete the captured mail."""
    from fastapi import APIRouter, Query
    from starlette.responses import Response

    from crm_runtime.http.problems import PROBLEM_JSON, problem

    router = APIRouter(tags=["captured mail"])
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such message", "content": {PROBLEM_JSON: {}}}
    }

    @router.get("/messages", response_model=list[MailSummary], summary="List captured mail")
    def list_messages(
        to: str | None = Query(None, description="only mail with this envelope recipient"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[MailSummary]:
        return store.list(limit=limit, to=to)

    @router.get("/messages/{message_id}", response_model=CapturedMail, responses=not_found)
    def get_message(message_id: str) -> CapturedMail | Response:
        try:
            return store.get(message_id)
        except MessageNotFound:
            return problem(404, f"no captured message {message_id!r}")

    @router.get(
        "/messages/{message_id}/raw",
        response_class=Response,
        response_model=None,
        responses={200: {"content": {"message/rfc822": {}}}, **not_found},
    )
    def get_raw(message_id: str) -> Response:
        try:
            raw = store.raw(message_id)
        except MessageNotFound:
            return problem(404, f"no captured message {message_id!r}")
        return Response(
            raw,
            media_type="message/rfc822",
            headers={"Content-Disposition": f'inline; filename="{message_id}.eml"'},
        )

    @router.delete("/messages", response_model=Cleared, summary="Delete all captured mail")
    def clear_messages() -> Cleared:
        return Cleared(deleted=store.clear())

    return router


def create_mail_app(store: MailStore) -> FastAPI:
    """The web API of the capturing SMTP server: the router plus problem+json errors."""
    from fastapi import FastAPI

    from crm_runtime.http import docs, problems

    app = FastAPI(title="CRM captured mail", version="1", docs_url=None, redoc_url=None)
    app.include_router(mail_router(store))
    problems.install(app)
    docs.install(app)  # /docs with Swagger UI's files served locally, as the services do
    return app


# -- running it -----------------------------------------------------------------------------


class MailCatcher:
    """The capturing SMTP server (and, with `http_port`, its web API) on the running loop.

    Port 0 binds an ephemeral port; the bound ones are in `smtp_port` and `http_port`.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        smtp_port: int = 0,
        http_port: int | None = None,
        http_host: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        hostname: str = "localhost",
    ) -> None:
        self.store = MailStore(store_dir)
        self.handler = CapturingHandler(self.store, max_message_size=max_message_size)
        self.host = host
        self.http_host = http_host or host
        self.hostname = hostname
        self._smtp_port = smtp_port
        self._http_port = http_port
        self._smtp_server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._http_server: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    @property
    def smtp_port(self) -> int:
        if self._smtp_server is None:
            raise RuntimeError("the mail catcher is not running")
        return self._smtp_port

    @property
    def http_port(self) -> int | None:
        if self._smtp_server is None:
            raise RuntimeError("the mail catcher is not running")
        return self._http_port

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        if self._smtp_server is not None:
            raise RuntimeError("the mail catcher is already running")
        _quiet_aiosmtpd()
        loop = asyncio.get_running_loop()
        limit = self.handler.max_message_size

        def session() -> SMTP:
            smtp = SMTP(
                self.handler,
                data_size_limit=limit,
                enable_SMTPUTF8=True,
                hostname=self.hostname,
                ident="CRM mail catcher",
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        server = await loop.create_server(session, self.host, self._smtp_port)
        self._smtp_server = server
        self._smtp_port = int(server.sockets[0].getsockname()[1])
        if self._http_port is None:
            return
        try:
            await self._start_http()
        except BaseException:
            await self.stop()
            raise

    async def _start_http(self) -> None:
        import uvicorn

        assert self._http_port is not None
        sock = socket.create_server((self.http_host, self._http_port))
        self._http_port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_mail_app(self.store),
            host=self.http_host,
            port=self._http_port,
            log_config=None,
            access_log=False,  # the query string can hold an address
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _server_class()(config)
        self._http_server = server
        self._http_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._http_task.done():
                sock.close()
                failed, self._http_server, self._http_task = self._http_task, None, None
                failed.result()
                raise RuntimeError("the captured-mail web API stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        server, self._smtp_server = self._smtp_server, None
        http, task = self._http_server, self._http_task
        self._http_server = self._http_task = None
        try:
            if http is not None and task is not None:
                http.should_exit = True
                await task
        finally:
            if server is not None:
                await self._stop_smtp(server)

    async def _stop_smtp(self, server: asyncio.Server) -> None:
        server.close()
        sessions = list(self._sessions)
        for smtp in sessions:
            if smtp.transport is not None:
                smtp.transport.close()
        deadline = time.monotonic() + 5
        # aiosmtpd has no event for a closed session: wait (briefly) for connection_lost.
        while any(s.transport is not None for s in sessions) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let the cancelled session tasks finish
        await asyncio.wait_for(server.wait_closed(), timeout=5)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@functools.cache
def _server_class() -> type[uvicorn.Server]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """Leaves the signals to whoever runs the loop (it sets `should_exit`)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _quiet_aiosmtpd() -> None:
    # aiosmtpd logs envelope addresses at INFO and message lines at DEBUG: personal data.
    smtp_log = logging.getLogger("mail.log")
    if smtp_log.getEffectiveLevel() < logging.WARNING:
        smtp_log.setLevel(logging.WARNING)


async def run_mailcatcher(
    store_dir: Path,
    smtp_host: str,
    smtp_port: int,
    http_port: int | None,
    stop: asyncio.Event,
    *,
    http_host: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> None:
    """Capture mail on `smtp_host:smtp_port` (and serve it over HTTP) until `stop` is set."""
    catcher = MailCatcher(
        store_dir,
        host=smtp_host,
        smtp_port=smtp_port,
        http_port=http_port,
        http_host=http_host,
        max_message_size=max_message_size,
    )
    async with catcher:
        log.info(
            "capturing mail",
            extra={
                "smtp_port": catcher.smtp_port,
                "http_port": catcher.http_port,
                "directory": str(store_dir),
            },
        )
        await stop.wait()
    log.info("mail catcher stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m crm_runtime.mailcatcher`: what `crm up` starts when SMTP_URL is not set."""
    from crm_runtime.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m crm_runtime.mailcatcher", description=__doc__)
    parser.add_argument("--dir", type=Path, default=default_mail_dir(), help="message directory")
    parser.add_argument("--smtp-host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-host", default=None, help="default: the SMTP host")
    parser.add_argument("--http-port", type=int, default=8025, help="0: any free port")
    parser.add_argument("--no-http", action="store_true", help="SMTP only, no web API")
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE, help="bytes")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging("mailcatcher", args.log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_mailcatcher(
            args.dir,
            args.smtp_host,
            args.smtp_port,
            None if args.no_http else args.http_port,
            stop,
            http_host=args.http_host,
            max_message_size=args.max_size,
        )

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"mail catcher: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# -- `crm mail` -----------------------------------------------------------------------------


def add_mail_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`crm mail list|show|clear`: read the directory the capturing SMTP server writes."""
    mail = sub.add_parser("mail", help="list, show or clear the captured development mail")
    commands = mail.add_subparsers(dest="mail_command", required=True, metavar="COMMAND")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        type=Path,
        default=default_mail_dir(),
        help="the captured-mail directory (default: $CRM_HOME/mail, i.e. .crm/mail)",
    )

    p = commands.add_parser("list", parents=[where], help="the newest messages first")
    p.add_argument("--to", help="only mail with this envelope recipient")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser("show", parents=[where], help="one message")
    p.add_argument("id", help="the message id, as `crm mail list` shows it")
    p.add_argument("--raw", action="store_true", help="the message exactly as received")
    p.set_defaults(func=_cmd_show)

    p = commands.add_parser("clear", parents=[where], help="delete every captured message")
    p.set_defaults(func=_cmd_clear)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        print("crm mail list: --limit must be at least 1", file=sys.stderr)
        return 2
    store = MailStore(args.dir)
    messages = store.list(limit=args.limit, to=args.to)
    if not messages:
        print(f"no captured mail in {store.directory}" + (f" for {args.to}" if args.to else ""))
        return 0
    rows = [("ID", "RECEIVED (UTC)", "FROM", "TO", "SUBJECT")]
    for m in messages:
        to = m.rcpt_tos[0] if m.rcpt_tos else ""
        if len(m.rcpt_tos) > 1:
            to += f" (+{len(m.rcpt_tos) - 1})"
        rows.append(
            (
                m.id,
                m.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                _clip(m.mail_from or "<>", 30),
                _clip(to, 36),
                _clip(m.subject or "(no subject)", 60),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    store = MailStore(args.dir)
    try:
        if args.raw:
            raw = store.raw(args.id)
            sys.stdout.flush()
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            return 0
        mail = store.get(args.id)
    except MessageNotFound:
        print(
            f"crm mail show: no captured message {args.id!r} in {store.directory}", file=sys.stderr
        )
        return 1
    lines = [
        f"Id:          {mail.id}",
        f"Received:    {mail.received_at.isoformat(timespec='seconds')}",
        f"Envelope:    from {mail.mail_from or '<>'}",
        f"             to {', '.join(mail.rcpt_tos)}",
        f"Size:        {mail.size} bytes",
        "",
    ]
    shown = {"from", "to", "cc", "reply-to", "date", "subject", "message-id"}
    lines += [f"{h.name}: {h.value}" for h in mail.headers if h.name.lower() in shown]
    lines.append("")
    if mail.text is not None:
        lines.append(mail.text.rstrip("\n"))
    elif mail.html is not None:
        lines.append("(HTML only)")
        lines.append(mail.html.rstrip("\n"))
    else:
        lines.append("(no text body)")
    if mail.text is not None and mail.html is not None:
        lines += ["", f"(also an HTML version, {len(mail.html)} characters: use --raw to see it)"]
    if mail.attachments:
        lines += ["", "Attachments:"]
        lines += [
            f"  {a.filename or '(unnamed)'}  {a.content_type}  {a.size} bytes"
            for a in mail.attachments
        ]
    print("\n".join(lines))
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    store = MailStore(args.dir)
    deleted = store.clear()
    print(f"deleted {deleted} message{'' if deleted == 1 else 's'} from {store.directory}")
    return 0


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
