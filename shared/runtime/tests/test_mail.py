"""The SMTP mailer against the capturing server: text + HTML, and a clear error when it is down."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from crm_runtime.embedded import free_port
from crm_runtime.mail import Mailer, MailError, OutgoingMail
from crm_runtime.mailcatcher import MailCatcher


async def test_sends_text_and_html(tmp_path: Path) -> None:
    async with MailCatcher(tmp_path) as catcher:
        mailer = Mailer(f"smtp://127.0.0.1:{catcher.smtp_port}", "crm@crm.example")
        msg_id = await mailer.send(
            OutgoingMail(to=["ada@example.com"], subject="Quote Q-1", text="Hi", html="<p>Hi</p>")
        )
        [summary] = catcher.store.list()
        mail = catcher.store.get(summary.id)
    assert mail.rcpt_tos == ["ada@example.com"] and mail.subject == "Quote Q-1"
    assert (mail.text or "").strip() == "Hi" and "<p>Hi</p>" in (mail.html or "")
    assert any(h.name == "Message-ID" and h.value == msg_id for h in mail.headers)
    [date] = [h.value for h in mail.headers if h.name == "Date"]  # RFC 5322: every message
    assert abs((parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()) < 60


async def test_a_server_that_is_down_is_a_mail_error() -> None:
    mailer = Mailer(f"smtp://127.0.0.1:{free_port()}", "crm@crm.example", timeout=2)
    with pytest.raises(MailError, match="did not accept"):
        await mailer.send(OutgoingMail(to=["a@example.com"], subject="s", text="t"))


def test_url_schemes() -> None:
    assert Mailer("smtps://u:p%40ss@mail.example", "a@b").port == 465
    m = Mailer("smtp+starttls://u:p%40ss@mail.example:587", "a@b")
    assert (m.start_tls, m.username, m.password, m.port) == (True, "u", "p@ss", 587)
    with pytest.raises(ValueError, match="SMTP_URL"):
        Mailer("http://x", "a@b")
