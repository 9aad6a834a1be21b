"""Service-level flow: an e-mail sent to the inbound SMTP endpoint (run by the app on its port)
becomes a ticket, is routed to the right agent, answered (the reply reaches the customer's
mailbox in the mail catcher), resolved and rated; every step is an event about the customer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sd_support import configure_routing, desk_stack, link_in

from crm_runtime.embedded import free_port
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


async def test_mail_to_ticket_routed_answered_resolved_rated(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> None:
    port = free_port()
    async with desk_stack(
        tmp_path,
        fresh_db,
        settings_for,
        token,
        inbound_smtp_enabled=True,
        inbound_smtp_port=port,
    ) as sd:
        await configure_routing(
            sd.ctx,
            queues=["printers", "general"],
            agents={
                "ann": {"queues": ["printers"], "skills": ["printers"], "languages": ["en"]},
                "bob": {"queues": ["general"], "languages": ["en"]},
            },
            rules=[{"rule_id": "english", "languages": ["en"], "queue_id": "printers"}],
            default_queue_id="general",
        )
        msg = EmailMessage()
        msg["From"] = "Linus Example <linus@example.com>"
        msg["To"] = "support@desk.example.com"
        msg["Subject"] = "Printer on fire"
        msg["Message-ID"] = make_msgid(domain="example.com")
        msg.set_content("It smokes when I print.")
        msg["Content-Language"] = "en"
        for _ in range(100):  # the app's background task binds the port as the app starts
            try:
                await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=10)
                break
            except aiosmtplib.SMTPConnectError:
                await asyncio.sleep(0.05)
        ack = await sd.mail_to("linus@example.com")
        assert len(ack) == 1
        meg = sd.user("service_manager", user="meg")
        [t] = (await meg.get("/tickets")).json()["items"]
        assert (t["channel"], t["queue_id"], t["assignee_id"], t["status"]) == (
            "email",
            "printers",
            "ann",
            "assigned",
        )
        ann = sd.user("service_agent", user="ann")
        r = await ann.post(f"/tickets/{t['id']}/replies", json={"body": "Unplug it, please."})
        assert r.status_code == 200
        mails = await sd.mail_to("linus@example.com", count=2)
        answer = [m for m in mails if "Unplug it" in (m.text or "")]
        assert len(answer) == 1 and f"[#{t['id']}]" in (answer[0].subject or "")
        headers = {h.name: h.value for h in answer[0].headers}
        assert headers["In-Reply-To"] == msg["Message-ID"]  # threads under the customer's mail
        res = await ann.post(f"/tickets/{t['id']}/resolve", json={"resolution": "Unplugged"})
        assert res.json()["status"] == "resolved"
        mails = await sd.mail_to("linus@example.com", count=3)
        survey = [m for m in mails if "/survey/" in (m.text or "")]
        rated = await sd.client.post(
            f"/survey/{link_in(survey[0].text, 'survey')}", json={"score": 5, "comment": "Fast"}
        )
        assert rated.status_code == 201
        events = [
            e
            for e in await sd.ctx.store.read_subject(t["customer_id"])
            if e.stream_id.startswith(("ticket-", "person-"))
        ]
        types = [e.type for e in events]
        assert types == [
            "crm.service.person.sighted",
            "crm.service.ticket.opened",
            "crm.service.ticket.assigned",
            "crm.service.ticket.replied",
            "crm.service.ticket.status_changed",
            "crm.service.ticket.resolved",
            "crm.service.ticket.rated",
        ]
        assigned = events[2].data
        assert (assigned["assignee_id"], assigned["rule_id"]) == ("ann", "english")
