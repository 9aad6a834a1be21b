"""Event payloads of the service desk's routing, SLAs and escalation (``crm.service.*``).

Agents, queues, routing rules, business-hours calendars, SLA policies and escalation rules are
configuration aggregates (one stream each). Each routing decision is recorded on the ticket's
``routing-<ticket id>`` stream with the rule that chose it; SLA warnings and breaches on
``sla-<ticket id>``; escalations on ``escalation-<ticket id>``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
Priority = Literal["low", "normal", "high", "urgent"]
SlaTarget = Literal["first_response", "resolution"]

# --- agents and queues --------------------------------------------------------------------------


@event_type("crm.service.agent.profile_set", version=1)
class AgentProfileSet(EventPayload):
    """An agent's routing profile was created or replaced."""

    agent_id: str = Field(description="the agent's user id (the token subject)")
    email: str | None = None
    display_name: str | None = None
    skills: list[str] = Field(default_factory=list, description="products and topics, lower case")
    languages: list[str] = Field(default_factory=list, description="BCP 47 tags, lower case")
    queues: list[str] = Field(default_factory=list)
    active: bool = Field(default=True, description="an inactive agent is never routed to")


@event_type("crm.service.agent.availability_changed", version=1)
class AgentAvailabilityChanged(EventPayload):
    """An agent became available or unavailable for new tickets."""

    agent_id: str
    available: bool
    reason: str | None = None


@event_type("crm.service.queue.set", version=1)
class QueueSet(EventPayload):
    """A queue was created or changed."""

    queue_id: str
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    active: bool = True


# --- routing ------------------------------------------------------------------------------------


class RoutingRule(EventPayload):
    """Tickets matching every set criterion go to ``queue_id`` (an unset criterion matches all)."""

    rule_id: RuleId
    kinds: list[str] = Field(default_factory=list, description="ticket kinds; empty: any")
    products: list[str] = Field(default_factory=list, description="empty: any product")
    languages: list[str] = Field(
        default_factory=list, description="empty: any; 'en' also matches 'en-gb'"
    )
    regions: list[str] = Field(default_factory=list, description="empty: any region")
    queue_id: str
    skills: list[str] = Field(
        default_factory=list, description="skills an agent needs besides the ticket's product"
    )


@event_type("crm.service.routing_rules.set", version=1)
class RoutingRulesSet(EventPayload):
    """The routing rules were replaced; the first that matches a ticket chooses its queue."""

    rules: list[RoutingRule]
    default_queue_id: str | None = Field(default=None, description="when no rule matches")


@event_type("crm.service.routing.ticket_routed", version=1)
class TicketRouted(EventPayload):
    """A new ticket was routed to a queue (and an agent, if one was available)."""

    ticket_id: str
    queue_id: str
    agent_id: str | None
    rule_id: str | None = Field(description="the rule that chose the queue; none: default queue")
    reason: str
    open_work: int | None = Field(default=None, description="the agent's open tickets then")
    kind: str | None = None
    priority: str | None = None
    product: str | None = None
    language: str | None = None
    region: str | None = None


@event_type("crm.service.routing.ticket_reassigned", version=1)
class TicketReassigned(EventPayload):
    """A ticket was reassigned by hand to another agent."""

    ticket_id: str
    queue_id: str | None
    agent_id: str
    previous_agent_id: str | None = None
    by: str = Field(description="the user id who reassigned it")
    reason: str


# --- business hours and SLA policies ------------------------------------------------------------


class WorkingHours(EventPayload):
    """Working time of one weekday, as local ``HH:MM`` intervals (``24:00`` ends the day)."""

    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    intervals: list[tuple[str, str]]


class Holiday(EventPayload):
    day: date
    name: str | None = None


@event_type("crm.service.calendar.set", version=1)
class CalendarSet(EventPayload):
    """A business-hours calendar was created or replaced."""

    calendar_id: str
    name: str
    timezone: str = Field(description="IANA name, e.g. Europe/Berlin")
    hours: list[WorkingHours]
    holidays: list[Holiday] = Field(default_factory=list)


@event_type("crm.service.sla_policy.set", version=1)
class SlaPolicySet(EventPayload):
    """The SLA policy of a ticket priority was set: targets in business minutes."""

    priority: Priority
    calendar_id: str
    first_response_minutes: int = Field(gt=0)
    resolution_minutes: int = Field(gt=0)
    at_risk_percent: int = Field(default=80, ge=1, le=99)


@event_type("crm.service.sla.at_risk_flagged", version=1)
class SlaAtRiskFlagged(EventPayload):
    """A ticket used up the at-risk share of an SLA target (once per target and episode)."""

    ticket_id: str
    target: SlaTarget
    episode: int = Field(ge=1, description="resolution: 1, then +1 per reopening")
    priority: str
    elapsed_minutes: float
    target_minutes: int
    at_risk_percent: int
    started_at: datetime
    due_at: datetime | None = Field(default=None, description="if the clock keeps running")
    queue_id: str | None = None
    assignee_id: str | None = None


@event_type("crm.service.sla.breached", version=1)
class SlaBreached(EventPayload):
    """A ticket missed an SLA target (once per target and episode)."""

    ticket_id: str
    target: SlaTarget
    episode: int = Field(ge=1)
    priority: str
    elapsed_minutes: float
    target_minutes: int
    started_at: datetime
    queue_id: str | None = None
    assignee_id: str | None = None
    customer_tier: str | None = None


# --- escalation ---------------------------------------------------------------------------------


class EscalationRule(EventPayload):
    """When to escalate, and to whom.

    - ``no_public_answer``: the customer has waited ``after_days`` (calendar days) for a public
      answer — since the ticket opened, or since their latest unanswered message.
    - ``sla_breach``: an SLA target (``targets``) was breached; ``customer_tiers`` narrows it,
      e.g. ``["top"]`` for top-tier customers.
    Either kind may be limited to ``priorities``. Recipients: ``notify_emails`` (service
    managers) by e-mail; ``notify_account_owner`` asks sales (by the public event) to tell the
    customer's account owner.
    """

    rule_id: RuleId
    kind: Literal["no_public_answer", "sla_breach"]
    after_days: float | None = Field(default=None, gt=0, le=365)
    targets: list[SlaTarget] = Field(default_factory=list, description="sla_breach; empty: both")
    customer_tiers: list[str] = Field(default_factory=list, description="empty: any customer")
    priorities: list[Priority] = Field(default_factory=list, description="empty: any priority")
    notify_emails: list[str] = Field(default_factory=list)
    notify_account_owner: bool = False


@event_type("crm.service.escalation_rules.set", version=1)
class EscalationRulesSet(EventPayload):
    """The escalation rules were replaced."""

    rules: list[EscalationRule]


@event_type("crm.service.ticket.escalated", version=1, public=True)
class TicketEscalated(EventPayload):
    """A ticket was escalated by a rule (once per episode): its managers were e-mailed, and the
    account owner in sales should be told when ``notify_account_owner`` is set."""

    ticket_id: str
    customer_id: str | None
    rule_id: str
    rule_kind: Literal["no_public_answer", "sla_breach"]
    episode: str = Field(
        description="what fires once: an SLA target and episode ('resolution#2'), or the start "
        "of the customer's unanswered wait (ISO time)"
    )
    reason: str
    customer_tier: str | None = None
    priority: str | None = None
    queue_id: str | None = None
    assignee_id: str | None = None
    target: SlaTarget | None = None
    waiting_since: datetime | None = Field(
        default=None, description="no_public_answer: since when the customer has waited"
    )
    notify_account_owner: bool = False
    notified_emails: list[str] = Field(default_factory=list)
