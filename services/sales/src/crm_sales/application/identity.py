"""Sales answers the people other contexts meet (design §5, docs/identity.md).

Marketing and the service desk publish ``crm.<context>.person.sighted`` with a provisional
customer id when nobody knows an e-mail address. Sales, the system of record for customers,
decides who that person is, once per sighting (the consumer applies each event id once):

- the address belongs to a contact, or to an open lead → ``crm.sales.customer.identified``
  links the provisional id to that customer;
- otherwise a prospect becomes a lead (source ``web_form``, with the form and its attribution)
  and a customer becomes a contact; either keeps the provisional id as its customer id, so the
  other context's events need no rewriting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from crm_events import CloudEvent, EventPayload, context_topic
from crm_events.schemas.identity import CustomerIdentified, PersonSighted
from crm_events.schemas.sales import ContactDetails
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_sales.adapters import directory
from crm_sales.application.directory import ContactHandlers
from crm_sales.application.leads import CaptureLead, LeadHandlers
from crm_sales.domain.contact import normalise_email

log = logging.getLogger(__name__)

SIGHTINGS = frozenset({"crm.marketing.person.sighted", "crm.service.person.sighted"})
Answer = Literal["identified_contact", "identified_lead", "lead_captured", "contact_created"]


async def answer_sighting(
    conn: Conn, store: EventStore, sighted_in: str, p: PersonSighted, meta: Metadata
) -> Answer:
    email = normalise_email(p.email)
    # One answer per address at a time: the same lock lead capture takes.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", email)
    contact_id = await directory.find_contact_by_emails(conn, [email])
    if contact_id is not None:
        customer = await conn.fetchval(
            "SELECT customer_id FROM contacts WHERE contact_id = $1", contact_id
        )
        await _identified(conn, store, p.customer_id, str(customer), sighted_in, "contact", meta)
        return "identified_contact"
    lead_customer = await conn.fetchval(
        "SELECT customer_id FROM leads WHERE email = $1 AND status IN ('new', 'qualified')"
        " ORDER BY created_at LIMIT 1",
        email,
    )
    if lead_customer is not None:
        await _identified(conn, store, p.customer_id, str(lead_customer), sighted_in, "lead", meta)
        return "identified_lead"
    name = " ".join(x for x in (p.first_name, p.last_name) if x) or email.split("@")[0]
    if p.sighted_as == "prospect":
        await LeadHandlers(store).capture(
            conn,
            CaptureLead(
                name=name,
                source="web_form" if sighted_in == "marketing" else "email",
                email=email,
                phone=p.phone,
                company=p.company,
                source_detail=p.source_detail,
                attribution=p.attribution,
                customer_id=p.customer_id,
            ),
            meta,
        )
        return "lead_captured"
    await ContactHandlers(store).create(
        conn,
        ContactDetails(  # a contact needs a last name: the whole name stands in for a lone one
            first_name=p.first_name if p.last_name else None,
            last_name=p.last_name or name,
            emails=[email],
            phones=[p.phone] if p.phone else None,
        ),
        meta,
        owner_id=None,
        team_id=None,
        customer_id=p.customer_id,
    )
    return "contact_created"


async def _identified(
    conn: Conn,
    store: EventStore,
    alias: str,
    customer: str,
    sighted_in: str,
    by: Literal["contact", "lead"],
    meta: Metadata,
) -> None:
    if alias == customer:
        return
    payload = CustomerIdentified(
        alias_id=alias,
        customer_id=customer,
        sighted_in="marketing" if sighted_in == "marketing" else "service",
        matched_by="contact_email" if by == "contact" else "lead_email",
    )
    await store.append(
        conn,
        f"identity-{alias}",
        "identity",
        0,
        [
            NewEvent(
                type="crm.sales.customer.identified",
                schema_version=1,
                data=payload.model_dump(mode="json"),
                subject=customer,
            )
        ],
        meta,
    )


class IdentityDesk:
    """The projection that answers sightings (a consumer of marketing's and service's topics)."""

    name = "sales.identity"

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def handles(self, event_type: str) -> bool:
        return event_type in SIGHTINGS

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        assert isinstance(payload, PersonSighted)
        meta = Metadata(
            actor=f"system:{event.context}",
            correlation_id=event.correlationid,
            causation_id=str(event.id),
        )
        answer = await answer_sighting(conn, self.store, event.context, payload, meta)
        log.info("person sighting answered", extra={"answer": answer, "context": event.context})


async def run_identity_desk(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Background task: answer other contexts' sightings (``CONSUMERS_ENABLED``)."""
    if not ctx.settings.consumers_enabled:
        return
    from crm_runtime.consumer import KafkaConsumerRunner

    runner = KafkaConsumerRunner(
        ctx.settings,
        ctx.pool,
        IdentityDesk(ctx.store),
        [context_topic("marketing"), context_topic("service")],
    )
    await runner.run(stop)
