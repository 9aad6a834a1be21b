"""Escalation rules and when they fire (pure: no I/O).

An escalation fires once per rule and *episode*:
- ``no_public_answer``: the episode is the customer's unanswered wait, identified by the time it
  began (the ticket's creation, or the customer's latest message after the last public reply);
  an answer ends it, and a later unanswered message starts a new one.
- ``sla_breach``: the episode is the breached SLA target and its episode number (a reopened
  ticket's new resolution episode can escalate again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crm_events.schemas.service_routing import EscalationRule, EscalationRulesSet, TicketEscalated
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError
from crm_service_desk.domain.sla import STOPPED

RULES_ID = "global"


class EscalationRules(Aggregate):
    stream_type = "escalation_rules"

    def __init__(self, aggregate_id: str = RULES_ID) -> None:
        super().__init__(aggregate_id)
        self.rules: list[EscalationRule] = []

    def replace(self, rules: list[EscalationRule]) -> None:
        ids = [r.rule_id for r in rules]
        if len(set(ids)) != len(ids):
            raise DomainError("rule ids must be unique")
        for r in rules:
            if r.kind == "no_public_answer" and r.after_days is None:
                raise DomainError(f"rule {r.rule_id}: no_public_answer needs after_days")
        normal = [
            r.model_copy(
                update={
                    "customer_tiers": sorted({t.strip().lower() for t in r.customer_tiers}),
                    "notify_emails": sorted({e.strip().lower() for e in r.notify_emails}),
                }
            )
            for r in rules
        ]
        if not self.exists or normal != self.rules:
            self.record(EscalationRulesSet(rules=normal))

    @applies(EscalationRulesSet)
    def _set(self, e: EscalationRulesSet) -> None:
        self.rules = list(e.rules)


class TicketEscalations(Aggregate):
    """The escalations of one ticket (``escalation-<ticket id>``), one per rule and episode."""

    stream_type = "escalation"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fired: set[tuple[str, str]] = set()

    def escalate(self, event: TicketEscalated) -> bool:
        if (event.rule_id, event.episode) in self.fired:
            return False
        self.record(event)
        return True

    @applies(TicketEscalated)
    def _escalated(self, e: TicketEscalated) -> None:
        self.fired.add((e.rule_id, e.episode))


@dataclass(frozen=True)
class TicketFacts:
    ticket_id: str
    status: str
    priority: str | None
    customer_tier: str | None
    created_at: datetime
    last_customer_message_at: datetime | None
    last_agent_reply_at: datetime | None


def waiting_since(t: TicketFacts) -> datetime | None:
    """Since when the customer has waited for a public answer (None: answered, or closed)."""
    if t.status in STOPPED or t.status == "waiting_on_customer":
        return None
    asked = max(t.created_at, t.last_customer_message_at or t.created_at)
    if t.last_agent_reply_at is not None and t.last_agent_reply_at >= asked:
        return None
    return asked


def _in_scope(rule: EscalationRule, t: TicketFacts) -> bool:
    if rule.priorities and t.priority not in rule.priorities:
        return False
    tier = (t.customer_tier or "").strip().lower()
    return not rule.customer_tiers or tier in rule.customer_tiers


def unanswered_episode(rule: EscalationRule, t: TicketFacts, now: datetime) -> datetime | None:
    """The wait that this ``no_public_answer`` rule escalates now (its start), if any."""
    if rule.kind != "no_public_answer" or rule.after_days is None or not _in_scope(rule, t):
        return None
    since = waiting_since(t)
    if since is None or now - since < timedelta(days=rule.after_days):
        return None
    return since


def breach_escalates(rule: EscalationRule, t: TicketFacts, target: str) -> bool:
    """Whether this ``sla_breach`` rule escalates a breach of ``target`` on this ticket."""
    if rule.kind != "sla_breach" or not _in_scope(rule, t):
        return False
    return not rule.targets or target in rule.targets
