"""Products, quotes, invoices and the money rule: given events, when a command, then events or
an error; and properties of the rounding rule over generated lines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events import EventPayload, registry
from crm_events.schemas.sales_billing import (
    CreditNoteIssued,
    InvoiceIssued,
    InvoiceOverdue,
    InvoicePaid,
    InvoicePaymentReceived,
    InvoiceVoided,
    ProductCreated,
    ProductDeactivated,
    ProductUpdated,
    QuoteAccepted,
    QuoteDrafted,
    QuoteLinesChanged,
    QuoteRejected,
    QuoteRevised,
    QuoteSent,
    QuoteUpdated,
)
from crm_runtime.aggregate import Aggregate
from crm_runtime.errors import Conflict, DomainError, InvalidInput
from crm_sales.domain.invoice import CreditNote, Invoice, document_number
from crm_sales.domain.money import (
    exact_net,
    exact_tax,
    exponent,
    format_money,
    line_amounts,
    major,
    round_half_up,
    totals,
)
from crm_sales.domain.product import Product, ProductSpec
from crm_sales.domain.quote import DealRef, LineSpec, Quote, QuoteTerms, price_lines

TODAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
DEAL = DealRef("deal-1", "cust-1", "contact-1", "account-1")
TERMS = QuoteTerms("40 seats", "contact-1", date(2026, 4, 9), 30, None)


def seat(quantity: str = "40", discount: str = "10") -> LineSpec:
    return LineSpec(
        name="Seat",
        quantity=Decimal(quantity),
        unit_price_minor=120_000,
        discount_percent=Decimal(discount),
        tax_rate=Decimal(19),
        product_id="p-1",
        sku="SEAT",
    )


A = TypeVar("A", bound=Aggregate)


def given_events(cls: type[A], agg_id: str, events: list[EventPayload]) -> A:
    """An aggregate rebuilt from a stream, as the repository does."""
    return cls.rehydrate(agg_id, [(e, i + 1) for i, e in enumerate(events)])


def history_of(agg: Aggregate) -> list[EventPayload]:
    events = list(agg.pending)
    agg.pending.clear()
    return events


def drafted() -> list[EventPayload]:
    q = Quote.draft("q-1", "Q-2026-000001", DEAL, "EUR", TERMS, [seat()], TODAY)
    return history_of(q)


def sent() -> list[EventPayload]:
    events = drafted()
    q = given_events(Quote, "q-1", events)
    q.send("contact-1", "<m1@x>", NOW)
    return events + history_of(q)


# --- money ------------------------------------------------------------------------------------


def test_minor_unit_exponents() -> None:
    codes = ("EUR", "USD", "JPY", "KRW", "BHD", "KWD", "JOD", "OMR", "TND")
    assert [exponent(c) for c in codes] == [2, 2, 0, 0, 3, 3, 3, 3, 3]


def test_half_up_rounds_ties_away_from_zero() -> None:
    assert [round_half_up(Decimal(x)) for x in ("0.5", "1.5", "2.5", "2.4999", "2.5001")] == [
        1, 2, 3, 2, 3,
    ]  # fmt: skip


def test_a_line_is_rounded_on_its_own_and_tax_is_on_the_rounded_net() -> None:
    # 3 x 0.333 EUR = 0.999 -> net 1.00 after rounding 99.9 cents; tax 19 % of 100 = 19.
    a = line_amounts(Decimal(3), 33, Decimal(0), Decimal(19))
    assert (a.net_minor, a.tax_minor, a.total_minor) == (99, 19, 118)
    # 1.5 hours at 33.33 with 12.5 % off: 49.995 -> 4374.5625 cents net... rounded half-up
    b = line_amounts(Decimal("1.5"), 3333, Decimal("12.5"), Decimal("8.875"))
    assert exact_net(Decimal("1.5"), 3333, Decimal("12.5")) == Decimal("4374.5625")
    assert b.net_minor == 4375 and b.tax_minor == round_half_up(Decimal(4375) * Decimal("0.08875"))
    assert b.tax_minor == 388  # 388.28125
    assert b.discount_minor == 5000 - 4375  # round(1.5 x 3333 = 4999.5) = 5000


def test_money_formats_in_the_currency_s_minor_unit() -> None:
    assert format_money(123456, "EUR") == "1,234.56 EUR"
    assert format_money(5, "EUR") == "0.05 EUR"
    assert format_money(123456, "JPY") == "123,456 JPY"
    assert format_money(1234567, "KWD") == "1,234.567 KWD"
    assert str(major(100, "JPY")) == "100"


def test_a_document_total_has_a_ceiling() -> None:
    huge = LineSpec(name="x", quantity=Decimal(1_000_000), unit_price_minor=10**11)
    with pytest.raises(InvalidInput, match="must not exceed"):
        price_lines([huge])


def test_line_values_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="quantity"):
        line_amounts(Decimal(0), 1, Decimal(0), Decimal(0))
    with pytest.raises(ValueError, match="discount"):
        line_amounts(Decimal(1), 1, Decimal(101), Decimal(0))
    with pytest.raises(InvalidInput) as err:
        price_lines([seat(), seat(discount="-1")])
    assert err.value.extra["errors"] == [
        {"field": "lines.1", "reason": "discount must be between 0 and 100 percent"}
    ]


# Up to 10^4 units at up to 10^7 minor units, 20 lines: totals stay under the document maximum.
quantities = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal(10_000), places=6, allow_nan=False
)
percents = st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=4, allow_nan=False)
prices = st.integers(min_value=0, max_value=10**7)
line_specs = st.builds(
    lambda q, p, d, t: LineSpec(
        name="x", quantity=q, unit_price_minor=p, discount_percent=d, tax_rate=t
    ),
    quantities,
    prices,
    percents,
    percents,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_specs, min_size=1, max_size=20))
def test_totals_are_sums_of_lines_each_within_half_a_minor_unit(specs: list[LineSpec]) -> None:
    lines, sums = price_lines(specs)
    assert sums.total_minor == sums.subtotal_minor + sums.tax_minor
    assert sums.subtotal_minor == sum(line.net_minor for line in lines)
    assert sums.tax_minor == sum(line.tax_minor for line in lines)
    assert sums.total_minor == sum(line.total_minor for line in lines)
    half = Decimal("0.5")
    for spec, line in zip(specs, lines, strict=True):
        exact = exact_net(spec.quantity, spec.unit_price_minor, spec.discount_percent)
        assert abs(Decimal(line.net_minor) - exact) <= half
        assert abs(Decimal(line.tax_minor) - exact_tax(line.net_minor, spec.tax_rate)) <= half
        assert line.net_minor + line.discount_minor == round_half_up(
            spec.quantity * Decimal(spec.unit_price_minor)
        )
        assert Decimal(line.quantity) == spec.quantity  # kept exactly, as decimal text


@settings(max_examples=200, deadline=None)
@given(st.lists(line_specs, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_the_order_of_lines_does_not_change_the_totals(specs: list[LineSpec], rnd: Random) -> None:
    shuffled = list(specs)
    rnd.shuffle(shuffled)
    assert price_lines(specs)[1] == price_lines(shuffled)[1]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(["JPY", "KRW", "EUR", "KWD"]))
def test_formatted_amounts_have_the_currency_s_digits(amount: int, currency: str) -> None:
    text = format_money(amount, currency)
    number = text.removesuffix(f" {currency}")
    digits = exponent(currency)
    if digits == 0:
        assert "." not in number
    else:
        assert len(number.rsplit(".", 1)[1]) == digits
    assert Decimal(number.replace(",", "")).scaleb(digits) == amount


@settings(max_examples=100, deadline=None)
@given(st.lists(line_specs, min_size=0, max_size=8))
def test_totals_of_no_lines_and_of_any_lines_are_non_negative(specs: list[LineSpec]) -> None:
    sums = totals(
        line_amounts(s.quantity, s.unit_price_minor, s.discount_percent, s.tax_rate) for s in specs
    )
    assert sums.subtotal_minor >= 0 and sums.tax_minor >= 0 and sums.discount_minor >= 0


# --- products ---------------------------------------------------------------------------------


def product_spec(**changes: object) -> ProductSpec:
    values: dict[str, object] = {
        "sku": " SEAT-1 ",
        "name": "Seat",
        "description": None,
        "unit": "seat",
        "tax_rate": "19.0",
        "prices": {"USD": 13000, "EUR": 12000},
    }
    values.update(changes)
    return ProductSpec(**values)  # type: ignore[arg-type]


def test_creating_a_product_records_its_price_book() -> None:
    p = Product.create("p-1", product_spec())
    [event] = p.pending
    assert isinstance(event, ProductCreated)
    assert event.sku == "SEAT-1" and event.tax_rate == "19"
    assert list(event.prices) == ["EUR", "USD"] and p.price_in("EUR") == 12000
    assert p.price_in("JPY") is None and p.sku_key == "SEAT-1"


def test_product_updates_record_only_what_changed() -> None:
    p = given_events(Product, "p-1", history_of(Product.create("p-1", product_spec())))
    assert p.update({"name": "Seat", "tax_rate": "19.00"}) == []
    assert p.pending == []
    assert p.update({"prices": {"EUR": 12500}, "name": "Seat v2"}) == ["name", "prices"]
    [event] = p.pending
    assert isinstance(event, ProductUpdated) and event.prices == {"EUR": 12500}
    assert p.prices == {"EUR": 12500} and p.price_in("USD") is None
    with pytest.raises(InvalidInput, match="tax_rate"):
        p.update({"tax_rate": "120"})
    with pytest.raises(InvalidInput, match=r"prices\.eur"):
        p.update({"prices": {"eur": 1}})


def test_product_activation_rules() -> None:
    p = given_events(Product, "p-1", history_of(Product.create("p-1", product_spec())))
    with pytest.raises(DomainError, match="already active"):
        p.activate()
    p.deactivate("old")
    assert isinstance(p.pending[-1], ProductDeactivated) and not p.active
    with pytest.raises(DomainError, match="already inactive"):
        p.deactivate(None)
    p.activate()
    assert p.active and p.deactivation_reason is None


# --- quotes -----------------------------------------------------------------------------------


def test_drafting_a_quote_prices_its_lines() -> None:
    [event] = drafted()
    assert isinstance(event, QuoteDrafted)
    assert event.revision == 1 and event.customer_id == "cust-1"
    [line] = event.lines
    assert (line.net_minor, line.tax_minor, line.discount_minor) == (4_320_000, 820_800, 480_000)
    assert event.totals.total_minor == 5_140_800
    q = given_events(Quote, "q-1", [event])
    assert q.subject == "cust-1" and q.status == "draft" and q.revision == 1


def test_a_quote_cannot_be_valid_until_the_past() -> None:
    past = QuoteTerms("t", None, TODAY - timedelta(days=1), 30, None)
    with pytest.raises(InvalidInput, match="valid_until"):
        Quote.draft("q", "Q-1", DEAL, "EUR", past, [], TODAY)
    with pytest.raises(InvalidInput, match="payment_terms_days"):
        Quote.draft("q", "Q-1", DEAL, "EUR", QuoteTerms("t", None, None, 400, None), [], TODAY)


def test_a_draft_changes_and_a_sent_quote_does_not() -> None:
    q = given_events(Quote, "q-1", drafted())
    assert q.change_lines([seat()]) is False  # the same lines record nothing
    assert q.change_lines([seat(quantity="2.5")]) is True
    assert isinstance(q.pending[-1], QuoteLinesChanged)
    assert q.current.totals.subtotal_minor == 270_000  # 2.5 x 1200.00 less 10 %
    assert q.update({"payment_terms_days": 14}, TODAY) == ["payment_terms_days"]
    assert isinstance(q.pending[-1], QuoteUpdated)
    q = given_events(Quote, "q-1", sent())
    with pytest.raises(DomainError, match="was sent and can no longer change; revise"):
        q.change_lines([seat(quantity="1")])
    with pytest.raises(DomainError, match="revise"):
        q.update({"notes": "x"}, TODAY)
    assert q.pending == []


def test_sending_needs_lines_and_a_valid_quote() -> None:
    empty = Quote.draft("q-2", "Q-2", DEAL, "EUR", TERMS, [], TODAY)
    with pytest.raises(DomainError, match="no lines"):
        empty.check_sendable(TODAY)
    q = given_events(Quote, "q-1", drafted())
    with pytest.raises(DomainError, match="expired"):
        q.check_sendable(date(2026, 4, 10))
    q.send("contact-1", "<m@x>", NOW)
    event = q.pending[-1]
    assert isinstance(event, QuoteSent) and not event.resent and event.total_minor == 5_140_800
    q.send("contact-2", "<m2@x>", NOW)  # a re-send keeps it sent
    assert isinstance(q.pending[-1], QuoteSent) and q.pending[-1].resent
    assert q.current.times_sent == 2 and q.current.sent_to_contact_id == "contact-2"


def test_accept_needs_a_sent_current_unexpired_revision() -> None:
    q = given_events(Quote, "q-1", drafted())
    with pytest.raises(DomainError, match="draft; send it"):
        q.accept("inv-1", TODAY)
    q = given_events(Quote, "q-1", sent())
    with pytest.raises(DomainError, match="expired on 2026-04-09"):
        q.accept("inv-1", date(2026, 4, 10))
    q.accept("inv-1", TODAY, revision=1, note="PO 1")
    event = q.pending[-1]
    assert isinstance(event, QuoteAccepted) and event.invoice_id == "inv-1"
    with pytest.raises(DomainError, match="already accepted") as err:
        q.accept("inv-2", TODAY)
    assert err.value.extra["invoice_id"] == "inv-1"
    with pytest.raises(DomainError, match="final"):
        q.revise(TERMS, None, TODAY)
    with pytest.raises(DomainError, match="final"):
        q.reject("no")


def test_a_rejected_quote_cannot_be_accepted_but_can_be_revised() -> None:
    q = given_events(Quote, "q-1", sent())
    q.reject("price too high")
    assert isinstance(q.pending[-1], QuoteRejected) and q.status == "rejected"
    with pytest.raises(DomainError, match="rejected and cannot be accepted"):
        q.accept("inv-1", TODAY)
    with pytest.raises(DomainError, match="already rejected"):
        q.reject("again")
    q.revise(TERMS, [seat(discount="15")], TODAY)
    event = q.pending[-1]
    assert isinstance(event, QuoteRevised)
    assert (event.revision, event.previous_revision, event.previous_status) == (2, 1, "rejected")
    assert [r.status for r in q.revisions] == ["superseded", "draft"]
    assert q.number == "Q-2026-000001" and q.current.lines[0].discount_percent == "15"


def test_only_the_current_revision_can_be_accepted() -> None:
    events = sent()
    q = given_events(Quote, "q-1", events)
    q.revise(TERMS, None, TODAY)  # copies the lines
    assert q.current.lines == q.revisions[0].lines
    q.send("contact-1", "<m2@x>", NOW)
    q = given_events(Quote, "q-1", events + history_of(q))
    with pytest.raises(DomainError, match="revision 1 of quote Q-2026-000001 was superseded"):
        q.accept("inv-1", TODAY, revision=1)
    with pytest.raises(InvalidInput, match="no revision 7"):
        q.accept("inv-1", TODAY, revision=7)
    q.accept("inv-1", TODAY, revision=2)
    assert [r.status for r in q.revisions] == ["superseded", "accepted"]


def test_a_draft_is_changed_not_revised() -> None:
    q = given_events(Quote, "q-1", drafted())
    with pytest.raises(DomainError, match="still a draft"):
        q.revise(TERMS, None, TODAY)
    with pytest.raises(DomainError, match="draft; only a sent quote can be rejected"):
        q.reject("no")


# --- invoices ---------------------------------------------------------------------------------


def issued() -> tuple[Invoice, Quote]:
    q = given_events(Quote, "q-1", sent())
    invoice = Invoice.issue("inv-1", document_number("INV", 2026, 7), q, TODAY)
    q.accept("inv-1", TODAY)
    return given_events(Invoice, "inv-1", history_of(invoice)), q


def test_an_invoice_bills_the_accepted_revision() -> None:
    invoice, _ = issued()
    assert invoice.number == "INV-2026-000007" and invoice.subject == "cust-1"
    assert invoice.due_date == TODAY + timedelta(days=30)
    assert invoice.total_minor == 5_140_800 and invoice.balance_minor == 5_140_800
    assert invoice.status == "issued" and not invoice.overdue


def test_partial_then_full_payment() -> None:
    invoice, _ = issued()
    invoice.pay("pay-1", 140_800, "card", None, NOW, NOW)
    [event] = invoice.pending
    assert isinstance(event, InvoicePaymentReceived) and event.balance_minor == 5_000_000
    assert invoice.status == "partially_paid"
    with pytest.raises(Conflict, match="more than the amount due") as err:
        invoice.pay("pay-2", 5_000_001, "card", None, NOW, NOW)
    assert err.value.extra["amount_due_minor"] == 5_000_000
    invoice.pay("pay-2", 5_000_000, "bank_transfer", "SEPA 1", NOW, NOW)
    assert [type(e) for e in invoice.pending] == [
        InvoicePaymentReceived, InvoicePaymentReceived, InvoicePaid,
    ]  # fmt: skip
    assert str(invoice.status) == "paid" and invoice.balance_minor == 0
    with pytest.raises(DomainError, match="paid in full"):
        invoice.pay("pay-3", 1, "cash", None, NOW, NOW)


def test_payment_input_is_checked() -> None:
    invoice, _ = issued()
    with pytest.raises(InvalidInput, match="amount_minor"):
        invoice.pay("p", 0, "cash", None, NOW, NOW)
    with pytest.raises(InvalidInput, match="received_at"):
        invoice.pay("p", 1, "cash", None, NOW + timedelta(minutes=1), NOW)
    assert invoice.pending == []


def test_overdue_is_flagged_once_after_the_due_date() -> None:
    invoice, _ = issued()
    due = invoice.due_date
    on_due_date = datetime(due.year, due.month, due.day, 23, 59, tzinfo=UTC)
    assert invoice.mark_overdue(on_due_date) is False
    assert invoice.mark_overdue(on_due_date + timedelta(minutes=1)) is True
    [event] = invoice.pending
    assert isinstance(event, InvoiceOverdue) and event.balance_minor == 5_140_800
    assert invoice.overdue
    assert invoice.mark_overdue(on_due_date + timedelta(days=10)) is False
    invoice.pay("p", invoice.balance_minor, "cash", None, NOW, NOW)
    assert not invoice.overdue and invoice.overdue_flagged


def test_a_paid_invoice_never_becomes_overdue() -> None:
    invoice, _ = issued()
    invoice.pay("p", invoice.total_minor, "cash", None, NOW, NOW)
    assert invoice.mark_overdue(NOW + timedelta(days=365)) is False


def test_void_issues_a_credit_note_and_keeps_payments_as_refund_due() -> None:
    invoice, _ = issued()
    invoice.pay("p", 100_000, "cash", None, NOW, NOW)
    note = CreditNote.issue("cn-1", "CN-2026-000001", invoice, "wrong entity", TODAY)
    invoice.void("wrong entity", note)
    [credit] = note.pending
    assert isinstance(credit, CreditNoteIssued)
    assert credit.totals.total_minor == 5_140_800 and credit.refund_due_minor == 100_000
    voided = invoice.pending[-1]
    assert isinstance(voided, InvoiceVoided) and voided.credit_note_number == "CN-2026-000001"
    assert invoice.status == "void" and invoice.balance_minor == 0
    assert invoice.refund_due_minor == 100_000
    with pytest.raises(DomainError, match="already void"):
        invoice.void("again", note)
    with pytest.raises(DomainError, match="already void"):
        CreditNote.issue("cn-2", "CN-2026-000002", invoice, "again", TODAY)
    with pytest.raises(DomainError, match="void; it takes no payments"):
        invoice.pay("p2", 1, "cash", None, NOW, NOW)
    assert invoice.mark_overdue(NOW + timedelta(days=365)) is False


def test_every_event_recorded_here_is_registered_and_round_trips() -> None:
    invoice, q = issued()
    invoice.pay("p", 1, "cash", None, NOW, NOW)
    events: list[EventPayload] = [*sent(), *q.pending, *invoice.pending]
    for event in events:
        type_, version = registry.type_of(event)
        assert registry.decode(type_, version, event.model_dump(mode="json")) == event
    assert isinstance(events[0], QuoteDrafted) and isinstance(q.pending[-1], QuoteAccepted)


def test_an_invoice_is_issued_once_from_a_quote_with_lines() -> None:
    empty = Quote.draft("q-2", "Q-2", DEAL, "EUR", TERMS, [], TODAY)
    with pytest.raises(DomainError, match="nothing to invoice"):
        Invoice.issue("i", "INV-1", empty, TODAY)
    [event] = Invoice.issue("i", "INV-1", given_events(Quote, "q-1", sent()), TODAY).pending
    assert isinstance(event, InvoiceIssued) and event.quote_revision == 1
    assert event.contact_id == "contact-1" and event.due_date == date(2026, 4, 9)


def test_a_zero_total_invoice_is_settled_as_it_is_issued() -> None:
    free = Quote.draft("q-0", "Q-2026-000002", DEAL, "EUR", TERMS, [seat(discount="100")], TODAY)
    events = history_of(free)
    q = given_events(Quote, "q-0", events)
    q.send("contact-1", "<m0@x>", NOW)
    q = given_events(Quote, "q-0", events + history_of(q))
    inv = Invoice.issue("i0", "INV-2026-000009", q, TODAY)
    assert inv.status == "paid" and inv.balance_minor == 0 and not inv.is_open
    assert [type(e).__name__ for e in inv.pending] == ["InvoiceIssued", "InvoicePaid"]
