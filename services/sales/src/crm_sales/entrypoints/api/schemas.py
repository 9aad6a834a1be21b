"""Request and response bodies of the sales API (kept apart from the domain objects)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from crm_events.schemas.sales import LeadSource
from crm_sales.domain.lead import Lead, LeadStatus


class LeadCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "company": "Analytical Engines Ltd",
                    "source": "web_form",
                    "source_detail": "form:contact-us",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9 ()./-]{3,40}$")
    company: str | None = Field(default=None, max_length=200)
    source: LeadSource = "manual"
    source_detail: str | None = Field(default=None, max_length=200)
    owner_id: str | None = Field(default=None, max_length=100)


class LeadQualify(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"score": 80}]})

    score: int = Field(ge=0, le=100)
    notes: str | None = Field(default=None, max_length=5000)


class LeadDisqualify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)


class LeadPublic(BaseModel):
    id: str
    customer_id: str
    name: str
    email: str | None
    phone: str | None = None
    company: str | None
    source: LeadSource
    source_detail: str | None = None
    status: LeadStatus
    score: int | None
    owner_id: str | None
    version: int

    @classmethod
    def of(cls, lead: Lead) -> LeadPublic:
        return cls(
            id=lead.id,
            customer_id=lead.customer_id,
            name=lead.name,
            email=lead.email,
            phone=lead.phone,
            company=lead.company,
            source=lead.source,
            source_detail=lead.source_detail,
            status=lead.status,
            score=lead.score,
            owner_id=lead.owner_id,
            version=lead.version,
        )


class LeadSummary(BaseModel):
    id: str
    customer_id: str
    name: str
    email: str | None
    company: str | None
    source: str
    status: str
    score: int | None
    owner_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class HistoryEntry(BaseModel):
    version: int
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    correlation_id: str | None
    data: dict[str, Any]
