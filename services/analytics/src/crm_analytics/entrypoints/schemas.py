"""Response models of the analytics API: what each read endpoint answers, field by field, for
the OpenAPI document (and so for generated clients), with one realistic example each.

The models describe the JSON the query modules build today; they change nothing in it. Units:

- ``*_base_minor``: integers in the minor unit (cents) of the base currency, named beside them
  (``base_currency``); the 360 view's ``*_pipeline_base`` are the same, written as strings.
- ``won_revenue`` (marketing): a decimal string in *major* units of ``currency``.
- chart amounts: numbers in major units of the currency named by the axis' ``unit``.
- rates, shares, conversion, support and confidence: fractions between 0 and 1 (rounded to 4
  places), null where there is nothing to divide; lift is a ratio around 1.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

# ``responses=`` entries -----------------------------------------------------------------------


def ok(example: dict[str, Any], model: type[BaseModel] | None = None) -> dict[int | str, Any]:
    """The ``responses=`` of a read route: its 200 answer's example, and its model where the
    route serialises the answer itself (so FastAPI does not validate it: large answers)."""
    answer: dict[str, Any] = {"content": {"application/json": {"example": example}}}
    if model is not None:
        answer["model"] = model
    return {200: answer}


def not_found(what: str) -> dict[int | str, Any]:
    return {404: {"description": what}}


AsOfOut = Annotated[
    datetime | None,
    Field(description="the `as_of` asked for (answered from the event history); null: now"),
]
# A time the query module already wrote as text (``isoformat()``): passed through as it is.
DateTimeText = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Rate = float | None  # a fraction, 0-1 as the data normally is (not enforced on the way out)


# --- churn risk (also in the 360 view) ----------------------------------------------------------


class ChurnFactor(BaseModel):
    name: Literal[
        "engagement_recency", "open_complaints", "csat", "overdue_invoices", "falling_purchases"
    ] = Field(description="the signal that added points")
    points: int = Field(description="points it added to the score (factors with 0 are left out)")
    detail: str = Field(description="human-readable explanation, e.g. `last touch 95 days ago`")


class ChurnOut(BaseModel):
    score: int = Field(description="0-100, higher is likelier to churn")
    level: Literal["low", "medium", "high"] = Field(description="high >= 60, medium >= 30")
    factors: list[ChurnFactor]


class CustomerChurnRisk(BaseModel):
    customer_id: str = Field(description="the id that stands (after merges)")
    score: int = Field(description="0-100, higher is likelier to churn")
    level: Literal["low", "medium", "high"] = Field(description="high >= 60, medium >= 30")
    factors: list[ChurnFactor]


_FACTORS = [
    {"name": "engagement_recency", "points": 15, "detail": "last touch 47 days ago"},
    {"name": "open_complaints", "points": 15, "detail": "1 open complaint(s)"},
    {"name": "falling_purchases", "points": 20, "detail": "won revenue down to 35% of the 180 "
     "days before"},
]  # fmt: skip
CHURN_RISK_EXAMPLE = {"customer_id": "4f1c2d3e-6a7b-4c8d-9e0f-1a2b3c4d5e6f", "score": 50,
                      "level": "medium", "factors": _FACTORS}  # fmt: skip


class AtRiskCustomer(BaseModel):
    customer_id: str
    display_name: str | None = Field(description="the contact's or account's name")
    kind: Literal["contact", "account"]
    owner_id: str
    score: int = Field(description="0-100, higher is likelier to churn")
    level: Literal["low", "medium", "high"] = Field(description="high >= 60, medium >= 30")
    factors: list[ChurnFactor]


class AtRisk(BaseModel):
    owner_id: str | None = Field(description="the owner asked for (a rep: itself); null: all")
    min_score: int = Field(description="customers scoring below this are left out")
    customers: list[AtRiskCustomer] = Field(
        description="owned contacts and accounts not merged away, highest score first, at most "
        "`limit`"
    )


AT_RISK_EXAMPLE = {
    "owner_id": "alice",
    "min_score": 30,
    "customers": [
        {"customer_id": "4f1c2d3e-6a7b-4c8d-9e0f-1a2b3c4d5e6f", "display_name": "Ada Lovelace",
         "kind": "contact", "owner_id": "alice", "score": 50, "level": "medium",
         "factors": _FACTORS},
    ],
}  # fmt: skip


# --- sales analytics -----------------------------------------------------------------------------


class PipelineRow(BaseModel):
    key: str = Field(
        description="the stage, owner (`(unassigned)`), region (the customer's current one, "
        "`(none)`) or pipeline id"
    )
    deals: int = Field(description="open deals")
    amount_base_minor: int = Field(description="their amounts, base currency, minor units")
    weighted_base_minor: int = Field(
        description="amounts x probability, base currency, minor units"
    )


class Pipeline(BaseModel):
    group_by: Literal["stage", "owner", "region", "pipeline"]
    as_of: AsOfOut
    base_currency: str = Field(description="ISO 4217 code of the `*_base_minor` amounts")
    rows: list[PipelineRow] = Field(description="one per group, by key")


PIPELINE_EXAMPLE = {
    "group_by": "stage",
    "as_of": None,
    "base_currency": "EUR",
    "rows": [
        {"key": "demo", "deals": 4, "amount_base_minor": 1840000, "weighted_base_minor": 1104000},
        {"key": "proposal", "deals": 2, "amount_base_minor": 960000,
         "weighted_base_minor": 672000},
    ],
}  # fmt: skip


class ForecastQuarter(BaseModel):
    quarter: str = Field(description="`YYYY-Qn`")
    won_base_minor: int = Field(description="won in the quarter (by close time)")
    open_weighted_base_minor: int = Field(
        description="open deals expected to close in the quarter, x probability"
    )
    forecast_base_minor: int = Field(description="won + open weighted")
    last_year_won_base_minor: int = Field(description="won in the same quarter a year earlier")
    change: float | None = Field(
        description="(forecast - last year) / last year, a fraction (-0.14: 14 % less); null "
        "when nothing was won last year"
    )
    drop_flagged: bool = Field(description="change is below -drop_threshold")


class Forecast(BaseModel):
    year: int
    as_of: AsOfOut
    product_id: str | None = Field(description="only this product's lines; null: whole deals")
    base_currency: str = Field(description="ISO 4217 code of the `*_base_minor` amounts")
    drop_threshold: str = Field(description="the threshold asked for, a decimal fraction")
    quarters: list[ForecastQuarter] = Field(description="Q1 to Q4; amounts minor units")


_Q = (
    ("2026-Q1", 4120000, 0, 4120000, 3870000, 0.0646, False),
    ("2026-Q2", 1250000, 1630000, 2880000, 4010000, -0.2818, True),
    ("2026-Q3", 0, 2100000, 2100000, 2050000, 0.0244, False),
    ("2026-Q4", 0, 480000, 480000, 0, None, False),
)
FORECAST_EXAMPLE = {
    "year": 2026,
    "as_of": None,
    "product_id": None,
    "base_currency": "EUR",
    "drop_threshold": "0.2",
    "quarters": [dict(zip(ForecastQuarter.model_fields, q, strict=True)) for q in _Q],
}


class WinRate(BaseModel):
    won: int = Field(description="deals won (closed since `since`)")
    lost: int = Field(description="deals lost (closed since `since`)")
    win_rate: Rate = Field(description="won / (won + lost), a fraction; null: none closed")
    avg_sales_cycle_days: float | None = Field(
        description="average days from opening to winning of the won deals; null: none won"
    )
    as_of: AsOfOut


WIN_RATE_EXAMPLE = {
    "won": 24,
    "lost": 11,
    "win_rate": 0.6857,
    "avg_sales_cycle_days": 41.5,
    "as_of": None,
}


class StageRow(BaseModel):
    stage: str
    entered: int = Field(description="deals that entered the stage")
    moved_on: int = Field(description="of those, deals that went on to a later stage (not lost)")
    conversion: Rate = Field(
        description="moved_on / entered, a fraction; null for closing stages (won, lost)"
    )
    avg_days_in_stage: float | None = Field(
        description="average days between entering and leaving it; null: none has left"
    )


class Stages(BaseModel):
    pipeline_id: str
    as_of: AsOfOut
    stages: list[StageRow] = Field(description="in the order deals go through them")


STAGES_EXAMPLE = {
    "pipeline_id": "default",
    "as_of": None,
    "stages": [
        {"stage": "identified", "entered": 36, "moved_on": 34, "conversion": 0.9444,
         "avg_days_in_stage": 1.602},
        {"stage": "demo", "entered": 34, "moved_on": 20, "conversion": 0.5882,
         "avg_days_in_stage": 2.657},
        {"stage": "won", "entered": 20, "moved_on": 0, "conversion": None,
         "avg_days_in_stage": None},
    ],
}  # fmt: skip


class OwnerCoverage(BaseModel):
    owner: str = Field(description="owner id, or `(unassigned)`")
    accounts: int = Field(description="accounts it owns")
    untouched: int = Field(description="of those, not touched for `untouched_days` (or ever)")


class UntouchedAccount(BaseModel):
    customer_id: str
    display_name: str | None = Field(description="the account's name (today's)")
    owner_id: str | None
    tier: str | None = Field(description="today's tier")
    last_touch_at: DateTimeText | None = Field(
        description="last touch, ISO 8601 with a `+00:00` offset; null: never touched"
    )


class Coverage(BaseModel):
    untouched_days: int
    owners: list[OwnerCoverage] = Field(description="by owner")
    untouched_accounts: list[UntouchedAccount] = Field(
        description="never touched first, then the longest untouched; at most 200"
    )
    as_of: AsOfOut


COVERAGE_EXAMPLE = {
    "untouched_days": 30,
    "owners": [
        {"owner": "alice", "accounts": 12, "untouched": 3},
        {"owner": "(unassigned)", "accounts": 2, "untouched": 2},
    ],
    "untouched_accounts": [
        {"customer_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "display_name":
         "Analytical Engines Ltd", "owner_id": "alice", "tier": "top",
         "last_touch_at": "2026-09-14T10:02:00+00:00"},
    ],
    "as_of": None,
}  # fmt: skip


class Rule(BaseModel):
    antecedent: str = Field(description="product id A")
    antecedent_name: str | None = Field(description="A's name on its latest deal line")
    consequent: str = Field(description="product id B")
    consequent_name: str | None
    deals: int = Field(description="won deals holding both")
    support: float = Field(description="deals with A and B / baskets, a fraction")
    confidence: float = Field(description="deals with A and B / deals with A")
    lift: float = Field(description="confidence / share of deals with B (> 1: bought together)")


class Rules(BaseModel):
    as_of: AsOfOut
    baskets: int = Field(description="won deals with at least one product")
    min_support: str = Field(description="as asked, a decimal fraction")
    min_confidence: str = Field(description="as asked, a decimal fraction")
    rules: list[Rule] = Field(
        description="most confident first (then lift, support), at most `limit`"
    )


RULES_EXAMPLE = {
    "as_of": None,
    "baskets": 24,
    "min_support": "0.01",
    "min_confidence": "0.1",
    "rules": [
        {"antecedent": "p-setup", "antecedent_name": "Setup", "consequent": "p-seat",
         "consequent_name": "Seat licence", "deals": 2, "support": 0.0833, "confidence": 1.0,
         "lift": 6.0},
    ],
}  # fmt: skip


# --- charts -------------------------------------------------------------------------------------


class Axis(BaseModel):
    label: str
    unit: str | None = Field(
        description="a currency code (amounts, major units), `ratio` (0-1), or null"
    )


class Series(BaseModel):
    name: str
    points: list[tuple[str, float | None]] = Field(
        description="[x, y] pairs; y null where there is nothing to divide"
    )


class Chart(BaseModel):
    title: str
    x: Axis
    y: Axis
    series: list[Series]


CHART_EXAMPLE = {
    "title": "Forecast 2026 against 2025",
    "x": {"label": "quarter", "unit": None},
    "y": {"label": "amount", "unit": "EUR"},
    "series": [
        {"name": "2026 forecast", "points": [["Q1", 41200.0], ["Q2", 28800.0], ["Q3", 21000.0],
                                              ["Q4", 4800.0]]},
        {"name": "2026 won", "points": [["Q1", 41200.0], ["Q2", 12500.0], ["Q3", 0.0],
                                         ["Q4", 0.0]]},
        {"name": "2025 won", "points": [["Q1", 38700.0], ["Q2", 40100.0], ["Q3", 20500.0],
                                         ["Q4", 0.0]]},
    ],
}  # fmt: skip


# --- service analytics --------------------------------------------------------------------------


class SpikeDay(BaseModel):
    day: date
    count: int = Field(description="tickets opened that day (UTC)")
    baseline: float | None = Field(
        description="mean of the previous `baseline_days` days; null while the history is "
        "shorter than that (then `threshold` is absent)"
    )
    threshold: float | None = Field(
        default=None,
        description="baseline + sigmas x max(sd, 1): more is a spike; absent with no baseline",
    )
    spike: bool = Field(description="count >= min_count and count > threshold")


class ProductSpikes(BaseModel):
    product: str = Field(description="the ticket's product, or `(none)`")
    days: list[SpikeDay] = Field(description="every day from start to end")
    spikes: list[date] = Field(description="the days flagged")


class TicketSpikes(BaseModel):
    start: date
    end: date
    baseline_days: int
    sigmas: float
    min_count: int
    products: list[ProductSpikes] = Field(description="by product name")


TICKET_SPIKES_EXAMPLE = {
    "start": "2026-11-24",
    "end": "2026-11-26",
    "baseline_days": 28,
    "sigmas": 3.0,
    "min_count": 5,
    "products": [
        {
            "product": "router",
            "days": [
                {"day": "2026-11-24", "count": 2, "baseline": 1.5, "threshold": 4.5,
                 "spike": False},
                {"day": "2026-11-25", "count": 1, "baseline": 1.57, "threshold": 4.57,
                 "spike": False},
                {"day": "2026-11-26", "count": 9, "baseline": 1.5, "threshold": 4.5,
                 "spike": True},
            ],
            "spikes": ["2026-11-26"],
        }
    ],
}  # fmt: skip


class Percentiles(BaseModel):
    p50: float | None = Field(description="hours; null: no ticket to measure")
    p90: float | None = Field(description="hours; null: no ticket to measure")
    p95: float | None = Field(description="hours; null: no ticket to measure")


class ResponseTimes(BaseModel):
    tickets: int = Field(description="tickets opened in the period (of the priority)")
    responded: int = Field(description="of those, with a first response")
    resolved: int = Field(description="of those, resolved (and not reopened since)")
    unit: Literal["hours"] = Field(description="wall-clock hours, not business time")
    first_response: Percentiles = Field(description="opening to first response")
    resolution: Percentiles = Field(description="opening to the latest resolution")


RESPONSE_TIMES_EXAMPLE = {
    "tickets": 74,
    "responded": 70,
    "resolved": 61,
    "unit": "hours",
    "first_response": {"p50": 1.5, "p90": 6.25, "p95": 9.1},
    "resolution": {"p50": 20.4, "p90": 71.0, "p95": 96.75},
}


class BreachRate(BaseModel):
    tickets: int = Field(description="tickets opened in the period")
    breached: int = Field(description="of those, tickets that breached any SLA target")
    breach_rate: Rate = Field(description="breached / tickets, a fraction; null: no ticket")
    first_response_breached: int = Field(description="tickets that breached first response")
    resolution_breached: int = Field(description="tickets that breached resolution")


SLA_EXAMPLE = {
    "tickets": 74,
    "breached": 5,
    "breach_rate": 0.0676,
    "first_response_breached": 2,
    "resolution_breached": 4,
}

_PERIOD = "first day of the week, month or quarter (UTC)"
_AVERAGE = "average score, 1-5"
_SATISFIED = "share of 4s and 5s, a fraction"


class CsatByAgent(BaseModel):
    agent: str = Field(description="who held the ticket when it was rated, or `(none)`")
    period: date = Field(description=_PERIOD)
    ratings: int
    average: float = Field(description=_AVERAGE)
    satisfied_share: float = Field(description=_SATISFIED)


class CsatByProduct(BaseModel):
    product: str = Field(description="the ticket's product, or `(none)`")
    period: date = Field(description=_PERIOD)
    ratings: int
    average: float = Field(description=_AVERAGE)
    satisfied_share: float = Field(description=_SATISFIED)


class Csat(BaseModel):
    by: Literal["agent", "product"]
    interval: Literal["week", "month", "quarter"]
    scale: Literal["1-5"]
    rows: list[CsatByAgent] | list[CsatByProduct] = Field(
        description="per agent (or product) and period; the key is named as `by` says"
    )


CSAT_EXAMPLE = {
    "by": "agent",
    "interval": "month",
    "scale": "1-5",
    "rows": [
        {"agent": "agent-7", "period": "2026-10-01", "ratings": 18, "average": 4.44,
         "satisfied_share": 0.8889},
        {"agent": "agent-7", "period": "2026-11-01", "ratings": 11, "average": 3.91,
         "satisfied_share": 0.7273},
    ],
}  # fmt: skip


# --- marketing analytics ------------------------------------------------------------------------


class FunnelStep(BaseModel):
    step: Literal["sent", "delivered", "opened", "clicked", "lead", "deal", "won"]
    count: int = Field(
        description="messages (sent to clicked), attributed customers with a lead (lead), "
        "deals opened and won in the window (deal, won)"
    )


class FunnelRates(BaseModel):
    delivery: Rate = Field(description="delivered / sent; null: none sent")
    open: Rate = Field(
        description="opened / delivered (or sent when none delivered); above 1 only when "
        "delivery or send events are missing"
    )
    click: Rate = Field(description="clicked / delivered (or sent when none delivered)")


class Funnel(BaseModel):
    campaign_id: str
    channel: str = Field(description="the channel of the campaign's messages, e.g. `email`")
    window_days: int = Field(description="attribution window after a click or a lead")
    steps: list[FunnelStep] = Field(description="the seven steps, in order")
    bounced: int
    unsubscribed: int
    won_revenue: str = Field(
        description="won deals' amounts, a decimal string in major units of `currency` (`0` "
        "when none)"
    )
    currency: str | None = Field(
        description="the base currency of the deals counted; null: no deal"
    )
    rates: FunnelRates = Field(description="fractions, 4 places")


FUNNEL_EXAMPLE = {
    "campaign_id": "7f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f",
    "channel": "email",
    "window_days": 30,
    "steps": [
        {"step": s, "count": n}
        for s, n in (("sent", 1200), ("delivered", 1176), ("opened", 431), ("clicked", 97),
                     ("lead", 12), ("deal", 4), ("won", 2))
    ],
    "bounced": 24,
    "unsubscribed": 6,
    "won_revenue": "18400.00",
    "currency": "EUR",
    "rates": {"delivery": 0.98, "open": 0.3665, "click": 0.0825},
}  # fmt: skip


class MessageOpenRate(BaseModel):
    campaign_id: str | None = Field(description="null for a trigger's message")
    trigger_id: str | None = Field(description="null for a campaign's message")
    template_id: str | None
    channel: str
    sent: int
    opened: int
    open_rate: float = Field(description="opened / sent, a fraction")
    compared_with: Literal["campaign", "channel"] = Field(
        description="the peers: the campaign's other messages, else the channel's"
    )
    others_median: float | None = Field(description="median open rate of the peers; null: no peer")
    underperforming: bool = Field(description="open_rate < min_ratio x others_median")


class OpenRates(BaseModel):
    min_sent: int
    min_ratio: float
    messages: list[MessageOpenRate] = Field(
        description="campaign (or trigger) x template with at least `min_sent` sent"
    )


OPEN_RATES_EXAMPLE = {
    "min_sent": 20,
    "min_ratio": 0.7,
    "messages": [
        {"campaign_id": "7f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f", "trigger_id": None,
         "template_id": "tpl-spring", "channel": "email", "sent": 600, "opened": 240,
         "open_rate": 0.4, "compared_with": "campaign", "others_median": 0.1,
         "underperforming": False},
        {"campaign_id": "7f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f", "trigger_id": None,
         "template_id": "tpl-spring-b", "channel": "email", "sent": 600, "opened": 60,
         "open_rate": 0.1, "compared_with": "campaign", "others_median": 0.4,
         "underperforming": True},
    ],
}  # fmt: skip


class LeadSource(BaseModel):
    source: str = Field(description="the lead's source, e.g. `web_form`, `campaign`")
    leads: int = Field(description="leads captured (since `since`)")
    qualified: int
    disqualified: int
    converted: int
    won: int = Field(description="deals won from converted leads")
    qualification_rate: Rate = Field(description="qualified / leads")
    conversion_rate: Rate = Field(description="converted / leads")
    win_rate: Rate = Field(description="won / leads (not won / closed)")
    won_revenue: str = Field(
        description="a decimal string in major units of `currency` (`0` when none)"
    )
    currency: str | None = Field(description="base currency of the won deals; null: none")


class LeadsBySource(BaseModel):
    sources: list[LeadSource] = Field(description="most leads first")


LEADS_BY_SOURCE_EXAMPLE = {
    "sources": [
        {"source": "web_form", "leads": 120, "qualified": 54, "disqualified": 30,
         "converted": 22, "won": 9, "qualification_rate": 0.45, "conversion_rate": 0.1833,
         "win_rate": 0.075, "won_revenue": "81250.00", "currency": "EUR"},
        {"source": "referral", "leads": 8, "qualified": 1, "disqualified": 2, "converted": 0,
         "won": 0, "qualification_rate": 0.125, "conversion_rate": 0.0, "win_rate": 0.0,
         "won_revenue": "0", "currency": None},
    ]
}  # fmt: skip
