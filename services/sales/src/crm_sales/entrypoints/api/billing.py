"""/products, /quotes, /invoices (products and price book, quotes, invoices and payments).

Quotes and invoices follow their deal's owner and team for who may read and change them.
Money is integer minor units; see the rounding rule in the quote and invoice schemas.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse

from crm_runtime.aggregate import Aggregate
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, Forbidden, InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.pagination import Page
from crm_runtime.http.params import Instant
from crm_runtime.http.routing import CommandRoute
from crm_runtime.mail import Mailer
from crm_runtime.repository import Repository
from crm_sales import access
from crm_sales.adapters import billing_view
from crm_sales.application.billing import BillingHandlers, LineRequest, send_lock_key
from crm_sales.domain.deal import Deal
from crm_sales.domain.invoice import CreditNote, Invoice
from crm_sales.domain.money import decimal_text
from crm_sales.domain.product import Product, ProductSpec
from crm_sales.domain.quote import Quote, tax_breakdown
from crm_sales.entrypoints.api.billing_schemas import (
    ROUNDING,
    AcceptResult,
    CreditNotePublic,
    DocumentLineOut,
    InvoicePublic,
    InvoiceSummary,
    InvoiceVoid,
    PaymentIn,
    PaymentOut,
    ProductCreate,
    ProductDeactivate,
    ProductPatch,
    ProductPublic,
    QuoteAccept,
    QuoteCreate,
    QuoteLineIn,
    QuoteLines,
    QuotePatch,
    QuotePublic,
    QuoteReject,
    QuoteRevise,
    QuoteSend,
    QuoteSummary,
    RevisionOut,
    TaxLineOut,
    VoidResult,
)
from crm_sales.entrypoints.api.common import (
    IdempotencyKey,
    IfMatch,
    KeyedCommand,
    Manager,
    SalesUser,
    after_of,
    history,
    next_cursor,
)
from crm_sales.entrypoints.api.schemas import HistoryEntry

products_router = APIRouter(prefix="/products", tags=["products"], route_class=CommandRoute)
quotes_router = APIRouter(prefix="/quotes", tags=["quotes"], route_class=CommandRoute)
invoices_router = APIRouter(prefix="/invoices", tags=["invoices"], route_class=CommandRoute)

AsOf = Annotated[
    Instant | None, Query(description="ISO 8601 time with zone: the record as it was then")
]
Limit = Annotated[int, Query(ge=1, le=200)]
CLOCK = "billing_clock"  # ctx.extras key: a callable returning the current time (tests)


def _handlers(ctx: ServiceContext) -> BillingHandlers:
    clock = ctx.extras.get(CLOCK)
    return BillingHandlers(ctx.store, clock) if callable(clock) else BillingHandlers(ctx.store)


async def _load(
    repo: Repository[Any],
    what: str,
    record_id: str,
    *,
    as_of: datetime | None = None,
    conn: Conn | None = None,
) -> Any:
    try:
        return await repo.load(record_id, as_of=as_of, conn=conn)
    except NotFound:
        raise NotFound(
            f"{what} {record_id} does not exist" + (f" as of {as_of}" if as_of else "")
        ) from None


def _headers(agg: Aggregate, location: str) -> dict[str, str]:
    return {"ETag": etag(agg.version), "Location": location}


# --- access: quotes and invoices follow their deal ------------------------------------------------


async def _owner(conn: Conn, deal_id: str) -> tuple[str | None, str | None]:
    return await billing_view.deal_owner(conn, deal_id) or (None, None)


async def _check_read(conn: Conn, user: Principal, deal_id: str, what: str) -> None:
    owner, team = await _owner(conn, deal_id)
    if not access.can_read(user, "deal", owner, team):
        raise Forbidden(f"this {what} belongs to a deal of another owner or team")


async def _check_change(conn: Conn, user: Principal, deal_id: str, what: str) -> None:
    owner, team = await _owner(conn, deal_id)
    if not access.can_change(user, owner, team):
        raise Forbidden(f"you may not change this {what}: its deal is not yours or your team's")


# --- products -------------------------------------------------------------------------------------


def product_out(p: Product) -> dict[str, Any]:
    return ProductPublic(
        id=p.id,
        sku=p.sku,
        name=p.name,
        description=p.description,
        unit=p.unit,
        tax_rate=p.tax_rate,
        prices=p.prices,
        active=p.active,
        deactivation_reason=p.deactivation_reason,
        version=p.version,
    ).model_dump(mode="json")


def _product_result(p: Product, status: int = 200) -> CommandResult:
    return CommandResult(status, product_out(p), _headers(p, f"/products/{p.id}"))


@products_router.post(
    "",
    status_code=201,
    response_model=ProductPublic,
    summary="Add a product to the catalogue, with its price per currency",
    description="Sales managers keep the catalogue. The SKU is unique without regard to case: "
    "a duplicate is a 409 naming the existing product (`existing_id`).",
    responses={409: {"description": "the SKU exists; the problem names the product"}},
)
async def create_product(
    body: ProductCreate, ctx: CtxDep, user: Manager, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    spec = ProductSpec(
        sku=body.sku,
        name=body.name,
        description=body.description,
        unit=body.unit,
        tax_rate=str(body.tax_rate),
        prices=dict(body.prices),
    )

    async def command(conn: Conn) -> CommandResult:
        return _product_result(await handlers.create_product(conn, spec, metadata_for(user)), 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@products_router.get(
    "", response_model=Page[ProductPublic], summary="List the catalogue, newest first"
)
async def list_products(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Limit = 50,
    active: bool | None = Query(default=None, description="only active (true) or retired"),
    currency: str | None = Query(default=None, description="only products priced in it"),
    q: str | None = Query(default=None, max_length=100, description="in name or SKU"),
) -> Page[ProductPublic]:
    async with ctx.pool.acquire() as conn:
        rows = await billing_view.list_products(
            conn,
            limit=limit + 1,
            after=after_of(cursor),
            active=active,
            currency=currency,
            search=q,
        )
    items = [
        ProductPublic(
            id=r["product_id"],
            sku=r["sku"],
            name=r["name"],
            description=r["description"],
            unit=r["unit"],
            tax_rate=_rate_text(r["tax_rate"]),
            prices=r["prices"],
            active=r["active"],
            version=r["version"],
        )
        for r in rows[:limit]
    ]
    return Page[ProductPublic](items=items, next_cursor=next_cursor(rows, limit, "product_id"))


def _rate_text(value: Any) -> str:
    return decimal_text(Decimal(value))


@products_router.get("/{product_id}", response_model=ProductPublic, summary="Read a product")
async def get_product(
    product_id: str, ctx: CtxDep, user: SalesUser, response: Response, as_of: AsOf = None
) -> dict[str, Any]:
    p: Product = await _load(_handlers(ctx).products, "product", product_id, as_of=as_of)
    response.headers["ETag"] = etag(p.version)
    return product_out(p)


@products_router.get(
    "/{product_id}/history", response_model=list[HistoryEntry], summary="A product's events"
)
async def product_history(product_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    await _load(handlers.products, "product", product_id)
    return history(await handlers.products.history(product_id))


@products_router.patch(
    "/{product_id}",
    response_model=ProductPublic,
    summary="Change a product (only the fields sent; `prices` replaces the price book)",
    description="Quotes already drafted keep the price, name and tax rate they copied.",
    responses={409: {"description": "the new SKU belongs to another product"}},
)
async def patch_product(
    product_id: str, body: ProductPatch, ctx: CtxDep, user: Manager, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    values = body.model_dump(exclude_unset=True)
    if "tax_rate" in values and values["tax_rate"] is not None:
        values["tax_rate"] = str(values["tax_rate"])
    for required in ("sku", "name", "unit", "tax_rate"):
        if required in values and values[required] is None:
            raise InvalidInput(required, "cannot be cleared")

    async def command(conn: Conn) -> CommandResult:
        p = await _load(handlers.products, "product", product_id, conn=conn)
        p = await handlers.update_product(
            conn, p, values, metadata_for(user), expected_version(if_match)
        )
        return _product_result(p)

    return await run_command(ctx, user, None, None, command)


@products_router.post(
    "/{product_id}/deactivate",
    response_model=ProductPublic,
    summary="Retire a product: new quote lines can no longer use it",
    responses={409: {"description": "already inactive"}},
)
async def deactivate_product(
    product_id: str,
    ctx: CtxDep,
    user: Manager,
    body: ProductDeactivate | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    return await _set_active(ctx, user, product_id, False, body.reason if body else None, if_match)


@products_router.post(
    "/{product_id}/activate",
    response_model=ProductPublic,
    summary="Make a retired product available again",
    responses={409: {"description": "already active"}},
)
async def activate_product(
    product_id: str, ctx: CtxDep, user: Manager, if_match: IfMatch = None
) -> JSONResponse:
    return await _set_active(ctx, user, product_id, True, None, if_match)


async def _set_active(
    ctx: ServiceContext,
    user: Principal,
    product_id: str,
    active: bool,
    reason: str | None,
    if_match: str | None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        p = await _load(handlers.products, "product", product_id, conn=conn)
        p = await handlers.set_product_active(
            conn, p, active, reason, metadata_for(user), expected_version(if_match)
        )
        return _product_result(p)

    return await run_command(ctx, user, None, None, command)


# --- quotes ---------------------------------------------------------------------------------------


def _lines_out(lines: list[Any]) -> list[DocumentLineOut]:
    return [DocumentLineOut.model_validate(line.model_dump()) for line in lines]


def _taxes_out(lines: list[Any]) -> list[TaxLineOut]:
    return [TaxLineOut(rate=r, net_minor=n, tax_minor=t) for r, n, t in tax_breakdown(lines)]


def quote_out(q: Quote, today: Any) -> dict[str, Any]:
    rev = q.current
    return QuotePublic(
        id=q.id,
        number=q.number,
        revision=rev.number,
        status=rev.status,
        expired=rev.is_expired(today),
        deal_id=q.deal_id,
        customer_id=q.customer_id,
        contact_id=rev.contact_id,
        account_id=q.account_id,
        title=rev.title,
        currency=q.currency,
        lines=_lines_out(rev.lines),
        subtotal_minor=rev.totals.subtotal_minor,
        discount_minor=rev.totals.discount_minor,
        tax_minor=rev.totals.tax_minor,
        total_minor=rev.totals.total_minor,
        taxes=_taxes_out(rev.lines),
        valid_until=rev.valid_until,
        payment_terms_days=rev.payment_terms_days,
        notes=rev.notes,
        sent_at=rev.sent_at,
        sent_to_contact_id=rev.sent_to_contact_id,
        rejection_reason=rev.rejection_reason,
        invoice_id=q.invoice_id,
        revisions=[
            RevisionOut(
                revision=r.number,
                status=r.status,
                total_minor=r.totals.total_minor,
                sent_at=r.sent_at,
                rejection_reason=r.rejection_reason,
            )
            for r in q.revisions
        ],
        version=q.version,
    ).model_dump(mode="json")


def _line_requests(lines: list[QuoteLineIn]) -> list[LineRequest]:
    return [
        LineRequest(
            product_id=line.product_id,
            name=line.name,
            description=line.description,
            unit=line.unit,
            quantity=line.quantity,
            unit_price_minor=line.unit_price_minor,
            discount_percent=line.discount_percent,
            tax_rate=line.tax_rate,
        )
        for line in lines
    ]


def _quote_result(handlers: BillingHandlers, q: Quote, status: int = 200) -> CommandResult:
    return CommandResult(status, quote_out(q, handlers.today()), _headers(q, f"/quotes/{q.id}"))


async def _quote_for_change(
    handlers: BillingHandlers, conn: Conn, user: Principal, quote_id: str
) -> Quote:
    q: Quote = await _load(handlers.quotes, "quote", quote_id, conn=conn)
    await _check_change(conn, user, q.deal_id, "quote")
    return q


@quotes_router.post(
    "",
    status_code=201,
    response_model=QuotePublic,
    summary="Draft a quote from a deal",
    description="Lines default to the deal's products; a product line's unit price defaults to "
    "the product's price in the quote's currency, its tax rate to the product's. The quote gets "
    "a number Q-<year>-<n> that all its revisions share. " + ROUNDING,
    responses={
        409: {"description": "the deal was lost"},
        422: {"description": "unknown deal/contact/product, no price in the currency, inactive "
              "product; the problem names the field (e.g. lines.0.unit_price_minor)"},
    },
)  # fmt: skip
async def create_quote(
    body: QuoteCreate, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        try:
            deal: Deal = await handlers.deals.load(body.deal_id, conn=conn)
        except NotFound:
            raise InvalidInput("deal_id", f"deal {body.deal_id} does not exist") from None
        await _check_change(conn, user, deal.id, "deal's quotes")
        q = await handlers.draft_quote(
            conn,
            deal,
            metadata_for(user),
            currency=body.currency,
            title=body.title,
            contact_id=body.contact_id,
            valid_until=body.valid_until,
            payment_terms_days=body.payment_terms_days,
            notes=body.notes,
            lines=_line_requests(body.lines) if body.lines is not None else None,
        )
        return _quote_result(handlers, q, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@quotes_router.get(
    "", response_model=Page[QuoteSummary], summary="List quotes you may see, newest first"
)
async def list_quotes(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Limit = 50,
    deal_id: str | None = None,
    customer_id: str | None = None,
    status: Literal["draft", "sent", "expired", "accepted", "rejected"] | None = None,
) -> Page[QuoteSummary]:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn:
        rows = await billing_view.list_quotes(
            conn,
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "deal"),
            user_id=user.user_id,
            team=user.team,
            today=handlers.today(),
            deal_id=deal_id,
            customer_id=customer_id,
            status=status,
        )
    items = [
        QuoteSummary(
            id=r["quote_id"],
            number=r["quote_number"],
            revision=r["revision"],
            status=r["status"],
            expired=bool(r["expired"]),
            title=r["title"],
            deal_id=r["deal_id"],
            customer_id=r["customer_id"],
            contact_id=r["contact_id"],
            currency=r["currency"],
            total_minor=r["total_minor"],
            valid_until=r["valid_until"],
            invoice_id=r["invoice_id"],
            version=r["version"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    return Page[QuoteSummary](items=items, next_cursor=next_cursor(rows, limit, "quote_id"))


@quotes_router.get(
    "/{quote_id}",
    response_model=QuotePublic,
    summary="Read a quote: its current revision, and every revision's status",
    description=ROUNDING,
)
async def get_quote(
    quote_id: str, ctx: CtxDep, user: SalesUser, response: Response, as_of: AsOf = None
) -> dict[str, Any]:
    handlers = _handlers(ctx)
    q: Quote = await _load(handlers.quotes, "quote", quote_id, as_of=as_of)
    async with ctx.pool.acquire() as conn:
        await _check_read(conn, user, q.deal_id, "quote")
    response.headers["ETag"] = etag(q.version)
    return quote_out(q, as_of.date() if as_of else handlers.today())


@quotes_router.get(
    "/{quote_id}/history", response_model=list[HistoryEntry], summary="A quote's events"
)
async def quote_history(quote_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    q: Quote = await _load(handlers.quotes, "quote", quote_id)
    async with ctx.pool.acquire() as conn:
        await _check_read(conn, user, q.deal_id, "quote")
    return history(await handlers.quotes.history(quote_id))


@quotes_router.get(
    "/{quote_id}/html",
    response_class=HTMLResponse,
    summary="The quote rendered as HTML (what the customer receives by e-mail)",
    responses={200: {"content": {"text/html": {}}}},
)
async def quote_html(
    quote_id: str,
    ctx: CtxDep,
    user: SalesUser,
    revision: Annotated[int | None, Query(ge=1, description="default: the current")] = None,
) -> HTMLResponse:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn:
        q: Quote = await _load(handlers.quotes, "quote", quote_id, conn=conn)
        await _check_read(conn, user, q.deal_id, "quote")
        if revision is not None and revision > q.revision:
            raise NotFound(f"quote {q.number} has no revision {revision}")
        html = await handlers.render(conn, q, revision, ctx.settings.mail_from)
    return HTMLResponse(html)


@quotes_router.put(
    "/{quote_id}/lines",
    response_model=QuotePublic,
    summary="Replace a draft's line items",
    description="Only a draft changes; a sent quote is a 409 (revise it instead). " + ROUNDING,
    responses={409: {"description": "the quote is not a draft"}, 412: {"description": "stale"}},
)
async def put_quote_lines(
    quote_id: str, body: QuoteLines, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        q = await _quote_for_change(handlers, conn, user, quote_id)
        q = await handlers.change_lines(
            conn, q, _line_requests(body.lines), metadata_for(user), expected_version(if_match)
        )
        return _quote_result(handlers, q)

    return await run_command(ctx, user, None, None, command)


@quotes_router.patch(
    "/{quote_id}",
    response_model=QuotePublic,
    summary="Change a draft's terms (title, contact, validity, payment terms, notes)",
    responses={409: {"description": "the quote is not a draft"}, 412: {"description": "stale"}},
)
async def patch_quote(
    quote_id: str, body: QuotePatch, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    values = body.model_dump(exclude_unset=True)
    for required in ("title", "payment_terms_days"):
        if required in values and values[required] is None:
            raise InvalidInput(required, "cannot be cleared")

    async def command(conn: Conn) -> CommandResult:
        q = await _quote_for_change(handlers, conn, user, quote_id)
        q = await handlers.update_quote(
            conn, q, values, metadata_for(user), expected_version(if_match)
        )
        return _quote_result(handlers, q)

    return await run_command(ctx, user, None, None, command)


@quotes_router.post(
    "/{quote_id}/send",
    response_model=QuotePublic,
    summary="E-mail the quote to its contact (HTML and text); a draft becomes sent",
    description="The e-mail goes out first; `quote.sent` is recorded only once the mail server "
    "took it. If it refuses, the answer is 502 and nothing changes. Sending a sent quote again "
    "re-sends it (e.g. to another contact). While it is on its way, other changes to the quote "
    "are a 409. With an `Idempotency-Key`, a retry answers the first response and sends nothing.",
    responses={
        409: {"description": "not a draft/sent quote, no lines, expired, contact has no e-mail"},
        412: {"description": "stale If-Match"},
        502: {"description": "the mail server refused; nothing recorded"},
    },
)
async def send_quote(
    quote_id: str,
    ctx: CtxDep,
    user: SalesUser,
    body: QuoteSend | None = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)
    body = body or QuoteSend()
    mailer = Mailer(ctx.settings.smtp_url, ctx.settings.mail_from)
    key = send_lock_key(quote_id)
    fingerprint = {"send_quote": quote_id, **body.model_dump(mode="json")}
    # One connection, no transaction while the mail is on its way: a session advisory lock keeps
    # every other change of this quote out (they try the same lock and answer 409). A retry with
    # the same Idempotency-Key waits for the first, then answers what it answered.
    async with (
        ctx.pool.acquire() as conn,
        KeyedCommand.hold(conn, user, idempotency_key, fingerprint) as keyed,
    ):
        if keyed is not None and (replay := await keyed.replay()) is not None:
            return replay
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key):
            raise Conflict(f"quote {quote_id} is being changed or sent right now; try again")
        try:
            q = await _quote_for_change(handlers, conn, user, quote_id)
            mail = await handlers.prepare_mail(
                conn,
                q,
                contact_id=body.contact_id,
                message=body.message,
                sender=ctx.settings.mail_from,
                expected=expected_version(if_match),
            )
            message_id = await handlers.deliver(mailer, mail)
            async with conn.transaction():
                q = await handlers.record_sent(conn, mail, message_id, metadata_for(user))
                result = _quote_result(handlers, q)
                if keyed is not None:
                    await keyed.remember(result)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    return JSONResponse(jsonable_encoder(result.body), result.status, result.headers)


@quotes_router.post(
    "/{quote_id}/accept",
    response_model=AcceptResult,
    summary="Record the customer's acceptance; issues the invoice in the same transaction",
    description="Only the current, sent, unexpired revision can be accepted, and a deal has at "
    "most one accepted quote (whose invoice is not void). The invoice gets the next number of "
    "the year, INV-<year>-<n>, without gaps; its due date is the quote's payment terms from "
    "today.",
    responses={
        409: {"description": "draft, rejected, already accepted, superseded, expired, or the "
              "deal already has an accepted quote"},
        412: {"description": "stale If-Match"},
    },
)  # fmt: skip
async def accept_quote(
    quote_id: str,
    ctx: CtxDep,
    user: SalesUser,
    body: QuoteAccept | None = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)
    body = body or QuoteAccept()

    async def command(conn: Conn) -> CommandResult:
        q = await _quote_for_change(handlers, conn, user, quote_id)
        q, inv = await handlers.accept(
            conn,
            q,
            metadata_for(user),
            expected_version(if_match),
            revision=body.revision,
            note=body.note,
        )
        return CommandResult(
            200,
            {"quote": quote_out(q, handlers.today()), "invoice": invoice_out(inv)},
            {"ETag": etag(q.version), "Location": f"/invoices/{inv.id}"},
        )

    fingerprint = {"quote_id": quote_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)


@quotes_router.post(
    "/{quote_id}/reject",
    response_model=QuotePublic,
    summary="Record the customer's rejection, with the reason",
    responses={409: {"description": "not sent, already rejected or accepted, superseded"}},
)
async def reject_quote(
    quote_id: str, body: QuoteReject, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        q = await _quote_for_change(handlers, conn, user, quote_id)
        q = await handlers.reject(
            conn, q, body.reason, body.revision, metadata_for(user), expected_version(if_match)
        )
        return _quote_result(handlers, q)

    return await run_command(ctx, user, None, None, command)


@quotes_router.post(
    "/{quote_id}/revise",
    response_model=QuotePublic,
    summary="Draft the next revision of a sent or rejected quote (same number, revision + 1)",
    description="The new revision copies the current one's lines and terms unless given; the "
    "earlier revision becomes superseded. A draft is changed in place instead (409), and an "
    "accepted quote is final (409).",
    responses={409: {"description": "draft or accepted quote"}},
)
async def revise_quote(
    quote_id: str,
    ctx: CtxDep,
    user: SalesUser,
    body: QuoteRevise | None = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)
    body = body or QuoteRevise()
    values = body.model_dump(exclude_unset=True, exclude={"lines"})
    for required in ("title", "payment_terms_days"):
        if required in values and values[required] is None:
            raise InvalidInput(required, "cannot be cleared")

    async def command(conn: Conn) -> CommandResult:
        q = await _quote_for_change(handlers, conn, user, quote_id)
        q = await handlers.revise(
            conn,
            q,
            metadata_for(user),
            expected_version(if_match),
            values=values,
            lines=_line_requests(body.lines) if body.lines is not None else None,
        )
        return _quote_result(handlers, q)

    fingerprint = {"quote_id": quote_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)


# --- invoices -------------------------------------------------------------------------------------


def invoice_out(i: Invoice) -> dict[str, Any]:
    return InvoicePublic(
        id=i.id,
        number=i.number,
        status=i.status,
        overdue=i.overdue,
        quote_id=i.quote_id,
        quote_number=i.quote_number,
        quote_revision=i.quote_revision,
        deal_id=i.deal_id,
        customer_id=i.customer_id,
        contact_id=i.contact_id,
        account_id=i.account_id,
        currency=i.currency,
        lines=_lines_out(i.lines),
        subtotal_minor=i.totals.subtotal_minor,
        discount_minor=i.totals.discount_minor,
        tax_minor=i.totals.tax_minor,
        total_minor=i.totals.total_minor,
        taxes=_taxes_out(i.lines),
        paid_minor=i.paid_minor,
        balance_minor=i.balance_minor,
        issue_date=i.issue_date,
        due_date=i.due_date,
        payment_terms_days=i.payment_terms_days,
        paid_at=i.paid_at,
        payments=[
            PaymentOut(
                payment_id=p.payment_id,
                amount_minor=p.amount_minor,
                method=p.method,
                reference=p.reference,
                received_at=p.received_at,
            )
            for p in i.payments
        ],
        void_reason=i.void_reason,
        credit_note_id=i.credit_note_id,
        credit_note_number=i.credit_note_number,
        refund_due_minor=i.refund_due_minor,
        version=i.version,
    ).model_dump(mode="json")


def credit_note_out(c: CreditNote) -> dict[str, Any]:
    return CreditNotePublic(
        id=c.id,
        number=c.number,
        invoice_id=c.invoice_id,
        invoice_number=c.invoice_number,
        customer_id=c.customer_id,
        currency=c.currency,
        lines=_lines_out(c.lines),
        subtotal_minor=c.totals.subtotal_minor,
        tax_minor=c.totals.tax_minor,
        total_minor=c.totals.total_minor,
        refund_due_minor=c.refund_due_minor,
        reason=c.reason,
        issue_date=c.issue_date,
        version=c.version,
    ).model_dump(mode="json")


async def _invoice_for_change(
    handlers: BillingHandlers, conn: Conn, user: Principal, invoice_id: str
) -> Invoice:
    i: Invoice = await _load(handlers.invoices, "invoice", invoice_id, conn=conn)
    await _check_change(conn, user, i.deal_id, "invoice")
    return i


@invoices_router.get(
    "", response_model=Page[InvoiceSummary], summary="List invoices you may see, newest first"
)
async def list_invoices(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Limit = 50,
    status: Literal["issued", "partially_paid", "paid", "void", "overdue"] | None = None,
    deal_id: str | None = None,
    customer_id: str | None = None,
    quote_id: str | None = None,
) -> Page[InvoiceSummary]:
    async with ctx.pool.acquire() as conn:
        rows = await billing_view.list_invoices(
            conn,
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "deal"),
            user_id=user.user_id,
            team=user.team,
            status=status,
            deal_id=deal_id,
            customer_id=customer_id,
            quote_id=quote_id,
        )
    items = [
        InvoiceSummary(
            id=r["invoice_id"],
            number=r["invoice_number"],
            status=r["status"],
            overdue=bool(r["is_overdue"]),
            quote_id=r["quote_id"],
            quote_number=r["quote_number"],
            deal_id=r["deal_id"],
            customer_id=r["customer_id"],
            currency=r["currency"],
            total_minor=r["total_minor"],
            paid_minor=r["paid_minor"],
            balance_minor=r["balance_minor"],
            issue_date=r["issue_date"],
            due_date=r["due_date"],
            credit_note_id=r["credit_note_id"],
            version=r["version"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    return Page[InvoiceSummary](items=items, next_cursor=next_cursor(rows, limit, "invoice_id"))


@invoices_router.get(
    "/{invoice_id}",
    response_model=InvoicePublic,
    summary="Read an invoice with its payments",
    description=ROUNDING,
)
async def get_invoice(
    invoice_id: str, ctx: CtxDep, user: SalesUser, response: Response, as_of: AsOf = None
) -> dict[str, Any]:
    handlers = _handlers(ctx)
    i: Invoice = await _load(handlers.invoices, "invoice", invoice_id, as_of=as_of)
    async with ctx.pool.acquire() as conn:
        await _check_read(conn, user, i.deal_id, "invoice")
    response.headers["ETag"] = etag(i.version)
    return invoice_out(i)


@invoices_router.get(
    "/{invoice_id}/history", response_model=list[HistoryEntry], summary="An invoice's events"
)
async def invoice_history(invoice_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    i: Invoice = await _load(handlers.invoices, "invoice", invoice_id)
    async with ctx.pool.acquire() as conn:
        await _check_read(conn, user, i.deal_id, "invoice")
    return history(await handlers.invoices.history(invoice_id))


@invoices_router.get(
    "/{invoice_id}/credit-note",
    response_model=CreditNotePublic,
    summary="The credit note that voided the invoice (404 while it stands)",
)
async def get_credit_note(
    invoice_id: str, ctx: CtxDep, user: SalesUser, response: Response
) -> dict[str, Any]:
    handlers = _handlers(ctx)
    i: Invoice = await _load(handlers.invoices, "invoice", invoice_id)
    async with ctx.pool.acquire() as conn:
        await _check_read(conn, user, i.deal_id, "invoice")
    if i.credit_note_id is None:
        raise NotFound(f"invoice {i.number} has no credit note: it was not voided")
    c: CreditNote = await _load(handlers.credit_notes, "credit note", i.credit_note_id)
    response.headers["ETag"] = etag(c.version)
    return credit_note_out(c)


@invoices_router.post(
    "/{invoice_id}/payments",
    status_code=201,
    response_model=InvoicePublic,
    summary="Record a payment, partial or full",
    description="The invoice goes issued -> partially_paid -> paid. Paying more than the "
    "balance is a 409 whose problem names `amount_due_minor`; a void or paid invoice takes no "
    "payments (409). Send an Idempotency-Key so that a retry does not record it twice.",
    responses={
        409: {"description": "more than the amount due, invoice paid or void"},
        412: {"description": "stale If-Match"},
        422: {"description": "currency is not the invoice's, received_at in the future"},
    },
)
async def record_payment(
    invoice_id: str,
    body: PaymentIn,
    ctx: CtxDep,
    user: SalesUser,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        i = await _invoice_for_change(handlers, conn, user, invoice_id)
        if body.currency is not None and body.currency != i.currency:
            raise InvalidInput("currency", f"the invoice is in {i.currency}, not {body.currency}")
        i = await handlers.pay(
            conn,
            i,
            metadata_for(user),
            expected_version(if_match),
            amount_minor=body.amount_minor,
            method=body.method,
            reference=body.reference,
            received_at=body.received_at,
        )
        return CommandResult(201, invoice_out(i), _headers(i, f"/invoices/{i.id}"))

    fingerprint = {"invoice_id": invoice_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)


@invoices_router.post(
    "/{invoice_id}/void",
    response_model=VoidResult,
    summary="Void an invoice by issuing a credit note for its full amount (managers)",
    description="The credit note gets the next number of its own series, CN-<year>-<n>, "
    "without gaps. Payments already received stay recorded and are owed back: the void and the "
    "credit note carry them as `refund_due_minor`. Voiding twice is a 409. Once void, the "
    "deal's quote no longer blocks accepting another quote of the deal.",
    responses={409: {"description": "already void"}, 412: {"description": "stale If-Match"}},
)
async def void_invoice(
    invoice_id: str,
    body: InvoiceVoid,
    ctx: CtxDep,
    user: Manager,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        i = await _invoice_for_change(handlers, conn, user, invoice_id)
        i, note = await handlers.void(
            conn, i, body.reason, metadata_for(user), expected_version(if_match)
        )
        return CommandResult(
            200,
            {"invoice": invoice_out(i), "credit_note": credit_note_out(note)},
            {"ETag": etag(i.version), "Location": f"/invoices/{i.id}/credit-note"},
        )

    fingerprint = {"invoice_id": invoice_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)
