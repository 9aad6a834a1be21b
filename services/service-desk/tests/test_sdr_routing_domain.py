"""Routing decisions: first matching rule, default queue, skills, language, least open work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events.schemas.service_routing import RoutingRule
from crm_service_desk.domain.agent import Agent
from crm_service_desk.domain.escalation import TicketFacts as EscFacts
from crm_service_desk.domain.escalation import waiting_since
from crm_service_desk.domain.routing import (
    Candidate,
    RoutingRules,
    TicketFacts,
    choose_agent,
    choose_queue,
    eligible,
    language_matches,
    needed_skills,
    normalise_rule,
)

RULES = [
    normalise_rule(r)
    for r in (
        RoutingRule(rule_id="returns", kinds=["product_return"], queue_id="returns"),
        RoutingRule(rule_id="webshop-de", products=["Webshop"], languages=["de"], queue_id="dach"),
        RoutingRule(rule_id="emea", regions=["EMEA"], queue_id="emea", skills=["tier2"]),
    )
]


def facts(**kw: str | None) -> TicketFacts:
    base: dict[str, str | None] = {"kind": "incident", "product": None, "language": None}
    base["region"] = None
    base.update(kw)
    return TicketFacts(**base)


def test_first_matching_rule_wins_then_default() -> None:
    c = choose_queue(RULES, "general", facts(kind="product_return", region="EMEA"))
    assert c is not None and c.queue_id == "returns"
    c = choose_queue(RULES, "general", facts(product="webshop", language="de-AT", region="EMEA"))
    assert c is not None and (c.queue_id, c.rule and c.rule.rule_id) == ("dach", "webshop-de")
    c = choose_queue(RULES, "general", facts(product="webshop", language="en", region="emea"))
    assert c is not None and c.queue_id == "emea"
    c = choose_queue(RULES, "general", facts(region="US"))
    assert c is not None and (c.queue_id, c.rule) == ("general", None)
    assert choose_queue(RULES, None, facts(region="US")) is None
    # a rule whose queue is inactive is skipped
    c = choose_queue(RULES, "general", facts(kind="product_return"), usable={"general", "emea"})
    assert c is not None and c.queue_id == "general"


def test_language_matching() -> None:
    assert language_matches("en-GB", "en") and language_matches("en", "en")
    assert not language_matches("en", "en-gb") and not language_matches("de", "en")
    assert language_matches(None, "fr")


def agent(ident: str, **kw: object) -> Candidate:
    base: dict[str, object] = {
        "agent_id": ident,
        "queues": ("emea",),
        "skills": ("tier2", "webshop"),
        "languages": ("en", "de"),
    }
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


def test_agent_needs_queue_skills_language_and_availability() -> None:
    skills = needed_skills(RULES[2], "Webshop")
    assert skills == {"tier2", "webshop"}
    assert eligible(agent("a"), "emea", skills, "de-CH")
    assert not eligible(agent("a", skills=("tier2",)), "emea", skills, None)
    assert not eligible(agent("a", languages=("fr",)), "emea", skills, "de")
    assert not eligible(agent("a", queues=("dach",)), "emea", skills, None)
    assert not eligible(agent("a", available=False), "emea", skills, None)
    assert not eligible(agent("a", active=False), "emea", skills, None)


def test_least_open_work_then_agent_id() -> None:
    pool = [agent("carl"), agent("bea"), agent("ann", available=False), agent("dan")]
    skills = frozenset({"webshop"})
    chosen = choose_agent(pool, "emea", skills, "en", {"bea": 2, "carl": 1, "dan": 1})
    assert chosen is not None and chosen.agent_id == "carl"  # dan ties on work; carl < dan
    assert choose_agent(pool, "emea", frozenset({"sap"}), "en", {}) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.integers(0, 5),
            st.booleans(),
            st.sets(st.sampled_from(["webshop", "billing", "tier2"])),
        ),
        max_size=8,
        unique_by=lambda x: x[0],
    ),
    st.permutations(range(8)),
)
def test_choice_is_eligible_least_loaded_and_independent_of_order(
    agents: list[tuple[str, int, bool, set[str]]], order: list[int]
) -> None:
    pool = [agent(a, available=av, skills=tuple(sk)) for a, _, av, sk in agents]
    work = {a: w for a, w, _, _ in agents}
    skills = frozenset({"webshop"})
    chosen = choose_agent(pool, "emea", skills, "en", work)
    shuffled = [pool[i] for i in order if i < len(pool)]
    again = choose_agent(shuffled, "emea", skills, "en", work)
    assert chosen == again  # deterministic, whatever the order
    fits = [p for p in pool if eligible(p, "emea", skills, "en")]
    if not fits:
        assert chosen is None
    else:
        assert chosen is not None and chosen in fits
        assert all(
            (work[chosen.agent_id], chosen.agent_id) <= (work[p.agent_id], p.agent_id) for p in fits
        )


def test_agent_profile_and_rules_record_only_changes() -> None:
    a = Agent("u-ana")
    a.set_profile(
        email="Ana@X.example",
        display_name="Ana",
        skills=["Webshop", "webshop "],
        languages=["DE"],
        queues=["emea"],
        active=True,
    )
    assert a.skills == ["webshop"] and a.languages == ["de"] and a.email == "ana@x.example"
    n = len(a.pending)
    a.set_profile(
        email="ana@x.example",
        display_name="Ana",
        skills=["webshop"],
        languages=["de"],
        queues=["emea"],
        active=True,
    )
    assert len(a.pending) == n  # nothing changed, nothing recorded
    a.set_availability(False, "holiday")
    a.set_availability(False, "holiday")
    assert len(a.pending) == n + 1 and not a.available
    rules = RoutingRules()
    rules.replace(RULES, "general")
    rules.replace(RULES, "general")
    assert len(rules.pending) == 1


def test_waiting_since_for_escalation() -> None:
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    base = {
        "ticket_id": "t",
        "status": "assigned",
        "priority": "high",
        "customer_tier": None,
        "created_at": t0,
        "last_customer_message_at": None,
        "last_agent_reply_at": None,
    }
    assert waiting_since(EscFacts(**base)) == t0  # type: ignore[arg-type]
    answered = {**base, "last_agent_reply_at": t0 + timedelta(hours=1)}
    assert waiting_since(EscFacts(**answered)) is None  # type: ignore[arg-type]
    asked_again = {**answered, "last_customer_message_at": t0 + timedelta(hours=2)}
    assert waiting_since(EscFacts(**asked_again)) == t0 + timedelta(hours=2)  # type: ignore[arg-type]
    closed = {**base, "status": "resolved"}
    assert waiting_since(EscFacts(**closed)) is None  # type: ignore[arg-type]
