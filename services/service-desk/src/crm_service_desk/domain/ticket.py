"""The Ticket aggregate: a customer's request of any kind, from new to closed (or merged).

Lifecycle::

    new -> assigned -> in_progress -> waiting_on_customer -> resolved -> closed
                                                              |-> reopened (customer replies)
    any open state -> merged (a duplicate folded into another ticket)

Every status change goes through ``_check_move`` against ``MOVES``; an illegal command raises
DomainError (409) and records nothing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from crm_events.schemas.service import (
    CustomerChannel,
    ProductReturn,
    ReturnStatus,
    TicketAssigned,
    TicketChannel,
    TicketClosed,
    TicketCustomerReplied,
    TicketDuplicateMerged,
    TicketKind,
    TicketMergedInto,
    TicketNoteAdded,
    TicketOpened,
    TicketPriority,
    TicketRated,
    TicketReopened,
    TicketReplied,
    TicketResolved,
    TicketReturnStatusChanged,
    TicketStatus,
    TicketStatusChanged,
    TicketUpdated,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

OPEN: frozenset[TicketStatus] = frozenset({"new", "assigned", "in_progress", "waiting_on_customer"})
TERMINAL: frozenset[TicketStatus] = frozenset({"closed", "merged"})

# Every status change a ticket may make (and no other).
MOVES: dict[TicketStatus, frozenset[TicketStatus]] = {
    "new": frozenset({"assigned", "in_progress", "waiting_on_customer", "resolved", "merged"}),
    "assigned": frozenset(
        {"new", "assigned", "in_progress", "waiting_on_customer", "resolved", "merged"}
    ),
    "in_progress": frozenset({"new", "assigned", "waiting_on_customer", "resolved", "merged"}),
    "waiting_on_customer": frozenset({"in_progress", "resolved", "merged"}),
    "resolved": frozenset({"new", "assigned", "closed"}),
    "closed": frozenset(),
    "merged": frozenset(),
}

RETURN_MOVES: dict[ReturnStatus, frozenset[ReturnStatus]] = {
    "requested": frozenset({"approved"}),
    "approved": frozenset({"received"}),
    "received": frozenset({"refunded", "replaced"}),
    "refunded": frozenset(),
    "replaced": frozenset(),
}

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
TOKEN = re.compile(r"\[#(T-[0-9A-HJKMNP-TV-Z]{10})\]")
TICKET_ID = re.compile(r"^T-[0-9A-HJKMNP-TV-Z]{10}$")


def new_ticket_id() -> str:
    """``T-`` and 10 random base32 characters (50 bits): the id is also the mail token."""
    return "T-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def token(ticket_id: str) -> str:
    return f"[#{ticket_id}]"


def find_token(subject: str) -> str | None:
    m = TOKEN.search(subject or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class Details:
    """The changeable details of a ticket."""

    subject: str
    priority: TicketPriority
    product: str | None
    language: str | None
    region: str | None
    customer_tier: str | None


class Ticket(Aggregate):
    stream_type = "ticket"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_id = ""
        self.customer_email: str | None = None
        self.customer_name: str | None = None
        self.kind: TicketKind = "query"
        self.title = ""  # the ticket's subject line (``subject`` is the event subject)
        self.description = ""
        self.priority: TicketPriority = "normal"
        self.product: str | None = None
        self.language: str | None = None
        self.region: str | None = None
        self.customer_tier: str | None = None
        self.channel: TicketChannel = "api"
        self.opened_by: str | None = None
        self.status: TicketStatus = "new"
        self.queue_id: str | None = None
        self.assignee_id: str | None = None
        self.product_return: ProductReturn | None = None
        self.return_status: ReturnStatus | None = None
        self.merged_into: str | None = None
        self.duplicates: list[str] = []
        self.responded = False
        self.replies = 0
        self.customer_messages = 0
        self.notes = 0
        self.resolution: str | None = None
        self.score: int | None = None
        self.rating_comment: str | None = None
        self.follow_up_of: str | None = None

    # --- commands ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        ticket_id: str,
        customer_id: str,
        *,
        kind: TicketKind,
        subject: str,
        description: str = "",
        channel: TicketChannel,
        customer_email: str | None = None,
        customer_name: str | None = None,
        priority: TicketPriority = "normal",
        product: str | None = None,
        language: str | None = None,
        region: str | None = None,
        customer_tier: str | None = None,
        opened_by: str | None = None,
        product_return: ProductReturn | None = None,
        source_message_id: str | None = None,
        follow_up_of: str | None = None,
    ) -> Ticket:
        if kind == "product_return" and product_return is None:
            raise DomainError("a product return needs the order, the product and the reason")
        if kind != "product_return" and product_return is not None:
            raise DomainError("only a product_return ticket carries return details")
        ticket = cls(ticket_id)
        ticket.record(
            TicketOpened(
                ticket_id=ticket_id,
                customer_id=customer_id,
                customer_email=customer_email.strip().lower() if customer_email else None,
                customer_name=customer_name,
                kind=kind,
                subject=subject,
                description=description,
                priority=priority,
                product=product,
                language=language,
                region=region,
                customer_tier=customer_tier,
                channel=channel,
                opened_by=opened_by,
                product_return=product_return,
                source_message_id=source_message_id,
                follow_up_of=follow_up_of,
            )
        )
        return ticket

    def assign(
        self,
        queue_id: str | None,
        assignee_id: str | None,
        *,
        rule_id: str | None = None,
        reason: str | None = None,
        manual: bool = False,
    ) -> bool:
        """Put the ticket in a queue and/or give it to an agent. False if nothing changed."""
        self._ensure_workable("assign")
        if self.status == "resolved":
            raise DomainError("the ticket is resolved; reopen it before reassigning")
        if (queue_id, assignee_id) == (self.queue_id, self.assignee_id):
            return False
        to = self.status
        if assignee_id is None:
            if self.status in ("assigned", "in_progress"):
                to = "new"
        elif assignee_id != self.assignee_id and self.status in ("new", "in_progress"):
            to = "assigned"
        if to != self.status:
            self._check_move(to)
        self.record(
            TicketAssigned(
                ticket_id=self.id,
                queue_id=queue_id,
                assignee_id=assignee_id,
                rule_id=rule_id,
                reason=reason,
                manual=manual,
                from_status=self.status,
                to_status=to,
            )
        )
        return True

    def start(self) -> None:
        """An agent works on it now."""
        self._move("in_progress", None)

    def wait_on_customer(self, reason: str | None = None) -> None:
        self._move("waiting_on_customer", reason)

    def reply(
        self,
        comment_id: str,
        author_id: str,
        body: str,
        message_id: str,
        *,
        wait_on_customer: bool = False,
    ) -> None:
        """A public reply to the customer (mailed with the ticket token)."""
        self._ensure_workable("reply on")
        if not self.customer_email:
            raise DomainError("the ticket has no customer e-mail address to reply to")
        self.record(
            TicketReplied(
                ticket_id=self.id,
                comment_id=comment_id,
                author_id=author_id,
                body=body,
                to=[self.customer_email],
                message_id=message_id,
                first_response=not self.responded,
            )
        )
        if self.status == "resolved":
            return  # a follow-up after resolving does not reopen the ticket
        if wait_on_customer:
            if self.status != "waiting_on_customer":
                self._move("waiting_on_customer", "agent replied")
        elif self.status in ("new", "assigned"):
            self._move("in_progress", "agent replied")

    def add_note(self, note_id: str, author_id: str, body: str) -> None:
        """An internal note; never sent."""
        if self.status == "merged":
            raise DomainError(f"the ticket was merged into {self.merged_into}; note it there")
        self.record(
            TicketNoteAdded(ticket_id=self.id, note_id=note_id, author_id=author_id, body=body)
        )

    def customer_reply(
        self,
        comment_id: str,
        body: str,
        channel: CustomerChannel,
        *,
        message_id: str | None = None,
        from_email: str | None = None,
    ) -> None:
        """The customer wrote: waiting -> in progress, resolved -> reopened."""
        self._ensure_workable("reply on")
        self.record(
            TicketCustomerReplied(
                ticket_id=self.id,
                comment_id=comment_id,
                body=body,
                channel=channel,
                message_id=message_id,
                from_email=from_email,
            )
        )
        if self.status == "waiting_on_customer":
            self._move("in_progress", "the customer replied")
        elif self.status == "resolved":
            self.reopen("the customer replied")

    def resolve(self, resolution: str | None = None) -> None:
        if self.status not in OPEN:
            raise DomainError(f"a {self.status} ticket cannot be resolved")
        self._check_move("resolved")
        self.record(
            TicketResolved(ticket_id=self.id, from_status=self.status, resolution=resolution)
        )

    def reopen(self, reason: str | None = None) -> None:
        if self.status != "resolved":
            raise DomainError(f"only a resolved ticket can be reopened; this one is {self.status}")
        to: TicketStatus = "assigned" if self.assignee_id else "new"
        self._check_move(to)
        self.record(TicketReopened(ticket_id=self.id, to_status=to, reason=reason))

    def close(self, reason: str | None = None) -> None:
        if self.status != "resolved":
            raise DomainError(f"only a resolved ticket can be closed; this one is {self.status}")
        self.record(TicketClosed(ticket_id=self.id, reason=reason))

    def merge_into(self, survivor: Ticket) -> None:
        """This ticket is a duplicate of ``survivor``: it becomes ``merged``; record both sides."""
        if survivor.id == self.id:
            raise DomainError("a ticket cannot be merged into itself")
        if self.status not in OPEN:
            raise DomainError(f"a {self.status} ticket cannot be merged into another")
        if survivor.status in TERMINAL:
            raise DomainError(f"ticket {survivor.id} is {survivor.status}; merge into an open one")
        self._check_move("merged")
        self.record(
            TicketMergedInto(ticket_id=self.id, survivor_id=survivor.id, from_status=self.status)
        )
        survivor.record(TicketDuplicateMerged(ticket_id=survivor.id, duplicate_id=self.id))

    def update(self, details: Details) -> list[str]:
        self._ensure_workable("change")
        current = self.details()
        changed = [
            k for k in Details.__dataclass_fields__ if getattr(details, k) != getattr(current, k)
        ]
        if changed:
            self.record(
                TicketUpdated(
                    ticket_id=self.id,
                    changed=changed,
                    subject=details.subject,
                    priority=details.priority,
                    product=details.product,
                    language=details.language,
                    region=details.region,
                    customer_tier=details.customer_tier,
                )
            )
        return changed

    def details(self) -> Details:
        return Details(
            self.title,
            self.priority,
            self.product,
            self.language,
            self.region,
            self.customer_tier,
        )

    def move_return(self, to: ReturnStatus, note: str | None = None) -> None:
        if self.kind != "product_return" or self.return_status is None:
            raise DomainError("only a product_return ticket has a return status")
        if self.status == "merged":
            raise DomainError(f"the ticket was merged into {self.merged_into}")
        if to not in RETURN_MOVES[self.return_status]:
            allowed = ", ".join(sorted(RETURN_MOVES[self.return_status])) or "nothing (final)"
            raise DomainError(
                f"the return is {self.return_status}; it can move to {allowed}",
                return_status=self.return_status,
            )
        self.record(
            TicketReturnStatusChanged(
                ticket_id=self.id, from_status=self.return_status, to_status=to, note=note
            )
        )

    def rate(self, score: int, comment: str | None = None) -> None:
        if self.status not in ("resolved", "closed"):
            raise DomainError("a ticket is rated once it is resolved")
        if self.score is not None:
            raise DomainError("this ticket was rated already")
        self.record(TicketRated(ticket_id=self.id, score=score, comment=comment))

    # --- guards -----------------------------------------------------------------------------

    def _ensure_workable(self, what: str) -> None:
        if self.status == "merged":
            raise DomainError(
                f"the ticket was merged into {self.merged_into}; {what} that one",
                survivor_id=self.merged_into,
            )
        if self.status == "closed":
            raise DomainError(f"the ticket is closed; you cannot {what} it")

    def _check_move(self, to: TicketStatus) -> None:
        if to not in MOVES[self.status]:
            raise DomainError(f"a {self.status} ticket cannot become {to}", status=self.status)

    def _move(self, to: TicketStatus, reason: str | None) -> None:
        if self.status in TERMINAL:
            self._ensure_workable("change")
        if to == self.status:
            raise DomainError(f"the ticket is already {to}")
        self._check_move(to)
        self.record(
            TicketStatusChanged(
                ticket_id=self.id, from_status=self.status, to_status=to, reason=reason
            )
        )

    # --- mutators ---------------------------------------------------------------------------

    @applies(TicketOpened)
    def _opened(self, e: TicketOpened) -> None:
        self.subject = e.customer_id
        self.title = e.subject
        for name in (
            "customer_id", "customer_email", "customer_name", "kind", "description",
            "priority", "product", "language", "region", "customer_tier", "channel", "opened_by",
            "product_return", "follow_up_of",
        ):  # fmt: skip
            setattr(self, name, getattr(e, name))
        self.status = "new"
        self.return_status = "requested" if e.product_return is not None else None

    @applies(TicketAssigned)
    def _assigned(self, e: TicketAssigned) -> None:
        self.queue_id = e.queue_id
        self.assignee_id = e.assignee_id
        self.status = e.to_status

    @applies(TicketStatusChanged)
    def _status_changed(self, e: TicketStatusChanged) -> None:
        self.status = e.to_status

    @applies(TicketUpdated)
    def _updated(self, e: TicketUpdated) -> None:
        for name in e.changed:
            setattr(self, "title" if name == "subject" else name, getattr(e, name))

    @applies(TicketReplied)
    def _replied(self, e: TicketReplied) -> None:
        self.responded = True
        self.replies += 1

    @applies(TicketNoteAdded)
    def _noted(self, e: TicketNoteAdded) -> None:
        self.notes += 1

    @applies(TicketCustomerReplied)
    def _customer_replied(self, e: TicketCustomerReplied) -> None:
        self.customer_messages += 1

    @applies(TicketResolved)
    def _resolved(self, e: TicketResolved) -> None:
        self.status = "resolved"
        self.resolution = e.resolution

    @applies(TicketReopened)
    def _reopened(self, e: TicketReopened) -> None:
        self.status = e.to_status
        self.resolution = None

    @applies(TicketClosed)
    def _closed(self, e: TicketClosed) -> None:
        self.status = "closed"

    @applies(TicketMergedInto)
    def _merged_into(self, e: TicketMergedInto) -> None:
        self.status = "merged"
        self.merged_into = e.survivor_id

    @applies(TicketDuplicateMerged)
    def _duplicate_merged(self, e: TicketDuplicateMerged) -> None:
        self.duplicates = [*self.duplicates, e.duplicate_id]

    @applies(TicketReturnStatusChanged)
    def _return_moved(self, e: TicketReturnStatusChanged) -> None:
        self.return_status = e.to_status

    @applies(TicketRated)
    def _rated(self, e: TicketRated) -> None:
        self.score = e.score
        self.rating_comment = e.comment
