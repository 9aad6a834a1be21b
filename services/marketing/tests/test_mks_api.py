"""Segments over HTTP on real PostgreSQL: rules, preview, members, static lists, export,
incremental membership (tailer), time windows (scheduler job), permissions."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

from mks_support import Mks, mks  # noqa: F401

from crm_marketing.segments import api
from crm_marketing.segments.membership import catch_up, refresh_segments, segment_jobs, tail_once
from crm_runtime.errors import Conflict, NotFound
from crm_runtime.eventstore import Metadata
from crm_runtime.scheduler import ManualClock, Scheduler

ISSUE_RULE = (
    'country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased'
)
ENTERED = "crm.marketing.segment.member_entered"
LEFT = "crm.marketing.segment.member_left"


def now() -> datetime:
    return datetime.now(UTC)


async def _people(mks: Mks) -> dict[str, str]:  # noqa: F811
    """Five customers; only 'hot' is a German phone shopper who has not bought."""
    t = now()
    ids = {
        "hot": await mks.profile(
            country="DE",
            first_name="Ada",
            last_name="Lovelace",
            email="ada@example.com",
            phone="+49 30 1234567",
        ),
        "bought": await mks.profile(country="AT", first_name="=cmd|' /C calc'!A0"),
        "cold": await mks.profile(country="DE"),
        "french": await mks.profile(country="FR"),
        "old": await mks.profile(country="de"),
    }
    for who in ("hot", "bought", "french"):
        for d in (1, 2, 3):
            await mks.activity(ids[who], "product_view", t - timedelta(days=d), category="phones")
    await mks.activity(ids["cold"], "product_view", t - timedelta(days=1), category="phones")
    for d in (10, 11, 12):
        await mks.activity(ids["old"], "product_view", t - timedelta(days=d), category="Phones")
    await mks.purchase(ids["bought"], t - timedelta(days=20))
    return ids


async def test_a_dynamic_segment_from_the_issue_rule(mks: Mks) -> None:  # noqa: F811
    ids = await _people(mks)
    m = mks.marketer
    preview = await m.post("/segments/preview", json={"rule": ISSUE_RULE, "sample": 5})
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 1 and preview.json()["sample"] == [ids["hot"]]
    assert preview.json()["has_window"] is True
    assert preview.json()["rule_text"] == (
        "country in [DE, AT] and product_view(category=phones) >= 3 within 7d and not purchased"
    )
    assert await mks.events(ENTERED) == []  # a preview saves nothing

    r = await m.post("/segments", json={"name": "DACH phone shoppers", "rule": ISSUE_RULE})
    assert r.status_code == 201, r.text
    seg = r.json()
    sid = seg["id"]
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == f"/segments/{sid}"
    assert seg["kind"] == "dynamic" and seg["member_count"] == 1
    assert seg["last_evaluation"] == {"entered": 1, "left": 0, "member_count": 1}
    assert seg["rule"]["and"][0] == {"field": "country", "op": "in", "values": ["DE", "AT"]}
    entered = await mks.events(ENTERED, sid)
    assert entered == [
        {"subject": ids["hot"], "segment_id": sid, "customer_id": ids["hot"], "reason": "rule"}
    ]
    assert await api.members(mks.ctx.pool, sid) == [ids["hot"]]  # type: ignore[arg-type]

    # evaluating again changes nothing and records nothing
    again = await m.post(f"/segments/{sid}/evaluate")
    assert again.json() == {"entered": 0, "left": 0, "member_count": 1}
    assert len(await mks.events(ENTERED, sid)) == 1

    # a wider rule (JSON form): entered events only for the newcomers
    wider = {
        "and": [
            {"field": "country", "op": "in", "values": ["DE", "AT", "FR"]},
            {"action": "product_view", "where": {"category": "phones"}, "op": ">=", "count": 3},
        ]
    }
    stale = await m.patch(f"/segments/{sid}", json={"rule": wider}, headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    changed = await m.patch(f"/segments/{sid}", json={"rule": wider}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert changed.json()["last_evaluation"] == {"entered": 3, "left": 0, "member_count": 4}
    assert changed.json()["rule_text"] == (
        "country in [DE, AT, FR] and product_view(category=phones) >= 3"
    )
    assert {e["customer_id"] for e in await mks.events(ENTERED, sid)} == {
        ids["hot"],
        ids["bought"],
        ids["french"],
        ids["old"],
    }
    # and back: the three leave, with left events
    back = await m.patch(f"/segments/{sid}", json={"rule": ISSUE_RULE})
    assert back.json()["last_evaluation"] == {"entered": 0, "left": 3, "member_count": 1}
    left = await mks.events(LEFT, sid)
    assert sorted(e["customer_id"] for e in left) == sorted(
        [ids["bought"], ids["french"], ids["old"]]
    )
    assert all(e["subject"] == e["customer_id"] and e["reason"] == "rule" for e in left)

    # read, as of a time, history
    got = await m.get(f"/segments/{sid}")
    assert got.status_code == 200 and got.headers["ETag"] == '"3"'
    assert got.json()["member_count"] == 1 and got.json()["has_window"] is True
    history = (await m.get(f"/segments/{sid}/history")).json()
    past = await m.get(f"/segments/{sid}", params={"as_of": history[0]["recorded_at"]})
    assert past.json()["version"] == 1 and past.json()["member_count"] is None
    assert past.json()["rule_text"].startswith("country in [DE, AT] and")
    assert [h["type"] for h in history] == [
        "crm.marketing.segment.created",
        "crm.marketing.segment.rule_changed",
        "crm.marketing.segment.rule_changed",
    ]
    assert history[0]["actor"] == "mia"


async def test_rule_errors_name_the_position_and_nothing_is_saved(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    r = await m.post(
        "/segments",
        json={"name": "Broken", "rule": "country in [DE, AT and\n  product_view(colour=red)"},
    )
    assert r.status_code == 422
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    err = problem["errors"][0]
    assert err["field"] == "rule"
    assert (err["offset"], err["line"], err["column"]) == (19, 1, 20)
    assert "expected ',' or ']'" in err["reason"] and "line 1, column 20" in problem["detail"]

    j = await m.post(
        "/segments",
        json={"name": "Broken", "rule": {"and": [{"consent": "email"}, {"field": "planet"}]}},
    )
    assert j.status_code == 422
    assert j.json()["errors"][0]["path"] == "rule.and[1].field"

    p = await m.post("/segments/preview", json={"rule": "purchased within 99999d"})
    assert p.status_code == 422 and p.json()["errors"][0]["column"] == 18

    assert (await m.post("/segments", json={"name": "No rule"})).status_code == 422
    static_rule = await m.post(
        "/segments", json={"name": "S", "kind": "static", "rule": "consent(email)"}
    )
    assert static_rule.status_code == 422
    listed = await m.get("/segments")
    assert listed.json()["items"] == []
    assert await mks.ctx.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_static_lists_members_import_and_export(mks: Mks) -> None:  # noqa: F811
    ids = await _people(mks)
    m = mks.marketer
    r = await m.post(
        "/segments", json={"name": "VIPs", "kind": "static"}, headers={"Idempotency-Key": "k1"}
    )
    assert r.status_code == 201 and r.json()["member_count"] == 0
    sid = r.json()["id"]
    replay = await m.post(
        "/segments", json={"name": "VIPs", "kind": "static"}, headers={"Idempotency-Key": "k1"}
    )
    assert replay.json()["id"] == sid and replay.headers["Idempotent-Replayed"] == "true"
    dup = await m.post("/segments", json={"name": "vips", "kind": "static"})
    assert dup.status_code == 409 and dup.json()["existing_id"] == sid

    unknown = await m.post(f"/segments/{sid}/members", json={"customer_ids": ["nobody"]})
    assert unknown.status_code == 422 and "nobody" in unknown.json()["errors"][0]["reason"]
    added = await m.post(
        f"/segments/{sid}/members", json={"customer_ids": [ids["hot"], ids["bought"]]}
    )
    assert added.json() == {"entered": 2, "left": 0, "member_count": 2}
    again = await m.post(f"/segments/{sid}/members", json={"customer_ids": [ids["hot"]]})
    assert again.json() == {"entered": 0, "left": 0, "member_count": 2}
    assert [e["reason"] for e in await mks.events(ENTERED, sid)] == ["added", "added"]

    body = f"customer_id\n{ids['cold']}\n{ids['french']}\n\n{ids['hot']}\n".encode()
    imported = await m.post(
        f"/segments/{sid}/members/import", content=body, headers={"Content-Type": "text/csv"}
    )
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"entered": 2, "left": 0, "member_count": 4}
    bad_csv = await m.post(f"/segments/{sid}/members/import", content=b"customer_id\n")
    assert bad_csv.status_code == 422
    # a file over the API's 4 MiB limit for JSON bodies still reaches the import (its own 5 MB)
    large = b"customer_id\n" + b"nobody-0000000\n" * 290_000
    assert 4 * 1024 * 1024 < len(large) < 5_000_000
    big = await m.post(f"/segments/{sid}/members/import", content=large)
    assert big.status_code == 422 and "nobody-0000000" in big.json()["errors"][0]["reason"]
    as_of = await m.get(f"/segments/{sid}", params={"as_of": "0001-01-01T00:00:00+14:00"})
    assert as_of.status_code == 422 and as_of.json()["errors"][0]["field"] == "as_of"

    removed = await m.request("DELETE", f"/segments/{sid}/members/{ids['cold']}")
    assert removed.status_code == 204
    out = await m.post(f"/segments/{sid}/members/remove", json={"customer_ids": [ids["french"]]})
    assert out.json() == {"entered": 0, "left": 1, "member_count": 2}
    assert [e["reason"] for e in await mks.events(LEFT, sid)] == ["removed", "removed"]

    # cursor pagination over members
    seen, cursor = [], None
    while True:
        page = (
            await m.get(
                f"/segments/{sid}/members",
                params={"limit": 1, "cursor": cursor} if cursor else {"limit": 1},
            )
        ).json()
        seen += [i["customer_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted([ids["hot"], ids["bought"]])

    # export: only what a marketer sees, formulas defused
    exported = await m.get(f"/segments/{sid}/export.csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["customer_id", "email", "first_name", "last_name", "country"]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id[ids["hot"]] == [ids["hot"], "ada@example.com", "Ada", "Lovelace", "DE"]
    assert by_id[ids["bought"]][2] == "'=cmd|' /C calc'!A0"
    assert "+49" not in exported.text  # no phone numbers

    # a dynamic segment's members follow its rule only
    dyn = (await m.post("/segments", json={"name": "D", "rule": "country = FR"})).json()["id"]
    refused = await m.post(f"/segments/{dyn}/members", json={"customer_ids": [ids["hot"]]})
    assert refused.status_code == 409
    assert (await m.post(f"/segments/{sid}/evaluate")).status_code == 409


async def test_archived_segments_are_neither_changed_nor_offered(mks: Mks) -> None:  # noqa: F811
    ids = await _people(mks)
    m = mks.marketer
    sid = (await m.post("/segments", json={"name": "FR", "rule": "country = FR"})).json()["id"]
    archived = await m.post(f"/segments/{sid}/archive", headers={"If-Match": '"1"'})
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert (await m.patch(f"/segments/{sid}", json={"name": "x"})).status_code == 409
    async with mks.ctx.pool.acquire() as conn:
        try:
            await api.members(conn, sid)
            raise AssertionError("archived segments have no members to offer")
        except Conflict:
            pass
        try:
            await api.members(conn, "nope")
            raise AssertionError("unknown segment")
        except NotFound:
            pass
    # the name is free again, and the archived one is no longer re-evaluated
    assert (
        await m.post("/segments", json={"name": "FR", "rule": "country = FR"})
    ).status_code == 201
    await mks.touch(ids["french"])
    await catch_up(mks.ctx.pool, mks.ctx.store)
    assert len(await mks.events(ENTERED, sid)) == 1
    listed = (await m.get("/segments", params={"status": "archived"})).json()["items"]
    assert [s["id"] for s in listed] == [sid]


async def test_the_tailer_reevaluates_the_customers_new_events_touch(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    t = now()
    ada = await mks.profile(country="DE")
    bob = await mks.profile(country="DE")
    sid = (
        await m.post(
            "/segments",
            json={
                "name": "Phones",
                "rule": "product_view(category=phones) >= 2 and consent(email)",
            },
        )
    ).json()["id"]
    await catch_up(mks.ctx.pool, mks.ctx.store)  # the segment's own events: nothing to do
    assert await mks.events(ENTERED, sid) == []

    await mks.activity(ada, "product_view", t, category="phones")
    await mks.activity(ada, "product_view", t, category="phones")
    await mks.consent(ada, "email", "granted", t)
    await mks.activity(bob, "product_view", t, category="phones")
    await mks.touch(ada, bob)
    assert await tail_once(mks.ctx.pool, mks.ctx.store) == 2
    assert [e["customer_id"] for e in await mks.events(ENTERED, sid)] == [ada]
    assert await tail_once(mks.ctx.pool, mks.ctx.store) == 1  # its own event: skipped
    assert await tail_once(mks.ctx.pool, mks.ctx.store) == 0

    # consent withdrawn -> left; a touch without a change -> nothing
    await mks.consent(ada, "email", "withdrawn", t)
    await mks.touch(ada, bob)
    await catch_up(mks.ctx.pool, mks.ctx.store)
    assert [e["customer_id"] for e in await mks.events(LEFT, sid)] == [ada]
    await mks.touch(ada, bob)
    await catch_up(mks.ctx.pool, mks.ctx.store)
    assert len(await mks.events(LEFT, sid)) == 1 and len(await mks.events(ENTERED, sid)) == 1
    seg = (await m.get(f"/segments/{sid}")).json()
    assert seg["member_count"] == 0


async def test_reevaluate_customers_emits_only_changes(mks: Mks) -> None:  # noqa: F811
    ada = await mks.profile(country="DE")
    m = mks.marketer
    de = (await m.post("/segments", json={"name": "DE", "rule": "country = de"})).json()["id"]
    at = (await m.post("/segments", json={"name": "AT", "rule": "country = AT"})).json()["id"]
    meta = Metadata(actor="test")
    async with mks.ctx.pool.acquire() as conn, conn.transaction():
        changes = await api.reevaluate_customers(
            conn, mks.ctx.store, [ada], now=now(), metadata=meta
        )
    assert changes == 0
    await mks.ctx.pool.execute("UPDATE profiles SET country = 'AT' WHERE customer_id = $1", ada)
    async with mks.ctx.pool.acquire() as conn, conn.transaction():
        changes = await api.reevaluate_customers(
            conn, mks.ctx.store, [ada, ada, "ghost"], now=now(), metadata=meta
        )
        assert await api.is_member(conn, at, ada) and not await api.is_member(conn, de, ada)
    assert changes == 2
    assert [e["customer_id"] for e in await mks.events(LEFT, de)] == [ada]
    assert [e["customer_id"] for e in await mks.events(ENTERED, at)] == [ada]


async def test_members_drop_out_as_time_windows_pass(mks: Mks) -> None:  # noqa: F811
    t = now()
    ada = await mks.profile(country="DE")
    for h in (1, 30, 60):
        await mks.activity(ada, "page_view", t - timedelta(hours=h), url="https://shop/x")
    m = mks.marketer
    windowed = (
        await m.post("/segments", json={"name": "Active", "rule": "page_view >= 2 within 3d"})
    ).json()
    forever = (await m.post("/segments", json={"name": "Ever", "rule": "page_view >= 2"})).json()
    assert windowed["member_count"] == 1 and forever["member_count"] == 1

    clock = ManualClock(t + timedelta(days=1))
    scheduler = Scheduler(mks.ctx.pool, segment_jobs(mks.ctx), clock)
    assert await scheduler.tick() == {"segments.refresh": 0}  # 2 views still within 3 days
    clock.advance(days=1)  # the views are now 49, 78 and 108 hours old: one within 3 days
    assert await scheduler.tick() == {"segments.refresh": 1}
    assert [e["customer_id"] for e in await mks.events(LEFT, windowed["id"])] == [ada]
    assert await mks.events(LEFT, forever["id"]) == []
    # the slow reconcile: a segment not evaluated for a while is evaluated fully
    await mks.ctx.pool.execute("DELETE FROM profiles")
    later = clock.now() + timedelta(minutes=1)
    assert await refresh_segments(mks.ctx.pool, mks.ctx.store, later, timedelta(0)) == 1
    assert [e["customer_id"] for e in await mks.events(LEFT, forever["id"])] == [ada]


async def test_concurrent_evaluations_of_one_segment_record_each_change_once(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    sid = (await m.post("/segments", json={"name": "FR", "rule": "country = FR"})).json()["id"]
    people = [await mks.profile(country="FR") for _ in range(30)]
    results = await asyncio.gather(*(m.post(f"/segments/{sid}/evaluate") for _ in range(6)))
    assert all(r.status_code == 200 for r in results)
    assert sum(r.json()["entered"] for r in results) == 30
    entered = await mks.events(ENTERED, sid)
    assert sorted(e["customer_id"] for e in entered) == sorted(people)
    versions = await mks.ctx.pool.fetch(
        "SELECT version FROM events WHERE stream_id = $1 ORDER BY version",
        f"segment_membership-{sid}",
    )
    assert [v["version"] for v in versions] == list(range(1, 31))


async def test_only_marketers_and_admins_touch_segments(mks: Mks) -> None:  # noqa: F811
    sid = (await mks.marketer.post("/segments", json={"name": "A", "rule": "consent(sms)"})).json()[
        "id"
    ]
    for role in ("sales_rep", "sales_manager", "service_agent", "service_manager", "analyst"):
        other = mks.caller(role)
        assert (await other.get("/segments")).status_code == 403
        assert (await other.get(f"/segments/{sid}")).status_code == 403
        assert (await other.get(f"/segments/{sid}/export.csv")).status_code == 403
        made = await other.post("/segments", json={"name": "B", "rule": "consent(sms)"})
        assert made.status_code == 403
    assert (await mks.admin.get(f"/segments/{sid}/members")).status_code == 200
    assert (await mks.client.get("/segments")).status_code == 401
