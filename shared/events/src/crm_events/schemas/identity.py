"""Customer identity across contexts (design §5; docs/identity.md).

Sales owns customer ids. A context that meets a person by e-mail it cannot resolve mints a
provisional customer id, uses it as the subject of its own events, and publishes
``crm.<context>.person.sighted``. Sales answers: the provisional id becomes a new lead's or
contact's customer id, or — when the address is already known — ``crm.sales.customer.identified``
links the provisional id to the existing customer. Nobody rewrites history; the timeline follows
the links.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

SightedAs = Literal["prospect", "customer"]


class PersonSighted(EventPayload):
    """A context met a person it could not resolve to a customer; sales decides who they are."""

    customer_id: str = Field(description="the provisional customer id the context minted")
    email: str
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    company: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    sighted_as: SightedAs = Field(
        description="prospect: sales captures a lead; customer: sales creates a contact"
    )
    source_detail: str | None = Field(
        default=None, max_length=200, description="form id, mailbox, portal: where they came in"
    )
    attribution: dict[str, str] | None = Field(
        default=None, description="utm_source, utm_medium, utm_campaign, referrer…"
    )


@event_type("crm.marketing.person.sighted", version=1, public=True)
class MarketingPersonSighted(PersonSighted):
    """Marketing met a person it could not resolve (a web form, a newsletter sign-up)."""


@event_type("crm.service.person.sighted", version=1, public=True)
class ServicePersonSighted(PersonSighted):
    """The service desk met a person it could not resolve (an e-mail, a portal ticket)."""


@event_type("crm.sales.customer.identified", version=1, public=True)
class CustomerIdentified(EventPayload):
    """A provisional customer id turned out to be an existing customer; it now stands for it."""

    alias_id: str = Field(description="the provisional id another context minted")
    customer_id: str = Field(description="the existing customer it is")
    sighted_in: Literal["marketing", "service"]
    matched_by: Literal["contact_email", "lead_email"]
