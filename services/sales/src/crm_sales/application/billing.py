"""Command handlers for products, quotes, invoices and payments, the quote e-mail, and the
scheduler's overdue job.

Each handler runs in the caller's transaction and writes the read models in it. Two things happen
outside a transaction on purpose:

* sending a quote: the e-mail goes out first, and ``quote.sent`` is recorded only once the mail
  server took it (a refused mail is a 502 and records nothing). While the mail is on its way the
  quote holds an advisory lock, so nothing can change what was just e-mailed;
* ``mark_overdue`` is given a connection by the scheduler and takes a savepoint per invoice.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import jinja2

from crm_events.schemas.sales_billing import PaymentMethod
from crm_runtime.db import Conn
from crm_runtime.errors import ConcurrencyError, Conflict, CrmError, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.mail import Mailer, MailError, OutgoingMail
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import billing_view
from crm_sales.domain.account import Account
from crm_sales.domain.contact import Contact
from crm_sales.domain.deal import Deal
from crm_sales.domain.invoice import CreditNote, Invoice, document_number
from crm_sales.domain.money import DOCUMENT_ROUNDING_NOTE, format_money
from crm_sales.domain.product import Product, ProductSpec
from crm_sales.domain.quote import (
    DealRef,
    LineSpec,
    Quote,
    QuoteTerms,
    Revision,
    tax_breakdown,
)

log = logging.getLogger(__name__)

QUOTE_SERIES = "Q"
INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
DEFAULT_VALIDITY_DAYS = 30
DEFAULT_PAYMENT_TERMS_DAYS = 30
SCHEDULER = Metadata(actor="system:scheduler")


class MailDeliveryFailed(CrmError):
    """The mail server did not take the quote e-mail; nothing was recorded."""

    status = 502
    title = "Bad Gateway"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LineRequest:
    """A quote line as asked for: a catalogue product (defaults from it) or a free line."""

    product_id: str | None = None
    name: str | None = None
    description: str | None = None
    unit: str | None = None
    quantity: Decimal = Decimal(1)
    unit_price_minor: int | None = None
    discount_percent: Decimal = Decimal(0)
    tax_rate: Decimal | None = None


@dataclass(frozen=True)
class QuoteMail:
    """A rendered quote e-mail, ready to go, and what ``quote.sent`` will record."""

    quote_id: str
    version: int
    revision: int
    contact_id: str
    mail: OutgoingMail


class BillingHandlers:
    def __init__(self, store: EventStore, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.clock = clock
        self.products = Repository(store, Product)
        self.quotes = Repository(store, Quote)
        self.invoices = Repository(store, Invoice)
        self.credit_notes = Repository(store, CreditNote)
        self.deals = Repository(store, Deal)
        self.contacts = Repository(store, Contact)
        self.accounts = Repository(store, Account)

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    def today(self) -> date:
        return self.now().date()

    # --- products -------------------------------------------------------------------------

    async def create_product(self, conn: Conn, spec: ProductSpec, meta: Metadata) -> Product:
        existing = await billing_view.product_by_sku(conn, spec.sku)
        if existing is not None:
            raise billing_view.duplicate_sku(spec.sku.strip(), existing)
        product = Product.create(str(uuid.uuid4()), spec)
        await self.products.save(conn, product, meta)
        await billing_view.upsert_product(conn, product, self.now())
        return product

    async def update_product(
        self,
        conn: Conn,
        product: Product,
        values: dict[str, Any],
        meta: Metadata,
        expected: int | None,
    ) -> Product:
        check_version(expected, product.version)
        if values.get("sku"):
            existing = await billing_view.product_by_sku(conn, values["sku"], other_than=product.id)
            if existing is not None:
                raise billing_view.duplicate_sku(str(values["sku"]).strip(), existing)
        if product.update(values):
            await self.products.save(conn, product, meta)
            await billing_view.upsert_product(conn, product, self.now())
        return product

    async def set_product_active(
        self,
        conn: Conn,
        product: Product,
        active: bool,
        reason: str | None,
        meta: Metadata,
        expected: int | None,
    ) -> Product:
        check_version(expected, product.version)
        if active:
            product.activate()
        else:
            product.deactivate(reason)
        await self.products.save(conn, product, meta)
        await billing_view.upsert_product(conn, product, self.now())
        return product

    # --- quote lines ----------------------------------------------------------------------

    async def price(self, conn: Conn, requests: list[LineRequest], currency: str) -> list[LineSpec]:
        """Fill in each line from its product: name, SKU, unit, price in ``currency``, tax rate.

        A product line without an explicit unit price takes the product's price in the quote's
        currency; a product without one is a 422 on that line. Inactive products are refused.
        """
        specs: list[LineSpec] = []
        for i, r in enumerate(requests):
            at = f"lines.{i}"
            product: Product | None = None
            if r.product_id is not None:
                try:
                    product = await self.products.load(r.product_id, conn=conn)
                except NotFound:
                    raise InvalidInput(
                        f"{at}.product_id", f"product {r.product_id} does not exist"
                    ) from None
                if not product.active:
                    raise InvalidInput(
                        f"{at}.product_id",
                        f"product {product.sku} is inactive and cannot be quoted",
                    )
            name = r.name or (product.name if product else None)
            if not name:
                raise InvalidInput(f"{at}.name", "a line without a product needs a name")
            price = r.unit_price_minor
            if price is None and product is not None:
                price = product.price_in(currency)
                if price is None:
                    listed = ", ".join(sorted(product.prices)) or "none"
                    raise InvalidInput(
                        f"{at}.unit_price_minor",
                        f"product {product.sku} has no price in {currency} (it has: {listed}); "
                        f"give unit_price_minor or add a {currency} price to the product",
                    )
            if price is None:
                raise InvalidInput(
                    f"{at}.unit_price_minor", "a line without a product needs a unit price"
                )
            rate = r.tax_rate
            if rate is None:
                rate = product.tax_rate_decimal() if product else Decimal(0)
            specs.append(
                LineSpec(
                    name=name,
                    quantity=r.quantity,
                    unit_price_minor=price,
                    discount_percent=r.discount_percent,
                    tax_rate=rate,
                    product_id=product.id if product else None,
                    sku=product.sku if product else None,
                    description=r.description
                    if r.description is not None
                    else (product.description if product else None),
                    unit=r.unit or (product.unit if product else None),
                )
            )
        return specs

    def deal_lines(self, deal: Deal, currency: str) -> list[LineRequest]:
        """A new quote's lines when none are given: the deal's products."""
        same = currency == deal.currency
        out = []
        for i, line in enumerate(deal.lines):
            if not same and line.product_id is None:
                raise InvalidInput(
                    "lines",
                    f"the deal's line {i + 1} ({line.name}) is priced in {deal.currency}, not "
                    f"{currency}; give the quote's lines",
                )
            out.append(
                LineRequest(
                    product_id=line.product_id,
                    name=line.name,
                    quantity=Decimal(line.quantity),
                    # Another currency: the product's price in it (price book), not the deal's.
                    unit_price_minor=line.unit_price_minor if same else None,
                )
            )
        return out

    # --- quotes ---------------------------------------------------------------------------

    async def lock_quote(self, conn: Conn, quote_id: str) -> None:
        """Changing a quote waits for nobody: while its e-mail is going out, it is a 409.

        Changes take the quote's lock shared (they still meet each other on the stream
        version); the sender takes it exclusively, for as long as the mail is on its way.
        """
        free = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock_shared(hashtextextended($1, 0))",
            send_lock_key(quote_id),
        )
        if not free:
            raise Conflict(f"quote {quote_id} is being e-mailed right now; try again in a moment")

    async def _contact_for(
        self, conn: Conn, contact_id: str, field: str, deal_id: str | None = None
    ) -> Contact:
        try:
            contact = await self.contacts.load(contact_id, conn=conn)
        except NotFound:
            raise InvalidInput(field, f"contact {contact_id} does not exist") from None
        for _ in range(10):  # a merged contact: its survivor is the one to write to
            if contact.merged_into is None:
                break
            contact = await self.contacts.load(contact.merged_into, conn=conn)
        if deal_id is not None:
            # A quote goes to the deal's people only: its contact, or a contact of its account.
            deal = await self.deals.load(deal_id, conn=conn)
            ours = contact.id == deal.contact_id or (
                deal.account_id is not None and contact.details.get("account_id") == deal.account_id
            )
            if not ours:
                raise InvalidInput(
                    field, "a quote goes to the deal's contact or a contact of the deal's account"
                )
        return contact

    async def draft_quote(
        self,
        conn: Conn,
        deal: Deal,
        meta: Metadata,
        *,
        currency: str | None,
        title: str | None,
        contact_id: str | None,
        valid_until: date | None,
        payment_terms_days: int | None,
        notes: str | None,
        lines: list[LineRequest] | None,
    ) -> Quote:
        if deal.status == "lost":
            raise Conflict(f"deal {deal.id} was lost; a lost deal gets no quotes")
        cur = currency or deal.currency
        if contact_id is not None:
            contact_id = (await self._contact_for(conn, contact_id, "contact_id", deal.id)).id
        today = self.today()
        terms = QuoteTerms(
            title=title or deal.name,
            contact_id=contact_id or deal.contact_id,
            valid_until=valid_until or today + timedelta(days=DEFAULT_VALIDITY_DAYS),
            payment_terms_days=DEFAULT_PAYMENT_TERMS_DAYS
            if payment_terms_days is None
            else payment_terms_days,
            notes=notes,
        )
        specs = await self.price(
            conn, lines if lines is not None else self.deal_lines(deal, cur), cur
        )
        number = await billing_view.next_number(conn, QUOTE_SERIES, today.year)
        quote = Quote.draft(
            str(uuid.uuid4()),
            document_number(QUOTE_SERIES, today.year, number),
            _deal_ref(deal),
            cur,
            terms,
            specs,
            today,
        )
        await self.quotes.save(conn, quote, meta)
        await billing_view.upsert_quote(conn, quote, self.now())
        return quote

    async def _save(self, conn: Conn, quote: Quote, meta: Metadata) -> Quote:
        if quote.pending:
            await self.quotes.save(conn, quote, meta)
            await billing_view.upsert_quote(conn, quote, self.now())
        return quote

    async def change_lines(
        self,
        conn: Conn,
        quote: Quote,
        lines: list[LineRequest],
        meta: Metadata,
        expected: int | None,
    ) -> Quote:
        check_version(expected, quote.version)
        await self.lock_quote(conn, quote.id)
        quote.ensure_draft()  # before pricing: a sent quote is a 409 whatever the lines say
        quote.change_lines(await self.price(conn, lines, quote.currency))
        return await self._save(conn, quote, meta)

    async def update_quote(
        self,
        conn: Conn,
        quote: Quote,
        values: dict[str, Any],
        meta: Metadata,
        expected: int | None,
    ) -> Quote:
        check_version(expected, quote.version)
        await self.lock_quote(conn, quote.id)
        quote.ensure_draft()
        if values.get("contact_id") is not None:
            values = {
                **values,
                "contact_id": (
                    await self._contact_for(conn, values["contact_id"], "contact_id", quote.deal_id)
                ).id,
            }
        quote.update(values, self.today())
        return await self._save(conn, quote, meta)

    async def reject(
        self,
        conn: Conn,
        quote: Quote,
        reason: str,
        revision: int | None,
        meta: Metadata,
        expected: int | None,
    ) -> Quote:
        check_version(expected, quote.version)
        await self.lock_quote(conn, quote.id)
        quote.reject(reason, revision)
        return await self._save(conn, quote, meta)

    async def revise(
        self,
        conn: Conn,
        quote: Quote,
        meta: Metadata,
        expected: int | None,
        *,
        values: dict[str, Any],
        lines: list[LineRequest] | None,
    ) -> Quote:
        """New revision: the current terms and lines unless given; a lapsed validity restarts."""
        check_version(expected, quote.version)
        await self.lock_quote(conn, quote.id)
        today = self.today()
        current = quote.current.terms
        valid_until = values.get("valid_until", current.valid_until)
        if "valid_until" not in values and valid_until is not None and valid_until < today:
            valid_until = today + timedelta(days=DEFAULT_VALIDITY_DAYS)
        contact_id = values.get("contact_id", current.contact_id)
        if "contact_id" in values and contact_id is not None:
            contact_id = (await self._contact_for(conn, contact_id, "contact_id", quote.deal_id)).id
        terms = QuoteTerms(
            title=values.get("title") or current.title,
            contact_id=contact_id,
            valid_until=valid_until,
            payment_terms_days=current.payment_terms_days
            if values.get("payment_terms_days") is None
            else values["payment_terms_days"],
            notes=values.get("notes", current.notes),
        )
        quote.check_revisable()  # the rule's 409 comes before any pricing of new lines
        specs = None if lines is None else await self.price(conn, lines, quote.currency)
        quote.revise(terms, specs, today)
        return await self._save(conn, quote, meta)

    async def accept(
        self,
        conn: Conn,
        quote: Quote,
        meta: Metadata,
        expected: int | None,
        *,
        revision: int | None,
        note: str | None,
    ) -> tuple[Quote, Invoice]:
        """Accept the current revision and issue its invoice, in the caller's transaction.

        The invoice number is taken last, just before the events are saved, from the counter
        row that stays locked until this transaction commits or rolls back: no gaps.
        """
        check_version(expected, quote.version)
        await self.lock_quote(conn, quote.id)
        today = self.today()
        quote.check_acceptable(today, revision)
        await billing_view.lock_deal(conn, quote.deal_id)
        other = await billing_view.accepted_quote_of_deal(conn, quote.deal_id, other_than=quote.id)
        if other is not None:
            raise billing_view.another_accepted(quote.deal_id, other)
        invoice_id = str(uuid.uuid4())
        number = await billing_view.next_number(conn, INVOICE_SERIES, today.year)
        invoice = Invoice.issue(
            invoice_id, document_number(INVOICE_SERIES, today.year, number), quote, today
        )
        quote.accept(invoice_id, today, revision, note)
        await self.quotes.save(conn, quote, meta)
        await self.invoices.save(conn, invoice, meta)
        at = self.now()
        await billing_view.upsert_quote(conn, quote, at)
        await billing_view.upsert_invoice(conn, invoice, at)
        return quote, invoice

    # --- the quote e-mail -----------------------------------------------------------------

    async def prepare_mail(
        self,
        conn: Conn,
        quote: Quote,
        *,
        contact_id: str | None,
        message: str | None,
        sender: str,
        expected: int | None,
    ) -> QuoteMail:
        """Check the quote may be sent now and render its e-mail (nothing is recorded yet)."""
        check_version(expected, quote.version)
        rev = quote.current
        quote.check_sendable(self.today())
        to_id = contact_id or rev.contact_id
        if to_id is None:
            raise InvalidInput(
                "contact_id", "the quote has no contact; name the contact to send it to"
            )
        contact = await self._contact_for(
            conn, to_id, "contact_id", quote.deal_id if contact_id else None
        )
        if not contact.emails:
            raise Conflict(
                f"contact {contact.id} has no e-mail address; add one to send the quote",
                contact_id=contact.id,
            )
        account = await self._account_of(conn, quote)
        html = render_quote_html(
            quote, rev, contact=contact, account=account, sender=sender, message=message
        )
        text = render_quote_text(quote, rev, contact=contact, message=message)
        subject = _one_line(f"Quote {quote.number} (revision {rev.number}): {rev.title}")
        return QuoteMail(
            quote_id=quote.id,
            version=quote.version,
            revision=rev.number,
            contact_id=contact.id,
            mail=OutgoingMail(to=[contact.emails[0]], subject=subject, text=text, html=html),
        )

    async def _account_of(self, conn: Conn, quote: Quote) -> Account | None:
        if quote.account_id is None:
            return None
        try:
            return await self.accounts.load(quote.account_id, conn=conn)
        except NotFound:
            return None

    async def deliver(self, mailer: Mailer, mail: QuoteMail) -> str:
        """Hand the e-mail to the mail server; its Message-ID. 502 if it is refused."""
        try:
            return await mailer.send(mail.mail)
        except MailError:
            log.warning("quote e-mail not sent", extra={"quote_id": mail.quote_id})
            raise MailDeliveryFailed(
                "the mail server did not accept the quote e-mail; nothing was recorded, "
                "try again later",
                quote_id=mail.quote_id,
            ) from None

    async def record_sent(
        self, conn: Conn, mail: QuoteMail, message_id: str, meta: Metadata
    ) -> Quote:
        quote = await self.quotes.load(mail.quote_id, conn=conn)
        if quote.version != mail.version:  # cannot happen while the send lock is held
            raise ConcurrencyError(quote.stream_id, mail.version, quote.version)
        quote.send(mail.contact_id, message_id, self.now())
        return await self._save(conn, quote, meta)

    async def render(self, conn: Conn, quote: Quote, revision: int | None, sender: str) -> str:
        rev = quote.revision_at(revision) if revision is not None else quote.current
        contact = None
        if rev.contact_id is not None:
            try:
                contact = await self._contact_for(conn, rev.contact_id, "contact_id")
            except InvalidInput:
                contact = None
        account = await self._account_of(conn, quote)
        return render_quote_html(quote, rev, contact=contact, account=account, sender=sender)

    # --- invoices -------------------------------------------------------------------------

    async def pay(
        self,
        conn: Conn,
        invoice: Invoice,
        meta: Metadata,
        expected: int | None,
        *,
        amount_minor: int,
        method: PaymentMethod,
        reference: str | None,
        received_at: datetime | None,
    ) -> Invoice:
        check_version(expected, invoice.version)
        now = self.now()
        invoice.pay(str(uuid.uuid4()), amount_minor, method, reference, received_at or now, now)
        await self.invoices.save(conn, invoice, meta)
        await billing_view.upsert_invoice(conn, invoice, now)
        return invoice

    async def void(
        self, conn: Conn, invoice: Invoice, reason: str, meta: Metadata, expected: int | None
    ) -> tuple[Invoice, CreditNote]:
        """Void the invoice with a credit note for its full amount (numbered gap-free too)."""
        check_version(expected, invoice.version)
        invoice.check_voidable()
        if not reason.strip():
            raise InvalidInput("reason", "must not be empty")
        today = self.today()
        number = await billing_view.next_number(conn, CREDIT_NOTE_SERIES, today.year)
        note = CreditNote.issue(
            str(uuid.uuid4()),
            document_number(CREDIT_NOTE_SERIES, today.year, number),
            invoice,
            reason,
            today,
        )
        invoice.void(reason, note)
        await self.invoices.save(conn, invoice, meta)
        await self.credit_notes.save(conn, note, meta)
        at = self.now()
        await billing_view.upsert_invoice(conn, invoice, at)
        await billing_view.insert_credit_note(conn, note, at)
        return invoice, note


def _deal_ref(deal: Deal) -> DealRef:
    return DealRef(deal.id, deal.customer_id, deal.contact_id, deal.account_id)


def send_lock_key(quote_id: str) -> str:
    """The advisory lock key a quote holds (exclusively) while its e-mail is going out."""
    return f"quote-send:{quote_id}"


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- rendering ------------------------------------------------------------------------------


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("crm_sales", "templates"),
        autoescape=True,  # every value is escaped: names and notes come from users
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _view(quote: Quote, rev: Revision) -> dict[str, Any]:
    cur = quote.currency

    def money(minor: int) -> str:
        return format_money(minor, cur)

    return {
        "number": quote.number,
        "revision": rev.number,
        "status": rev.status,
        "title": rev.title,
        "currency": cur,
        "valid_until": rev.valid_until.isoformat() if rev.valid_until else None,
        "payment_terms_days": rev.payment_terms_days,
        "notes": rev.notes,
        "lines": [
            {
                "no": line.line_no,
                "sku": line.sku,
                "name": line.name,
                "description": line.description,
                "quantity": line.quantity,
                "unit": line.unit,
                "unit_price": money(line.unit_price_minor),
                "discount": f"{line.discount_percent}%" if line.discount_percent != "0" else "",
                "tax_rate": f"{line.tax_rate}%",
                "net": money(line.net_minor),
                "tax": money(line.tax_minor),
                "total": money(line.total_minor),
            }
            for line in rev.lines
        ],
        "subtotal": money(rev.totals.subtotal_minor),
        "discount": money(rev.totals.discount_minor) if rev.totals.discount_minor else None,
        "taxes": [
            {"rate": f"{rate}%", "net": money(net), "tax": money(tax)}
            for rate, net, tax in tax_breakdown(rev.lines)
        ],
        "tax": money(rev.totals.tax_minor),
        "total": money(rev.totals.total_minor),
        "rounding_rule": DOCUMENT_ROUNDING_NOTE,
    }


def render_quote_html(
    quote: Quote,
    rev: Revision,
    *,
    contact: Contact | None,
    account: Account | None,
    sender: str,
    message: str | None = None,
) -> str:
    """The quote as an HTML document (the e-mail's HTML part and GET /quotes/{id}/html)."""
    return (
        _templates()
        .get_template("quote.html")
        .render(
            quote=_view(quote, rev),
            customer=contact.display_name if contact else None,
            company=account.name if account else None,
            sender=sender,
            message=message,
        )
    )


def render_quote_text(
    quote: Quote, rev: Revision, *, contact: Contact | None, message: str | None = None
) -> str:
    """The plain-text part of the quote e-mail."""
    v = _view(quote, rev)
    out = [f"Dear {contact.display_name}," if contact and contact.display_name else "Hello,", ""]
    if message:
        out += [message, ""]
    out += [f"Quote {v['number']} (revision {v['revision']}): {v['title']}", ""]
    for line in v["lines"]:
        unit = f" {line['unit']}" if line["unit"] else ""
        disc = f" less {line['discount']}" if line["discount"] else ""
        out.append(
            f"{line['no']}. {line['name']}: {line['quantity']}{unit} x {line['unit_price']}"
            f"{disc} = {line['net']} + tax {line['tax_rate']} {line['tax']}"
        )
    out += ["", f"Subtotal: {v['subtotal']}"]
    out += [f"Tax {t['rate']} on {t['net']}: {t['tax']}" for t in v["taxes"]]
    out += [f"Total: {v['total']}", ""]
    if v["valid_until"]:
        out.append(f"Valid until {v['valid_until']}.")
    out.append(f"Payment terms: {v['payment_terms_days']} days from the invoice date.")
    if v["notes"]:
        out += ["", v["notes"]]
    return "\n".join(out) + "\n"


# --- the scheduler's job --------------------------------------------------------------------


async def mark_overdue(conn: Conn, store: EventStore, now: datetime) -> int:
    """Flag every open invoice whose due date is before ``now``'s date (UTC) as overdue.

    Records ``crm.sales.invoice.overdue`` once per invoice, never twice (the aggregate knows it
    was flagged; two schedulers racing meet on the stream version and one skips). Each invoice
    is its own savepoint (or transaction, when ``conn`` is not in one), so one failure does not
    undo the others. Returns how many invoices it flagged.
    """
    at = now.astimezone(UTC)
    repo = Repository(store, Invoice)
    flagged = 0
    while True:
        candidates = await billing_view.overdue_candidates(conn, at.date(), limit=500)
        progressed = False
        for invoice_id in candidates:
            try:
                async with conn.transaction():
                    invoice = await repo.load(invoice_id, conn=conn)
                    if invoice.mark_overdue(at):
                        await repo.save(conn, invoice, SCHEDULER)
                        flagged += 1
                        progressed = True
                    await billing_view.upsert_invoice(conn, invoice, at)
            except ConcurrencyError:
                log.info("invoice changed while flagging it overdue", extra={"id": invoice_id})
        if len(candidates) < 500 or not progressed:
            return flagged
