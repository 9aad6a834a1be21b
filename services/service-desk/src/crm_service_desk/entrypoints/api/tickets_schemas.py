"""Request and response bodies of the ticket API, the portal and the customer links."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from crm_events.schemas.service import (
    ProductReturn,
    ReturnStatus,
    TicketChannel,
    TicketKind,
    TicketPriority,
    TicketStatus,
)
from crm_runtime.http.inputs import BodyNotBlank, Label, NotBlank, OneLine
from crm_service_desk.domain.ticket import Ticket

Language = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=20)]
Body = Annotated[str, Field(min_length=1, max_length=20000), BodyNotBlank]
Subject = Annotated[str, Field(min_length=1, max_length=300), NotBlank, OneLine]


class ReturnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_ref: Annotated[str, Field(min_length=1, max_length=100), NotBlank]
    product_ref: Annotated[str, Field(min_length=1, max_length=100), NotBlank]
    reason: Annotated[str, Field(min_length=1, max_length=2000), NotBlank]


class _ReturnCheck(BaseModel):
    @model_validator(mode="after")
    def _return_details(self) -> Any:
        kind = getattr(self, "kind", None)
        details = getattr(self, "product_return", None)
        if kind == "product_return" and details is None:
            raise ValueError("product_return (order_ref, product_ref, reason) is required")
        if kind != "product_return" and details is not None:
            raise ValueError("product_return is only for kind product_return")
        return self


class TicketCreate(_ReturnCheck):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "incident",
                    "subject": "Checkout page fails",
                    "description": "Error 500 after entering the card.",
                    "customer_email": "ada@example.com",
                    "priority": "high",
                    "product": "webshop",
                    "language": "en",
                    "region": "EMEA",
                }
            ]
        },
    )

    kind: TicketKind = "query"
    subject: Subject
    description: str = Field(default="", max_length=20000)
    customer_email: EmailStr
    customer_name: str | None = Field(default=None, max_length=200)
    customer_id: str | None = Field(
        default=None, max_length=100, description="when known (from sales); else resolved by e-mail"
    )
    priority: TicketPriority = "normal"
    product: Label | None = None
    language: Language | None = None
    region: Label | None = None
    customer_tier: Label | None = Field(default=None, description="e.g. top, key, standard")
    product_return: ReturnIn | None = None


class TicketPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"priority": "urgent"}]}
    )

    subject: Subject | None = None
    priority: TicketPriority | None = None
    product: Label | None = None
    language: Language | None = None
    region: Label | None = None
    customer_tier: Label | None = None

    @model_validator(mode="after")
    def _not_null(self) -> TicketPatch:
        for name in ("subject", "priority"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class AssignIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queue_id": "returns", "assignee_id": "ann"}]},
    )

    queue_id: str | None = Field(default=None, max_length=100)
    assignee_id: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, max_length=500)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["in_progress", "waiting_on_customer"]
    reason: str | None = Field(default=None, max_length=500)


class ReplyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"body": "Could you send the order number?", "wait_on_customer": True}]
        },
    )

    body: Body
    wait_on_customer: bool = Field(
        default=False, description="the ticket then waits on the customer (the SLA clock pauses)"
    )


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Body


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: str | None = Field(default=None, max_length=5000)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class MergeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"into": "T-7K3M9QX2PA"}]}
    )

    into: Annotated[str, Field(min_length=1, max_length=40), NotBlank] = Field(
        description="the ticket that survives"
    )


class ReturnMoveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "approved"}]}
    )

    status: ReturnStatus
    note: str | None = Field(default=None, max_length=2000)


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"score": 5}]})

    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=5000)


class CustomerReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Body


class PortalTicketIn(_ReturnCheck):
    """The public form: no token; a site key (header ``X-Site-Key``) and an allowed Origin."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    subject: Subject
    message: Annotated[str, Field(min_length=1, max_length=10000), BodyNotBlank]
    kind: TicketKind = "query"
    product: Label | None = None
    language: Language | None = None
    product_return: ReturnIn | None = None
    website: str | None = Field(
        default=None, max_length=500, description="honeypot: leave empty (bots fill it)"
    )


class PortalAccepted(BaseModel):
    status: Literal["received"] = "received"
    ticket_ref: str | None = Field(description="the ticket token, also sent by e-mail")


class TicketOut(BaseModel):
    id: str
    customer_id: str
    customer_email: str | None
    customer_name: str | None
    kind: TicketKind
    subject: str
    description: str
    status: TicketStatus
    priority: TicketPriority
    product: str | None
    language: str | None
    region: str | None
    customer_tier: str | None
    channel: TicketChannel
    opened_by: str | None
    queue_id: str | None
    assignee_id: str | None
    product_return: ProductReturn | None
    return_status: ReturnStatus | None
    merged_into: str | None
    duplicates: list[str]
    follow_up_of: str | None
    resolution: str | None
    score: int | None
    version: int

    @classmethod
    def of(cls, t: Ticket) -> TicketOut:
        return cls(
            id=t.id,
            customer_id=t.customer_id,
            customer_email=t.customer_email,
            customer_name=t.customer_name,
            kind=t.kind,
            subject=t.title,
            description=t.description,
            status=t.status,
            priority=t.priority,
            product=t.product,
            language=t.language,
            region=t.region,
            customer_tier=t.customer_tier,
            channel=t.channel,
            opened_by=t.opened_by,
            queue_id=t.queue_id,
            assignee_id=t.assignee_id,
            product_return=t.product_return,
            return_status=t.return_status,
            merged_into=t.merged_into,
            duplicates=list(t.duplicates),
            follow_up_of=t.follow_up_of,
            resolution=t.resolution,
            score=t.score,
            version=t.version,
        )


class TicketSummary(BaseModel):
    id: str
    customer_id: str
    kind: TicketKind
    status: TicketStatus
    priority: TicketPriority
    subject: str
    product: str | None
    language: str | None
    region: str | None
    customer_tier: str | None
    queue_id: str | None
    assignee_id: str | None
    channel: TicketChannel
    return_status: ReturnStatus | None
    merged_into: str | None
    score: int | None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    last_customer_message_at: datetime | None
    last_agent_reply_at: datetime | None
    waiting_since: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    version: int


class CommentOut(BaseModel):
    id: str
    author_kind: Literal["agent", "customer"]
    author_id: str | None
    public: bool
    body: str
    created_at: datetime


class MergeOut(BaseModel):
    duplicate: TicketOut
    survivor: TicketOut


class LinkOut(BaseModel):
    url: str
    token: str


class CustomerTicketOut(BaseModel):
    """What the customer sees through the signed link: no notes, no internal fields."""

    id: str
    subject: str
    status: TicketStatus
    kind: TicketKind
    return_status: ReturnStatus | None
    merged_into: str | None
    conversation: list[CommentOut]


class SurveyOut(BaseModel):
    ticket_id: str
    subject: str
    rated: bool
    score: int | None


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
