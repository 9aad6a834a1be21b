"""The Deal aggregate: an opportunity moving through a pipeline's stages to won or lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from crm_events.money import to_base_minor
from crm_events.schemas.sales import (
    DealAssigned,
    DealLine,
    DealLost,
    DealOpened,
    DealReassigned,
    DealStageChanged,
    DealUpdated,
    DealWon,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput
from crm_sales.domain.assignment import Decision
from crm_sales.domain.pipeline import Pipeline


def parse_rate(rate: str) -> Decimal:
    try:
        value = Decimal(rate)
    except InvalidOperation:
        raise DomainError(f"exchange rate {rate!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise DomainError("an exchange rate must be a positive number")
    return value


@dataclass(frozen=True)
class Terms:
    name: str
    amount_minor: int
    currency: str
    exchange_rate: str
    expected_close: date | None
    lines: list[DealLine]


class Deal(Aggregate):
    stream_type = "deal"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_id = ""
        self.name = ""
        self.pipeline_id = ""
        self.stage = ""
        self.probability = 0
        self.amount_minor = 0
        self.currency = ""
        self.base_currency = ""
        self.exchange_rate = "1"
        self.expected_close: date | None = None
        self.owner_id: str | None = None
        self.team_id: str | None = None
        self.account_id: str | None = None
        self.contact_id: str | None = None
        self.lead_id: str | None = None
        self.source: str | None = None
        self.lines: list[DealLine] = []
        self.status = "open"  # open | won | lost
        self.close_reason: str | None = None

    @property
    def is_closed(self) -> bool:
        return self.status != "open"

    @classmethod
    def open(
        cls,
        deal_id: str,
        customer_id: str,
        pipeline: Pipeline,
        terms: Terms,
        *,
        base_currency: str,
        stage: str | None = None,
        owner_id: str | None = None,
        team_id: str | None = None,
        account_id: str | None = None,
        contact_id: str | None = None,
        lead_id: str | None = None,
        source: str | None = None,
    ) -> Deal:
        target = pipeline.stage(stage) if stage else pipeline.first_open_stage()
        if target.outcome != "open":
            raise DomainError("a deal opens in an open stage; win or lose it afterwards")
        parse_rate(terms.exchange_rate)
        deal = cls(deal_id)
        deal.record(
            DealOpened(
                deal_id=deal_id,
                customer_id=customer_id,
                name=terms.name,
                pipeline_id=pipeline.id,
                stage=target.key,
                probability=target.probability,
                amount_minor=_amount(terms),
                currency=terms.currency,
                base_currency=base_currency,
                exchange_rate=terms.exchange_rate,
                expected_close=terms.expected_close,
                owner_id=owner_id,
                team_id=team_id,
                account_id=account_id,
                contact_id=contact_id,
                lead_id=lead_id,
                source=source,
                lines=terms.lines,
            )
        )
        return deal

    def move(self, pipeline: Pipeline, to_stage: str, reason: str | None = None) -> None:
        """Move to a stage; a won or lost stage closes the deal (lost needs a reason)."""
        if self.is_closed:
            raise DomainError(f"the deal is {self.status}; a closed deal does not change stage")
        target = pipeline.stage(to_stage)
        if target.key == self.stage:
            raise DomainError(f"the deal is already in stage {to_stage!r}")
        if target.outcome == "lost" and not reason:
            raise DomainError("losing a deal needs a reason")
        self.record(
            DealStageChanged(
                deal_id=self.id,
                from_stage=self.stage,
                to_stage=target.key,
                probability=target.probability,
            )
        )
        if target.outcome == "won":
            self.record(
                DealWon(
                    deal_id=self.id,
                    stage=target.key,
                    amount_minor=self.amount_minor,
                    currency=self.currency,
                    reason=reason,
                )
            )
        elif target.outcome == "lost":
            self.record(DealLost(deal_id=self.id, stage=target.key, reason=reason or ""))

    def change_terms(self, terms: Terms) -> list[str]:
        if self.is_closed:
            raise DomainError(f"the deal is {self.status}; its terms are final")
        parse_rate(terms.exchange_rate)
        new = {
            "name": terms.name,
            "amount_minor": _amount(terms),
            "currency": terms.currency,
            "exchange_rate": terms.exchange_rate,
            "expected_close": terms.expected_close,
            "lines": terms.lines,
        }
        changed = [k for k, v in new.items() if getattr(self, k) != v]
        if changed:
            self.record(DealUpdated(deal_id=self.id, changed=changed, **new))
        return changed

    def reassign(self, owner_id: str | None, team_id: str | None) -> None:
        if (owner_id, team_id) != (self.owner_id, self.team_id):
            self.record(DealReassigned(deal_id=self.id, owner_id=owner_id, team_id=team_id))

    def assign(self, decision: Decision) -> None:
        """Record the routing decision of an assignment rule."""
        self.record(
            DealAssigned(
                deal_id=self.id,
                owner_id=decision.owner_id,
                team_id=decision.team_id,
                rule_id=decision.rule_id,
                strategy=decision.strategy,
            )
        )

    def amount_in_base(self) -> Decimal:
        """The amount in the base currency's minor unit, exact (not rounded): the rate is one
        major unit of the deal currency in the base currency, so the minor units of the two
        currencies are accounted for (crm_events.money)."""
        return to_base_minor(
            self.amount_minor, self.currency, self.exchange_rate, self.base_currency
        )

    @applies(DealOpened)
    def _opened(self, e: DealOpened) -> None:
        self.subject = e.customer_id
        for name in (
            "customer_id", "name", "pipeline_id", "stage", "probability", "amount_minor",
            "currency", "base_currency", "exchange_rate", "expected_close", "owner_id",
            "team_id", "account_id", "contact_id", "lead_id", "source",
        ):  # fmt: skip
            setattr(self, name, getattr(e, name))
        self.lines = list(e.lines)

    @applies(DealStageChanged)
    def _stage_changed(self, e: DealStageChanged) -> None:
        self.stage = e.to_stage
        self.probability = e.probability

    @applies(DealUpdated)
    def _updated(self, e: DealUpdated) -> None:
        for name in e.changed:
            setattr(self, name, getattr(e, name))

    @applies(DealReassigned)
    def _reassigned(self, e: DealReassigned) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    @applies(DealAssigned)
    def _assigned(self, e: DealAssigned) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    @applies(DealWon)
    def _won(self, e: DealWon) -> None:
        self.status = "won"
        self.close_reason = e.reason

    @applies(DealLost)
    def _lost(self, e: DealLost) -> None:
        self.status = "lost"
        self.close_reason = e.reason


def lines_amount(lines: list[DealLine]) -> int:
    """What line items add up to: the amount of a deal that has them."""
    return sum(line.quantity * line.unit_price_minor for line in lines)


MAX_DEAL_MINOR = 10**15  # as the API caps a deal amount and documents cap their totals


def _amount(terms: Terms) -> int:
    """With line items the amount is their sum; without, the amount given."""
    if terms.lines:
        total = lines_amount(terms.lines)
        if total > MAX_DEAL_MINOR:
            raise InvalidInput(
                "lines", f"the lines add up to {total:,}, more than {MAX_DEAL_MINOR:,} minor units"
            )
        return total
    return terms.amount_minor
