"""Sales context events (``crm.sales.*``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt

from crm_events.registry import EventPayload, event_type, upcaster

LeadSource = Literal["manual", "web_form", "import", "referral", "campaign", "email", "phone"]


@event_type("crm.sales.lead.captured", version=1, public=True)
class LeadCapturedV1(EventPayload):
    """A new lead was captured from a source."""

    lead_id: str
    customer_id: str
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    source: LeadSource
    source_detail: str | None = Field(default=None, description="campaign id, form id, referrer")
    owner_id: str | None = None


@event_type("crm.sales.lead.captured", version=2, public=True)
class LeadCapturedV2(EventPayload):
    """A new lead was captured from a source."""

    lead_id: str
    customer_id: str
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    source: LeadSource
    source_detail: str | None = Field(default=None, description="campaign id, form id, referrer")
    owner_id: str | None = None
    team_id: str | None = None
    region: str | None = Field(default=None, description="sales region, used for routing")
    product_line: str | None = Field(default=None, description="product interest, for routing")


@upcaster("crm.sales.lead.captured", from_version=1)
def _lead_captured_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 added team, region and product line for assignment; v1 leads had none."""
    return {**data, "team_id": None, "region": None, "product_line": None}


@event_type("crm.sales.lead.captured", version=3, public=True)
class LeadCaptured(EventPayload):
    """A new lead was captured from a source."""

    lead_id: str
    customer_id: str
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    source: LeadSource
    source_detail: str | None = Field(default=None, description="campaign id, form id, referrer")
    owner_id: str | None = None
    team_id: str | None = None
    region: str | None = Field(default=None, description="sales region, used for routing")
    product_line: str | None = Field(default=None, description="product interest, for routing")
    attribution: dict[str, str] | None = Field(
        default=None, description="utm_source, utm_medium, utm_campaign, referrer of a web lead"
    )


