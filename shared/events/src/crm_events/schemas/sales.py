"""Sales context events (``crm.sales.*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

LeadSource = Literal["manual", "web_form", "import", "referral", "campaign", "email", "phone"]


@event_type("crm.sales.lead.captured", version=1, public=True)
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
