"""Sales context events for products, quotes, invoices and payments (``crm.sales.*``).

Money is always an integer amount in the currency's minor unit (cents; yen; fils) next to an ISO
4217 code. Quantities, discounts and tax rates are decimal strings, so that nothing is lost to
binary floating point. Line amounts are rounded once, per line, half-up to the minor unit:
``net = round(quantity x unit price x (1 - discount/100))``, ``tax = round(net x rate/100)``,
and a document's subtotal, tax and total are the sums of its rounded lines.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field

from crm_events.registry import EventPayload, event_type

CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
DecimalText = Annotated[
    str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", description="a non-negative decimal, as text")
]
Minor = Annotated[int, Field(ge=0, description="amount in the currency's minor unit")]
QuoteOutcome = Literal["sent", "rejected"]
PaymentMethod = Literal["bank_transfer", "card", "cash", "cheque", "direct_debit", "other"]


# --- products and the price book ---------------------------------------------------------------


@event_type("crm.sales.product.created", version=1)
class ProductCreated(EventPayload):
    """A product was added to the catalogue."""

    product_id: str
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    unit: str = Field(default="each", description="unit of measure: each, hour, seat, ...")
    tax_rate: DecimalText = Field(description="percent, e.g. 19 or 8.875")
    prices: dict[CurrencyCode, Minor] = Field(
        description="the price book: unit price per currency, in that currency's minor unit"
    )


@event_type("crm.sales.product.updated", version=1)
class ProductUpdated(EventPayload):
    """The product's details or prices were changed."""

    product_id: str
    changed: list[str] = Field(min_length=1, description="the fields this event sets")
    sku: str | None = None
    name: str | None = None
    description: str | None = None
    unit: str | None = None
    tax_rate: DecimalText | None = None
    prices: dict[CurrencyCode, Minor] | None = Field(
        default=None, description="the whole price book (replaces the earlier one)"
    )


@event_type("crm.sales.product.deactivated", version=1)
class ProductDeactivated(EventPayload):
    """The product was retired: new quotes can no longer use it."""

    product_id: str
    reason: str | None = None


@event_type("crm.sales.product.activated", version=1)
class ProductActivated(EventPayload):
    """The product was made available for quotes again."""

    product_id: str


# --- quotes -------------------------------------------------------------------------------------


class DocumentLine(EventPayload):
    """One line of a quote revision or an invoice, with its amounts already rounded."""

    line_no: int = Field(ge=1)
    product_id: str | None = None
    sku: str | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    unit: str | None = None
    quantity: DecimalText
    unit_price_minor: Minor
    discount_percent: DecimalText = "0"
    tax_rate: DecimalText = "0"
    discount_minor: Minor = Field(description="round(quantity x unit price) - net")
    net_minor: Minor = Field(description="round(quantity x unit price x (1 - discount/100))")
    tax_minor: Minor = Field(description="round(net x tax rate / 100)")
    total_minor: Minor = Field(description="net + tax")


class DocumentTotals(EventPayload):
    """A document's sums of its rounded lines."""

    subtotal_minor: Minor = Field(description="sum of the lines' net amounts")
    discount_minor: Minor = Field(description="sum of the lines' discounts")
    tax_minor: Minor = Field(description="sum of the lines' tax")
    total_minor: Minor = Field(description="subtotal + tax")


@event_type("crm.sales.quote.drafted", version=1)
class QuoteDrafted(EventPayload):
    """A quote was drafted from a deal."""

    quote_id: str
    quote_number: str
    revision: int = Field(ge=1)
    deal_id: str
    customer_id: str
    contact_id: str | None = None
    account_id: str | None = None
    title: str = Field(min_length=1)
    currency: CurrencyCode
    lines: list[DocumentLine]
    totals: DocumentTotals
    valid_until: date | None = None
    payment_terms_days: int = Field(ge=0)
    notes: str | None = None


@event_type("crm.sales.quote.lines_changed", version=1)
class QuoteLinesChanged(EventPayload):
    """The draft quote's line items were changed."""

    quote_id: str
    revision: int = Field(ge=1)
    lines: list[DocumentLine]
    totals: DocumentTotals


@event_type("crm.sales.quote.updated", version=1)
class QuoteUpdated(EventPayload):
    """The draft quote's terms were changed."""

    quote_id: str
    revision: int = Field(ge=1)
    changed: list[str] = Field(min_length=1, description="the fields this event sets")
    title: str | None = None
    contact_id: str | None = None
    valid_until: date | None = None
    payment_terms_days: int | None = Field(default=None, ge=0)
    notes: str | None = None


