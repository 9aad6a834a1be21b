"""A campaign is sent once even if the sender is killed mid-way (SIGKILL) and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mkc_support import Stack, add_people, campaign, email_template, header, static_segment
from mkc_support import stack as stack

from crm_marketing.jobs import jobs_for

HERE = Path(__file__).parent
RECIPIENTS = 150


async def _sender(stack: Stack, rate: float) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "mkc_sender_proc.py"),
        stack.database_url,
        f"smtp://127.0.0.1:{stack.catcher.smtp_port}",
        str(rate),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_killed_sender_restarts_and_everyone_gets_exactly_one_message(
    stack: Stack,
) -> None:
    m = stack.marketer
    people = [
        {"email": f"r{i}@example.com", "consents": {"email": "granted" if i % 5 else "pending"}}
        for i in range(RECIPIENTS)
    ]
    consenting = {p["email"] for p in people if p["consents"]["email"] == "granted"}
    ids = await add_people(stack.pool, people)
    cid = await campaign(m, await email_template(m), await static_segment(m, ids))
    await m.post(f"/campaigns/{cid}/schedule", json={})
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert await jobs_for(stack.ctx)["campaigns.start"](stack.pool, now) == 1

    first = await _sender(stack, rate=150)
    try:
        async with asyncio.timeout(60):
            while len(stack.catcher.store.list(limit=1000)) < 40:
                await asyncio.sleep(0.005)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    captured_at_kill = len(stack.catcher.store.list(limit=1000))
    assert 40 <= captured_at_kill < len(consenting)  # killed mid-way

    async with stack.pool.acquire() as conn:
        in_flight = await conn.fetch("SELECT provider_id FROM messages WHERE status = 'sending'")
    delivered_ids = {
        header(stack.catcher.store.get(x.id), "Message-ID")
        for x in stack.catcher.store.list(limit=1000)
    }
    in_doubt = {r["provider_id"] for r in in_flight} & delivered_ids

    second = await _sender(stack, rate=0)
    async with asyncio.timeout(120):
        assert await second.wait() == 0

    mails = [stack.catcher.store.get(x.id) for x in stack.catcher.store.list(limit=1000)]
    per_recipient: dict[str, set[str | None]] = defaultdict(set)
    copies: dict[str | None, int] = defaultdict(int)
    for mail in mails:
        message_id = header(mail, "Message-ID")
        per_recipient[mail.rcpt_tos[0]].add(message_id)
        copies[message_id] += 1
    # everyone with consent got their message, nobody else got anything
    assert set(per_recipient) == consenting
    # one message per recipient: a copy can only be a resend of a message the killed sender had
    # handed to the server but not yet recorded, and it carries the same Message-ID
    assert all(len(ids_) == 1 for ids_ in per_recipient.values())
    repeated = {mid for mid, n in copies.items() if n > 1}
    assert repeated <= in_doubt and all(copies[mid] == 2 for mid in repeated)
    assert len(mails) == len(consenting) + len(repeated)

    async with stack.pool.acquire() as conn:
        statuses = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM messages WHERE campaign_id = $1 GROUP BY status", cid
            )
        )
        sent_events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'crm.marketing.message.sent'"
        )
    assert statuses == {"sent": len(consenting), "skipped": RECIPIENTS - len(consenting)}
    assert sent_events == len(consenting)  # recorded exactly once each
