"""The capturing SMTP server: real SMTP over a socket into a directory, read back through the
store, the HTTP router, a second process and the `crm mail` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import Envelope

from crm_runtime.mailcatcher import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CapturingHandler,
    MailCatcher,
    MailStore,
    MessageNotFound,
    add_mail_commands,
    create_mail_app,
    mail_router,
    run_mailcatcher,
)

SENDER = "crm@example.test"


@pytest.fixture
async def catcher(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    async with MailCatcher(tmp_path / "mail") as running:
        yield running


def _message(subject: str, to: str, text: str, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"CRM <{SENDER}>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


async def _send(
    catcher: MailCatcher, message: EmailMessage, recipients: list[str] | None = None
) -> None:
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=catcher.smtp_port,
        sender=SENDER,
        recipients=recipients or [str(message["To"])],
        timeout=10,
    )


def _mail_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="crm")
    add_mail_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mail", *argv])
    code: int = args.func(args)
    return code


# -- SMTP into the store ----------------------------------------------------------------------


async def test_a_plain_text_message_is_captured(catcher: MailCatcher) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await _send(catcher, _message("Welcome, Ada", "ada@example.test", "Hello Ada,\nwelcome.\n"))

    [summary] = catcher.store.list()
    assert summary.subject == "Welcome, Ada"
    assert summary.mail_from == SENDER
    assert summary.rcpt_tos == ["ada@example.test"]
    assert before <= summary.received_at <= datetime.now(UTC) + timedelta(seconds=1)

    mail = catcher.store.get(summary.id)
    assert mail.text == "Hello Ada,\nwelcome.\n"
    assert mail.html is None
    assert mail.attachments == []
    assert ("Subject", "Welcome, Ada") in [(h.name, h.value) for h in mail.headers]
    assert mail.size == summary.size == len(mail.raw)
    assert mail.raw == catcher.store.raw(summary.id)
    assert b"Subject: Welcome, Ada" in mail.raw


async def test_a_multipart_message_keeps_both_bodies_and_attachments(
    catcher: MailCatcher,
) -> None:
    message = _message(
        "Your quote Q-17 ünïcode",
        "bob@example.test",
        "See the quote.\n",
        html="<p>See the <b>quote</b>.</p>\n",
    )
    message.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="q.pdf"
    )
    await _send(catcher, message)

    [summary] = catcher.store.list()
    mail = catcher.store.get(summary.id)
    assert mail.subject == "Your quote Q-17 ünïcode"
    assert mail.text == "See the quote.\n"
    assert mail.html == "<p>See the <b>quote</b>.</p>\n"
    assert [(a.filename, a.content_type, a.size) for a in mail.attachments] == [
        ("q.pdf", "application/pdf", len(b"%PDF-1.4 fake"))
    ]


async def test_bcc_recipients_are_kept_from_the_envelope(catcher: MailCatcher) -> None:
    message = _message("Team update", "carol@example.test", "Numbers are up.\n")
    await _send(catcher, message, ["carol@example.test", "audit@example.test"])

    [summary] = catcher.store.list()
    assert summary.rcpt_tos == ["carol@example.test", "audit@example.test"]
    mail = catcher.store.get(summary.id)
    assert not any(h.name.lower() == "bcc" for h in mail.headers)
    assert b"audit@example.test" not in mail.raw  # only the envelope knew
    assert [m.id for m in catcher.store.list(to="AUDIT@example.test")] == [summary.id]
    assert catcher.store.list(to="nobody@example.test") == []


async def test_newest_first_with_a_limit(catcher: MailCatcher) -> None:
    for n in range(3):
        await _send(catcher, _message(f"message {n}", f"u{n}@example.test", "x\n"))
    assert [m.subject for m in catcher.store.list()] == ["message 2", "message 1", "message 0"]
    assert [m.subject for m in catcher.store.list(limit=2)] == ["message 2", "message 1"]
    assert [m.subject for m in catcher.store.list(to="u0@example.test")] == ["message 0"]
    assert catcher.store.list(limit=0) == []


async def test_an_oversize_message_gets_552_and_is_not_stored(catcher: MailCatcher) -> None:
    big = _message("too big", "dan@example.test", "x" * 76 + "\n")
    big.add_attachment(
        os.urandom(DEFAULT_MAX_MESSAGE_SIZE * 3 // 4 + 1024),
        maintype="application",
        subtype="octet-stream",
    )
    payload = big.as_bytes()
    assert len(payload) > DEFAULT_MAX_MESSAGE_SIZE

    # A client that announces the size (RFC 1870) is refused at MAIL FROM ...
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await _send(catcher, big)
    assert refused.value.code == 552

    # ... one that does not is refused after DATA, and the session stays usable.
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.smtp_port, timeout=30) as smtp:
        await smtp.mail(SENDER)
        await smtp.rcpt("dan@example.test")
        with pytest.raises(aiosmtplib.SMTPDataError) as too_much:
            await smtp.data(payload)
        assert too_much.value.code == 552
        assert catcher.store.list() == []
        await smtp.sendmail(SENDER, ["dan@example.test"], b"Subject: small\r\n\r\nok\r\n")
    assert [m.subject for m in catcher.store.list()] == ["small"]


async def test_the_handler_enforces_its_own_size_limit(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    handler = CapturingHandler(store, max_message_size=100)
    envelope = Envelope()
    envelope.mail_from = SENDER
    envelope.rcpt_tos = ["eve@example.test"]
    envelope.content = envelope.original_content = b"Subject: big\r\n\r\n" + b"x" * 100
    assert (await handler.handle_DATA(None, None, envelope)).startswith("552 ")
    assert store.list() == []
    envelope.content = envelope.original_content = b"Subject: fits\r\n\r\nok\r\n"
    assert await handler.handle_DATA(None, None, envelope) == "250 Message accepted for delivery"
    assert [m.subject for m in store.list()] == ["fits"]


async def test_ids_are_time_ordered_and_others_are_not_found(catcher: MailCatcher) -> None:
    await _send(catcher, _message("one", "f@example.test", "1\n"))
    await _send(catcher, _message("two", "f@example.test", "2\n"))
    newer, older = (m.id for m in catcher.store.list())
    assert older < newer
    for bad in ("../../etc/passwd", "..", "", "x" * 29, "00000000000000000001-deadbeef"):
        with pytest.raises(MessageNotFound):
            catcher.store.get(bad)
        with pytest.raises(MessageNotFound):
            catcher.store.raw(bad)


async def test_a_second_store_on_the_directory_sees_the_messages(catcher: MailCatcher) -> None:
    await _send(catcher, _message("shared", "gus@example.test", "seen elsewhere\n"))
    other = MailStore(catcher.store.directory)
    [summary] = other.list()
    assert summary.subject == "shared"
    assert other.get(summary.id).text == "seen elsewhere\n"
    assert not list((catcher.store.directory / "tmp").iterdir())  # nothing half-written left
    assert other.clear() == 1
    assert catcher.store.list() == []
    assert MailStore(catcher.store.directory / "missing").list() == []


# -- HTTP -------------------------------------------------------------------------------------


async def test_the_http_api(catcher: MailCatcher) -> None:
    await _send(
        catcher,
        _message("Invoice", "hal@example.test", "Please pay.\n", html="<p>Please pay.</p>"),
        ["hal@example.test", "books@example.test"],
    )
    await _send(catcher, _message("Reminder", "ida@example.test", "Soon.\n"))
    transport = httpx.ASGITransport(app=create_mail_app(catcher.store))
    async with httpx.AsyncClient(transport=transport, base_url="http://mail") as http:
        listed = await http.get("/messages")
        assert listed.status_code == 200
        assert [m["subject"] for m in listed.json()] == ["Reminder", "Invoice"]
        by_bcc = (await http.get("/messages", params={"to": "books@example.test"})).json()
        assert [m["subject"] for m in by_bcc] == ["Invoice"]
        assert by_bcc[0]["rcpt_tos"] == ["hal@example.test", "books@example.test"]
        assert len((await http.get("/messages", params={"limit": 1})).json()) == 1
        for limit in (0, 1001):
            assert (await http.get("/messages", params={"limit": limit})).status_code == 422

        message_id = by_bcc[0]["id"]
        one = await http.get(f"/messages/{message_id}")
        assert one.status_code == 200
        body = one.json()
        assert body["text"] == "Please pay.\n"
        assert body["html"] == "<p>Please pay.</p>\n"
        assert body["mail_from"] == SENDER
        assert "raw" not in body

        raw = await http.get(f"/messages/{message_id}/raw")
        assert raw.status_code == 200
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.content == catcher.store.raw(message_id)

        for bad in ("00000000000000000001-deadbeef", "not-an-id", "%2E%2E", "..%2Fetc%2Fpasswd"):
            for path in (f"/messages/{bad}", f"/messages/{bad}/raw"):
                missing = await http.get(path)
                assert missing.status_code == 404, path
                assert missing.headers["content-type"] == "application/problem+json"
                problem = missing.json()
                assert problem["type"] == "about:blank"
                assert problem["title"] == "Not Found"
                assert problem["status"] == 404
                assert problem["detail"]

        cleared = await http.delete("/messages")
        assert cleared.status_code == 200
        assert cleared.json() == {"deleted": 2}
        assert (await http.get("/messages")).json() == []


async def test_the_bare_router_answers_problems_itself(tmp_path: Path) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(mail_router(MailStore(tmp_path)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mail") as http:
        missing = await http.get("/messages/%2E%2E")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json() == {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "no captured message '..'",
        }
        assert (await http.delete("/messages")).json() == {"deleted": 0}


# -- running it -------------------------------------------------------------------------------


async def test_run_mailcatcher_serves_smtp_and_http_until_stopped(tmp_path: Path) -> None:
    from crm_runtime.embedded import free_port

    smtp_port, http_port = free_port(), free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_mailcatcher(tmp_path / "mail", "127.0.0.1", smtp_port, http_port, stop)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            for _ in range(200):
                try:
                    if (await http.get("/messages")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.025)
            await aiosmtplib.send(
                _message("ping", "jo@example.test", "pong\n"),
                hostname="127.0.0.1",
                port=smtp_port,
                timeout=10,
            )
            assert [m["subject"] for m in (await http.get("/messages")).json()] == ["ping"]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    with pytest.raises(ConnectionRefusedError):  # both ports are closed again
        await asyncio.open_connection("127.0.0.1", smtp_port)
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{http_port}/messages")


async def test_stop_closes_open_smtp_sessions(tmp_path: Path) -> None:
    catcher = MailCatcher(tmp_path / "mail", http_port=0)
    await catcher.start()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.smtp_port, timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    await asyncio.wait_for(catcher.stop(), timeout=15)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.noop()


async def test_the_server_process_and_another_process_reading_its_directory(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "mail"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crm_runtime.mailcatcher",
            "--dir",
            str(directory),
            "--smtp-port",
            "0",
            "--http-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        started: dict[str, object] = {}
        while not started:
            line = await asyncio.wait_for(asyncio.to_thread(server.stderr.readline), 30)
            assert line, "the mail catcher exited before it started"
            record = json.loads(line)
            if record["msg"] == "capturing mail":
                started = record
        smtp_port = started["smtp_port"]
        assert isinstance(smtp_port, int)
        await aiosmtplib.send(
            _message("cross-process", "kim@example.test", "from afar\n"),
            hostname="127.0.0.1",
            port=smtp_port,
            recipients=["kim@example.test", "hidden@example.test"],
            timeout=10,
        )
        [summary] = MailStore(directory).list()
        assert summary.subject == "cross-process"
        assert summary.rcpt_tos == ["kim@example.test", "hidden@example.test"]
        async with httpx.AsyncClient() as http:
            listed = await http.get(f"http://127.0.0.1:{started['http_port']}/messages")
        assert [m["id"] for m in listed.json()] == [summary.id]
    finally:
        server.send_signal(signal.SIGTERM)
        _, logs = await asyncio.to_thread(server.communicate, timeout=30)
    assert server.returncode == 0
    assert "kim@example.test" not in logs  # no personal data in the logs
    assert "from afar" not in logs


# -- `crm mail` -------------------------------------------------------------------------------


async def test_the_mail_commands(catcher: MailCatcher, capsys: pytest.CaptureFixture[str]) -> None:
    await _send(
        catcher,
        _message("Quarterly review", "lea@example.test", "Agenda attached.\n", html="<p>A</p>"),
        ["lea@example.test", "boss@example.test"],
    )
    await _send(catcher, _message("Lunch?", "max@example.test", "Noon.\n"))
    directory = str(catcher.store.directory)
    newer, older = (m.id for m in catcher.store.list())

    assert _mail_cli("list", "--dir", directory) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "(UTC)", "FROM", "TO", "SUBJECT"]
    assert lines[1].startswith(newer) and "Lunch?" in lines[1] and "max@example.test" in lines[1]
    assert lines[2].startswith(older) and "Quarterly review" in lines[2]
    assert "lea@example.test (+1)" in lines[2]
    assert SENDER in lines[2]

    assert _mail_cli("list", "--dir", directory, "--to", "boss@example.test") == 0
    out = capsys.readouterr().out
    assert "Quarterly review" in out and "Lunch?" not in out
    assert _mail_cli("list", "--dir", directory, "--limit", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    assert _mail_cli("show", older, "--dir", directory) == 0
    out = capsys.readouterr().out
    assert "Subject: Quarterly review" in out
    assert "to lea@example.test, boss@example.test" in out
    assert "Agenda attached." in out

    assert _mail_cli("show", older, "--raw", "--dir", directory) == 0
    assert capsys.readouterr().out.encode() == catcher.store.raw(older)

    assert _mail_cli("show", "../../etc/passwd", "--dir", directory) == 1
    assert "no captured message" in capsys.readouterr().err

    assert _mail_cli("clear", "--dir", directory) == 0
    assert "deleted 2 messages" in capsys.readouterr().out
    assert _mail_cli("list", "--dir", directory) == 0
    assert "no captured mail" in capsys.readouterr().out
