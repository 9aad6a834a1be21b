"""The Invoice and CreditNote aggregates: what an accepted quote bills, and how a bill is undone.

An invoice is issued from the accepted revision of a quote (its lines and totals, unchanged),
with a due date ``issue date + payment terms``. Payments, partial or full, lower the balance:
``issued -> partially_paid -> paid``; paying more than the balance is refused with the amount
due. The scheduler marks an unpaid invoice ``overdue`` once, the day after its due date.

Voiding cancels an invoice by issuing a credit note for its full amount (an issued invoice is
never edited or deleted: its number stays used). Payments already received are not undone:
they are owed back to the customer, recorded as ``refund_due_minor`` on the void and on the
credit note, for whoever settles refunds. A void invoice takes no more payments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from crm_events.schemas.sales_billing import (
    CreditNoteIssued,
    DocumentLine,
    DocumentTotals,
    InvoiceIssued,
    InvoiceOverdue,
    InvoicePaid,
    InvoicePaymentReceived,
    InvoiceVoided,
    PaymentMethod,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import Conflict, DomainError, InvalidInput
from crm_sales.domain.money import format_money
from crm_sales.domain.quote import Quote

InvoiceStatus = Literal["issued", "partially_paid", "paid", "void"]
OPEN: frozenset[str] = frozenset({"issued", "partially_paid"})


def document_number(series: str, year: int, value: int) -> str:
    """``('INV', 2026, 1)`` -> ``'INV-2026-000001'``."""
    return f"{series}-{year}-{value:06d}"


@dataclass(frozen=True)
class Payment:
    payment_id: str
    amount_minor: int
    method: str
    reference: str | None
    received_at: datetime


class Invoice(Aggregate):
    stream_type = "invoice"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.number = ""
        self.quote_id = ""
        self.quote_number = ""
        self.quote_revision = 0
        self.deal_id = ""
        self.customer_id = ""
        self.contact_id: str | None = None
        self.account_id: str | None = None
        self.currency = ""
        self.lines: list[DocumentLine] = []
        self.totals = DocumentTotals(subtotal_minor=0, discount_minor=0, tax_minor=0, total_minor=0)
        self.issue_date = date.min
        self.due_date = date.min
        self.payment_terms_days = 0
        self.status: InvoiceStatus = "issued"
        self.payments: list[Payment] = []
        self.paid_minor = 0
        self.paid_at: datetime | None = None
        self.overdue_flagged = False
        self.void_reason: str | None = None
        self.credit_note_id: str | None = None
        self.credit_note_number: str | None = None
        self.refund_due_minor = 0

    @property
    def total_minor(self) -> int:
        return self.totals.total_minor

    @property
    def balance_minor(self) -> int:
        return 0 if self.status == "void" else self.total_minor - self.paid_minor

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def overdue(self) -> bool:
        """Flagged overdue by the scheduler and still not paid (nor void)."""
        return self.overdue_flagged and self.is_open

    @classmethod
    def issue(cls, invoice_id: str, number: str, quote: Quote, issue_date: date) -> Invoice:
        """Bill the quote's current revision (the caller accepts it in the same transaction)."""
        rev = quote.current
        if not rev.lines:
            raise DomainError(f"{quote.label} has no lines; there is nothing to invoice")
        invoice = cls(invoice_id)
        invoice.record(
            InvoiceIssued(
                invoice_id=invoice_id,
                invoice_number=number,
                quote_id=quote.id,
                quote_number=quote.number,
                quote_revision=rev.number,
                deal_id=quote.deal_id,
                customer_id=quote.customer_id,
                contact_id=rev.sent_to_contact_id or rev.contact_id,
                account_id=quote.account_id,
                currency=quote.currency,
                lines=list(rev.lines),
                totals=rev.totals,
                issue_date=issue_date,
                due_date=issue_date + timedelta(days=rev.payment_terms_days),
                payment_terms_days=rev.payment_terms_days,
            )
        )
        if rev.totals.total_minor == 0:  # nothing to pay: settled as it is issued
            invoice.record(
                InvoicePaid(
                    invoice_id=invoice_id,
                    paid_minor=0,
                    currency=quote.currency,
                    paid_at=datetime.combine(issue_date, time.min, tzinfo=UTC),
                )
            )
        return invoice

    def pay(
        self,
        payment_id: str,
        amount_minor: int,
        method: PaymentMethod,
        reference: str | None,
        received_at: datetime,
        now: datetime,
    ) -> None:
        if amount_minor <= 0:
            raise InvalidInput("amount_minor", "must be a positive amount in the minor unit")
        if received_at > now:
            raise InvalidInput("received_at", "must not be in the future")
        if self.status == "void":
            raise DomainError(f"invoice {self.number} is void; it takes no payments")
        if self.status == "paid":
            raise DomainError(
                f"invoice {self.number} is paid in full; nothing is due", amount_due_minor=0
            )
        due = self.balance_minor
        if amount_minor > due:
            raise Conflict(
                f"the payment of {format_money(amount_minor, self.currency)} is more than the "
                f"amount due on invoice {self.number}: {format_money(due, self.currency)}",
                amount_due_minor=due,
                currency=self.currency,
            )
        paid = self.paid_minor + amount_minor
        self.record(
            InvoicePaymentReceived(
                invoice_id=self.id,
                payment_id=payment_id,
                amount_minor=amount_minor,
                currency=self.currency,
                method=method,
                reference=reference,
                received_at=received_at,
                paid_minor=paid,
                balance_minor=self.total_minor - paid,
            )
        )
        if paid == self.total_minor:
            self.record(
                InvoicePaid(
                    invoice_id=self.id, paid_minor=paid, currency=self.currency, paid_at=received_at
                )
            )

    def mark_overdue(self, now: datetime) -> bool:
        """Flag it overdue once its due date has passed unpaid; True if this call recorded it."""
        today = now.date()
        if not self.is_open or self.overdue_flagged or self.due_date >= today:
            return False
        self.record(
            InvoiceOverdue(
                invoice_id=self.id,
                due_date=self.due_date,
                balance_minor=self.balance_minor,
                currency=self.currency,
                detected_at=now,
            )
        )
        return True

    def check_voidable(self) -> None:
        if self.status == "void":
            raise DomainError(
                f"invoice {self.number} is already void (credit note {self.credit_note_number})",
                credit_note_id=self.credit_note_id,
            )

    def void(self, reason: str, credit_note: CreditNote) -> None:
        self.check_voidable()
        if not reason.strip():
            raise InvalidInput("reason", "must not be empty")
        self.record(
            InvoiceVoided(
                invoice_id=self.id,
                reason=reason.strip(),
                credit_note_id=credit_note.id,
                credit_note_number=credit_note.number,
                refund_due_minor=self.paid_minor,
            )
        )

    @applies(InvoiceIssued)
    def _issued(self, e: InvoiceIssued) -> None:
        self.subject = e.customer_id
        self.number = e.invoice_number
        self.quote_id = e.quote_id
        self.quote_number = e.quote_number
        self.quote_revision = e.quote_revision
        self.deal_id = e.deal_id
        self.customer_id = e.customer_id
        self.contact_id = e.contact_id
        self.account_id = e.account_id
        self.currency = e.currency
        self.lines = list(e.lines)
        self.totals = e.totals
        self.issue_date = e.issue_date
        self.due_date = e.due_date
        self.payment_terms_days = e.payment_terms_days
        self.status = "issued"

    @applies(InvoicePaymentReceived)
    def _payment_received(self, e: InvoicePaymentReceived) -> None:
        self.payments.append(
            Payment(e.payment_id, e.amount_minor, e.method, e.reference, e.received_at)
        )
        self.paid_minor = e.paid_minor
        self.status = "paid" if e.balance_minor == 0 else "partially_paid"

    @applies(InvoicePaid)
    def _paid(self, e: InvoicePaid) -> None:
        self.status = "paid"
        self.paid_at = e.paid_at

    @applies(InvoiceOverdue)
    def _overdue(self, e: InvoiceOverdue) -> None:
        self.overdue_flagged = True

    @applies(InvoiceVoided)
    def _voided(self, e: InvoiceVoided) -> None:
        self.status = "void"
        self.void_reason = e.reason
        self.credit_note_id = e.credit_note_id
        self.credit_note_number = e.credit_note_number
        self.refund_due_minor = e.refund_due_minor


