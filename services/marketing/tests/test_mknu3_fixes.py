"""A new user's findings (marketing), third round: a multipart CSV upload (`curl -F
file=@members.csv`) was read boundary lines and all as customer ids, a POST to the mailed
confirmation URL itself said "link not valid", a preview that overrode first/last name kept the
old `full_name`, and a rule of the wrong type was reported as `rule.str` / `rule.dict[str,any]`."""

from __future__ import annotations

import re

import pytest
from mkb_support import Mkb, mkb  # noqa: F401
from mks_support import Mks, mks  # noqa: F401

from crm_marketing.audience import api as audience

pytestmark = pytest.mark.integration


# --- 1. CSV import: multipart uploads --------------------------------------------------------


async def _static(mks: Mks) -> tuple[str, list[str]]:  # noqa: F811
    ids = [await mks.profile(country="DE") for _ in range(3)]
    r = await mks.marketer.post("/segments", json={"name": "VIPs", "kind": "static"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), ids


async def _members(mks: Mks, sid: str) -> set[str]:  # noqa: F811
    rows = await mks.ctx.pool.fetch(
        "SELECT customer_id FROM segment_members WHERE segment_id = $1", sid
    )
    return {r["customer_id"] for r in rows}


async def test_a_multipart_file_upload_imports_the_file_part(mks: Mks) -> None:  # noqa: F811
    sid, ids = await _static(mks)
    csv_file = f"\ufeffcustomer_id\r\n{ids[0]}\r\n{ids[1]}\r\n".encode()
    # as curl -F file=@members.csv (and a browser form) sends it, with another field beside it
    r = await mks.marketer.post(
        f"/segments/{sid}/members/import",
        files={"file": ("members.csv", csv_file, "text/csv")},
        data={"note": "from the fair"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"entered": 2, "left": 0, "member_count": 2}
    assert await _members(mks, sid) == {ids[0], ids[1]}

    # any field name, LF line endings, no filename (curl -F 'list=<members.csv')
    body = (
        b"--xyz\nContent-Disposition: form-data; name=list\n\n" + ids[2].encode() + b"\n\n--xyz--\n"
    )
    r = await mks.marketer.post(
        f"/segments/{sid}/members/import",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"entered": 1, "left": 0, "member_count": 3}


async def test_bad_multipart_or_json_bodies_are_refused_and_change_nothing(mks: Mks) -> None:  # noqa: F811
    sid, ids = await _static(mks)
    url = f"/segments/{sid}/members/import"
    no_boundary = await mks.marketer.post(
        url, content=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    assert no_boundary.status_code == 422, no_boundary.text
    assert no_boundary.headers["content-type"] == "application/problem+json"
    assert no_boundary.json()["errors"][0]["field"] == "file"
    assert "boundary" in no_boundary.json()["errors"][0]["reason"]

    two_files = await mks.marketer.post(
        url,
        files=[
            ("a", ("a.csv", ids[0].encode(), "text/csv")),
            ("b", ("b.csv", ids[1].encode(), "text/csv")),
        ],
    )
    assert two_files.status_code == 422, two_files.text
    assert two_files.json()["errors"][0]["field"] == "file"
    assert "one CSV file" in two_files.json()["errors"][0]["reason"]

    unknown = await mks.marketer.post(url, files={"file": ("m.csv", b"nobody\n", "text/csv")})
    assert unknown.status_code == 422 and "nobody" in unknown.json()["errors"][0]["reason"]
    assert "--" not in unknown.json()["errors"][0]["reason"]  # no boundary read as an id

    as_json = await mks.marketer.post(url, json={"customer_ids": [ids[0]]})
    assert as_json.status_code == 415, as_json.text
    assert as_json.headers["content-type"] == "application/problem+json"
    assert "text/csv" in as_json.json()["detail"]
    assert await _members(mks, sid) == set()


# --- 2. the mailed confirmation URL answers a POST --------------------------------------------


async def test_a_post_to_the_mailed_confirmation_url_confirms(mkb: Mkb) -> None:  # noqa: F811
    key = await mkb.site()
    form_id = await mkb.form(key)
    await mkb.submit(key, form_id, {"email": "ada@example.com", "newsletter": True})
    cid = await mkb.ctx.pool.fetchval("SELECT customer_id FROM profiles")
    mail = mkb.catcher.store.get(mkb.catcher.store.list()[0].id)
    found = re.search(r"https://crm\.example\.com(/public/consent/confirm\?token=\S+)", mail.text)
    assert found, mail.text
    url = found.group(1)

    page = await mkb.client.get(url)  # opening it changes nothing
    assert page.status_code == 200 and "<form method=post" in page.text
    async with mkb.ctx.pool.acquire() as conn:
        assert await audience.contact_point(conn, cid, "email") is None

    # the same URL POSTed (a mail client's or scanner's POST, no body): confirmed
    confirmed = await mkb.client.post(url)
    assert confirmed.status_code == 200, confirmed.text
    assert "confirmed" in confirmed.text
    async with mkb.ctx.pool.acquire() as conn:
        assert await audience.contact_point(conn, cid, "email") == "ada@example.com"
    again = await mkb.client.post(url, data={"something": "else"})
    assert again.status_code == 200 and "confirmed" in again.text

    # a bad token in the query is refused like one in the body
    bad = await mkb.client.post("/public/consent/confirm?token=garbage")
    assert bad.status_code == 400 and "not valid" in bad.text


# --- 3. template preview: derived variables follow the overrides ------------------------------

FULL = {"subject": "Hello {{ full_name }}", "html": "<p>{{ full_name }}</p>"}


async def test_preview_overrides_of_names_change_the_full_name(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    r = await m.post("/templates", json={"name": "Full", "channel": "email", "content": FULL})
    assert r.status_code == 201, r.text
    url = f"/templates/{r.json()['id']}/preview"

    sample = await m.post(url, json={"variables": {"first_name": "Grace"}})
    assert sample.status_code == 200, sample.text
    assert sample.json()["subject"] == "Hello Grace Lovelace"
    assert sample.json()["variables"]["full_name"] == "Grace Lovelace"

    cid = await mks.profile(first_name="Ada", last_name="Byron")
    mine = await m.post(url, json={"customer_id": cid, "variables": {"last_name": "King"}})
    assert mine.json()["subject"] == "Hello Ada King"
    no_last = await m.post(url, json={"customer_id": cid, "variables": {"last_name": None}})
    assert no_last.json()["subject"] == "Hello Ada"
    both = await m.post(
        url,
        json={"customer_id": cid, "variables": {"last_name": "King", "full_name": "Lady Ada"}},
    )
    assert both.json()["subject"] == "Hello Lady Ada"  # an overridden full_name wins
    untouched = await m.post(url, json={"customer_id": cid, "variables": {"city": "Paris"}})
    assert untouched.json()["subject"] == "Hello Ada Byron"


# --- 4. a rule of the wrong type names the field `rule` ---------------------------------------


async def test_a_rule_of_the_wrong_type_names_the_field_rule(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    for method, url, body in (
        ("POST", "/segments", {"name": "Bad", "rule": 42}),
        ("POST", "/segments/preview", {"rule": ["country = DE"]}),
    ):
        r = await m.request(method, url, json=body)
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        assert [e["field"] for e in errors] == ["rule"], errors
        assert "text" in errors[0]["reason"] and "JSON object" in errors[0]["reason"]
    created = await m.post("/segments", json={"name": "DE", "rule": "country = DE"})
    assert created.status_code == 201, created.text
    patched = await m.patch(
        f"/segments/{created.json()['id']}", json={"rule": True}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 422, patched.text
    assert [e["field"] for e in patched.json()["errors"]] == ["rule"]
    rule = {"field": "country", "op": "in", "values": ["DE"]}
    as_json = await m.post("/segments/preview", json={"rule": rule})
    assert as_json.status_code == 200, as_json.text
    assert await mks.ctx.pool.fetchval("SELECT count(*) FROM segments") == 1
