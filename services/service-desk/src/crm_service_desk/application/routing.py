"""Routing of tickets to queues and agents; agent, queue and rule commands.

The interface SD-A's ticket handlers call (inside their transaction)::

    decision = await route(conn, store, ticket_id=..., kind=..., priority=..., product=...,
                           language=..., region=..., metadata=..., now=...)
    decision = await reassign(conn, store, ticket_id=..., agent_id=..., by=..., metadata=...)
    n = await open_work(conn, agent_id)

``route`` records ``crm.service.routing.ticket_routed`` on ``routing-<ticket id>`` (with the rule
that chose the queue) and returns the decision; ``None`` when routing is not configured (no rule
matches and there is no default queue) — nothing is recorded then. The caller applies
``queue_id``/``agent_id`` to its ticket. Decisions in one queue are serialised (a transaction
advisory lock per queue) so that concurrent tickets see each other's open work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

from crm_events.schemas.service import TicketKind
from crm_events.schemas.service_routing import RoutingRule, TicketRouted
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_service_desk.adapters import routing_view
from crm_service_desk.domain.agent import Agent
from crm_service_desk.domain.routing import (
    RULES_ID,
    Queue,
    RoutingRules,
    TicketFacts,
    TicketRouting,
    choose_agent,
    choose_queue,
    needed_skills,
)

TICKET_KINDS: tuple[str, ...] = get_args(TicketKind)
# a language tag as tickets and agent profiles take it (en, pt-br)
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class RoutingDecision:
    queue_id: str | None  # route always names one; reassign keeps the ticket's (may be none)
    agent_id: str | None
    rule_id: str | None  # None: the default queue (route) or a manual reassignment
    reason: str


def _now() -> datetime:
    return datetime.now(UTC)


async def open_work(conn: Conn, agent_id: str) -> int:
    """The agent's open tickets (not resolved, closed or merged)."""
    return (await routing_view.open_work_of(conn, [agent_id])).get(agent_id, 0)


async def current_rules(conn: Conn, store: EventStore) -> RoutingRules:
    try:
        return await Repository(store, RoutingRules).load(RULES_ID, conn=conn)
    except NotFound:
        return RoutingRules(RULES_ID)


async def _routing(conn: Conn, store: EventStore, ticket_id: str) -> TicketRouting:
    try:
        return await Repository(store, TicketRouting).load(ticket_id, conn=conn)
    except NotFound:
        return TicketRouting(ticket_id)


def _criteria(facts: TicketFacts) -> str:
    parts = [
        f"{k}={v}"
        for k, v in (
            ("kind", facts.kind),
            ("product", facts.product),
            ("language", facts.language),
            ("region", facts.region),
        )
        if v
    ]
    return ", ".join(parts) or "no criteria"


