"""Request and response bodies of /products, /quotes and /invoices."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.sales_billing import PaymentMethod
from crm_runtime.http.inputs import ClientAwareTime, ClientDate, Name, NotBlank
from crm_runtime.http.inputs import OneLine as NoLineBreak
from crm_sales.entrypoints.api.inputs import Currency

PriceMinor = Annotated[
    int, Field(ge=0, le=10**11, description="unit price in the currency's minor unit")
]
Sku = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="stock keeping unit; unique, compared without case",
        examples=["SEAT-PRO"],
    ),
]
Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=8, decimal_places=4)]
Quantity = Annotated[
    Decimal,
    Field(
        gt=0,
        le=1_000_000,
        max_digits=13,
        decimal_places=6,
        description="may have decimals (1.5 hours)",
    ),
]
OneLine = Annotated[Name, NoLineBreak]
LongText = Annotated[str, Field(max_length=5000)]
Description = Annotated[str, Field(min_length=1, max_length=5000), NotBlank]
Unit = Annotated[str, Field(min_length=1, max_length=20, examples=["hour"]), NotBlank]
Id = Annotated[str, Field(min_length=1, max_length=100)]

ROUNDING = (
    "Amounts are integers in the currency's minor unit (cents; JPY and KRW have none; BHD, KWD, "
    "JOD, OMR and TND have three decimals). Every line is rounded on its own, half-up to the "
    "minor unit: net = quantity x unit price x (1 - discount%/100), tax = net x tax rate%/100 "
    "(on the rounded net), total = net + tax. The quote's subtotal, tax and total are the sums "
    "of its rounded lines."
)


# --- products -----------------------------------------------------------------------------------


class ProductCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sku": "SEAT-PRO",
                    "name": "Professional seat (annual)",
                    "description": "One named user, billed yearly",
                    "unit": "seat",
                    "tax_rate": "19",
                    "prices": {"EUR": 120000, "USD": 130000, "JPY": 19000000},
                }
            ]
        },
    )

    sku: Sku
    name: OneLine
    description: Description | None = None
    unit: Unit = "each"
    tax_rate: Percent = Field(default=Decimal(0), description="percent, e.g. 19 or 8.875")
    prices: dict[Currency, PriceMinor] = Field(
        default_factory=dict,
        max_length=50,
        description="the price book: unit price per currency, in its minor unit",
    )


class ProductPatch(BaseModel):
    """Only the fields sent change. ``prices`` replaces the whole price book."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prices": {"EUR": 125000, "USD": 135000}},
                {"name": "Professional seat (annual, 2027)", "tax_rate": "20"},
            ]
        },
    )

    sku: Sku | None = None
    name: OneLine | None = None
    description: Description | None = None
    unit: Unit | None = None
    tax_rate: Percent | None = None
    prices: dict[Currency, PriceMinor] | None = Field(default=None, max_length=50)


class ProductDeactivate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "replaced by SEAT-PRO-2"}]}
    )

    reason: str | None = Field(default=None, max_length=1000)


class ProductPublic(BaseModel):
    id: str
    sku: str
    name: str
    description: str | None
    unit: str
    tax_rate: str = Field(description="percent, as a decimal string")
    prices: dict[str, int]
    active: bool
    deactivation_reason: str | None = None
    version: int


# --- quotes -------------------------------------------------------------------------------------


class QuoteLineIn(BaseModel):
    """A catalogue product (name, price in the quote's currency and tax rate default from it)
    or a free line (``name`` and ``unit_price_minor`` required)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"product_id": "0b1c…", "quantity": 40, "discount_percent": "10"},
                {"name": "Onboarding workshop", "quantity": "1.5", "unit": "day",
                 "unit_price_minor": 150000, "tax_rate": "19"},
            ]
        },
    )  # fmt: skip

    product_id: Id | None = None
    name: OneLine | None = Field(default=None, description="default: the product's name")
    description: Description | None = None
    unit: Unit | None = None
    quantity: Quantity = Decimal(1)
    unit_price_minor: PriceMinor | None = Field(
        default=None, description="default: the product's price in the quote's currency"
    )
    discount_percent: Percent = Decimal(0)
    tax_rate: Percent | None = Field(default=None, description="default: the product's rate")


class QuoteCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "deal_id": "2b3c4d5e-…",
                    "lines": [
                        {"product_id": "0b1c…", "quantity": 40, "discount_percent": "10"},
                        {"name": "Onboarding", "quantity": 1, "unit_price_minor": 150000},
                    ],
                    "valid_until": "2027-01-31",
                    "notes": "Prices include the first year of support.",
                },
                {"deal_id": "2b3c4d5e-…"},
            ]
        },
    )

    deal_id: Id
    currency: Currency | None = Field(default=None, description="default: the deal's currency")
    title: OneLine | None = Field(default=None, description="default: the deal's name")
    contact_id: Id | None = Field(default=None, description="default: the deal's contact")
    lines: list[QuoteLineIn] | None = Field(
        default=None, max_length=200, description="default: the deal's products"
    )
    valid_until: ClientDate | None = Field(default=None, description="default: 30 days from today")
    payment_terms_days: int | None = Field(default=None, ge=0, le=365, description="default 30")
    notes: LongText | None = None


class QuoteLines(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"lines": [{"product_id": "0b1c…", "quantity": "2.5"}]}]},
    )

    lines: list[QuoteLineIn] = Field(max_length=200)


class QuotePatch(BaseModel):
    """A draft's terms; only the fields sent change (null clears the optional ones)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"valid_until": "2027-02-28", "payment_terms_days": 14}]},
    )

    title: OneLine | None = None
    contact_id: Id | None = None
    valid_until: ClientDate | None = None
    payment_terms_days: int | None = Field(default=None, ge=0, le=365)
    notes: LongText | None = None