class CreditNote(Aggregate):
    """A credit note cancels one invoice in full; it is issued once and never changes."""

    stream_type = "credit_note"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.number = ""
        self.invoice_id = ""
        self.invoice_number = ""
        self.customer_id = ""
        self.currency = ""
        self.lines: list[DocumentLine] = []
        self.totals = DocumentTotals(subtotal_minor=0, discount_minor=0, tax_minor=0, total_minor=0)
        self.refund_due_minor = 0
        self.reason = ""
        self.issue_date = date.min

    @classmethod
    def issue(
        cls, credit_note_id: str, number: str, invoice: Invoice, reason: str, issue_date: date
    ) -> CreditNote:
        invoice.check_voidable()
        if not reason.strip():
            raise InvalidInput("reason", "must not be empty")
        note = cls(credit_note_id)
        note.record(
            CreditNoteIssued(
                credit_note_id=credit_note_id,
                credit_note_number=number,
                invoice_id=invoice.id,
                invoice_number=invoice.number,
                customer_id=invoice.customer_id,
                currency=invoice.currency,
                lines=list(invoice.lines),
                totals=invoice.totals,
                refund_due_minor=invoice.paid_minor,
                reason=reason.strip(),
                issue_date=issue_date,
            )
        )
        return note

    @applies(CreditNoteIssued)
    def _issued(self, e: CreditNoteIssued) -> None:
        self.subject = e.customer_id
        self.number = e.credit_note_number
        self.invoice_id = e.invoice_id
        self.invoice_number = e.invoice_number
        self.customer_id = e.customer_id
        self.currency = e.currency
        self.lines = list(e.lines)
        self.totals = e.totals
        self.refund_due_minor = e.refund_due_minor
        self.reason = e.reason
        self.issue_date = e.issue_date
