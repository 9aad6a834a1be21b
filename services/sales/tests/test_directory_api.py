"""Contacts and accounts over the API on real PostgreSQL: duplicates, patch, as_of, merge, undo."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from crm_runtime.testing import ApiCaller as Caller

pytestmark = pytest.mark.integration

ADA = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "emails": ["Ada@Example.com"],
    "phones": ["+44 20 7946 0000"],
    "title": "CTO",
    "tags": ["vip"],
    "social_profiles": ["https://www.linkedin.com/in/ada"],
    "address": {"city": "London", "country": "GB"},
}


async def define_fields(caller: Caller) -> None:
    for key, body in {
        "newsletter": {"label": "Newsletter", "type": "boolean"},
        "employees": {"label": "Employees", "type": "integer"},
        "score": {"label": "Score", "type": "number"},
        "plan": {"label": "Plan", "type": "choice", "choices": ["free", "gold"]},
    }.items():
        r = await caller.put(f"/custom-fields/contact/{key}", json=body)
        assert r.status_code == 200, r.text


async def test_create_read_patch_and_read_as_of(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice", team="emea")
    await define_fields(as_user("sales_manager", user="meg"))
    custom = {"newsletter": True, "employees": 12, "score": 4.5, "plan": "gold"}
    created = await alice.post("/contacts", json={**ADA, "custom_fields": custom})
    assert created.status_code == 201, created.text
    c = created.json()
    assert c["emails"] == ["ada@example.com"]  # normalised
    assert c["custom_fields"] == {"newsletter": True, "employees": 12, "score": 4.5, "plan": "gold"}
    assert c["owner_id"] == "alice" and c["team_id"] == "emea"
    assert created.headers["ETag"] == '"1"'
    before = datetime.now(UTC)
    await asyncio.sleep(0.01)
    patched = await alice.patch(
        f"/contacts/{c['id']}", json={"title": "CEO", "phones": None}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "CEO" and patched.json()["phones"] is None
    assert patched.json()["first_name"] == "Ada"  # untouched
    old = await alice.get(f"/contacts/{c['id']}", params={"as_of": before.isoformat()})
    assert old.json()["title"] == "CTO" and old.json()["version"] == 1
    stale = await alice.patch(
        f"/contacts/{c['id']}", json={"title": "CFO"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    hist = (await alice.get(f"/contacts/{c['id']}/history")).json()
    assert [h["type"] for h in hist] == ["crm.sales.contact.created", "crm.sales.contact.updated"]
    assert hist[1]["data"]["changed"] == ["phones", "title"]
    same = await alice.patch(f"/contacts/{c['id']}", json={"title": "CEO"})
    assert same.json()["version"] == 2  # nothing changed, nothing recorded


async def test_duplicate_contact_is_a_409_naming_the_existing_one(
    as_user: Callable[..., Caller],
) -> None:
    alice = as_user("sales_rep", user="alice")
    first = (await alice.post("/contacts", json=ADA)).json()
    dup = await alice.post(
        "/contacts", json={"last_name": "Byron", "emails": ["  ADA@example.COM "]}
    )
    assert dup.status_code == 409
    assert dup.headers["content-type"].startswith("application/problem+json")
    assert dup.json()["existing_id"] == first["id"]
    assert dup.json()["existing"] == f"/contacts/{first['id']}"
    listed = (await alice.get("/contacts")).json()["items"]
    assert [i["id"] for i in listed] == [first["id"]]  # nothing else was stored
    other = (
        await alice.post("/contacts", json={"last_name": "Byron", "emails": ["b@x.org"]})
    ).json()
    clash = await alice.patch(f"/contacts/{other['id']}", json={"emails": ["ada@example.com"]})
    assert clash.status_code == 409 and clash.json()["existing_id"] == first["id"]
    assert (await alice.get(f"/contacts/{other['id']}")).json()["emails"] == ["b@x.org"]


async def test_custom_fields_are_typed(as_user: Callable[..., Caller]) -> None:
    meg = as_user("sales_manager", user="meg")
    await define_fields(meg)
    listed = (await meg.get("/custom-fields/contact")).json()
    assert [f["key"] for f in listed["fields"]] == ["employees", "newsletter", "plan", "score"]
    cases = [
        ({"employees": "12"}, "custom_fields.employees", "Employees must be a integer"),
        ({"employees": True}, "custom_fields.employees", "Employees must be a integer"),
        ({"newsletter": 1}, "custom_fields.newsletter", "Newsletter must be a boolean"),
        ({"plan": "platinum"}, "custom_fields.plan", "must be one of ['free', 'gold']"),
        ({"colour": "red"}, "custom_fields.colour", "PUT /custom-fields/contact/colour"),
    ]
    for values, field, reason in cases:
        r = await meg.post("/contacts", json={"last_name": "X", "custom_fields": values})
        assert r.status_code == 422, values
        assert r.json()["errors"][0]["field"] == field
        assert reason in r.json()["errors"][0]["reason"]
    assert (await meg.get("/contacts")).json()["items"] == []
    ok = await meg.post(
        "/contacts", json={"last_name": "X", "custom_fields": {"score": 3, "plan": "gold"}}
    )
    assert ok.status_code == 201 and ok.json()["custom_fields"] == {"score": 3, "plan": "gold"}
    bad_def = await meg.put("/custom-fields/contact/tier", json={"label": "Tier", "type": "choice"})
    assert bad_def.status_code == 409 and "choices" in bad_def.json()["detail"]
    assert (
        await meg.put("/custom-fields/contact/Bad-Key", json={"label": "x", "type": "text"})
    ).status_code == 422
    rep = as_user("sales_rep", user="alice")
    assert (
        await rep.put("/custom-fields/contact/x", json={"label": "x", "type": "text"})
    ).status_code == 403
    patch = await meg.patch(
        f"/contacts/{ok.json()['id']}", json={"custom_fields": {"plan": "nope"}}
    )
    assert patch.status_code == 422
    removed = await meg.request("DELETE", "/custom-fields/contact/plan")
    assert removed.status_code == 200 and "plan" not in [f["key"] for f in removed.json()["fields"]]
    again = await meg.post("/contacts", json={"last_name": "Y", "custom_fields": {"plan": "gold"}})
    assert again.status_code == 422


async def test_bad_input_names_the_field(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice")
    r = await alice.post(
        "/contacts",
        json={"last_name": "X", "emails": ["not-an-email"], "custom_fields": {"Bad Key": 1}},
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert "emails.0" in fields and any(f.startswith("custom_fields") for f in fields)
    r = await alice.post("/contacts", json={"first_name": "no last name"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "last_name"
    c = (await alice.post("/contacts", json={"last_name": "Y"})).json()
    r = await alice.patch(f"/contacts/{c['id']}", json={"last_name": None})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "last_name"
    assert (await alice.get("/contacts/nope")).status_code == 404


async def test_blank_names_are_a_422_and_names_are_stored_trimmed(
    as_user: Callable[..., Caller],
) -> None:
    alice = as_user("sales_rep", user="alice")
    for url, body, field in (
        ("/contacts", {"last_name": "   "}, "last_name"),
        ("/contacts", {"last_name": "X", "first_name": "\t"}, "first_name"),
        ("/contacts", {"last_name": "X", "title": " "}, "title"),
        ("/contacts", {"last_name": "X", "tags": ["vip", "  "]}, "tags.1"),
        ("/accounts", {"name": " \n "}, "name"),
        ("/accounts", {"name": ""}, "name"),
    ):
        r = await alice.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field], body
        assert "whitespace" in r.json()["errors"][0]["reason"]
    assert (await alice.get("/contacts")).json()["items"] == []
    assert (await alice.get("/accounts")).json()["items"] == []

    c = await alice.post("/contacts", json={"first_name": " Ada", "last_name": "Lovelace  "})
    assert (c.json()["first_name"], c.json()["last_name"]) == ("Ada", "Lovelace"), c.text
    a = (await alice.post("/accounts", json={"name": "  Engines Ltd "})).json()
    assert a["name"] == "Engines Ltd"
    assert [i["name"] for i in (await alice.get("/accounts")).json()["items"]] == ["Engines Ltd"]

    for url, field in (
        (f"/contacts/{c.json()['id']}", "last_name"),
        (f"/accounts/{a['id']}", "name"),
    ):
        r = await alice.patch(url, json={field: "   "})
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field]
        assert (await alice.get(url)).json()["version"] == 1  # nothing changed
        renamed = await alice.patch(url, json={field: " Byron "})
        assert renamed.status_code == 200 and renamed.json()[field] == "Byron"

    meg = as_user("sales_manager", user="meg")
    for body, field in (
        ({"label": "  ", "type": "text"}, "label"),
        ({"label": "Plan", "type": "choice", "choices": ["free", " "]}, "choices.1"),
    ):
        r = await meg.put("/custom-fields/contact/plan", json=body)
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field]
    assert (await meg.get("/custom-fields/contact")).json()["fields"] == []


async def test_accounts_are_unique_by_domain(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice")
    a = await alice.post(
        "/accounts",
        json={"name": "Example Ltd", "domain": "https://www.Example.com/about", "tier": "top"},
    )
    assert a.status_code == 201, a.text
    assert a.json()["domain"] == "example.com" and a.json()["tier"] == "top"
    dup = await alice.post("/accounts", json={"name": "Example Again", "domain": "example.com"})
    assert dup.status_code == 409 and dup.json()["existing_id"] == a.json()["id"]
    plain = await alice.post("/accounts", json={"name": "No Domain"})
    assert plain.json()["tier"] == "standard"
    listed = (await alice.get("/accounts", params={"tier": "top"})).json()["items"]
    assert [i["id"] for i in listed] == [a.json()["id"]]


async def test_merge_keeps_both_histories_and_undo_restores_both(
    as_user: Callable[..., Caller],
) -> None:
    alice = as_user("sales_rep", user="alice")
    keep = (
        await alice.post(
            "/contacts", json={"last_name": "Lovelace", "emails": ["ada@a.org"], "tags": ["vip"]}
        )
    ).json()
    gone = (
        await alice.post(
            "/contacts",
            json={
                "first_name": "Augusta Ada",
                "last_name": "King",
                "emails": ["ada@b.org"],
                "title": "Countess",
                "tags": ["vip", "poet"],
            },
        )
    ).json()
    merged = await alice.post(f"/contacts/{keep['id']}/merge", json={"merged_id": gone["id"]})
    assert merged.status_code == 200, merged.text
    merge_id = merged.json()["merge_id"]
    survivor = merged.json()["survivor"]
    assert survivor["emails"] == ["ada@a.org", "ada@b.org"]
    assert survivor["title"] == "Countess" and survivor["first_name"] == "Augusta Ada"
    assert survivor["last_name"] == "Lovelace"  # it had one; it keeps its own
    assert survivor["tags"] == ["vip", "poet"]
    assert survivor["active_merges"] == [merge_id]
    away = (await alice.get(f"/contacts/{gone['id']}")).json()
    assert away["merged_into"] == keep["id"]
    refused = await alice.patch(f"/contacts/{gone['id']}", json={"title": "x"})
    assert refused.status_code == 409 and refused.json()["survivor_id"] == keep["id"]
    # a new contact with the merged one's e-mail is a duplicate of the survivor
    dup = await alice.post("/contacts", json={"last_name": "K", "emails": ["ada@b.org"]})
    assert dup.status_code == 409 and dup.json()["existing_id"] == keep["id"]
    assert [i["id"] for i in (await alice.get("/contacts")).json()["items"]] == [keep["id"]]
    # something happens on the survivor after the merge, then the merge is undone
    await alice.patch(f"/contacts/{keep['id']}", json={"region": "EMEA"})
    undone = await alice.post(f"/contacts/{keep['id']}/merges/{merge_id}/undo")
    assert undone.status_code == 200, undone.text
    s, r = undone.json()["survivor"], undone.json()["restored"]
    assert s["emails"] == ["ada@a.org"] and s["title"] is None and s["first_name"] is None
    assert s["tags"] == ["vip"] and s["region"] == "EMEA"  # what happened since stays
    assert r["merged_into"] is None and r["emails"] == ["ada@b.org"] and r["title"] == "Countess"
    again = await alice.post(f"/contacts/{keep['id']}/merges/{merge_id}/undo")
    assert again.status_code == 409
    dup = await alice.post("/contacts", json={"last_name": "K", "emails": ["ada@b.org"]})
    assert dup.json()["existing_id"] == gone["id"]
    types = [h["type"] for h in (await alice.get(f"/contacts/{gone['id']}/history")).json()]
    assert types == [
        "crm.sales.contact.created",
        "crm.sales.contact.merged_into",
        "crm.sales.contact.merge_undone",
    ]
    assert (
        await alice.post(f"/contacts/{keep['id']}/merge", json={"merged_id": keep["id"]})
    ).status_code == 409


async def test_account_merge_and_undo(as_user: Callable[..., Caller]) -> None:
    boss = as_user("sales_manager", user="meg", team="emea")
    a = (await boss.post("/accounts", json={"name": "Example", "domain": "example.com"})).json()
    b = (
        await boss.post(
            "/accounts", json={"name": "Example GmbH", "domain": "example.de", "industry": "Retail"}
        )
    ).json()
    m = await boss.post(f"/accounts/{a['id']}/merge", json={"merged_id": b["id"]})
    assert m.status_code == 200 and m.json()["survivor"]["industry"] == "Retail"
    dup = await boss.post("/accounts", json={"name": "x", "domain": "example.de"})
    assert dup.json()["existing_id"] == a["id"]
    u = await boss.post(f"/accounts/{a['id']}/merges/{m.json()['merge_id']}/undo")
    assert u.json()["survivor"]["industry"] is None and u.json()["restored"]["merged_into"] is None


async def test_who_reads_and_changes_contacts(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice", team="emea")
    bob = as_user("sales_rep", user="bob", team="emea")
    carol = as_user("sales_rep", user="carol", team="apac")
    meg = as_user("sales_manager", user="meg", team="emea")
    mark = as_user("marketer", user="mark")
    agent = as_user("service_agent", user="sam")
    c = (await alice.post("/contacts", json={"last_name": "Owned"})).json()
    url = f"/contacts/{c['id']}"
    assert (await bob.get(url)).status_code == 200  # same team reads
    assert (await bob.patch(url, json={"title": "x"})).status_code == 403  # but doesn't change
    assert (await carol.get(url)).status_code == 403
    assert (await meg.patch(url, json={"title": "by manager"})).status_code == 200
    for reader in (mark, agent):
        assert (await reader.get(url)).status_code == 200
        assert (await reader.patch(url, json={"title": "x"})).status_code == 403
        assert (await reader.post("/contacts", json={"last_name": "x"})).status_code == 403
    assert [i["id"] for i in (await carol.get("/contacts")).json()["items"]] == []
    assert [i["id"] for i in (await mark.get("/contacts")).json()["items"]] == [c["id"]]
    assert (
        await alice.post("/contacts", json={"last_name": "x", "owner_id": "bob"})
    ).status_code == 403


async def test_email_and_phone_shorthands_on_contacts(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice")
    r = await alice.post(
        "/contacts",
        json={"last_name": "L", "email": "A@X.org", "phone": "+1 555 0100", "emails": ["b@x.org"]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["emails"] == ["a@x.org", "b@x.org"] and r.json()["phones"] == ["+1 555 0100"]


async def test_merge_chains_and_big_merges(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice")

    async def make(name: str, emails: list[str]) -> dict[str, Any]:
        r = await alice.post("/contacts", json={"last_name": name, "emails": emails})
        assert r.status_code == 201, r.text
        return dict(r.json())

    a = await make("A", ["a@x.org"])
    b = await make("B", ["b@x.org"])
    c = await make("C", ["c@x.org"])
    m1 = (await alice.post(f"/contacts/{a['id']}/merge", json={"merged_id": b["id"]})).json()
    await alice.post(f"/contacts/{c['id']}/merge", json={"merged_id": a["id"]})
    # A was merged into C since: undoing A's own merge first would leave b@ on C and on B
    inner = await alice.post(f"/contacts/{a['id']}/merges/{m1['merge_id']}/undo")
    assert inner.status_code == 409 and inner.json()["survivor_id"] == c["id"]
    assert (await alice.patch(f"/contacts/{c['id']}", json={"title": "CEO"})).status_code == 200
    # a merge may hold more than one request may send (6 + 6 e-mails)
    x = await make("X", [f"x{i}@x.org" for i in range(6)])
    y = await make("Y", [f"y{i}@x.org" for i in range(6)])
    big = await alice.post(f"/contacts/{x['id']}/merge", json={"merged_id": y["id"]})
    assert big.status_code == 200, big.text
    assert len(big.json()["survivor"]["emails"]) == 12
    assert (await alice.get(f"/contacts/{x['id']}")).status_code == 200


async def test_an_address_the_survivor_dropped_is_free_again(
    as_user: Callable[..., Caller],
) -> None:
    alice = as_user("sales_rep", user="alice")
    a = (await alice.post("/contacts", json={"last_name": "A", "emails": ["a@x.org"]})).json()
    b = (await alice.post("/contacts", json={"last_name": "B", "emails": ["b@x.org"]})).json()
    await alice.post(f"/contacts/{a['id']}/merge", json={"merged_id": b["id"]})
    held = await alice.post("/contacts", json={"last_name": "D", "emails": ["b@x.org"]})
    assert held.status_code == 409 and held.json()["existing_id"] == a["id"]
    await alice.patch(f"/contacts/{a['id']}", json={"emails": ["a@x.org"]})
    free = await alice.post("/contacts", json={"last_name": "D", "emails": ["b@x.org"]})
    assert free.status_code == 201, free.text


async def test_q_finds_contacts_by_name_email_or_phone_and_accounts_by_domain(
    as_user: Callable[..., Caller],
) -> None:
    meg = as_user("sales_manager", user="meg")
    for first, last, email, phone in (
        ("Ada", "Lovelace", "ada@engines.example", "+44 20 7946 0001"),
        ("Grace", "Hopper", "grace@navy.example", "+1 202 555 0199"),
        ("Percy", "Cent", "percy@x.example", None),
    ):
        body: dict[str, Any] = {"first_name": first, "last_name": last, "emails": [email]}
        if phone:
            body["phones"] = [phone]
        assert (await meg.post("/contacts", json=body)).status_code == 201
    for name, domain in (("Analytical Engines", "engines.example"), ("Navy", "navy.mil")):
        assert (
            await meg.post("/accounts", json={"name": name, "domain": domain})
        ).status_code == 201

    async def found(path: str, q: str) -> list[str]:
        r = await meg.get(path, params={"q": q})
        assert r.status_code == 200, r.text
        return sorted(i.get("display_name") or i["name"] for i in r.json()["items"])

    assert await found("/contacts", "hopper") == ["Grace Hopper"]  # the name, as before
    assert await found("/contacts", "NAVY.example") == ["Grace Hopper"]  # an e-mail address
    assert await found("/contacts", "7946") == ["Ada Lovelace"]  # a phone number
    assert await found("/contacts", "%") == []  # LIKE's wildcards are taken literally
    assert await found("/contacts", "_") == []
    assert await found("/accounts", "navy.mil") == ["Navy"]  # the domain
    assert await found("/accounts", "engines") == ["Analytical Engines"]