async def route(
    conn: Conn,
    store: EventStore,
    *,
    ticket_id: str,
    kind: str | None,
    priority: str | None,
    product: str | None,
    language: str | None,
    region: str | None,
    metadata: Metadata,
    now: datetime,
) -> RoutingDecision | None:
    rules = await current_rules(conn, store)
    facts = TicketFacts(kind=kind, product=product, language=language, region=region)
    usable = await routing_view.queue_ids(conn, active_only=True)
    choice = choose_queue(rules.rules, rules.default_queue_id, facts, usable)
    if choice is None:
        return None
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"route:{choice.queue_id}"
    )
    skills = needed_skills(choice.rule, product)
    agents = await routing_view.candidates(conn, choice.queue_id)
    work = await routing_view.open_work_of(conn, [a.agent_id for a in agents])
    chosen = choose_agent(agents, choice.queue_id, skills, language, work)

    why = (
        f"rule {choice.rule.rule_id} matched ({_criteria(facts)})"
        if choice.rule
        else f"no rule matched ({_criteria(facts)}): default queue"
    )
    needs = ", ".join(sorted(skills)) or "none"
    if chosen is None:
        why += (
            f"; no available agent in {choice.queue_id} with skills [{needs}]"
            + (f" and language {language}" if language else "")
            + ": waits in the queue"
        )
    else:
        why += (
            f"; {chosen.agent_id} has the least open work ({work.get(chosen.agent_id, 0)})"
            f" of the available agents with skills [{needs}]"
            + (f" and language {language}" if language else "")
        )
    decision = RoutingDecision(
        queue_id=choice.queue_id,
        agent_id=chosen.agent_id if chosen else None,
        rule_id=choice.rule.rule_id if choice.rule else None,
        reason=why,
    )
    routing = await _routing(conn, store, ticket_id)
    routing.routed(
        TicketRouted(
            ticket_id=ticket_id,
            queue_id=decision.queue_id,
            agent_id=decision.agent_id,
            rule_id=decision.rule_id,
            reason=why,
            open_work=work.get(chosen.agent_id, 0) if chosen else None,
            kind=kind,
            priority=priority,
            product=product,
            language=language,
            region=region,
        )
    )
    await Repository(store, TicketRouting).save(conn, routing, metadata)
    await routing_view.record_routing(
        conn,
        ticket_id=ticket_id,
        queue_id=decision.queue_id,
        agent_id=decision.agent_id,
        rule_id=decision.rule_id,
        reason=why,
        manual=False,
        now=now,
        version=routing.version,
    )
    return decision


async def reassign(
    conn: Conn,
    store: EventStore,
    *,
    ticket_id: str,
    agent_id: str,
    by: str,
    metadata: Metadata,
    field: str = "agent_id",
) -> RoutingDecision:
    """Check that ``agent_id`` may take the ticket and record the manual reassignment.

    InvalidInput (422, named ``field``: the caller's name for the agent) if the agent has no
    profile; Conflict (409) if the agent is inactive or unavailable. The ticket stays in its
    queue when the agent works that queue, else moves to the agent's first queue. Reassigning
    to the current agent records nothing and returns the current decision.
    """
    agent = await routing_view.agent_row(conn, agent_id)
    if agent is None:
        raise InvalidInput(field, f"{agent_id} has no agent profile in the service desk")
    if not agent["active"]:
        raise Conflict(f"agent {agent_id} is inactive and takes no tickets")
    if not agent["available"]:
        why = agent["unavailable_reason"]
        raise Conflict(f"agent {agent_id} is unavailable" + (f" ({why})" if why else ""))
    routing = await _routing(conn, store, ticket_id)
    queues: list[str] = agent["queues"]
    if routing.queue_id is not None and (routing.queue_id in queues or not queues):
        queue_id: str | None = routing.queue_id
    else:
        queue_id = queues[0] if queues else None
    if routing.agent_id == agent_id and routing.queue_id == queue_id:
        return RoutingDecision(queue_id, agent_id, routing.rule_id, "already assigned")
    reason = (
        f"reassigned by {by}"
        + (f" from {routing.agent_id}" if routing.agent_id else "")
        + (f"; moved to queue {queue_id}" if queue_id != routing.queue_id else "")
    )
    routing.reassign(agent_id=agent_id, queue_id=queue_id, by=by, reason=reason)
    await Repository(store, TicketRouting).save(conn, routing, metadata)
    await routing_view.record_routing(
        conn,
        ticket_id=ticket_id,
        queue_id=queue_id,
        agent_id=agent_id,
        rule_id=None,
        reason=reason,
        manual=True,
        now=_now(),
        version=routing.version,
    )
    return RoutingDecision(queue_id, agent_id, None, reason)


async def check_queue(conn: Conn, queue_id: str, field: str = "queue_id") -> None:
    """InvalidInput (422, named ``field``) unless the queue exists (active or not): what the
    agent and routing-rule commands check for the queues they name."""
    if queue_id not in await routing_view.queue_ids(conn):
        raise InvalidInput(field, f"queue {queue_id} does not exist")


# --- configuration commands -------------------------------------------------------------------


