"""Segments kept up to date from the audience part's own events: anonymous browsing, then the
visitor identifies through a web form, and the segment tailer lets them enter."""

from __future__ import annotations

import pytest
from mkb_support import Mkb, mkb  # noqa: F401

from crm_marketing.segments.membership import catch_up

pytestmark = pytest.mark.integration

VISITOR = "v-5e9d0c1b2a3f"


async def test_browsing_then_identifying_enters_the_segment(mkb: Mkb) -> None:  # noqa: F811
    m = mkb.marketer
    created = await m.post(
        "/segments",
        json={
            "name": "German phone browsers",
            "rule": 'country = DE and product_view(category="phones") >= 2 within 7d',
        },
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    key = await mkb.site()
    form_id = await mkb.form(key)
    views = [
        {"type": "product_view", "product_id": f"p-{i}", "category": "phones"} for i in range(3)
    ]
    assert (await mkb.activity(key, VISITOR, views)).status_code == 202
    now = mkb.clock.now()
    await catch_up(mkb.ctx.pool, mkb.ctx.store, now=now)
    assert (await m.get(f"/segments/{sid}")).json()["member_count"] == 0  # still anonymous

    submitted = await mkb.submit(
        key, form_id, {"email": "jo@example.com", "country": "DE", "visitor_id": VISITOR}
    )
    assert submitted.status_code == 202, submitted.text
    await catch_up(mkb.ctx.pool, mkb.ctx.store, now=now)
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    entered = await mkb.events_of("crm.marketing.segment.member_entered")
    assert [(e["subject"], e["segment_id"], e["reason"]) for e in entered] == [(cid, sid, "rule")]
    members = (await m.get(f"/segments/{sid}/members")).json()["items"]
    assert [x["customer_id"] for x in members] == [cid]
