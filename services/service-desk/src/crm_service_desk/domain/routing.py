"""Queues, routing rules and the routing decision (pure: no I/O).

The rules are taken in order; the first whose criteria all match the ticket (kind, product,
language, region; an empty criterion matches anything) chooses the queue; if none matches, the
default queue. Inside the queue the ticket goes to an active, available agent of that queue who
has the needed skills (the ticket's product and the rule's extra skills) and speaks its language,
with the least open work; ties go to the smallest agent id. Nobody fits: the ticket waits in the
queue unassigned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from crm_events.schemas.service_routing import (
    QueueSet,
    RoutingRule,
    RoutingRulesSet,
    TicketReassigned,
    TicketRouted,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

RULES_ID = "global"


class Queue(Aggregate):
    stream_type = "queue"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.definition: QueueSet | None = None

    def set(self, *, name: str, description: str | None, active: bool) -> None:
        event = QueueSet(queue_id=self.id, name=name, description=description, active=active)
        if event != self.definition:
            self.record(event)

    @applies(QueueSet)
    def _set(self, e: QueueSet) -> None:
        self.definition = e


class RoutingRules(Aggregate):
    stream_type = "routing_rules"

    def __init__(self, aggregate_id: str = RULES_ID) -> None:
        super().__init__(aggregate_id)
        self.rules: list[RoutingRule] = []
        self.default_queue_id: str | None = None

    def replace(self, rules: list[RoutingRule], default_queue_id: str | None) -> None:
        ids = [r.rule_id for r in rules]
        if len(set(ids)) != len(ids):
            raise DomainError("rule ids must be unique")
        normal = [normalise_rule(r) for r in rules]
        if not self.exists or (normal, default_queue_id) != (self.rules, self.default_queue_id):
            self.record(RoutingRulesSet(rules=normal, default_queue_id=default_queue_id))

    @applies(RoutingRulesSet)
    def _set(self, e: RoutingRulesSet) -> None:
        self.rules = list(e.rules)
        self.default_queue_id = e.default_queue_id


class TicketRouting(Aggregate):
    """Every routing decision and manual reassignment of one ticket (``routing-<ticket id>``)."""

    stream_type = "routing"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.queue_id: str | None = None
        self.agent_id: str | None = None
        self.rule_id: str | None = None

    def routed(self, event: TicketRouted) -> None:
        self.record(event)

    def reassign(self, *, agent_id: str, queue_id: str | None, by: str, reason: str) -> None:
        self.record(
            TicketReassigned(
                ticket_id=self.id,
                queue_id=queue_id,
                agent_id=agent_id,
                previous_agent_id=self.agent_id,
                by=by,
                reason=reason,
            )
        )

    @applies(TicketRouted)
    def _routed(self, e: TicketRouted) -> None:
        self.queue_id, self.agent_id, self.rule_id = e.queue_id, e.agent_id, e.rule_id

    @applies(TicketReassigned)
    def _reassigned(self, e: TicketReassigned) -> None:
        self.queue_id, self.agent_id, self.rule_id = e.queue_id, e.agent_id, None


def _norm(value: str | None) -> str | None:
    value = value.strip().lower() if value else None
    return value or None


def _set_of(values: Sequence[str]) -> list[str]:
    return sorted({v for v in (_norm(x) for x in values) if v})


def normalise_rule(rule: RoutingRule) -> RoutingRule:
    return rule.model_copy(
        update={
            "kinds": _set_of(rule.kinds),
            "products": _set_of(rule.products),
            "languages": _set_of(rule.languages),
            "regions": _set_of(rule.regions),
            "skills": _set_of(rule.skills),
        }
    )


def language_matches(wanted: str | None, spoken: str) -> bool:
    """An agent speaking ``en`` serves ``en-gb``; one speaking ``en-gb`` serves ``en-gb`` only."""
    w = _norm(wanted)
    if w is None:
        return True
    s = spoken.lower()
    return w == s or w.split("-")[0] == s


@dataclass(frozen=True)
class TicketFacts:
    kind: str | None
    product: str | None
    language: str | None
    region: str | None


def rule_matches(rule: RoutingRule, t: TicketFacts) -> bool:
    if rule.kinds and _norm(t.kind) not in rule.kinds:
        return False
    if rule.products and _norm(t.product) not in rule.products:
        return False
    if rule.regions and _norm(t.region) not in rule.regions:
        return False
    return not rule.languages or (
        t.language is not None
        and any(language_matches(t.language, lang) for lang in rule.languages)
    )


@dataclass(frozen=True)
class QueueChoice:
    queue_id: str
    rule: RoutingRule | None  # None: the default queue


def choose_queue(
    rules: Sequence[RoutingRule],
    default_queue_id: str | None,
    t: TicketFacts,
    usable: Collection[str] | None = None,
) -> QueueChoice | None:
    """The first matching rule's queue, else the default; queues not ``usable`` are skipped."""

    def ok(queue_id: str | None) -> bool:
        return queue_id is not None and (usable is None or queue_id in usable)

    for rule in rules:
        if rule_matches(rule, t) and ok(rule.queue_id):
            return QueueChoice(rule.queue_id, rule)
    return (
        QueueChoice(default_queue_id, None) if default_queue_id and ok(default_queue_id) else None
    )


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    queues: tuple[str, ...]
    skills: tuple[str, ...]
    languages: tuple[str, ...]
    active: bool = True
    available: bool = True


def needed_skills(rule: RoutingRule | None, product: str | None) -> frozenset[str]:
    skills = set(rule.skills if rule else ())
    if _norm(product):
        skills.add(_norm(product) or "")
    return frozenset(skills)


def eligible(agent: Candidate, queue_id: str, skills: frozenset[str], language: str | None) -> bool:
    return (
        agent.active
        and agent.available
        and queue_id in agent.queues
        and skills <= set(agent.skills)
        and (language is None or any(language_matches(language, s) for s in agent.languages))
    )


def choose_agent(
    candidates: Sequence[Candidate],
    queue_id: str,
    skills: frozenset[str],
    language: str | None,
    open_work: Mapping[str, int],
) -> Candidate | None:
    """The eligible agent with the least open work; ties by agent id."""
    pool = [a for a in candidates if eligible(a, queue_id, skills, language)]
    if not pool:
        return None
    return min(pool, key=lambda a: (open_work.get(a.agent_id, 0), a.agent_id))