class AgentHandlers:
    def __init__(self, store: EventStore) -> None:
        self.agents = Repository(store, Agent)

    async def load_or_new(self, conn: Conn, agent_id: str) -> Agent:
        try:
            return await self.agents.load(agent_id, conn=conn)
        except NotFound:
            return Agent(agent_id)

    async def set_profile(
        self,
        conn: Conn,
        agent_id: str,
        meta: Metadata,
        *,
        email: str | None,
        display_name: str | None,
        skills: list[str],
        languages: list[str],
        queues: list[str],
        active: bool,
        expected: int | None,
    ) -> tuple[Agent, bool]:
        known = await routing_view.queue_ids(conn)
        for i, q in enumerate(queues):
            if q not in known:
                raise InvalidInput(f"queues.{i}", f"queue {q} does not exist")
        agent = await self.load_or_new(conn, agent_id)
        created = not agent.exists
        check_version(expected, agent.version)
        agent.set_profile(
            email=email,
            display_name=display_name,
            skills=skills,
            languages=languages,
            queues=queues,
            active=active,
        )
        if agent.pending:
            await self.agents.save(conn, agent, meta)
            await routing_view.upsert_agent(conn, agent, _now())
        return agent, created

    async def set_availability(
        self, conn: Conn, agent_id: str, available: bool, reason: str | None, meta: Metadata
    ) -> Agent:
        try:
            agent = await self.agents.load(agent_id, conn=conn)
        except NotFound:
            raise NotFound(f"agent {agent_id} has no profile") from None
        agent.set_availability(available, reason)
        if agent.pending:
            await self.agents.save(conn, agent, meta)
            await routing_view.upsert_agent(conn, agent, _now())
        return agent


class QueueHandlers:
    def __init__(self, store: EventStore) -> None:
        self.queues = Repository(store, Queue)

    async def set(
        self,
        conn: Conn,
        queue_id: str,
        meta: Metadata,
        *,
        name: str,
        description: str | None,
        active: bool,
        expected: int | None,
    ) -> tuple[Queue, bool]:
        try:
            queue = await self.queues.load(queue_id, conn=conn)
        except NotFound:
            queue = Queue(queue_id)
        created = not queue.exists
        check_version(expected, queue.version)
        queue.set(name=name, description=description, active=active)
        if queue.pending:
            await self.queues.save(conn, queue, meta)
            await routing_view.upsert_queue(conn, queue, _now())
        return queue, created


def check_rule(rule: RoutingRule, field: str) -> None:
    """InvalidInput (422, named ``<field>.kinds.<n>`` or ``<field>.languages.<n>``) for a
    criterion no ticket can have: a kind that is not a ticket kind (any case), a language that
    is not a language tag. Such a rule would never match."""
    for j, kind in enumerate(rule.kinds):
        if kind.strip() and kind.strip().lower() not in TICKET_KINDS:
            raise InvalidInput(
                f"{field}.kinds.{j}",
                f"{kind!r} is not a ticket kind; valid: {', '.join(TICKET_KINDS)}",
            )
    for j, language in enumerate(rule.languages):
        if language.strip() and not LANGUAGE_TAG.fullmatch(language.strip()):
            raise InvalidInput(
                f"{field}.languages.{j}",
                f"{language!r} is not a language tag like en or pt-br",
            )


async def set_rules(
    conn: Conn,
    store: EventStore,
    rules: list[RoutingRule],
    default_queue_id: str | None,
    meta: Metadata,
    expected: int | None,
) -> RoutingRules:
    for i, rule in enumerate(rules):
        check_rule(rule, f"rules.{i}")
    known = await routing_view.queue_ids(conn)
    for i, rule in enumerate(rules):
        if rule.queue_id not in known:
            raise InvalidInput(f"rules.{i}.queue_id", f"queue {rule.queue_id} does not exist")
    if default_queue_id is not None and default_queue_id not in known:
        raise InvalidInput("default_queue_id", f"queue {default_queue_id} does not exist")
    current = await current_rules(conn, store)
    check_version(expected, current.version)
    current.replace(rules, default_queue_id)
    if current.pending:
        await Repository(store, RoutingRules).save(conn, current, meta)
    return current
