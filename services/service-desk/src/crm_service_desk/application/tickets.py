"""Command handlers for tickets: open (any channel), work, converse, resolve, merge, rate.

Each handler runs in the caller's transaction: it loads the ticket, runs the domain command,
saves the new events, updates the read models (and, when the events move an SLA clock, the
ticket's SLA state: ``sla.evaluate_ticket``) and writes any mail to the outbox (sent after the
commit by ``tickets_mail.send_pending``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from crm_events import EventPayload
from crm_events.schemas.service import (
    CustomerChannel,
    ProductReturn,
    ReturnStatus,
    TicketChannel,
    TicketKind,
    TicketPriority,
    TicketReplied,
    TicketUpdated,
)
from crm_runtime import people
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_service_desk.adapters import tickets_view
from crm_service_desk.application import routing, sla, tickets_mail
from crm_service_desk.application.tickets_links import Links
from crm_service_desk.config import DeskSettings
from crm_service_desk.domain.ticket import Details, Ticket, new_ticket_id, token

log = logging.getLogger(__name__)


def moves_sla_clock(events: Sequence[EventPayload]) -> bool:
    """Whether the events start, stop, pause or change a ticket's SLA clock: the opening, a
    status change (waiting on the customer pauses; resolving, closing, merging stop; reopening
    starts a new episode), a public reply (the first response) or a new priority (its policy's
    targets)."""
    return any(
        tickets_view.new_status(e) is not None
        or isinstance(e, TicketReplied)
        or (isinstance(e, TicketUpdated) and "priority" in e.changed)
        for e in events
    )


@dataclass(frozen=True)
class OpenTicket:
    kind: TicketKind
    subject: str
    channel: TicketChannel
    customer_email: str | None
    description: str = ""
    customer_id: str | None = None
    customer_name: str | None = None
    priority: TicketPriority = "normal"
    product: str | None = None
    language: str | None = None
    region: str | None = None
    customer_tier: str | None = None
    opened_by: str | None = None
    product_return: ProductReturn | None = None
    source_message_id: str | None = None
    follow_up_of: str | None = None
    source_detail: str | None = None


def split_name(name: str | None) -> tuple[str | None, str | None]:
    if not name or not name.strip():
        return None, None
    parts = name.strip().rsplit(" ", 1)
    return (parts[0][:100], parts[1][:100]) if len(parts) == 2 else (None, parts[0][:100])


class TicketHandlers:
    def __init__(self, store: EventStore, desk: DeskSettings, links: Links) -> None:
        self.store = store
        self.desk = desk
        self.links = links
        self.tickets = Repository(store, Ticket)

    # --- loading and saving -------------------------------------------------------------------

    async def load(self, conn: Conn, ticket_id: str, expected_version: int | None = None) -> Ticket:
        ticket = await self.tickets.load(ticket_id, conn=conn)
        check_version(expected_version, ticket.version)
        return ticket

    async def save(self, conn: Conn, ticket: Ticket, meta: Metadata, now: datetime) -> Ticket:
        events = list(ticket.pending)
        if not events:
            return ticket
        await self.tickets.save(conn, ticket, meta)
        await tickets_view.project(conn, ticket, events, now)
        if moves_sla_clock(events):  # the SLA state comes with the command, not a tick later
            await sla.evaluate_ticket(conn, self.store, ticket.id, now)
        return ticket

    # --- opening ------------------------------------------------------------------------------

    async def open(self, conn: Conn, cmd: OpenTicket, meta: Metadata, now: datetime) -> Ticket:
        customer_id = cmd.customer_id
        if customer_id is None:
            if not cmd.customer_email:
                raise Conflict("a ticket needs the customer's e-mail address or customer id")
            customer_id, minted = await people.resolve_or_mint(conn, cmd.customer_email)
            if minted:
                first, last = split_name(cmd.customer_name)
                await people.record_sighting(
                    conn,
                    self.store,
                    context="service",
                    customer_id=customer_id,
                    email=cmd.customer_email,
                    first_name=first,
                    last_name=last,
                    sighted_as="customer",
                    source_detail=cmd.source_detail or f"service-desk:{cmd.channel}",
                    metadata=meta,
                )
        ticket = Ticket.open(
            new_ticket_id(),
            customer_id,
            kind=cmd.kind,
            subject=cmd.subject,
            description=cmd.description,
            channel=cmd.channel,
            customer_email=cmd.customer_email,
            customer_name=cmd.customer_name,
            priority=cmd.priority,
            product=cmd.product,
            language=cmd.language,
            region=cmd.region,
            customer_tier=cmd.customer_tier,
            opened_by=cmd.opened_by,
            product_return=cmd.product_return,
            source_message_id=cmd.source_message_id,
            follow_up_of=cmd.follow_up_of,
        )
        await self._route(conn, ticket, meta, now)
        await self.save(conn, ticket, meta, now)
        if cmd.source_message_id:
            await tickets_view.remember_message(conn, cmd.source_message_id, ticket.id, "in")
        if self.desk.acknowledge_new_tickets and cmd.channel != "api" and ticket.customer_email:
            await tickets_mail.enqueue(
                conn,
                ticket_id=ticket.id,
                purpose="acknowledgement",
                to=ticket.customer_email,
                subject=f"{token(ticket.id)} {ticket.title}",
                body=(
                    f"Thank you for contacting us. Your request is ticket {ticket.id}.\n\n"
                    "Reply to this e-mail to add to it, or follow it here:\n"
                    f"{self.links.ticket_url(ticket.id)}\n"
                ),
                message_id=tickets_mail.new_message_id(self.desk.support_address),
                in_reply_to=cmd.source_message_id,
                now=now,
            )
        return ticket

    async def _route(self, conn: Conn, ticket: Ticket, meta: Metadata, now: datetime) -> None:
        decision = await routing.route(
            conn,
            self.store,
            ticket_id=ticket.id,
            kind=ticket.kind,
            priority=ticket.priority,
            product=ticket.product,
            language=ticket.language,
            region=ticket.region,
            metadata=meta,
            now=now,
        )
        if decision is not None:
            ticket.assign(
                decision.queue_id,
                decision.agent_id,
                rule_id=decision.rule_id,
                reason=decision.reason,
            )

    # --- working ------------------------------------------------------------------------------

    async def assign(
        self,
        conn: Conn,
        ticket: Ticket,
        queue_id: str | None,
        assignee_id: str | None,
        meta: Metadata,
        now: datetime,
        reason: str | None = None,
    ) -> Ticket:
        ticket.assign(queue_id, assignee_id, reason=reason or "reassigned by hand", manual=True)
        return await self.save(conn, ticket, meta, now)

    async def change_status(
        self, conn: Conn, ticket: Ticket, to: str, reason: str | None, meta: Metadata, now: datetime
    ) -> Ticket:
        if to == "in_progress":
            ticket.start()
        elif to == "waiting_on_customer":
            ticket.wait_on_customer(reason)
        else:  # pragma: no cover - the API allows only the two
            raise Conflict(f"use the resolve, close or reopen actions to make a ticket {to}")
        return await self.save(conn, ticket, meta, now)

    async def update(
        self, conn: Conn, ticket: Ticket, details: Details, meta: Metadata, now: datetime
    ) -> Ticket:
        ticket.update(details)
        return await self.save(conn, ticket, meta, now)

    async def reply(
        self,
        conn: Conn,
        ticket: Ticket,
        author_id: str,
        body: str,
        meta: Metadata,
        now: datetime,
        *,
        wait_on_customer: bool = False,
    ) -> tuple[Ticket, str]:
        comment_id = str(uuid.uuid4())
        message_id = tickets_mail.new_message_id(self.desk.support_address)
        ticket.reply(comment_id, author_id, body, message_id, wait_on_customer=wait_on_customer)
        await self.save(conn, ticket, meta, now)
        assert ticket.customer_email is not None  # reply() checked
        await tickets_mail.enqueue(
            conn,
            ticket_id=ticket.id,
            purpose="reply",
            to=ticket.customer_email,
            subject=f"Re: {ticket.title} {token(ticket.id)}",
            body=(
                f"{body}\n\n--\nReply to this e-mail to answer, or see the ticket here:\n"
                f"{self.links.ticket_url(ticket.id)}\n"
            ),
            message_id=message_id,
            in_reply_to=await tickets_view.last_inbound_message(conn, ticket.id),
            now=now,
        )
        return ticket, comment_id

    async def add_note(
        self, conn: Conn, ticket: Ticket, author_id: str, body: str, meta: Metadata, now: datetime
    ) -> tuple[Ticket, str]:
        note_id = str(uuid.uuid4())
        ticket.add_note(note_id, author_id, body)
        return await self.save(conn, ticket, meta, now), note_id

    async def customer_reply(
        self,
        conn: Conn,
        ticket: Ticket,
        body: str,
        channel: CustomerChannel,
        meta: Metadata,
        now: datetime,
        *,
        message_id: str | None = None,
        from_email: str | None = None,
    ) -> tuple[Ticket, str]:
        comment_id = str(uuid.uuid4())
        ticket.customer_reply(
            comment_id, body, channel, message_id=message_id, from_email=from_email
        )
        await self.save(conn, ticket, meta, now)
        if message_id:
            await tickets_view.remember_message(conn, message_id, ticket.id, "in")
        return ticket, comment_id

    async def resolve(
        self, conn: Conn, ticket: Ticket, resolution: str | None, meta: Metadata, now: datetime
    ) -> Ticket:
        ticket.resolve(resolution)
        await self.save(conn, ticket, meta, now)
        if ticket.customer_email and ticket.score is None:
            await tickets_mail.enqueue(
                conn,
                ticket_id=ticket.id,
                purpose="survey",
                to=ticket.customer_email,
                subject=f"How did we do? {token(ticket.id)}",
                body=(
                    f"Your ticket {ticket.id} ({ticket.title}) is resolved.\n"
                    + (f"\n{resolution}\n" if resolution else "")
                    + "\nPlease tell us how we did (1 to 5), it takes a few seconds:\n"
                    f"{self.links.survey_url(ticket.id)}\n\n"
                    "If the problem is not solved, just reply to this e-mail.\n"
                ),
                message_id=tickets_mail.new_message_id(self.desk.support_address),
                now=now,
            )
        return ticket

    async def reopen(
        self, conn: Conn, ticket: Ticket, reason: str | None, meta: Metadata, now: datetime
    ) -> Ticket:
        ticket.reopen(reason)
        return await self.save(conn, ticket, meta, now)

    async def close(
        self, conn: Conn, ticket: Ticket, reason: str | None, meta: Metadata, now: datetime
    ) -> Ticket:
        ticket.close(reason)
        return await self.save(conn, ticket, meta, now)

    async def merge(
        self, conn: Conn, duplicate: Ticket, survivor_id: str, meta: Metadata, now: datetime
    ) -> tuple[Ticket, Ticket]:
        try:
            survivor = await self.tickets.load(survivor_id, conn=conn)
        except NotFound:
            raise Conflict(f"ticket {survivor_id} does not exist") from None
        duplicate.merge_into(survivor)
        await self.save(conn, duplicate, meta, now)
        await self.save(conn, survivor, meta, now)
        return duplicate, survivor

    async def move_return(
        self,
        conn: Conn,
        ticket: Ticket,
        to: ReturnStatus,
        note: str | None,
        meta: Metadata,
        now: datetime,
    ) -> Ticket:
        ticket.move_return(to, note)
        return await self.save(conn, ticket, meta, now)

    async def rate(
        self,
        conn: Conn,
        ticket: Ticket,
        score: int,
        comment: str | None,
        meta: Metadata,
        now: datetime,
    ) -> Ticket:
        ticket.rate(score, comment)
        return await self.save(conn, ticket, meta, now)

    async def survivor(self, conn: Conn, ticket: Ticket) -> Ticket:
        """Follow merges: the ticket a merged duplicate now lives on."""
        seen = {ticket.id}
        while ticket.status == "merged" and ticket.merged_into and ticket.merged_into not in seen:
            seen.add(ticket.merged_into)
            ticket = await self.tickets.load(ticket.merged_into, conn=conn)
        return ticket