@upcaster("crm.sales.lead.captured", from_version=2)
def _lead_captured_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3 added the marketing attribution of web leads; earlier leads had none."""
    return {**data, "attribution": None}


@event_type("crm.sales.lead.qualified", version=1, public=True)
class LeadQualified(EventPayload):
    """A lead was qualified with a score."""

    lead_id: str
    score: int = Field(ge=0, le=100)
    notes: str | None = None


@event_type("crm.sales.lead.disqualified", version=1)
class LeadDisqualified(EventPayload):
    """A lead was disqualified, with the reason."""

    lead_id: str
    reason: str = Field(min_length=1)


# --- shared value objects ---------------------------------------------------------------------

AccountTier = Literal["standard", "key", "top"]
CustomValue = StrictBool | StrictInt | float | str
StageOutcome = Literal["open", "won", "lost"]


class Address(EventPayload):
    """A postal address; every part optional."""

    street: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")


class ContactDetails(EventPayload):
    """The changeable details of a contact; an update names which of them it sets."""

    first_name: str | None = None
    last_name: str | None = None
    emails: list[str] | None = None
    phones: list[str] | None = None
    title: str | None = None
    account_id: str | None = None
    address: Address | None = None
    region: str | None = None
    industry: str | None = None
    social_profiles: list[str] | None = None
    tags: list[str] | None = None
    custom_fields: dict[str, CustomValue] | None = None


class AccountDetails(EventPayload):
    """The changeable details of an account; an update names which of them it sets."""

    name: str | None = None
    domain: str | None = None
    website: str | None = None
    phones: list[str] | None = None
    industry: str | None = None
    region: str | None = None
    tier: AccountTier | None = None
    address: Address | None = None
    social_profiles: list[str] | None = None
    tags: list[str] | None = None
    custom_fields: dict[str, CustomValue] | None = None


# --- contacts ---------------------------------------------------------------------------------


@event_type("crm.sales.contact.created", version=1, public=True)
class ContactCreated(EventPayload):
    """A contact was created."""

    contact_id: str
    customer_id: str
    details: ContactDetails
    owner_id: str | None = None
    team_id: str | None = None
    lead_id: str | None = Field(default=None, description="the lead it was converted from")


@event_type("crm.sales.contact.updated", version=1, public=True)
class ContactUpdated(EventPayload):
    """Contact details were changed."""

    contact_id: str
    changed: list[str] = Field(min_length=1, description="the fields of `values` this sets")
    values: ContactDetails


@event_type("crm.sales.contact.reassigned", version=1)
class ContactReassigned(EventPayload):
    """The contact was given to another owner."""

    contact_id: str
    owner_id: str | None
    team_id: str | None = None


@event_type("crm.sales.contact.merged", version=1, public=True)
class ContactMerged(EventPayload):
    """Another contact was merged into this one."""

    contact_id: str
    customer_id: str
    merged_id: str
    merged_customer_id: str
    merge_id: str
    absorbed: ContactDetails = Field(description="what the survivor took over from the merged")
    absorbed_fields: list[str]


@event_type("crm.sales.contact.merged_into", version=1)
class ContactMergedInto(EventPayload):
    """This contact was merged into another; it now points to the survivor."""

    contact_id: str
    survivor_id: str
    survivor_customer_id: str
    merge_id: str


@event_type("crm.sales.contact.merge_undone", version=1, public=True)
class ContactMergeUndone(EventPayload):
    """A contact merge was undone; both contacts stand on their own again."""

    contact_id: str
    merge_id: str
    survivor_id: str
    survivor_customer_id: str
    merged_id: str
    merged_customer_id: str


# --- accounts ---------------------------------------------------------------------------------


@event_type("crm.sales.account.created", version=1, public=True)
class AccountCreated(EventPayload):
    """An account was created."""

    account_id: str
    customer_id: str
    details: AccountDetails
    owner_id: str | None = None
    team_id: str | None = None
    lead_id: str | None = None


@event_type("crm.sales.account.updated", version=1, public=True)
class AccountUpdated(EventPayload):
    """Account details were changed."""

    account_id: str
    changed: list[str] = Field(min_length=1)
    values: AccountDetails


@event_type("crm.sales.account.reassigned", version=1)
class AccountReassigned(EventPayload):
    """The account was given to another owner."""

    account_id: str
    owner_id: str | None
    team_id: str | None = None


@event_type("crm.sales.account.merged", version=1, public=True)
class AccountMerged(EventPayload):
    """Another account was merged into this one."""

    account_id: str
    customer_id: str
    merged_id: str
    merged_customer_id: str
    merge_id: str
    absorbed: AccountDetails
    absorbed_fields: list[str]


@event_type("crm.sales.account.merged_into", version=1)
class AccountMergedInto(EventPayload):
    """This account was merged into another; it now points to the survivor."""

    account_id: str
    survivor_id: str
    survivor_customer_id: str
    merge_id: str


@event_type("crm.sales.account.merge_undone", version=1, public=True)
class AccountMergeUndone(EventPayload):
    """An account merge was undone; both accounts stand on their own again."""

    account_id: str
    merge_id: str
    survivor_id: str
    survivor_customer_id: str
    merged_id: str
    merged_customer_id: str


# --- lead conversion --------------------------------------------------------------------------


@event_type("crm.sales.lead.converted", version=1, public=True)
class LeadConverted(EventPayload):
    """The lead was converted into a contact, an account and a deal."""

    lead_id: str
    lead_customer_id: str
    customer_id: str = Field(description="the contact's customer id (differs if it existed)")
    contact_id: str
    account_id: str | None = None
    deal_id: str | None = None


# --- pipelines and deals ----------------------------------------------------------------------


class Stage(EventPayload):
    """One stage of a pipeline."""

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    name: str = Field(min_length=1, max_length=100)
    probability: int = Field(ge=0, le=100, description="win probability in percent")
    outcome: StageOutcome = "open"


@event_type("crm.sales.pipeline.defined", version=1)
class PipelineDefined(EventPayload):
    """A pipeline was defined with its ordered stages."""

    pipeline_id: str
    name: str
    stages: list[Stage] = Field(min_length=2)


@event_type("crm.sales.pipeline.stages_changed", version=1)
class PipelineStagesChanged(EventPayload):
    """A pipeline's stages were changed."""

    pipeline_id: str
    stages: list[Stage] = Field(min_length=2)