class QuoteSend(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{}, {"message": "As discussed, here is our offer for the 40 seats."}]
        },
    )

    contact_id: Id | None = Field(default=None, description="default: the quote's contact")
    message: LongText | None = Field(default=None, description="a personal note above the quote")


class QuoteAccept(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{}, {"revision": 2, "note": "signed PO 4711"}]},
    )

    revision: int | None = Field(
        default=None, ge=1, description="the revision the customer accepted; 409 if superseded"
    )
    note: str | None = Field(default=None, max_length=1000)


class QuoteReject(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "price too high"}]}
    )

    reason: str = Field(min_length=1, max_length=1000)
    revision: int | None = Field(default=None, ge=1)


class QuoteRevise(BaseModel):
    """Anything not sent is copied from the current revision (an expired validity restarts)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {},
                {
                    "lines": [{"product_id": "0b1c…", "quantity": 40, "discount_percent": "15"}],
                    "valid_until": "2027-03-31",
                },
            ]
        },
    )

    lines: list[QuoteLineIn] | None = Field(default=None, max_length=200)
    title: OneLine | None = None
    contact_id: Id | None = None
    valid_until: ClientDate | None = None
    payment_terms_days: int | None = Field(default=None, ge=0, le=365)
    notes: LongText | None = None


class DocumentLineOut(BaseModel):
    line_no: int
    product_id: str | None
    sku: str | None
    name: str
    description: str | None
    unit: str | None
    quantity: str
    unit_price_minor: int
    discount_percent: str
    tax_rate: str
    discount_minor: int
    net_minor: int
    tax_minor: int
    total_minor: int


class TaxLineOut(BaseModel):
    rate: str
    net_minor: int
    tax_minor: int


class RevisionOut(BaseModel):
    revision: int
    status: str
    total_minor: int
    sent_at: datetime | None
    rejection_reason: str | None


class QuotePublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": ROUNDING})

    id: str
    number: str
    revision: int
    status: Literal["draft", "sent", "accepted", "rejected", "superseded"]
    expired: bool = Field(description="sent, and its valid_until has passed")
    deal_id: str
    customer_id: str
    contact_id: str | None
    account_id: str | None
    title: str
    currency: str
    lines: list[DocumentLineOut]
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    taxes: list[TaxLineOut]
    valid_until: date | None
    payment_terms_days: int
    notes: str | None
    sent_at: datetime | None
    sent_to_contact_id: str | None
    rejection_reason: str | None
    invoice_id: str | None
    revisions: list[RevisionOut]
    version: int


class QuoteSummary(BaseModel):
    id: str
    number: str
    revision: int
    status: str
    expired: bool
    title: str
    deal_id: str
    customer_id: str
    contact_id: str | None
    currency: str
    total_minor: int
    valid_until: date | None
    invoice_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


# --- invoices -----------------------------------------------------------------------------------


class PaymentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"amount_minor": 50000, "method": "bank_transfer", "reference": "SEPA 2026-0042"},
                {"amount_minor": 9900, "method": "card", "received_at": "2026-03-01T10:00:00Z"},
            ]
        },
    )

    amount_minor: int = Field(gt=0, le=10**15, description="in the invoice currency's minor unit")
    currency: Currency | None = Field(default=None, description="if given, the invoice's")
    method: PaymentMethod = "bank_transfer"
    reference: str | None = Field(default=None, max_length=200)
    received_at: ClientAwareTime | None = Field(default=None, description="default: now")


class PaymentOut(BaseModel):
    payment_id: str
    amount_minor: int
    method: str
    reference: str | None
    received_at: datetime


class InvoiceVoid(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "billed the wrong entity"}]}
    )

    reason: str = Field(min_length=1, max_length=1000)


class InvoicePublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": ROUNDING})

    id: str
    number: str
    status: Literal["issued", "partially_paid", "paid", "void"]
    overdue: bool = Field(description="past its due date and still unpaid")
    quote_id: str
    quote_number: str
    quote_revision: int
    deal_id: str
    customer_id: str
    contact_id: str | None
    account_id: str | None
    currency: str
    lines: list[DocumentLineOut]
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    taxes: list[TaxLineOut]
    paid_minor: int
    balance_minor: int = Field(description="what is still due (0 once paid or void)")
    issue_date: date
    due_date: date
    payment_terms_days: int
    paid_at: datetime | None
    payments: list[PaymentOut]
    void_reason: str | None
    credit_note_id: str | None
    credit_note_number: str | None
    refund_due_minor: int = Field(description="payments received on a voided invoice, owed back")
    version: int


class InvoiceSummary(BaseModel):
    id: str
    number: str
    status: str
    overdue: bool
    quote_id: str
    quote_number: str
    deal_id: str
    customer_id: str
    currency: str
    total_minor: int
    paid_minor: int
    balance_minor: int
    issue_date: date
    due_date: date
    credit_note_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class CreditNotePublic(BaseModel):
    id: str
    number: str
    invoice_id: str
    invoice_number: str
    customer_id: str
    currency: str
    lines: list[DocumentLineOut]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    refund_due_minor: int
    reason: str
    issue_date: date
    version: int


class AcceptResult(BaseModel):
    quote: QuotePublic
    invoice: InvoicePublic


class VoidResult(BaseModel):
    invoice: InvoicePublic
    credit_note: CreditNotePublic
