"""The Lead aggregate: captured from a source, then qualified or disqualified."""

from __future__ import annotations

from typing import Literal

from crm_events.schemas.sales import (
    LeadAssigned,
    LeadCaptured,
    LeadConverted,
    LeadDisqualified,
    LeadQualified,
    LeadSource,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

LeadStatus = Literal["new", "qualified", "disqualified", "converted"]


class Lead(Aggregate):
    stream_type = "lead"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_id = ""
        self.name = ""
        self.email: str | None = None
        self.phone: str | None = None
        self.company: str | None = None
        self.source: LeadSource = "manual"
        self.source_detail: str | None = None
        self.owner_id: str | None = None
        self.team_id: str | None = None
        self.region: str | None = None
        self.product_line: str | None = None
        self.attribution: dict[str, str] | None = None
        self.status: LeadStatus = "new"
        self.score: int | None = None
        self.notes: str | None = None
        self.disqualify_reason: str | None = None
        self.converted: LeadConverted | None = None

    @classmethod
    def capture(
        cls,
        lead_id: str,
        customer_id: str,
        *,
        name: str,
        source: LeadSource,
        email: str | None = None,
        phone: str | None = None,
        company: str | None = None,
        source_detail: str | None = None,
        owner_id: str | None = None,
        team_id: str | None = None,
        region: str | None = None,
        product_line: str | None = None,
        attribution: dict[str, str] | None = None,
    ) -> Lead:
        lead = cls(lead_id)
        lead.record(
            LeadCaptured(
                lead_id=lead_id,
                customer_id=customer_id,
                name=name,
                email=email.strip().lower() if email else None,
                phone=phone,
                company=company,
                source=source,
                source_detail=source_detail,
                owner_id=owner_id,
                team_id=team_id,
                region=region,
                product_line=product_line,
                attribution=attribution,
            )
        )
        return lead

    def assign(
        self,
        owner_id: str | None,
        team_id: str | None,
        rule_id: str | None = None,
        strategy: str | None = None,
    ) -> None:
        """Give the lead to a rep (by a rule, or by hand when ``rule_id`` is None)."""
        self._ensure_open()
        if (owner_id, team_id) == (self.owner_id, self.team_id):
            return
        self.record(
            LeadAssigned(
                lead_id=self.id,
                owner_id=owner_id,
                team_id=team_id,
                rule_id=rule_id,
                strategy=strategy,
            )
        )

    def _ensure_open(self) -> None:
        if self.status == "converted" and self.converted is not None:
            raise DomainError(
                f"the lead was converted into contact {self.converted.contact_id}",
                contact_id=self.converted.contact_id,
            )

    def ensure_convertible(self) -> None:
        self._ensure_open()
        if self.status == "disqualified":
            raise DomainError("a disqualified lead cannot be converted")

    def qualify(self, score: int, notes: str | None = None) -> None:
        self._ensure_open()
        if self.status == "disqualified":
            raise DomainError("a disqualified lead cannot be qualified")
        self.record(LeadQualified(lead_id=self.id, score=score, notes=notes))

    def disqualify(self, reason: str) -> None:
        self._ensure_open()
        if self.status == "disqualified":
            raise DomainError("the lead is already disqualified")
        self.record(LeadDisqualified(lead_id=self.id, reason=reason))

    def convert(
        self,
        *,
        customer_id: str,
        contact_id: str,
        account_id: str | None,
        deal_id: str | None,
    ) -> None:
        """Record the conversion; the contact, account and deal are saved in the same commit."""
        self.ensure_convertible()
        self.record(
            LeadConverted(
                lead_id=self.id,
                lead_customer_id=self.customer_id,
                customer_id=customer_id,
                contact_id=contact_id,
                account_id=account_id,
                deal_id=deal_id,
            )
        )

    @applies(LeadCaptured)
    def _captured(self, e: LeadCaptured) -> None:
        self.subject = e.customer_id
        self.customer_id = e.customer_id
        self.name = e.name
        self.email = e.email
        self.phone = e.phone
        self.company = e.company
        self.source = e.source
        self.source_detail = e.source_detail
        self.owner_id = e.owner_id
        self.team_id = e.team_id
        self.region = e.region
        self.product_line = e.product_line
        self.attribution = e.attribution

    @applies(LeadAssigned)
    def _assigned(self, e: LeadAssigned) -> None:
        self.owner_id = e.owner_id
        self.team_id = e.team_id

    @applies(LeadQualified)
    def _qualified(self, e: LeadQualified) -> None:
        self.status = "qualified"
        self.score = e.score
        self.notes = e.notes

    @applies(LeadDisqualified)
    def _disqualified(self, e: LeadDisqualified) -> None:
        self.status = "disqualified"
        self.disqualify_reason = e.reason

    @applies(LeadConverted)
    def _converted(self, e: LeadConverted) -> None:
        self.status = "converted"
        self.converted = e