class DealLine(EventPayload):
    """A product on a deal."""

    product_id: str | None = None
    name: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    unit_price_minor: int = Field(ge=0)


@event_type("crm.sales.deal.opened", version=1, public=True)
class DealOpened(EventPayload):
    """A deal was opened."""

    deal_id: str
    customer_id: str
    name: str
    pipeline_id: str
    stage: str
    probability: int
    amount_minor: int = Field(ge=0, description="amount in the currency's minor unit")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    base_currency: str = Field(pattern=r"^[A-Z]{3}$")
    exchange_rate: str = Field(description="decimal: 1 unit of currency in base currency")
    expected_close: date | None = None
    owner_id: str | None = None
    team_id: str | None = None
    account_id: str | None = None
    contact_id: str | None = None
    lead_id: str | None = None
    source: str | None = None
    lines: list[DealLine] = []


@event_type("crm.sales.deal.stage_changed", version=1, public=True)
class DealStageChanged(EventPayload):
    """The deal moved to another stage."""

    deal_id: str
    from_stage: str
    to_stage: str
    probability: int


@event_type("crm.sales.deal.updated", version=1)
class DealUpdated(EventPayload):
    """Deal terms were changed."""

    deal_id: str
    name: str | None = None
    amount_minor: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    exchange_rate: str | None = None
    expected_close: date | None = None
    lines: list[DealLine] | None = None
    changed: list[str] = Field(min_length=1)


@event_type("crm.sales.deal.reassigned", version=1)
class DealReassigned(EventPayload):
    """The deal was given to another owner."""

    deal_id: str
    owner_id: str | None
    team_id: str | None = None


@event_type("crm.sales.deal.won", version=1, public=True)
class DealWon(EventPayload):
    """The deal was won."""

    deal_id: str
    stage: str
    amount_minor: int
    currency: str
    reason: str | None = None


@event_type("crm.sales.deal.lost", version=1, public=True)
class DealLost(EventPayload):
    """The deal was lost, with the reason."""

    deal_id: str
    stage: str
    reason: str = Field(min_length=1)


@event_type("crm.sales.exchange_rate.set", version=1)
class ExchangeRateSet(EventPayload):
    """An exchange rate to the base currency was set."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    base_currency: str = Field(pattern=r"^[A-Z]{3}$")
    rate: str = Field(description="decimal: 1 unit of currency in base currency")


# --- reps and assignment ----------------------------------------------------------------------


@event_type("crm.sales.rep.profile_set", version=1)
class RepProfileSet(EventPayload):
    """A sales rep's profile was set."""

    user_id: str
    email: str | None = Field(default=None, description="where reminders go")
    team_id: str | None = None
    regions: list[str] = []
    product_lines: list[str] = []


@event_type("crm.sales.rep.availability_changed", version=1)
class RepAvailabilityChanged(EventPayload):
    """A sales rep became available or unavailable for new work."""

    user_id: str
    available: bool
    reason: str | None = None


class AssignmentRule(EventPayload):
    """Route new leads or deals matching region / product line to a pool of reps."""

    rule_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    applies_to: list[Literal["lead", "deal"]] = Field(min_length=1)
    region: str | None = Field(default=None, description="match this region (any if unset)")
    product_line: str | None = Field(default=None, description="match this product line")
    team_id: str | None = Field(default=None, description="only reps of this team")
    strategy: Literal["least_open", "round_robin"] = "least_open"


