"""Read models of products, quotes, invoices and credit notes, and the document number counters.

Everything here runs in the transaction that saves the events, so a 409 on a duplicate SKU or a
second accepted quote leaves nothing behind, and a rolled-back transaction gives its document
number back.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import asyncpg

from crm_runtime.db import Conn
from crm_runtime.errors import Conflict
from crm_sales.domain.invoice import CreditNote, Invoice
from crm_sales.domain.product import Product, normalise_sku
from crm_sales.domain.quote import Quote

# --- gap-free numbers ---------------------------------------------------------------------------


async def next_number(conn: Conn, series: str, year: int) -> int:
    """The next number of ``series`` in ``year``: 1, 2, 3, ... with no gaps.

    The counter row stays locked until the caller's transaction ends, so concurrent issuers take
    turns; if the transaction rolls back, so does the counter, and the number is used again.
    """
    value = await conn.fetchval(
        """
        INSERT INTO document_numbers AS n (series, year, last_value) VALUES ($1, $2, 1)
        ON CONFLICT (series, year) DO UPDATE SET last_value = n.last_value + 1
        RETURNING last_value
        """,
        series,
        year,
    )
    return int(value)


# --- access -------------------------------------------------------------------------------------


async def deal_owner(conn: Conn, deal_id: str) -> tuple[str | None, str | None] | None:
    """The owner and team of a deal (quotes and invoices follow their deal's), None if unknown."""
    row = await conn.fetchrow("SELECT owner_id, team_id FROM deals WHERE deal_id = $1", deal_id)
    return (row["owner_id"], row["team_id"]) if row else None


def _visible(first: int) -> str:
    """SQL over the joined deal ``d``: rows the caller may read. Params: (all, user, team)."""
    a, u, t = first, first + 1, first + 2
    return f"(${a}::bool OR d.owner_id = ${u} OR (${t}::text IS NOT NULL AND d.team_id = ${t}))"


# --- products -----------------------------------------------------------------------------------


def duplicate_sku(sku: str, existing: str) -> Conflict:
    return Conflict(
        f"a product with SKU {sku} already exists: {existing}",
        existing_id=existing,
        existing=f"/products/{existing}",
    )


async def product_by_sku(conn: Conn, sku: str, other_than: str | None = None) -> str | None:
    value = await conn.fetchval(
        "SELECT product_id FROM products WHERE sku_key = $1 AND product_id IS DISTINCT FROM $2",
        normalise_sku(sku),
        other_than,
    )
    return str(value) if value is not None else None


async def upsert_product(conn: Conn, p: Product, at: datetime) -> None:
    """Write the product row; a SKU another product holds is a 409 naming that product."""
    try:
        async with conn.transaction():  # a savepoint: the duplicate is looked up after it
            await conn.execute(
                """
                INSERT INTO products (product_id, sku, sku_key, name, description, unit,
                                      tax_rate, prices, active, version, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $11)
                ON CONFLICT (product_id) DO UPDATE SET
                    sku = EXCLUDED.sku, sku_key = EXCLUDED.sku_key, name = EXCLUDED.name,
                    description = EXCLUDED.description, unit = EXCLUDED.unit,
                    tax_rate = EXCLUDED.tax_rate, prices = EXCLUDED.prices,
                    active = EXCLUDED.active, version = EXCLUDED.version,
                    updated_at = EXCLUDED.updated_at
                """,
                p.id,
                p.sku,
                p.sku_key,
                p.name,
                p.description,
                p.unit,
                p.tax_rate_decimal(),
                json.dumps(p.prices),
                p.active,
                p.version,
                at,
            )
    except asyncpg.UniqueViolationError:
        existing = await product_by_sku(conn, p.sku, other_than=p.id)
        raise duplicate_sku(p.sku, existing or "(committed concurrently)") from None


async def list_products(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    active: bool | None,
    currency: str | None,
    search: str | None,
) -> list[dict[str, Any]]:
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    where = ["($1::timestamptz IS NULL OR (created_at, product_id) < ($1, $2))"]
    if active is not None:
        params.append(active)
        where.append(f"active = ${len(params)}")
    if currency:
        params.append(currency)
        where.append(f"jsonb_exists(prices, ${len(params)})")
    if search:
        params.append(f"%{search.lower()}%")
        where.append(f"(lower(name) LIKE ${len(params)} OR lower(sku) LIKE ${len(params)})")
    params.append(limit)
    rows = await conn.fetch(
        f"SELECT * FROM products WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, product_id DESC LIMIT ${len(params)}",
        *params,
    )
    out = []
    for r in rows:
        row = dict(r)
        row["prices"] = json.loads(row["prices"])
        out.append(row)
    return out


# --- quotes -------------------------------------------------------------------------------------


async def upsert_quote(conn: Conn, q: Quote, at: datetime) -> None:
    rev = q.current
    try:
        async with conn.transaction():  # a savepoint: a second accepted quote is named after it
            await conn.execute(
                """
                INSERT INTO quotes (quote_id, quote_number, revision, status, title, deal_id,
                                    customer_id, contact_id, account_id, currency,
                                    subtotal_minor, tax_minor, total_minor, valid_until,
                                    invoice_id, version, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                        $17, $17)
                ON CONFLICT (quote_id) DO UPDATE SET
                    revision = EXCLUDED.revision, status = EXCLUDED.status,
                    title = EXCLUDED.title, contact_id = EXCLUDED.contact_id,
                    subtotal_minor = EXCLUDED.subtotal_minor, tax_minor = EXCLUDED.tax_minor,
                    total_minor = EXCLUDED.total_minor, valid_until = EXCLUDED.valid_until,
                    invoice_id = EXCLUDED.invoice_id, version = EXCLUDED.version,
                    updated_at = EXCLUDED.updated_at
                """,
                q.id,
                q.number,
                rev.number,
                rev.status,
                rev.title,
                q.deal_id,
                q.customer_id,
                rev.contact_id,
                q.account_id,
                q.currency,
                rev.totals.subtotal_minor,
                rev.totals.tax_minor,
                rev.totals.total_minor,
                rev.valid_until,
                q.invoice_id,
                q.version,
                at,
            )
    except asyncpg.UniqueViolationError:
        other = await accepted_quote_of_deal(conn, q.deal_id, other_than=q.id)
        raise another_accepted(q.deal_id, other) from None


def another_accepted(deal_id: str, other: str | None) -> Conflict:
    return Conflict(
        f"deal {deal_id} already has an accepted quote"
        + (f" ({other})" if other else "")
        + "; void its invoice before another quote of the deal can be accepted",
        existing_id=other,
        existing=f"/quotes/{other}" if other else None,
    )


async def lock_deal(conn: Conn, deal_id: str) -> None:
    """Serialise acceptances of one deal's quotes (the deal's row, until the commit)."""
    await conn.execute("SELECT 1 FROM deals WHERE deal_id = $1 FOR UPDATE", deal_id)


async def accepted_quote_of_deal(conn: Conn, deal_id: str, other_than: str) -> str | None:
    value = await conn.fetchval(
        "SELECT quote_id FROM quotes WHERE deal_id = $1 AND status = 'accepted'"
        " AND NOT invoice_voided AND quote_id <> $2",
        deal_id,
        other_than,
    )
    return str(value) if value is not None else None


async def list_quotes(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    see_all: bool,
    user_id: str,
    team: str | None,
    today: date,
    deal_id: str | None,
    customer_id: str | None,
    status: str | None,
) -> list[dict[str, Any]]:
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    params += [see_all, user_id, team]
    where = ["($1::timestamptz IS NULL OR (q.created_at, q.quote_id) < ($1, $2))", _visible(3)]
    for column, value in (("deal_id", deal_id), ("customer_id", customer_id)):
        if value is not None:
            params.append(value)
            where.append(f"q.{column} = ${len(params)}")
    params.append(today)
    expired = f"(q.status = 'sent' AND q.valid_until < ${len(params)})"
    if status == "expired":
        where.append(expired)
    elif status == "sent":
        where.append(f"q.status = 'sent' AND NOT {expired}")
    elif status is not None:
        params.append(status)
        where.append(f"q.status = ${len(params)}")
    params.append(limit)
    rows = await conn.fetch(
        f"SELECT q.*, {expired} AS expired FROM quotes q LEFT JOIN deals d USING (deal_id)"
        f" WHERE {' AND '.join(where)}"
        f" ORDER BY q.created_at DESC, q.quote_id DESC LIMIT ${len(params)}",
        *params,
    )
    return [dict(r) for r in rows]


# --- invoices -----------------------------------------------------------------------------------


async def upsert_invoice(conn: Conn, i: Invoice, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO invoices (invoice_id, invoice_number, quote_id, quote_number, deal_id,
                              customer_id, contact_id, account_id, currency, total_minor,
                              paid_minor, balance_minor, status, overdue, issue_date, due_date,
                              credit_note_id, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                $19, $19)
        ON CONFLICT (invoice_id) DO UPDATE SET
            paid_minor = EXCLUDED.paid_minor, balance_minor = EXCLUDED.balance_minor,
            status = EXCLUDED.status, overdue = EXCLUDED.overdue,
            credit_note_id = EXCLUDED.credit_note_id, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        i.id,
        i.number,
        i.quote_id,
        i.quote_number,
        i.deal_id,
        i.customer_id,
        i.contact_id,
        i.account_id,
        i.currency,
        i.total_minor,
        i.paid_minor,
        i.balance_minor,
        i.status,
        i.overdue_flagged,
        i.issue_date,
        i.due_date,
        i.credit_note_id,
        i.version,
        at,
    )
    if i.status == "void":
        await conn.execute(
            "UPDATE quotes SET invoice_voided = true WHERE quote_id = $1", i.quote_id
        )


async def overdue_candidates(conn: Conn, today: date, limit: int = 1000) -> list[str]:
    """Open invoices past their due date that were not flagged overdue yet."""
    rows = await conn.fetch(
        "SELECT invoice_id FROM invoices WHERE status IN ('issued', 'partially_paid')"
        " AND NOT overdue AND due_date < $1 ORDER BY due_date, invoice_id LIMIT $2",
        today,
        limit,
    )
    return [str(r["invoice_id"]) for r in rows]


async def list_invoices(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    see_all: bool,
    user_id: str,
    team: str | None,
    status: str | None,
    deal_id: str | None,
    customer_id: str | None,
    quote_id: str | None,
) -> list[dict[str, Any]]:
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    params += [see_all, user_id, team]
    where = ["($1::timestamptz IS NULL OR (i.created_at, i.invoice_id) < ($1, $2))", _visible(3)]
    for column, value in (
        ("deal_id", deal_id),
        ("customer_id", customer_id),
        ("quote_id", quote_id),
    ):
        if value is not None:
            params.append(value)
            where.append(f"i.{column} = ${len(params)}")
    if status == "overdue":
        where.append("i.overdue AND i.status IN ('issued', 'partially_paid')")
    elif status is not None:
        params.append(status)
        where.append(f"i.status = ${len(params)}")
    params.append(limit)
    rows = await conn.fetch(
        "SELECT i.*, (i.overdue AND i.status IN ('issued', 'partially_paid')) AS is_overdue"
        f" FROM invoices i LEFT JOIN deals d USING (deal_id) WHERE {' AND '.join(where)}"
        f" ORDER BY i.created_at DESC, i.invoice_id DESC LIMIT ${len(params)}",
        *params,
    )
    return [dict(r) for r in rows]


async def insert_credit_note(conn: Conn, c: CreditNote, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO credit_notes (credit_note_id, credit_note_number, invoice_id, customer_id,
                                  currency, total_minor, refund_due_minor, issue_date, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        c.id,
        c.number,
        c.invoice_id,
        c.customer_id,
        c.currency,
        c.totals.total_minor,
        c.refund_due_minor,
        c.issue_date,
        at,
    )
