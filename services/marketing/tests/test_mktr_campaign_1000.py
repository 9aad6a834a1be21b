"""Issue 4, integration (c) at service level: a campaign to a 1,000-member segment; only the
members with e-mail consent get mail (read back from the SMTP server), and opens and clicks
come back through the tracking endpoints into the campaign's results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mkc_support import Stack, add_people, campaign, email_template, tracking_paths
from mkc_support import stack as stack

from crm_marketing.jobs import jobs_for
from crm_runtime.scheduler import ManualClock, Scheduler

pytestmark = pytest.mark.integration


def consent_of(i: int) -> dict[str, str]:
    if i % 10 < 6:
        return {"email": "granted"}
    if i % 10 < 8:
        return {"email": "pending"}
    if i % 10 == 8:
        return {"email": "withdrawn"}
    return {}


async def test_a_campaign_to_1000_members_mails_exactly_the_consenting_ones(stack: Stack) -> None:
    m = stack.marketer
    members = [
        {
            "email": f"de{i}@example.com",
            "first_name": f"N{i}",
            "country": "DE",
            "consents": consent_of(i),
        }
        for i in range(1000)
    ]
    outsiders = [
        {"email": f"at{i}@example.com", "country": "AT", "consents": {"email": "granted"}}
        for i in range(100)
    ]
    await add_people(stack.pool, members + outsiders)
    consenting = {p["email"] for p in members if p["consents"].get("email") == "granted"}
    assert len(consenting) == 600

    created = await m.post(
        "/segments", json={"name": "Germany", "kind": "dynamic", "rule": "country in [DE]"}
    )
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]
    evaluated = await m.post(f"/segments/{segment_id}/evaluate")
    assert evaluated.status_code == 200, evaluated.text
    assert evaluated.json()["member_count"] == 1000

    cid = await campaign(m, await email_template(m), segment_id)
    assert (await m.post(f"/campaigns/{cid}/schedule", json={})).status_code == 200
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=1))
    done = await Scheduler(stack.pool, jobs_for(stack.ctx), clock).tick()
    assert done["campaigns.start"] == 1 and done["messages.deliver"] == 600
    assert done["campaigns.complete"] == 1

    mails = stack.catcher.store.list(limit=5000)
    recipients = [x.rcpt_tos[0] for x in mails]
    assert len(recipients) == 600 and set(recipients) == consenting

    # 150 recipients open; 60 click the first link (20 of them without loading images)
    bodies = {x.rcpt_tos[0]: stack.catcher.store.get(x.id).html or "" for x in mails}
    ordered = sorted(bodies)
    for address in ordered[:150]:
        click, _help, _unsubscribe, pixel = tracking_paths(bodies[address])
        assert (await stack.client.get(pixel)).status_code == 200
    for address in ordered[110:170]:
        click = tracking_paths(bodies[address])[0]
        r = await stack.client.get(click)
        assert (
            r.status_code == 302
            and r.headers["location"] == "https://shop.example/phones?utm=spring"
        )

    results = (await m.get(f"/campaigns/{cid}/results")).json()
    assert results["status"] == "sent" and results["recipients"] == 1000
    assert results["sent"] == 600 and results["bounced"] == 0
    assert results["skipped"] == {"no_consent": 300, "consent_withdrawn": 100}
    assert results["opened"] == 170 and results["clicked"] == 60
    assert results["open_rate"] == round(170 / 600, 4)
    assert results["click_rate"] == 0.1 and results["click_to_open_rate"] == round(60 / 170, 4)
    assert results["by_status"] == {"skipped": 400, "sent": 430, "opened": 110, "clicked": 60}
