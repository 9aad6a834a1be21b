"""The customer 360 projection: profile, owner, deals, invoices and last touch per customer id,
and the health score computed from them when read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from crm_analytics.pipelined import apply_pipelined
from crm_events import CloudEvent, EventPayload, registry
from crm_events.money import base_factor_sql, to_base_minor
from crm_runtime.db import Conn

# Events that are an interaction with the customer (the "last touch"); other contexts' types
# join this set as they are added.
TOUCH_TYPES = frozenset(
    {
        "crm.sales.lead.captured",
        "crm.sales.activity.logged",
        "crm.sales.quote.sent",
        "crm.sales.invoice.payment_received",
        "crm.sales.deal.opened",
        "crm.sales.deal.stage_changed",
        "crm.sales.deal.won",
        "crm.sales.quote.accepted",
        "crm.marketing.form.submitted",
        "crm.marketing.message.opened",
        "crm.marketing.message.clicked",
        "crm.marketing.web.page_viewed",
        "crm.marketing.web.product_viewed",
        "crm.service.ticket.opened",
        "crm.service.ticket.customer_replied",
        "crm.service.ticket.replied",
        "crm.service.ticket.rated",
    }
)


class CustomerProfileProjection:
    name = "analytics.customers"

    def handles(self, event_type: str) -> bool:
        return registry.knows(event_type)

    async def apply_batch(self, conn: Conn, items: list[tuple[CloudEvent, EventPayload]]) -> None:
        """As ``apply`` one by one, in few round trips (``pipelined``): an event writes its
        customer's row, and its deal's or invoice's."""
        await apply_pipelined(conn, items, self.apply, _rows)

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        if not event.subject:
            return
        d = event.data
        customer = event.subject
        await conn.execute(
            "INSERT INTO customers (customer_id, first_seen_at, updated_at) VALUES ($1, $2, $2)"
            " ON CONFLICT (customer_id) DO UPDATE SET first_seen_at ="
            " LEAST(customers.first_seen_at, EXCLUDED.first_seen_at)"
            " WHERE EXCLUDED.first_seen_at < customers.first_seen_at",
            customer,
            event.time,
        )
        handler = HANDLERS.get(event.type)
        if handler is not None:
            await handler(conn, customer, d, event.time)
        if event.type in TOUCH_TYPES:
            at = d.get("occurred_at") if event.type == "crm.sales.activity.logged" else None
            when = datetime.fromisoformat(at) if isinstance(at, str) else event.time
            await conn.execute(
                "UPDATE customers SET last_touch_at = $2, last_touch_type = $3, updated_at = $2"
                " WHERE customer_id = $1 AND (last_touch_at IS NULL OR last_touch_at <= $2)",
                customer,
                when,
                event.type,
            )


Handler = Any