@event_type("crm.sales.quote.sent", version=1, public=True)
class QuoteSent(EventPayload):
    """The quote was sent to the customer."""

    quote_id: str
    revision: int = Field(ge=1)
    contact_id: str = Field(description="the contact it was e-mailed to (never the address)")
    message_id: str = Field(description="the e-mail's Message-ID")
    sent_at: datetime
    resent: bool = Field(default=False, description="it had been sent before")
    currency: CurrencyCode
    total_minor: Minor


@event_type("crm.sales.quote.accepted", version=1, public=True)
class QuoteAccepted(EventPayload):
    """The customer accepted the quote; an invoice was issued for it."""

    quote_id: str
    revision: int = Field(ge=1)
    invoice_id: str
    currency: CurrencyCode
    total_minor: Minor
    note: str | None = None


@event_type("crm.sales.quote.rejected", version=1, public=True)
class QuoteRejected(EventPayload):
    """The customer rejected the quote, with the reason."""

    quote_id: str
    revision: int = Field(ge=1)
    reason: str = Field(min_length=1)


@event_type("crm.sales.quote.revised", version=1)
class QuoteRevised(EventPayload):
    """A new revision of the quote was drafted; the earlier one is superseded."""

    quote_id: str
    revision: int = Field(ge=2, description="the new revision")
    previous_revision: int = Field(ge=1)
    previous_status: QuoteOutcome
    title: str = Field(min_length=1)
    contact_id: str | None = None
    lines: list[DocumentLine]
    totals: DocumentTotals
    valid_until: date | None = None
    payment_terms_days: int = Field(ge=0)
    notes: str | None = None


# --- invoices, payments and credit notes --------------------------------------------------------


@event_type("crm.sales.invoice.issued", version=1, public=True)
class InvoiceIssued(EventPayload):
    """An invoice was issued for an accepted quote."""

    invoice_id: str
    invoice_number: str = Field(description="gap-free per year: INV-<year>-<6 digits>")
    quote_id: str
    quote_number: str
    quote_revision: int = Field(ge=1)
    deal_id: str
    customer_id: str
    contact_id: str | None = None
    account_id: str | None = None
    currency: CurrencyCode
    lines: list[DocumentLine]
    totals: DocumentTotals
    issue_date: date
    due_date: date
    payment_terms_days: int = Field(ge=0)


@event_type("crm.sales.invoice.payment_received", version=1, public=True)
class InvoicePaymentReceived(EventPayload):
    """A payment was received against the invoice."""

    invoice_id: str
    payment_id: str
    amount_minor: int = Field(gt=0)
    currency: CurrencyCode
    method: PaymentMethod
    reference: str | None = Field(default=None, description="bank reference, card transaction")
    received_at: datetime
    paid_minor: Minor = Field(description="everything paid so far, this payment included")
    balance_minor: Minor = Field(description="what is still due after this payment")


@event_type("crm.sales.invoice.paid", version=1, public=True)
class InvoicePaid(EventPayload):
    """The invoice was paid in full."""

    invoice_id: str
    paid_minor: Minor
    currency: CurrencyCode
    paid_at: datetime


@event_type("crm.sales.invoice.overdue", version=1, public=True)
class InvoiceOverdue(EventPayload):
    """The invoice became overdue: its due date passed with a balance unpaid."""

    invoice_id: str
    due_date: date
    balance_minor: Minor
    currency: CurrencyCode
    detected_at: datetime


@event_type("crm.sales.invoice.voided", version=1, public=True)
class InvoiceVoided(EventPayload):
    """The invoice was voided and a credit note issued for it."""

    invoice_id: str
    reason: str = Field(min_length=1)
    credit_note_id: str
    credit_note_number: str
    refund_due_minor: Minor = Field(description="payments received that are owed back")


@event_type("crm.sales.credit_note.issued", version=1, public=True)
class CreditNoteIssued(EventPayload):
    """A credit note was issued, cancelling an invoice."""

    credit_note_id: str
    credit_note_number: str = Field(description="gap-free per year: CN-<year>-<6 digits>")
    invoice_id: str
    invoice_number: str
    customer_id: str
    currency: CurrencyCode
    lines: list[DocumentLine] = Field(description="the credited lines (the invoice's)")
    totals: DocumentTotals = Field(description="the amounts credited (the invoice's)")
    refund_due_minor: Minor = Field(description="payments received that are owed back")
    reason: str = Field(min_length=1)
    issue_date: date
