"""Every keyset-paged list of the sales API: following ``next_cursor`` with a small ``limit``
gives each record exactly once, and the last page says there is no next one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crm_runtime.testing import ApiCaller as Caller

pytestmark = pytest.mark.integration

N = 5


async def all_pages(caller: Caller, path: str, limit: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(N + 2):
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = await caller.get(path, params=params)
        assert r.status_code == 200, (path, r.text)
        page = r.json()
        assert len(page["items"]) <= limit
        ids += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError(f"{path}: more pages than records")


async def test_every_list_pages_through_each_record_once(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice", team="emea")
    made: dict[str, list[str]] = {p: [] for p in ("contacts", "accounts", "deals", "tasks")}
    made["activities"], made["leads"] = [], []
    for i in range(N):
        c = (await alice.post("/contacts", json={"last_name": f"Buyer {i}"})).json()
        made["contacts"].append(c["id"])
        a = await alice.post("/accounts", json={"name": f"Firm {i}", "domain": f"f{i}.example"})
        made["accounts"].append(a.json()["id"])
        d = await alice.post(
            "/deals",
            json={"name": f"Deal {i}", "contact_id": c["id"], "currency": "EUR"},
        )
        made["deals"].append(d.json()["id"])
        t = await alice.post("/tasks", json={"title": f"Task {i}"})
        made["tasks"].append(t.json()["id"])
        act = await alice.post(
            "/activities",
            json={"kind": "note", "subject": f"Note {i}", "about": {"contact_id": c["id"]}},
        )
        made["activities"].append(act.json()["id"])
        lead = await alice.post("/leads", json={"name": f"Lead {i}", "company": "X"})
        made["leads"].append(lead.json()["id"])
    for path, ids in made.items():
        for limit in (1, 2, N):
            got = await all_pages(alice, f"/{path}", limit)
            assert sorted(got) == sorted(ids), (path, limit)  # each once, none missing
            assert got == ids[::-1], (path, limit)  # newest first
