"""Service-desk ticket events (``crm.service.ticket.*``). Subject: the ticket's customer id."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

TicketKind = Literal[
    "service_request", "incident", "complaint", "feedback", "query", "product_return"
]
TicketPriority = Literal["low", "normal", "high", "urgent"]
TicketStatus = Literal[
    "new", "assigned", "in_progress", "waiting_on_customer", "resolved", "closed", "merged"
]
TicketChannel = Literal["api", "portal", "email"]
ReturnStatus = Literal["requested", "approved", "received", "refunded", "replaced"]
CustomerChannel = Literal["email", "link"]


class ProductReturn(EventPayload):
    """What a product-return ticket is about."""

    order_ref: str = Field(min_length=1, max_length=100)
    product_ref: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000)


@event_type("crm.service.ticket.opened", version=1, public=True)
class TicketOpened(EventPayload):
    """A customer's ticket was opened (through the API, the portal or an e-mail)."""

    ticket_id: str
    customer_id: str
    customer_email: str | None = None
    customer_name: str | None = Field(default=None, max_length=200)
    kind: TicketKind
    subject: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=20000)
    priority: TicketPriority = "normal"
    product: str | None = None
    language: str | None = None
    region: str | None = None
    customer_tier: str | None = None
    channel: TicketChannel
    opened_by: str | None = Field(default=None, description="the agent who opened it, if any")
    product_return: ProductReturn | None = None
    source_message_id: str | None = Field(default=None, description="the e-mail it came from")
    follow_up_of: str | None = Field(
        default=None, description="a closed ticket the customer wrote to again"
    )


@event_type("crm.service.ticket.assigned", version=1)
class TicketAssigned(EventPayload):
    """The ticket was put in a queue and/or given to an agent (by a routing rule or by hand)."""

    ticket_id: str
    queue_id: str | None
    assignee_id: str | None
    rule_id: str | None = None
    reason: str | None = None
    manual: bool = False
    from_status: TicketStatus
    to_status: TicketStatus


@event_type("crm.service.ticket.status_changed", version=1, public=True)
class TicketStatusChanged(EventPayload):
    """The ticket moved between working states (in progress, waiting on the customer)."""

    ticket_id: str
    from_status: TicketStatus
    to_status: TicketStatus
    reason: str | None = None


@event_type("crm.service.ticket.updated", version=1)
class TicketUpdated(EventPayload):
    """Ticket details were changed; ``changed`` names the fields set."""

    ticket_id: str
    changed: list[str] = Field(min_length=1)
    subject: str
    priority: TicketPriority
    product: str | None = None
    language: str | None = None
    region: str | None = None
    customer_tier: str | None = None


@event_type("crm.service.ticket.replied", version=1, public=True)
class TicketReplied(EventPayload):
    """An agent answered the customer (sent by e-mail with the ticket token)."""

    ticket_id: str
    comment_id: str
    author_id: str
    body: str = Field(min_length=1, max_length=20000)
    to: list[str]
    message_id: str = Field(description="the Message-ID of the e-mail sent")
    first_response: bool = False


@event_type("crm.service.ticket.note_added", version=1)
class TicketNoteAdded(EventPayload):
    """An internal note (never sent to the customer)."""

    ticket_id: str
    note_id: str
    author_id: str
    body: str = Field(min_length=1, max_length=20000)


@event_type("crm.service.ticket.customer_replied", version=1, public=True)
class TicketCustomerReplied(EventPayload):
    """The customer wrote on the ticket (an e-mail reply, or through the ticket link)."""

    ticket_id: str
    comment_id: str
    body: str = Field(max_length=20000)
    channel: CustomerChannel
    message_id: str | None = None
    from_email: str | None = None


@event_type("crm.service.ticket.resolved", version=1, public=True)
class TicketResolved(EventPayload):
    """The ticket was resolved (the customer gets a satisfaction survey)."""

    ticket_id: str
    from_status: TicketStatus
    resolution: str | None = Field(default=None, max_length=5000)


@event_type("crm.service.ticket.reopened", version=1, public=True)
class TicketReopened(EventPayload):
    """A resolved ticket was opened again (the customer replied, or an agent reopened it)."""

    ticket_id: str
    to_status: TicketStatus
    reason: str | None = None


@event_type("crm.service.ticket.closed", version=1, public=True)
class TicketClosed(EventPayload):
    """A resolved ticket was closed for good."""

    ticket_id: str
    reason: str | None = None


@event_type("crm.service.ticket.merged_into", version=1, public=True)
class TicketMergedInto(EventPayload):
    """This ticket was a duplicate and was merged into another; its later mail goes there."""

    ticket_id: str
    survivor_id: str
    from_status: TicketStatus


@event_type("crm.service.ticket.duplicate_merged", version=1)
class TicketDuplicateMerged(EventPayload):
    """A duplicate ticket was merged into this one."""

    ticket_id: str
    duplicate_id: str


@event_type("crm.service.ticket.return_status_changed", version=1, public=True)
class TicketReturnStatusChanged(EventPayload):
    """A product return moved on: requested, approved, received, refunded or replaced."""

    ticket_id: str
    from_status: ReturnStatus
    to_status: ReturnStatus
    note: str | None = Field(default=None, max_length=2000)


@event_type("crm.service.ticket.rated", version=1, public=True)
class TicketRated(EventPayload):
    """The customer rated the service on the ticket (CSAT, once per ticket)."""

    ticket_id: str
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=5000)
