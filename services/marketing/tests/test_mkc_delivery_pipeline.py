"""The sender's pieces: the hand-built MIME message, group commits, the SMTP worker process,
sending ahead (claims prefetched, released when not sent) and the in-process SMTP path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

import pytest
from mkc_support import (
    BOUNCE_DOMAIN,
    BouncingHandler,
    Stack,
    add_people,
    campaign,
    email_template,
    header,
    static_segment,
)
from mkc_support import stack as stack

from crm_marketing.delivery.messages import MessageKey
from crm_marketing.delivery.sender import Claim, Deliverer, Finish, Outcomes
from crm_marketing.delivery.smtp import Email, Outcome, SendResult, build_email
from crm_marketing.delivery.smtp_worker import SmtpWorker, WorkerLost
from crm_marketing.jobs import jobs_for
from crm_runtime.mailcatcher import MailCatcher

PARSER = BytesParser(_class=EmailMessage, policy=policy.default)


def _mail(**overrides: Any) -> Email:
    values: dict[str, Any] = {
        "message_id": f"<{uuid.uuid4()}@shop.example>",
        "sender": "news@shop.example",
        "to": "r1@example.com",
        "subject": "The new phones are here",
        "text": "Hello Ann\n\nSee the phones (https://shop.example/p)\n",
        "html": "<html><body><h1>Hello Ann</h1><p>See the phones</p></body></html>",
        "unsubscribe_url": "https://crm.example.com/t/u/abc",
    }
    values.update(overrides)
    return Email(**values)


def _gone(pid: int) -> bool:
    """The process exited (or is a zombie no one reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


async def _wait_gone(pid: int, seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if _gone(pid):
            return True
        await asyncio.sleep(0.05)
    return _gone(pid)


def _parse(raw: bytes) -> EmailMessage:
    return PARSER.parsebytes(raw)


def _lines(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\r\n")
    body = raw[:-2]
    # CRLF only: no bare CR or LF anywhere
    assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")
    return body.split(b"\r\n")


# --- the MIME message --------------------------------------------------------------------------


def test_a_message_parses_back_with_its_headers_and_both_parts() -> None:
    mail = _mail()
    raw = build_email(mail)
    msg = _parse(raw)
    assert msg["From"] == mail.sender and msg["To"] == mail.to
    assert msg["Subject"] == mail.subject and msg["Message-ID"] == mail.message_id
    assert msg["MIME-Version"] == "1.0" and msg["Date"] is not None
    assert msg["List-Unsubscribe"] == f"<{mail.unsubscribe_url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part, expected in zip(parts, (mail.text, mail.html), strict=True):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert cast(str, part.get_content()).replace("\r\n", "\n") == expected
    assert msg.defects == [] and all(p.defects == [] for p in parts)
    # the best alternative a client shows is the HTML, the last part
    assert cast(EmailMessage, msg.get_body()).get_content_type() == "text/html"


def test_non_ascii_subject_names_and_bodies_survive() -> None:
    subject = "Änne, die neuen Telefone sind da \u2013 東京 🎉"
    text = "Grüße aus Köln, Ænne!\n\u0426\u0435\u043d\u0430: 100 €\n"
    html = "<p>Grüße aus Köln, <b>Ænne</b>! 東京 🎉</p>"
    raw = build_email(_mail(subject=subject, text=text, html=html))
    assert raw.isascii()  # 7-bit clean: encoded words in headers, quoted-printable bodies
    msg = _parse(raw)
    assert msg["Subject"] == subject
    plain, rich = msg.iter_parts()
    assert cast(str, plain.get_content()).replace("\r\n", "\n") == text
    assert cast(str, rich.get_content()).replace("\r\n", "\n") == html
    assert all(len(line) <= 78 for line in _lines(raw))


def test_long_lines_and_long_subjects_are_wrapped_and_come_back_whole() -> None:
    long_line = "word " * 400 + "end"  # 2,000 characters on one line
    long_url = "https://shop.example/" + "x" * 500
    subject = "Ünïcödé " * 40  # folded over several encoded words
    raw = build_email(
        _mail(subject=subject, text=f"{long_line}\n{long_url}\n", html=f"<p>{long_line}</p>")
    )
    assert all(len(line) <= 78 for line in _lines(raw))  # RFC 5322: SHOULD 78, MUST 998
    msg = _parse(raw)
    assert msg["Subject"] == " ".join(subject.split())
    plain, rich = msg.iter_parts()
    assert cast(str, plain.get_content()).replace("\r\n", "\n") == f"{long_line}\n{long_url}\n"
    assert long_line in cast(str, rich.get_content())
    long_ascii = "Spring " * 200
    raw = build_email(_mail(subject=long_ascii))
    assert all(len(line) <= 998 for line in _lines(raw))
    assert _parse(raw)["Subject"] == " ".join(long_ascii.split())


def test_trailing_blanks_dots_and_boundary_lookalikes_in_the_body() -> None:
    text = "line with trailing blanks   \n.\n..starts with dots\nFrom the shop\n--=_fake\n=_x\n"
    html = "<p>--=_fake</p>\n<p>=_</p>"
    raw = build_email(_mail(text=text, html=html))
    msg = _parse(raw)
    parts = list(msg.iter_parts())
    assert len(parts) == 2
    assert cast(str, parts[0].get_content()).replace("\r\n", "\n") == text
    assert cast(str, parts[1].get_content()).replace("\r\n", "\n") == html
    boundary = msg.get_boundary()
    assert boundary is not None and boundary.startswith("=_")
    assert raw.count(boundary.encode()) == 4  # its header, two parts, the closing delimiter


def test_a_text_only_message_and_header_injection() -> None:
    raw = build_email(_mail(html=None, unsubscribe_url=None, subject="Hi\r\nBcc: x@evil.example"))
    msg = _parse(raw)
    assert msg.get_content_type() == "text/plain" and not msg.is_multipart()
    assert msg["Bcc"] is None and msg["Subject"] == "Hi Bcc: x@evil.example"
    assert msg["List-Unsubscribe"] is None
    with pytest.raises(ValueError, match="line break"):
        build_email(_mail(to="a@example.com\r\nBcc: x@evil.example"))


# --- group commits -----------------------------------------------------------------------------


def _finish(i: int) -> Finish:
    key = MessageKey(uuid.uuid4(), f"c{i}", "email", "camp", None)
    claim = Claim(key, "tpl", f"<{key.message_id}@x>", f"r{i}@example.com", 1)
    return Finish(claim, SendResult(Outcome.ACCEPTED, 250))


async def test_outcomes_are_taken_in_groups_by_window_and_size() -> None:
    outcomes = Outcomes(limit=3, window=0.2)
    items = [_finish(i) for i in range(5)]
    taker = asyncio.create_task(outcomes.take())
    await asyncio.sleep(0)
    outcomes.put(items[0])
    outcomes.put(items[1])
    await asyncio.sleep(0.05)
    assert not taker.done()  # waits for the window to fill
    outcomes.put(items[2])  # the limit: taken at once
    assert await asyncio.wait_for(taker, 0.1) == items[:3]
    outcomes.put(items[3])
    started = asyncio.get_running_loop().time()
    assert await outcomes.take() == [items[3]]  # alone after its window
    assert asyncio.get_running_loop().time() - started >= 0.15
    outcomes.put(items[4])
    outcomes.close()  # the end: what waits is taken at once
    assert await asyncio.wait_for(outcomes.take(), 0.05) == [items[4]]
    assert await outcomes.take() is None


# --- the SMTP worker ---------------------------------------------------------------------------


async def _catcher(tmp_path: Path) -> MailCatcher:
    catcher = MailCatcher(tmp_path / "mail")
    catcher.handler = BouncingHandler(catcher.store)
    await catcher.start()
    return catcher


async def test_the_worker_sends_in_order_and_answers_each_message(tmp_path: Path) -> None:
    catcher = await _catcher(tmp_path)
    worker = SmtpWorker(f"smtp://127.0.0.1:{catcher.smtp_port}", timeout=10, chunk=3)
    try:
        raws = [build_email(_mail(to=f"r{i}@example.com", subject=f"n{i}")) for i in range(10)]
        sent = [
            await worker.submit("news@shop.example", f"r{i}@example.com", raw)
            for i, raw in enumerate(raws)
        ]
        refused = await worker.submit("news@shop.example", f"x@{BOUNCE_DOMAIN}", raws[0])
        await worker.flush()
        assert [f.result() for f in sent] == [SendResult(Outcome.ACCEPTED, 250)] * 10
        bounce = refused.result()
        assert bounce.outcome is Outcome.BOUNCED and bounce.code == 550
        assert f"x@{BOUNCE_DOMAIN}" not in bounce.reason  # no address in what is recorded
        mails = sorted(catcher.store.list(limit=100), key=lambda m: m.id)
        assert [m.rcpt_tos for m in mails] == [[f"r{i}@example.com"] for i in range(10)]
        assert [catcher.store.raw(m.id) for m in mails] == raws
        pid = worker.pid
        assert pid is not None and pid != os.getpid()
    finally:
        await worker.close()
        await catcher.stop()
    assert worker.pid is None
    assert await _wait_gone(pid, 5)


async def test_a_dead_worker_leaves_its_messages_in_doubt_and_a_new_one_takes_over(
    tmp_path: Path,
) -> None:
    catcher = await _catcher(tmp_path)
    worker = SmtpWorker(f"smtp://127.0.0.1:{catcher.smtp_port}", timeout=10)
    try:
        first = await worker.submit("news@shop.example", "a@example.com", build_email(_mail()))
        await worker.flush()
        assert first.result().outcome is Outcome.ACCEPTED
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # stuck: what it is given stays unanswered
        lost = [
            await worker.submit("news@shop.example", "b@example.com", build_email(_mail()))
            for _ in range(3)
        ]
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(worker.flush(), 10)
        for f in lost:
            with pytest.raises(WorkerLost):
                f.result()
        again = await worker.submit("news@shop.example", "c@example.com", build_email(_mail()))
        await worker.flush()
        assert again.result().outcome is Outcome.ACCEPTED and worker.pid not in (None, pid)
        assert sorted(r for m in catcher.store.list() for r in m.rcpt_tos) == [
            "a@example.com",
            "c@example.com",
        ]
    finally:
        await worker.close()
        await catcher.stop()


_ORPHAN = textwrap.dedent(
    """
    import asyncio, sys
    from crm_marketing.delivery.smtp_worker import SmtpWorker

    async def main() -> None:
        worker = SmtpWorker(sys.argv[1], timeout=10)
        raw = b"Subject: x\\r\\n\\r\\nx\\r\\n"
        sent = await worker.submit("news@shop.example", "a@example.com", raw)
        await worker.flush()
        print(worker.pid, sent.result().outcome.value, flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the test stopped the worker
        for i in range(5):
            await worker.submit("news@shop.example", f"late{i}@example.com", raw, at_once=True)
        print("handed", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_a_killed_senders_worker_never_sends_what_it_was_handed(tmp_path: Path) -> None:
    """A SIGKILLed sender's messages were claimed and not recorded: they go out again after
    their lease, so its worker must not send them too (it dies with the sender)."""
    catcher = await _catcher(tmp_path)
    try:
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ORPHAN,
            f"smtp://127.0.0.1:{catcher.smtp_port}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert sender.stdin is not None and sender.stdout is not None
        line = await asyncio.wait_for(sender.stdout.readline(), 30)
        pid_text, outcome = line.decode().split()
        assert outcome == "accepted"
        worker = int(pid_text)
        os.kill(worker, signal.SIGSTOP)  # it cannot send what it is handed next before the end
        sender.stdin.write(b"go\n")
        await sender.stdin.drain()
        assert await asyncio.wait_for(sender.stdout.readline(), 30) == b"handed\n"
        sender.send_signal(signal.SIGKILL)
        await sender.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
        assert await _wait_gone(worker, 10), "the worker outlived its sender"
        await asyncio.sleep(0.5)
        assert [m.rcpt_tos for m in catcher.store.list()] == [["a@example.com"]]
    finally:
        await catcher.stop()


# --- the sender: prefetched claims, the in-process path ----------------------------------------


async def _campaign_of(stack: Stack, n: int, bounce: int = 0) -> tuple[str, datetime]:
    people = [{"email": f"r{i}@example.com", "consents": {"email": "granted"}} for i in range(n)]
    people += [
        {"email": f"b{i}@{BOUNCE_DOMAIN}", "consents": {"email": "granted"}} for i in range(bounce)
    ]
    ids = await add_people(stack.pool, people)
    cid = await campaign(
        stack.marketer,
        await email_template(stack.marketer),
        await static_segment(stack.marketer, ids),
    )
    await stack.marketer.post(f"/campaigns/{cid}/schedule", json={})
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert await jobs_for(stack.ctx)["campaigns.start"](stack.pool, now) == 1
    return cid, now


async def _statuses(stack: Stack, cid: str) -> dict[str, int]:
    rows = await stack.pool.fetch(
        "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 GROUP BY status", cid
    )
    return {r["status"]: int(r["n"]) for r in rows}


@pytest.mark.parametrize("in_process", [False, True])
async def test_a_campaign_drains_over_batches_through_either_smtp_path(
    stack: Stack, in_process: bool
) -> None:
    cfg = stack.configure(batch_size=7, smtp_worker=not in_process)
    cid, now = await _campaign_of(stack, 30, bounce=2)
    deliverer = Deliverer(stack.pool, stack.ctx.store, stack.ctx.settings, cfg)
    try:
        assert (deliverer.worker is None) is in_process
        assert await deliverer.drain(now) == 32
    finally:
        await deliverer.close()
    assert await _statuses(stack, cid) == {"sent": 30, "bounced": 2}
    mails = stack.catcher.store.list(limit=100)
    assert sorted(r for m in mails for r in m.rcpt_tos) == sorted(
        f"r{i}@example.com" for i in range(30)
    )
    ids = {header(stack.catcher.store.get(m.id), "Message-ID") for m in mails}
    recorded = await stack.pool.fetch(
        "SELECT provider_id FROM messages WHERE campaign_id = $1 AND status = 'sent'", cid
    )
    assert ids == {r["provider_id"] for r in recorded}
    events = await stack.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'crm.marketing.message.sent'"
    )
    assert events == 30


async def test_a_batch_claimed_ahead_but_not_sent_goes_back_to_the_queue(stack: Stack) -> None:
    cfg = stack.configure(batch_size=5)
    cid, now = await _campaign_of(stack, 5)
    deliverer = Deliverer(stack.pool, stack.ctx.store, stack.ctx.settings, cfg)
    try:
        ahead = asyncio.create_task(deliverer._prepare(now))
        batch = await ahead
        assert len(batch.claims) == 5 and batch.composer is not None
        assert await _statuses(stack, cid) == {"sending": 5}
        await deliverer._abandon(ahead)  # the drain stopped before sending it
        assert await _statuses(stack, cid) == {"queued": 5}
        row = await stack.pool.fetchrow(
            "SELECT max(attempts) AS a, count(counted_at) AS c, count(claimed_until) AS l"
            " FROM messages WHERE campaign_id = $1",
            cid,
        )
        assert row is not None and (row["a"], row["c"], row["l"]) == (0, 0, 0)
        assert await deliverer.drain(now) == 5  # and it goes out right away
    finally:
        await deliverer.close()
    assert await _statuses(stack, cid) == {"sent": 5}
    assert len(stack.catcher.store.list(limit=100)) == 5