async def _lead(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await conn.execute(
        "UPDATE customers SET kind = coalesce(kind, 'lead'), display_name = coalesce("
        "display_name, $2), owner_id = coalesce(owner_id, $3), team_id = coalesce(team_id, $4),"
        " updated_at = $5 WHERE customer_id = $1",
        c,
        d["name"],
        d.get("owner_id"),
        d.get("team_id"),
        at,
    )


async def _owner(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await conn.execute(
        "UPDATE customers SET owner_id = $2, team_id = $3, updated_at = $4 WHERE customer_id = $1",
        c,
        d.get("owner_id"),
        d.get("team_id"),
        at,
    )


async def _contact(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    det = d["details"]
    await conn.execute(
        "UPDATE customers SET kind = 'contact', first_name = $2, last_name = $3,"
        " display_name = concat_ws(' ', $2::text, $3::text), owner_id = $4, team_id = $5,"
        " updated_at = $6, region = $7 WHERE customer_id = $1",
        c,
        det.get("first_name"),
        det.get("last_name"),
        d.get("owner_id"),
        d.get("team_id"),
        at,
        det.get("region"),
    )


async def _region(conn: Conn, c: str, d: dict[str, Any]) -> None:
    if "region" in d["changed"]:
        await conn.execute(
            "UPDATE customers SET region = $2 WHERE customer_id = $1", c, d["values"].get("region")
        )


async def _contact_updated(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await _region(conn, c, d)
    changed = set(d["changed"])
    if not changed & {"first_name", "last_name"}:
        return
    values = d["values"]
    await conn.execute(
        "UPDATE customers SET"
        " first_name = CASE WHEN $2 THEN $3 ELSE first_name END,"
        " last_name = CASE WHEN $4 THEN $5 ELSE last_name END, updated_at = $6"
        " WHERE customer_id = $1",
        c,
        "first_name" in changed,
        values.get("first_name"),
        "last_name" in changed,
        values.get("last_name"),
        at,
    )
    await conn.execute(
        "UPDATE customers SET display_name = concat_ws(' ', first_name, last_name)"
        " WHERE customer_id = $1",
        c,
    )


async def _account(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    det = d["details"]
    await conn.execute(
        "UPDATE customers SET kind = 'account', display_name = $2, tier = $3, owner_id = $4,"
        " team_id = $5, updated_at = $6, region = $7 WHERE customer_id = $1",
        c,
        det.get("name"),
        det.get("tier") or "standard",
        d.get("owner_id"),
        d.get("team_id"),
        at,
        det.get("region"),
    )


async def _account_updated(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await _region(conn, c, d)
    values, changed = d["values"], set(d["changed"])
    if "name" in changed:
        await conn.execute(
            "UPDATE customers SET display_name = $2 WHERE customer_id = $1", c, values["name"]
        )
    if "tier" in changed:
        await conn.execute(
            "UPDATE customers SET tier = $2 WHERE customer_id = $1", c, values.get("tier")
        )


async def _deal_opened(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    base = to_base_minor(d["amount_minor"], d["currency"], d["exchange_rate"], d["base_currency"])
    await conn.execute(
        """
        INSERT INTO customer_deals (deal_id, customer_id, name, stage, status, probability,
                                    amount_minor, currency, amount_base, base_currency, owner_id,
                                    updated_at)
        VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (deal_id) DO NOTHING
        """,
        d["deal_id"],
        c,
        d["name"],
        d["stage"],
        d["probability"],
        d["amount_minor"],
        d["currency"],
        base,
        d["base_currency"],
        d.get("owner_id"),
        at,
    )


async def _deal_stage(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await conn.execute(
        "UPDATE customer_deals SET stage = $2, probability = $3, updated_at = $4"
        " WHERE deal_id = $1",
        d["deal_id"],
        d["to_stage"],
        d["probability"],
        at,
    )


# amount_base of an updated deal: amount_minor x rate x 10^(base digits - currency digits), with
# the base currency the row holds (a deal keeps the one it opened with; the event does not say).
_UPDATED_BASE = f"$2::bigint * $4::numeric * {base_factor_sql('$3::text', 'base_currency')}"


async def _deal_updated(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    if {"amount_minor", "currency", "exchange_rate"} & set(d["changed"]):
        await conn.execute(
            "UPDATE customer_deals SET amount_minor = $2, currency = $3,"
            f" amount_base = {_UPDATED_BASE}, updated_at = $5 WHERE deal_id = $1",
            d["deal_id"],
            d["amount_minor"],
            d["currency"],
            Decimal(d["exchange_rate"]),
            at,
        )


def _deal_closed(status: str) -> Handler:
    async def handler(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
        await conn.execute(
            "UPDATE customer_deals SET status = $2, updated_at = $3 WHERE deal_id = $1",
            d["deal_id"],
            status,
            at,
        )

    return handler


async def _deal_owner(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await conn.execute(
        "UPDATE customer_deals SET owner_id = $2, updated_at = $3 WHERE deal_id = $1",
        d["deal_id"],
        d.get("owner_id"),
        at,
    )


async def _invoice_issued(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
    await conn.execute(
        "INSERT INTO customer_invoices (invoice_id, customer_id, status, updated_at)"
        " VALUES ($1, $2, 'issued', $3) ON CONFLICT (invoice_id) DO NOTHING",
        d["invoice_id"],
        c,
        at,
    )


def _invoice(status: str | None, overdue: bool | None) -> Handler:
    async def handler(conn: Conn, c: str, d: dict[str, Any], at: datetime) -> None:
        await conn.execute(
            "UPDATE customer_invoices SET status = coalesce($2, status),"
            " overdue = coalesce($3, overdue), updated_at = $4 WHERE invoice_id = $1",
            d["invoice_id"],
            status,
            overdue,
            at,
        )

    return handler


HANDLERS: dict[str, Handler] = {
    "crm.sales.lead.captured": _lead,
    "crm.sales.lead.assigned": _owner,
    "crm.sales.contact.created": _contact,
    "crm.sales.contact.updated": _contact_updated,
    "crm.sales.contact.reassigned": _owner,
    "crm.sales.account.created": _account,
    "crm.sales.account.updated": _account_updated,
    "crm.sales.account.reassigned": _owner,
    "crm.sales.deal.opened": _deal_opened,
    "crm.sales.deal.stage_changed": _deal_stage,
    "crm.sales.deal.updated": _deal_updated,
    "crm.sales.deal.won": _deal_closed("won"),
    "crm.sales.deal.lost": _deal_closed("lost"),
    "crm.sales.deal.assigned": _deal_owner,
    "crm.sales.deal.reassigned": _deal_owner,
    "crm.sales.invoice.issued": _invoice_issued,
    "crm.sales.invoice.paid": _invoice("paid", False),
    "crm.sales.invoice.overdue": _invoice(None, True),
    "crm.sales.invoice.voided": _invoice("void", False),
}


# The rows a handler writes besides the event's customer row: a deal's or an invoice's.
_DEAL_ROWS = frozenset(t for t in HANDLERS if t.startswith("crm.sales.deal."))
_INVOICE_ROWS = frozenset(t for t in HANDLERS if t.startswith("crm.sales.invoice."))


def _rows(event: CloudEvent) -> list[str]:
    """The rows ``apply`` writes for ``event``: its customer's, and its deal's or invoice's."""
    rows = [f"customer:{event.subject or ''}"]
    if event.type in _DEAL_ROWS:
        rows.append(f"deal:{event.data['deal_id']}")
    elif event.type in _INVOICE_ROWS:
        rows.append(f"invoice:{event.data['invoice_id']}")
    return rows


# --- the 360 view and its health score ----------------------------------------------------


@dataclass(frozen=True)
class Health:
    score: int
    reasons: list[str]


def health(
    now: datetime,
    last_touch: datetime | None,
    open_deals: int,
    won_deals: int,
    lost_deals: int,
    overdue_invoices: int,
) -> Health:
    """A 0-100 score with the reasons that moved it (start at 60):

    touched in the last 14 days +20, 15-30 days +10, 31-90 days -10, longer or never -30;
    an open deal +10; a won deal +10; lost deals and nothing won -10; each overdue invoice -20.
    """
    score = 60
    reasons: list[str] = []
    if last_touch is None:
        score -= 30
        reasons.append("never touched (-30)")
    else:
        days = (now - last_touch).days
        if days <= 14:
            delta = 20
        elif days <= 30:
            delta = 10
        elif days <= 90:
            delta = -10
        else:
            delta = -30
        score += delta
        reasons.append(f"last touch {days} days ago ({delta:+d})")
    if open_deals:
        score += 10
        reasons.append(f"{open_deals} open deal(s) (+10)")
    if won_deals:
        score += 10
        reasons.append(f"{won_deals} won deal(s) (+10)")
    elif lost_deals:
        score -= 10
        reasons.append(f"{lost_deals} lost deal(s), none won (-10)")
    if overdue_invoices:
        score -= 20 * overdue_invoices
        reasons.append(f"{overdue_invoices} overdue invoice(s) ({-20 * overdue_invoices:+d})")
    return Health(max(0, min(100, score)), reasons)
