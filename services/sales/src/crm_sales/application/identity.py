"""What sales hears from the other contexts: the people they meet (design §5,
docs/identity.md) and service-desk escalations meant for account owners.

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
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from crm_events import CloudEvent, EventPayload, context_topic
from crm_events.schemas.identity import CustomerIdentified, PersonSighted
from crm_events.schemas.sales import About, ContactDetails
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_sales.adapters import directory
from crm_sales.application.directory import ContactHandlers
from crm_sales.application.leads import CaptureLead, LeadHandlers
from crm_sales.application.work import WorkHandlers
from crm_sales.domain.contact import normalise_email
from crm_sales.domain.work import Task

log = logging.getLogger(__name__)

SIGHTINGS = frozenset({"crm.marketing.person.sighted", "crm.service.person.sighted"})
ESCALATED = "crm.service.ticket.escalated"
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


async def task_for_escalation(
    conn: Conn, store: EventStore, d: dict[str, Any], meta: Metadata
) -> str | None:
    """A service-desk escalation that asks for the account owner (an SLA breach on a top-tier
    customer) becomes a high-priority task for the owner of the customer's account — or of the
    contact when it has no account. Returns the task id, or None when nobody owns the customer."""
    if not d.get("notify_account_owner", d.get("rule_kind") == "sla_breach"):
        return None
    if not d.get("customer_id"):
        return None
    # a provisional id sales identified stands for the customer it was identified as
    customer = (
        await conn.fetchval(
            "SELECT payload->>'customer_id' FROM events WHERE stream_id = $1 LIMIT 1",
            f"identity-{d['customer_id']}",
        )
        or d["customer_id"]
    )
    row = await conn.fetchrow(
        """
        SELECT c.contact_id, c.account_id, COALESCE(a.owner_id, c.owner_id) AS owner_id,
               COALESCE(a.team_id, c.team_id) AS team_id, COALESCE(a.name, c.display_name) AS name
        FROM contacts c LEFT JOIN accounts a ON a.account_id = c.account_id
        WHERE c.customer_id = $1 ORDER BY c.merged_into IS NULL DESC LIMIT 1
        """,
        customer,
    )
    if row is None:
        row = await conn.fetchrow(
            "SELECT NULL AS contact_id, account_id, owner_id, team_id, name FROM accounts"
            " WHERE customer_id = $1 LIMIT 1",
            customer,
        )
    if row is None or row["owner_id"] is None:
        return None
    task = Task.create(
        str(uuid.uuid4()),
        title=f"Service escalation for {row['name']}: ticket {d['ticket_id']}",
        notes=f"{d.get('reason') or 'an SLA was breached'} (tier {d.get('customer_tier')})",
        about=About(contact_id=row["contact_id"], account_id=row["account_id"]),
        customer_id=customer,
        due_at=datetime.now(UTC) + timedelta(days=1),
        assignee_id=row["owner_id"],
        team_id=row["team_id"],
        priority="high",
        origin=f"escalation:{d['ticket_id']}:{d.get('episode')}",
    )
    await WorkHandlers(store).create_task(conn, task, meta)
    return task.id


class IdentityDesk:
    """The projection that answers sightings (a consumer of marketing's and service's topics)."""

    name = "sales.identity"

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def handles(self, event_type: str) -> bool:
        return event_type in SIGHTINGS or event_type == ESCALATED

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        meta = Metadata(
            actor=f"system:{event.context}",
            correlation_id=event.correlationid,
            causation_id=str(event.id),
        )
        if event.type == ESCALATED:
            task = await task_for_escalation(conn, self.store, event.data, meta)
            log.info("service escalation received", extra={"task_created": task is not None})
            return
        assert isinstance(payload, PersonSighted)
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
