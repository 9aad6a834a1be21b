"""The role x endpoint matrix: who may read and change which sales records.

Records belong to alice (sales_rep, team emea). "allowed" means the answer is neither 401 nor
403 (a rule conflict such as a repeated stage move may still give 409); "denied" means 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crm_runtime.testing import ApiCaller as Caller

pytestmark = pytest.mark.integration

CALLERS: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "owner": (("sales_rep",), "alice", "emea"),
    "teammate": (("sales_rep",), "bob", "emea"),
    "other_rep": (("sales_rep",), "carol", "apac"),
    "manager": (("sales_manager",), "meg", "emea"),
    "other_manager": (("sales_manager",), "max", "apac"),
    "admin": (("admin",), "root", None),
    "marketer": (("marketer",), "mark", None),
    "service_agent": (("service_agent",), "sam", None),
    "analyst": (("analyst",), "ann", None),
    "service_manager": (("service_manager",), "sue", None),
}
EVERYONE = set(CALLERS)
SALES_TEAM = {"owner", "teammate", "manager", "admin"}
CHANGERS = {"owner", "manager", "admin"}
DIRECTORY_READERS = SALES_TEAM | {"marketer", "service_agent", "analyst"}

# (method, path, body, who is allowed)
MATRIX: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("GET", "/contacts/{contact}", None, DIRECTORY_READERS),
    ("GET", "/contacts/{contact}/history", None, DIRECTORY_READERS),
    ("GET", "/contacts", None, DIRECTORY_READERS | {"other_rep", "other_manager"}),
    ("PATCH", "/contacts/{contact}", {"title": "CTO"}, CHANGERS),
    ("POST", "/contacts", {"last_name": "New"}, SALES_TEAM | {"other_rep", "other_manager"}),
    ("GET", "/accounts/{account}", None, DIRECTORY_READERS),
    ("PATCH", "/accounts/{account}", {"industry": "Retail"}, CHANGERS),
    ("GET", "/deals/{deal}", None, SALES_TEAM),
    ("GET", "/deals", None, SALES_TEAM | {"other_rep", "other_manager"}),
    ("POST", "/deals/{deal}/stage", {"stage": "demo"}, CHANGERS),
    ("GET", "/leads/{lead}", None, SALES_TEAM),
    ("POST", "/leads/{lead}/qualify", {"score": 50}, CHANGERS),
    ("PUT", "/assignment-rules", {"rules": []}, {"manager", "other_manager", "admin"}),
    ("PUT", "/exchange-rates/USD", {"rate": "0.9"}, {"manager", "other_manager", "admin"}),
    ("GET", "/events", None, {"manager", "other_manager", "admin", "analyst"}),
    ("GET", "/tasks", None, SALES_TEAM | {"other_rep", "other_manager"}),
]


@pytest.fixture
async def records(as_user: Callable[..., Caller]) -> dict[str, str]:
    alice = as_user(*CALLERS["owner"][0], user="alice", team="emea")
    account = (await alice.post("/accounts", json={"name": "Engines"})).json()
    contact = (await alice.post("/contacts", json={"last_name": "Ada"})).json()
    deal = (
        await alice.post(
            "/deals", json={"name": "d", "contact_id": contact["id"], "currency": "EUR"}
        )
    ).json()
    lead = (await alice.post("/leads", json={"name": "Lead"})).json()
    return {
        "account": account["id"],
        "contact": contact["id"],
        "deal": deal["id"],
        "lead": lead["id"],
    }


async def test_role_endpoint_matrix(
    as_user: Callable[..., Caller], records: dict[str, str]
) -> None:
    wrong: list[str] = []
    for method, template, body, allowed in MATRIX:
        path = template.format(**records)
        for name, (roles, user, team) in CALLERS.items():
            caller = as_user(*roles, user=user, team=team)
            r = await caller.request(method, path, json=body)
            ok = r.status_code not in (401, 403)
            if ok != (name in allowed):
                wrong.append(f"{method} {template} as {name}: {r.status_code}")
            if not ok and r.status_code != 403:
                wrong.append(f"{method} {template} as {name}: {r.status_code}, expected 403")
        anonymous = await as_user().client.request(method, path, json=body)
        if anonymous.status_code != 401:
            wrong.append(f"{method} {template} without a token: {anonymous.status_code}")
    assert wrong == [], "\n".join(wrong)


async def test_lists_show_only_what_the_caller_may_read(
    as_user: Callable[..., Caller], records: dict[str, str]
) -> None:
    for name, (roles, user, team) in CALLERS.items():
        caller = as_user(*roles, user=user, team=team)
        r = await caller.get("/deals")
        if r.status_code == 403:
            continue
        ids = {i["id"] for i in r.json()["items"]}
        assert (records["deal"] in ids) == (name in SALES_TEAM), name
        contacts = await caller.get("/contacts")
        if contacts.status_code == 200:
            seen = {i["id"] for i in contacts.json()["items"]}
            assert (records["contact"] in seen) == (name in DIRECTORY_READERS), name


async def test_no_attaching_work_to_records_one_may_not_read(
    as_user: Callable[..., Caller], records: dict[str, str]
) -> None:
    carol = as_user("sales_rep", user="carol", team="apac")
    pat = as_user("sales_manager", user="pat", team="apac")
    meg = as_user("sales_manager", user="meg", team="emea")
    body = {"name": "x", "currency": "EUR", "contact_id": records["contact"]}
    assert (await carol.post("/deals", json=body)).status_code == 403
    body = {"name": "x", "currency": "EUR", "account_id": records["account"]}
    assert (await carol.post("/deals", json=body)).status_code == 403
    lead = (await carol.post("/leads", json={"name": "Carol's lead"})).json()
    onto = await carol.post(f"/leads/{lead['id']}/convert", json={"contact_id": records["contact"]})
    assert onto.status_code == 403
    for_bob = await carol.post(f"/leads/{lead['id']}/convert", json={"owner_id": "bob"})
    assert for_bob.status_code == 403
    # a team's unassigned lead is that team's managers' queue, not every manager's
    queued = (await meg.post("/leads", json={"name": "Emea queue", "email": "q@x.org"})).json()
    assert queued["owner_id"] is None and queued["team_id"] == "emea"
    assert (await pat.get(f"/leads/{queued['id']}")).status_code == 403
    assert queued["id"] not in {i["id"] for i in (await pat.get("/leads")).json()["items"]}
    assert queued["id"] in {i["id"] for i in (await meg.get("/leads")).json()["items"]}