@event_type("crm.sales.assignment_rules.set", version=1)
class AssignmentRulesSet(EventPayload):
    """The assignment rules were replaced."""

    rules: list[AssignmentRule]


@event_type("crm.sales.lead.assigned", version=1, public=True)
class LeadAssigned(EventPayload):
    """The lead was assigned to a rep."""

    lead_id: str
    owner_id: str | None
    team_id: str | None = None
    rule_id: str | None = Field(default=None, description="the rule that routed it; none if manual")
    strategy: str | None = None


@event_type("crm.sales.deal.assigned", version=1)
class DealAssigned(EventPayload):
    """The deal was routed to a rep by an assignment rule."""

    deal_id: str
    owner_id: str
    team_id: str | None = None
    rule_id: str
    strategy: str


# --- activities, tasks and reminders ----------------------------------------------------------

ActivityKind = Literal["call", "meeting", "email", "note"]


class About(EventPayload):
    """What an activity or task is about: a contact, an account or a deal (or several)."""

    contact_id: str | None = None
    account_id: str | None = None
    deal_id: str | None = None


@event_type("crm.sales.activity.logged", version=1, public=True)
class ActivityLogged(EventPayload):
    """An activity was logged."""

    activity_id: str
    kind: ActivityKind
    subject: str = Field(min_length=1, max_length=200)
    body: str | None = None
    occurred_at: datetime
    duration_minutes: int | None = Field(default=None, ge=0)
    direction: Literal["inbound", "outbound"] | None = None
    outcome: str | None = None
    about: About
    customer_id: str
    owner_id: str | None = None
    team_id: str | None = None


@event_type("crm.sales.task.created", version=1, public=True)
class TaskCreated(EventPayload):
    """A task was created."""

    task_id: str
    title: str = Field(min_length=1, max_length=200)
    notes: str | None = None
    due_at: datetime | None = None
    assignee_id: str | None = None
    team_id: str | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    about: About
    customer_id: str | None = None
    origin: str | None = Field(default=None, description="e.g. reminder:<rule>; none if manual")


@event_type("crm.sales.task.completed", version=1, public=True)
class TaskCompleted(EventPayload):
    """The task was completed."""

    task_id: str
    outcome: str | None = None


@event_type("crm.sales.task.reopened", version=1)
class TaskReopened(EventPayload):
    """The task was reopened."""

    task_id: str


@event_type("crm.sales.task.updated", version=1)
class TaskUpdated(EventPayload):
    """The task's title, due date, assignee or priority changed."""

    task_id: str
    changed: list[str] = Field(min_length=1)
    title: str | None = None
    due_at: datetime | None = None
    assignee_id: str | None = None
    priority: Literal["low", "normal", "high"] | None = None


@event_type("crm.sales.account.inactivity_flagged", version=1, public=True)
class AccountInactivityFlagged(EventPayload):
    """A top-tier account had no logged activity for too long; its owner was reminded."""

    account_id: str
    tier: str
    last_activity_at: datetime | None
    days_without_activity: int
    threshold_days: int
    owner_id: str | None
    task_id: str


# --- custom fields ----------------------------------------------------------------------------

CustomFieldType = Literal["text", "number", "integer", "boolean", "date", "choice"]


class CustomFieldDefinition(EventPayload):
    """A typed custom field of contacts or accounts."""

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")
    label: str = Field(min_length=1, max_length=100)
    type: CustomFieldType
    choices: list[str] = Field(default=[], description="allowed values of a choice field")


@event_type("crm.sales.custom_field.defined", version=1)
class CustomFieldDefined(EventPayload):
    """A custom field was defined or redefined."""

    entity: Literal["contact", "account"]
    field: CustomFieldDefinition


@event_type("crm.sales.custom_field.removed", version=1)
class CustomFieldRemoved(EventPayload):
    """A custom field was removed; values already stored stay in history."""

    entity: Literal["contact", "account"]
    key: str
