"""The Quote aggregate: an offer drafted from a deal, in revisions v1, v2, ...

Lifecycle of a revision: ``draft -> sent -> accepted | rejected``. Only a draft changes (lines,
terms). A sent or rejected revision is changed only by revising: that drafts revision n+1 (a copy
of the lines unless new ones are given, same quote number) and the earlier revision becomes
``superseded``. Only the current revision can be sent, accepted or rejected, so at most one
revision of a quote is ever accepted; accepting is final (the invoice is issued with it).
A sent quote past its ``valid_until`` date is expired: it cannot be accepted, only revised.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from crm_events.schemas.sales_billing import (
    DocumentLine,
    DocumentTotals,
    QuoteAccepted,
    QuoteDrafted,
    QuoteLinesChanged,
    QuoteRejected,
    QuoteRevised,
    QuoteSent,
    QuoteUpdated,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput
from crm_sales.domain.money import (
    MAX_DOCUMENT_MINOR,
    decimal_text,
    line_amounts,
    totals,
)

QuoteStatus = Literal["draft", "sent", "accepted", "rejected", "superseded"]
MAX_PAYMENT_TERMS_DAYS = 365
TERM_FIELDS = ("title", "contact_id", "valid_until", "payment_terms_days", "notes")


@dataclass(frozen=True)
class LineSpec:
    """A line as priced by the caller (product defaults already filled in)."""

    name: str
    quantity: Decimal
    unit_price_minor: int
    discount_percent: Decimal = Decimal(0)
    tax_rate: Decimal = Decimal(0)
    product_id: str | None = None
    sku: str | None = None
    description: str | None = None
    unit: str | None = None


def price_lines(specs: list[LineSpec]) -> tuple[list[DocumentLine], DocumentTotals]:
    """Apply the rounding rule (see ``money``) to every line and sum the rounded lines."""
    lines: list[DocumentLine] = []
    amounts = []
    for i, s in enumerate(specs):
        try:
            a = line_amounts(s.quantity, s.unit_price_minor, s.discount_percent, s.tax_rate)
        except ValueError as exc:
            raise InvalidInput(f"lines.{i}", str(exc)) from None
        amounts.append(a)
        lines.append(
            DocumentLine(
                line_no=i + 1,
                product_id=s.product_id,
                sku=s.sku,
                name=s.name,
                description=s.description,
                unit=s.unit,
                quantity=decimal_text(s.quantity),
                unit_price_minor=s.unit_price_minor,
                discount_percent=decimal_text(s.discount_percent),
                tax_rate=decimal_text(s.tax_rate),
                discount_minor=a.discount_minor,
                net_minor=a.net_minor,
                tax_minor=a.tax_minor,
                total_minor=a.total_minor,
            )
        )
    t = totals(amounts)
    if t.total_minor > MAX_DOCUMENT_MINOR:
        raise InvalidInput("lines", f"the total must not exceed {MAX_DOCUMENT_MINOR} minor units")
    return lines, DocumentTotals(
        subtotal_minor=t.subtotal_minor,
        discount_minor=t.discount_minor,
        tax_minor=t.tax_minor,
        total_minor=t.total_minor,
    )


def tax_breakdown(lines: list[DocumentLine]) -> list[tuple[str, int, int]]:
    """``(rate, net, tax)`` per tax rate, highest rate first: what an invoice prints."""
    by_rate: dict[Decimal, tuple[int, int]] = {}
    for line in lines:
        rate = Decimal(line.tax_rate)
        net, tax = by_rate.get(rate, (0, 0))
        by_rate[rate] = (net + line.net_minor, tax + line.tax_minor)
    return [(decimal_text(r), n, t) for r, (n, t) in sorted(by_rate.items(), reverse=True)]


@dataclass(frozen=True)
class DealRef:
    """What a quote takes over from its deal."""

    deal_id: str
    customer_id: str
    contact_id: str | None
    account_id: str | None


@dataclass(frozen=True)
class QuoteTerms:
    title: str
    contact_id: str | None
    valid_until: date | None
    payment_terms_days: int
    notes: str | None


def _check_terms(terms: QuoteTerms, today: date) -> QuoteTerms:
    if not terms.title.strip():
        raise InvalidInput("title", "must not be empty")
    if terms.valid_until is not None and terms.valid_until < today:
        raise InvalidInput("valid_until", f"must not be in the past (today is {today})")
    if not (0 <= terms.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS):
        raise InvalidInput(
            "payment_terms_days", f"must be between 0 and {MAX_PAYMENT_TERMS_DAYS} days"
        )
    return replace(terms, title=terms.title.strip())


@dataclass
class Revision:
    number: int
    status: QuoteStatus
    title: str
    contact_id: str | None
    lines: list[DocumentLine]
    totals: DocumentTotals
    valid_until: date | None
    payment_terms_days: int
    notes: str | None
    sent_at: datetime | None = None
    sent_to_contact_id: str | None = None
    times_sent: int = 0
    rejection_reason: str | None = None
    acceptance_note: str | None = None

    @property
    def terms(self) -> QuoteTerms:
        return QuoteTerms(
            self.title, self.contact_id, self.valid_until, self.payment_terms_days, self.notes
        )

    def is_expired(self, today: date) -> bool:
        return self.status == "sent" and self.valid_until is not None and self.valid_until < today


class Quote(Aggregate):
    stream_type = "quote"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.number = ""
        self.deal_id = ""
        self.customer_id = ""
        self.account_id: str | None = None
        self.currency = ""
        self.revisions: list[Revision] = []
        self.invoice_id: str | None = None

    # --- reading ---

    @property
    def current(self) -> Revision:
        return self.revisions[-1]

    @property
    def revision(self) -> int:
        return self.current.number

    @property
    def status(self) -> QuoteStatus:
        return self.current.status

    @property
    def label(self) -> str:
        return f"quote {self.number} v{self.revision}"

    def revision_at(self, number: int) -> Revision:
        for rev in self.revisions:
            if rev.number == number:
                return rev
        raise InvalidInput("revision", f"{self.number} has no revision {number}")

    # --- commands ---

    @classmethod
    def draft(
        cls,
        quote_id: str,
        number: str,
        deal: DealRef,
        currency: str,
        terms: QuoteTerms,
        lines: list[LineSpec],
        today: date,
    ) -> Quote:
        terms = _check_terms(terms, today)
        priced, sums = price_lines(lines)
        quote = cls(quote_id)
        quote.record(
            QuoteDrafted(
                quote_id=quote_id,
                quote_number=number,
                revision=1,
                deal_id=deal.deal_id,
                customer_id=deal.customer_id,
                contact_id=terms.contact_id,
                account_id=deal.account_id,
                title=terms.title,
                currency=currency,
                lines=priced,
                totals=sums,
                valid_until=terms.valid_until,
                payment_terms_days=terms.payment_terms_days,
                notes=terms.notes,
            )
        )
        return quote

    def ensure_draft(self) -> None:
        status = self.status
        if status == "draft":
            return
        if status == "sent":
            raise DomainError(
                f"{self.label} was sent and can no longer change; revise it to make a new revision"
            )
        if status == "rejected":
            raise DomainError(f"{self.label} was rejected; revise it to make a new revision")
        raise DomainError(f"{self.label} was accepted; an accepted quote is final")

    def change_lines(self, lines: list[LineSpec]) -> bool:
        """Replace the draft's lines; records nothing if they are the same. Returns if changed."""
        self.ensure_draft()
        priced, sums = price_lines(lines)
        if priced == self.current.lines:
            return False
        self.record(
            QuoteLinesChanged(quote_id=self.id, revision=self.revision, lines=priced, totals=sums)
        )
        return True

    def update(self, values: dict[str, Any], today: date) -> list[str]:
        """Set some of the draft's terms (TERM_FIELDS); returns the names that changed."""
        self.ensure_draft()
        unknown = set(values) - set(TERM_FIELDS)
        if unknown:
            raise InvalidInput(sorted(unknown)[0], "is not a quote term")
        merged = {**vars(self.current.terms), **values}
        terms = _check_terms(QuoteTerms(**merged), today)
        new = vars(terms)
        old = vars(self.current.terms)
        changed = [f for f in TERM_FIELDS if f in values and old[f] != new[f]]
        if changed:
            self.record(
                QuoteUpdated(
                    quote_id=self.id,
                    revision=self.revision,
                    changed=changed,
                    **{f: new[f] for f in changed},
                )
            )
        return changed

    def check_sendable(self, today: date) -> None:
        """Raise unless the current revision may be e-mailed now (drafts, and re-sends)."""
        rev = self.current
        if rev.status not in ("draft", "sent"):
            raise DomainError(
                f"{self.label} is {rev.status}; only a draft or sent quote can be sent"
                + ("; revise it to make a new revision" if rev.status == "rejected" else "")
            )
        if not rev.lines:
            raise DomainError(f"{self.label} has no lines; add at least one before sending it")
        if rev.valid_until is not None and rev.valid_until < today:
            raise DomainError(
                f"{self.label} expired on {rev.valid_until}; revise it with a new valid_until"
            )

    def send(self, contact_id: str, message_id: str, sent_at: datetime) -> None:
        self.check_sendable(sent_at.date())
        self.record(
            QuoteSent(
                quote_id=self.id,
                revision=self.revision,
                contact_id=contact_id,
                message_id=message_id,
                sent_at=sent_at,
                resent=self.status == "sent",
                currency=self.currency,
                total_minor=self.current.totals.total_minor,
            )
        )

    def _ensure_current(self, revision: int | None) -> None:
        if revision is None or revision == self.revision:
            return
        rev = self.revision_at(revision)
        raise DomainError(
            f"revision {rev.number} of quote {self.number} was superseded by revision "
            f"{self.revision}",
            current_revision=self.revision,
        )

    def check_acceptable(self, today: date, revision: int | None = None) -> None:
        self._ensure_current(revision)
        rev = self.current
        if rev.status == "accepted":
            raise DomainError(f"{self.label} was already accepted", invoice_id=self.invoice_id)
        if rev.status == "rejected":
            raise DomainError(
                f"{self.label} was rejected and cannot be accepted; revise it to make a new offer"
            )
        if rev.status == "draft":
            raise DomainError(f"{self.label} is a draft; send it before it can be accepted")
        if rev.is_expired(today):
            raise DomainError(
                f"{self.label} expired on {rev.valid_until}; revise it with a new valid_until"
            )

    def accept(
        self, invoice_id: str, today: date, revision: int | None = None, note: str | None = None
    ) -> None:
        self.check_acceptable(today, revision)
        self.record(
            QuoteAccepted(
                quote_id=self.id,
                revision=self.revision,
                invoice_id=invoice_id,
                currency=self.currency,
                total_minor=self.current.totals.total_minor,
                note=note,
            )
        )

    def reject(self, reason: str, revision: int | None = None) -> None:
        self._ensure_current(revision)
        rev = self.current
        if not reason.strip():
            raise InvalidInput("reason", "must not be empty")
        if rev.status != "sent":
            detail = {
                "draft": "is a draft; only a sent quote can be rejected",
                "rejected": "was already rejected",
                "accepted": "was accepted; an accepted quote is final",
            }.get(rev.status, f"is {rev.status}")
            raise DomainError(f"{self.label} {detail}")
        self.record(QuoteRejected(quote_id=self.id, revision=self.revision, reason=reason.strip()))

    def check_revisable(self) -> None:
        status = self.status
        if status == "draft":
            raise DomainError(f"{self.label} is still a draft; change it instead of revising it")
        if status == "accepted":
            raise DomainError(f"{self.label} was accepted; an accepted quote is final")

    def revise(self, terms: QuoteTerms, lines: list[LineSpec] | None, today: date) -> None:
        """Draft revision n+1 from a sent or rejected revision (its lines unless given)."""
        self.check_revisable()
        rev = self.current
        terms = _check_terms(terms, today)
        if lines is None:
            priced, sums = list(rev.lines), rev.totals
        else:
            priced, sums = price_lines(lines)
        previous: Literal["sent", "rejected"] = "sent" if rev.status == "sent" else "rejected"
        self.record(
            QuoteRevised(
                quote_id=self.id,
                revision=rev.number + 1,
                previous_revision=rev.number,
                previous_status=previous,
                title=terms.title,
                contact_id=terms.contact_id,
                lines=priced,
                totals=sums,
                valid_until=terms.valid_until,
                payment_terms_days=terms.payment_terms_days,
                notes=terms.notes,
            )
        )

    # --- state ---

    @applies(QuoteDrafted)
    def _drafted(self, e: QuoteDrafted) -> None:
        self.subject = e.customer_id
        self.number = e.quote_number
        self.deal_id = e.deal_id
        self.customer_id = e.customer_id
        self.account_id = e.account_id
        self.currency = e.currency
        self.revisions = [
            Revision(
                number=e.revision,
                status="draft",
                title=e.title,
                contact_id=e.contact_id,
                lines=list(e.lines),
                totals=e.totals,
                valid_until=e.valid_until,
                payment_terms_days=e.payment_terms_days,
                notes=e.notes,
            )
        ]

    @applies(QuoteLinesChanged)
    def _lines_changed(self, e: QuoteLinesChanged) -> None:
        self.current.lines = list(e.lines)
        self.current.totals = e.totals

    @applies(QuoteUpdated)
    def _updated(self, e: QuoteUpdated) -> None:
        for name in e.changed:
            setattr(self.current, name, getattr(e, name))

    @applies(QuoteSent)
    def _sent(self, e: QuoteSent) -> None:
        rev = self.current
        rev.status = "sent"
        rev.sent_at = e.sent_at
        rev.sent_to_contact_id = e.contact_id
        rev.times_sent += 1

    @applies(QuoteAccepted)
    def _accepted(self, e: QuoteAccepted) -> None:
        self.current.status = "accepted"
        self.current.acceptance_note = e.note
        self.invoice_id = e.invoice_id

    @applies(QuoteRejected)
    def _rejected(self, e: QuoteRejected) -> None:
        self.current.status = "rejected"
        self.current.rejection_reason = e.reason

    @applies(QuoteRevised)
    def _revised(self, e: QuoteRevised) -> None:
        self.current.status = "superseded"
        self.revisions.append(
            Revision(
                number=e.revision,
                status="draft",
                title=e.title,
                contact_id=e.contact_id,
                lines=list(e.lines),
                totals=e.totals,
                valid_until=e.valid_until,
                payment_terms_days=e.payment_terms_days,
                notes=e.notes,
            )
        )
