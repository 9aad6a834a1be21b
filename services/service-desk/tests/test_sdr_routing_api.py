"""Agents, queues, routing rules and routing decisions over the API, on real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sdr_support import Stack, insert_ticket

from crm_runtime.errors import Conflict, InvalidInput
from crm_runtime.eventstore import Metadata
from crm_runtime.testing import ApiCaller
from crm_service_desk.application import routing

pytestmark = pytest.mark.integration
META = Metadata(actor="test")


async def setup(meg: ApiCaller) -> None:
    for q in ("emea", "dach", "returns", "general"):
        r = await meg.put(f"/queues/{q}", json={"name": q.upper()})
        assert r.status_code == 201, r.text
    profiles = {
        "ana": {
            "skills": ["webshop", "billing"],
            "languages": ["en", "de"],
            "queues": ["dach", "emea"],
        },
        "ben": {"skills": ["webshop"], "languages": ["de"], "queues": ["dach"]},
        "cid": {"skills": ["billing"], "languages": ["en"], "queues": ["emea", "general"]},
        "dora": {"skills": [], "languages": ["en", "fr"], "queues": ["returns", "general"]},
    }
    for agent, body in profiles.items():
        r = await meg.put(f"/agents/{agent}", json={"email": f"{agent}@desk.example", **body})
        assert r.status_code == 201, r.text
    rules = {
        "rules": [
            {"rule_id": "returns", "kinds": ["product_return"], "queue_id": "returns"},
            {"rule_id": "dach", "languages": ["de"], "regions": ["DACH"], "queue_id": "dach"},
            {"rule_id": "emea", "regions": ["EMEA", "DACH"], "queue_id": "emea"},
        ],
        "default_queue_id": "general",
    }
    r = await meg.put("/routing-rules", json=rules, headers={"If-Match": '"0"'})
    assert r.status_code == 200, r.text


async def test_rules_name_only_known_ticket_kinds_and_language_tags(stack: Stack) -> None:
    """A rule for ``kinds: ["banana"]`` (or the language ``english``) never matches a ticket:
    422 naming the field and listing the valid values, and nothing changes."""
    meg = stack.user("service_manager", user="meg")
    await setup(meg)
    banana = await meg.put(
        "/routing-rules",
        json={
            "rules": [
                {"rule_id": "ok", "kinds": ["incident"], "queue_id": "emea"},
                {"rule_id": "fruit", "kinds": ["query", "banana"], "queue_id": "emea"},
            ]
        },
    )
    assert banana.status_code == 422, banana.text
    [error] = banana.json()["errors"]
    assert error["field"] == "rules.1.kinds.1"
    assert "banana" in error["reason"]
    for kind in ("service_request", "incident", "complaint", "feedback", "query", "product_return"):
        assert kind in error["reason"]
    english = await meg.put(
        "/routing-rules",
        json={"rules": [{"rule_id": "en", "languages": ["en", "english!"], "queue_id": "emea"}]},
    )
    assert english.status_code == 422
    assert english.json()["errors"][0]["field"] == "rules.0.languages.1"
    current = (await meg.get("/routing-rules")).json()
    assert current["version"] == 1 and [r["rule_id"] for r in current["rules"]] == [
        "returns",
        "dach",
        "emea",
    ]
    # known kinds in any case are taken (and normalised), as before
    fine = await meg.put(
        "/routing-rules",
        json={"rules": [{"rule_id": "inc", "kinds": [" Incident"], "queue_id": "emea"}]},
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["rules"][0]["kinds"] == ["incident"]


async def route(stack: Stack, ticket_id: str, **facts: Any) -> routing.RoutingDecision | None:
    base: dict[str, Any] = {
        "kind": "incident",
        "priority": "normal",
        "product": None,
        "language": None,
        "region": None,
    }
    base.update(facts)
    async with stack.ctx.pool.acquire() as conn, conn.transaction():
        decision = await routing.route(
            conn,
            stack.ctx.store,
            ticket_id=ticket_id,
            metadata=META,
            now=datetime.now(UTC),
            **base,
        )
        if decision is not None:  # what SD-A does with it: the ticket row carries the assignee
            await insert_ticket(
                conn,
                ticket_id,
                status="assigned" if decision.agent_id else "new",
                queue_id=decision.queue_id,
                assignee_id=decision.agent_id,
            )
        return decision


async def test_configuration_api_checks_roles_versions_and_input(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    agent = stack.user("service_agent", user="ana")
    analyst = stack.user("analyst", user="al")
    await setup(meg)

    # readers see the configuration; only managers change it
    assert (await analyst.get("/routing-rules")).json()["default_queue_id"] == "general"
    assert (await agent.put("/queues/x", json={"name": "X"})).status_code == 403
    assert (await agent.put("/agents/ana", json={"skills": ["all"]})).status_code == 403
    rules = (await meg.get("/routing-rules")).json()
    assert [r["rule_id"] for r in rules["rules"]] == ["returns", "dach", "emea"]
    assert rules["rules"][1]["regions"] == ["dach"]  # normalised
    stale = await meg.put(
        "/routing-rules",
        json={"rules": [], "default_queue_id": "general"},
        headers={"If-Match": '"0"'},
    )
    assert stale.status_code == 412

    # 422 names the field and the reason; nothing changes
    bad = await meg.put("/routing-rules", json={"rules": [{"rule_id": "Bad!", "queue_id": "emea"}]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "rules.0.rule_id"
    unknown = await meg.put(
        "/routing-rules", json={"rules": [{"rule_id": "x", "queue_id": "nowhere"}]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"field": "rules.0.queue_id", "reason": "queue nowhere does not exist"}
    ]
    assert (await meg.get("/routing-rules")).json()["version"] == 1
    dup = await meg.put(
        "/routing-rules",
        json={
            "rules": [{"rule_id": "x", "queue_id": "emea"}, {"rule_id": "x", "queue_id": "dach"}]
        },
    )
    assert dup.status_code == 409
    r = await meg.put("/agents/eve", json={"queues": ["nowhere"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "queues.0"
    r = await meg.put("/agents/eve", json={"languages": ["english!"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "languages.0"
    assert (await meg.put("/queues/Bad Id", json={"name": "x"})).status_code == 422

    # profiles: ETag versions, history and as_of
    got = await meg.get("/agents/ana")
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert got.json()["skills"] == ["billing", "webshop"] and got.json()["open_work"] == 0
    changed = await meg.put(
        "/agents/ana",
        json={"skills": ["webshop"], "languages": ["en"], "queues": ["emea"]},
        headers={"If-Match": '"1"'},
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2
    history = (await meg.get("/agents/ana/history")).json()
    assert [h["type"] for h in history] == ["crm.service.agent.profile_set"] * 2
    before = await meg.get("/agents/ana", params={"as_of": history[0]["recorded_at"]})
    assert before.json()["skills"] == ["billing", "webshop"]

    # availability: the agent itself or a manager
    away = await agent.post("/agents/ana/availability", json={"available": False, "reason": "ill"})
    assert away.status_code == 200 and away.json()["unavailable_reason"] == "ill"
    assert (
        await agent.post("/agents/ben/availability", json={"available": False})
    ).status_code == 403
    assert (
        await meg.post("/agents/zed/availability", json={"available": False})
    ).status_code == 404

    # lists: filters and cursor pagination
    page = (await analyst.get("/agents", params={"limit": 2})).json()
    assert [a["agent_id"] for a in page["items"]] == ["ana", "ben"] and page["next_cursor"]
    rest = (await analyst.get("/agents", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [a["agent_id"] for a in rest["items"]] == ["cid", "dora"] and rest["next_cursor"] is None
    avail = (await analyst.get("/agents", params={"available": "true", "queue_id": "emea"})).json()
    assert [a["agent_id"] for a in avail["items"]] == ["cid"]
    queues = (await analyst.get("/queues")).json()["items"]
    assert {q["queue_id"]: q["available_agents"] for q in queues} == {
        "dach": 1,
        "emea": 1,
        "general": 2,
        "returns": 1,
    }
    assert (await analyst.get("/agents", params={"cursor": "???"})).status_code == 422


async def test_routing_picks_the_queue_then_the_least_busy_fitting_agent(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    await setup(meg)

    # German webshop ticket from DACH: dach queue; ana and ben fit, tie on work -> ana
    d1 = await route(stack, "t1", product="webshop", language="de", region="DACH")
    assert d1 is not None and (d1.queue_id, d1.agent_id, d1.rule_id) == ("dach", "ana", "dach")
    # now ana has one open ticket: ben gets the next
    d2 = await route(stack, "t2", product="Webshop", language="de-AT", region="dach")
    assert d2 is not None and (d2.queue_id, d2.agent_id) == ("dach", "ben")
    assert routing.open_work.__name__ == "open_work"
    async with stack.ctx.pool.acquire() as conn:
        assert await routing.open_work(conn, "ana") == 1
        assert await routing.open_work(conn, "nobody") == 0
    # billing in English from EMEA: emea queue; ana (1 open) and cid (none) fit
    d3 = await route(stack, "t3", product="billing", language="en", region="EMEA")
    assert d3 is not None and (d3.queue_id, d3.agent_id, d3.rule_id) == ("emea", "cid", "emea")
    # a return: its rule wins over the region
    d4 = await route(stack, "t4", kind="product_return", language="fr", region="EMEA")
    assert d4 is not None and (d4.queue_id, d4.agent_id, d4.rule_id) == (
        "returns",
        "dora",
        "returns",
    )
    # nothing matches: the default queue, no rule
    d5 = await route(stack, "t5", language="en", region="APAC")
    assert d5 is not None and (d5.queue_id, d5.rule_id) == ("general", None)
    assert d5.agent_id == "cid" and "default queue" in d5.reason  # cid and dora tie at 1: by id
    # nobody fits (no agent speaks Japanese): the ticket waits in the queue
    d6 = await route(stack, "t6", language="ja", region="EMEA")
    assert d6 is not None and (d6.queue_id, d6.agent_id) == ("emea", None)
    assert "waits in the queue" in d6.reason
    # an unavailable agent gets nothing new
    await meg.post("/agents/cid/availability", json={"available": False})
    d7 = await route(stack, "t7", product="billing", language="en", region="EMEA")
    assert d7 is not None and d7.agent_id == "ana"

    # every decision is recorded with its rule
    reader = stack.user("service_agent", user="ben")
    rec = (await reader.get("/routing/tickets/t3")).json()
    assert (rec["queue_id"], rec["agent_id"], rec["rule_id"]) == ("emea", "cid", "emea")
    assert rec["decisions"][0]["type"] == "crm.service.routing.ticket_routed"
    assert rec["decisions"][0]["data"]["rule_id"] == "emea"
    assert rec["decisions"][0]["data"]["open_work"] == 0
    assert (await reader.get("/routing/tickets/nope")).status_code == 404

    # no rule matches and no default: routing returns None and records nothing
    await meg.put(
        "/routing-rules", json={"rules": [{"rule_id": "r", "kinds": ["query"], "queue_id": "emea"}]}
    )
    assert await route(stack, "t8", kind="incident") is None
    assert (await reader.get("/routing/tickets/t8")).status_code == 404


async def test_reassign_checks_the_agent_and_records_who_did_it(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    await setup(meg)
    d = await route(stack, "t1", product="billing", language="en", region="EMEA")
    assert d is not None and d.agent_id == "ana"

    async def reassign(agent_id: str) -> routing.RoutingDecision:
        async with stack.ctx.pool.acquire() as conn, conn.transaction():
            return await routing.reassign(
                conn, stack.ctx.store, ticket_id="t1", agent_id=agent_id, by="meg", metadata=META
            )

    with pytest.raises(InvalidInput) as unknown:
        await reassign("zed")
    assert unknown.value.extra["errors"] == [
        {"field": "agent_id", "reason": "zed has no agent profile in the service desk"}
    ]
    await meg.post("/agents/cid/availability", json={"available": False, "reason": "holiday"})
    with pytest.raises(Conflict, match="holiday"):
        await reassign("cid")
    moved = await reassign("dora")  # dora does not work emea: the ticket follows her queue
    assert (moved.queue_id, moved.agent_id, moved.rule_id) == ("general", "dora", None)
    same = await reassign("dora")
    assert same.reason == "already assigned"
    rec = (await meg.get("/routing/tickets/t1")).json()
    assert rec["manual"] is True and rec["agent_id"] == "dora"
    assert [x["type"] for x in rec["decisions"]] == [
        "crm.service.routing.ticket_routed",
        "crm.service.routing.ticket_reassigned",
    ]
    assert rec["decisions"][1]["data"]["by"] == "meg"
    assert rec["decisions"][1]["data"]["previous_agent_id"] == "ana"


async def test_concurrent_tickets_in_one_queue_are_spread_by_open_work(stack: Stack) -> None:
    meg = stack.user("service_manager", user="meg")
    await setup(meg)
    # default queue general: cid and dora speak English; eight tickets at once, four each
    decisions = await asyncio.gather(
        *(route(stack, f"c{i}", language="en", region="APAC") for i in range(8))
    )
    agents = [d.agent_id for d in decisions if d is not None]
    assert sorted(agents) == ["cid"] * 4 + ["dora"] * 4
