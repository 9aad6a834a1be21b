"""The consumer of ``crm.sales.events`` that keeps profiles and purchases (idempotent per event).

- contacts (created/updated) set a profile's contact data — sales is their system of record;
- leads start a profile, or fill what it lacks (a form's profile keeps what the person typed);
- merges, lead conversions and identifications fold one profile into another;
- a won deal's lines (from deal.opened/updated) and a paid invoice's lines are purchases — one
  sale counts once: an invoice of a deal whose win was recorded adds nothing, and vice versa.

Changes are recorded as marketing events on the profile's stream (segments and the timeline
follow them), with the sales event as their causation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from crm_events import CloudEvent, EventPayload, context_topic
from crm_events.schemas.identity import CustomerIdentified
from crm_events.schemas.marketing import PurchaseRecorded
from crm_events.schemas.sales import (
    ContactCreated,
    ContactDetails,
    ContactMerged,
    ContactMergeUndone,
    ContactUpdated,
    DealOpened,
    DealUpdated,
    DealWon,
    LeadCaptured,
    LeadConverted,
)
from crm_events.schemas.sales_billing import InvoiceIssued, InvoicePaid
from crm_marketing.audience.domain import Profile
from crm_marketing.audience.profiles import Profiles, canonical, lock
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

HANDLED = frozenset(
    {
        "crm.sales.lead.captured",
        "crm.sales.lead.converted",
        "crm.sales.contact.created",
        "crm.sales.contact.updated",
        "crm.sales.contact.merged",
        "crm.sales.contact.merge_undone",
        "crm.sales.customer.identified",
        "crm.sales.deal.opened",
        "crm.sales.deal.updated",
        "crm.sales.deal.won",
        "crm.sales.invoice.issued",
        "crm.sales.invoice.paid",
    }
)


def contact_values(details: ContactDetails, fields: list[str] | None = None) -> dict[str, Any]:
    """Profile attributes from a contact's details (only the named fields, if given)."""
    named = set(fields) if fields is not None else None

    def has(field: str) -> bool:
        return named is None or field in named

    out: dict[str, Any] = {}
    if has("first_name"):
        out["first_name"] = details.first_name
    if has("last_name"):
        out["last_name"] = details.last_name
    if has("emails"):
        out["email"] = details.emails[0] if details.emails else None
    if has("phones"):
        out["phone"] = details.phones[0] if details.phones else None
    if has("industry") and details.industry:
        out["industry"] = details.industry
    if has("address") and details.address is not None:
        country = (details.address.country or "").strip()
        if len(country) == 2 and country.isalpha():  # ISO 3166-1 alpha-2 only
            out["country"] = country
        if details.address.city:
            out["city"] = details.address.city
    return out


def split_name(name: str) -> tuple[str | None, str | None]:
    """A lead's one-string name as (first, last): the last word is the last name; a single
    word is a first name only ("Grace" greets as "Hi Grace", never "Grace Grace")."""
    parts = name.strip().split()
    if not parts:
        return None, None
    if len(parts) == 1:
        return parts[0], None
    return " ".join(parts[:-1]), parts[-1]


def _fold(value: object) -> str:
    return value.strip().casefold() if isinstance(value, str) else ""


def _local_part(email: object) -> str:
    address = _fold(email)
    return address.rpartition("@")[0] if "@" in address else ""


# Sales must name every lead and give every contact a last name. For a person who gave no name
# (a form with only an e-mail field) its answer to a sighting names them after their address's
# local part; a single name ("Grace") is a contact's last name (crm_sales identity.py, and
# split_name in leads.py on conversion). Neither is how to address the person.
SIGHTING_SOURCES = frozenset({"web_form", "email"})  # the lead sources of sightings


def lead_names(name: str, email: str | None, source: str) -> tuple[str | None, str | None]:
    """A lead's name as (first, last); none when it is only the e-mail's local part that sales
    names a lead after when the person gave no name."""
    if source in SIGHTING_SOURCES and email and _fold(name) == _local_part(email):
        return None, None
    return split_name(name)


def names_for(current: dict[str, Any], values: dict[str, Any], *, contact: bool) -> dict[str, Any]:
    """``values`` to apply to a profile holding ``current``, without their names when those
    would name the person worse than before: the same name as first and last ("Grace Grace");
    and from a contact, a lone last name that is sales' stand-in (the e-mail's local part, or
    the profile's own lone first name, which sales had to file as the last name)."""
    if "first_name" not in values and "last_name" not in values:
        return values
    first = _fold(values["first_name"] if "first_name" in values else current.get("first_name"))
    last = _fold(values["last_name"] if "last_name" in values else current.get("last_name"))
    stand_in = False
    if contact and last and not first:
        mine = _fold(current.get("first_name"))
        alone = mine and not current.get("last_name")
        addresses = {_local_part(values.get("email")), _local_part(current.get("email"))}
        stand_in = last in addresses or bool(alone and last == mine)
    if stand_in or (first and first == last):
        return {k: v for k, v in values.items() if k not in ("first_name", "last_name")}
    return values


class AudienceFromSales:
    """The projection (``EventProcessor`` records the event ids it applied)."""

    name = "marketing.audience"

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.profiles = Profiles(store)

    def handles(self, event_type: str) -> bool:
        return event_type in HANDLED

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        meta = Metadata(
            actor=f"consumer:{self.name}",
            correlation_id=event.correlationid,
            causation_id=str(event.id),
        )
        match payload:
            case LeadCaptured():
                first, last = lead_names(payload.name, payload.email, payload.source)
                values = {
                    "email": payload.email,
                    "phone": payload.phone,
                    "company": payload.company,
                    "first_name": first,
                    "last_name": last,
                }
                await self._upsert(conn, payload.customer_id, values, meta, only_empty=True)
            case ContactCreated():
                await conn.execute(
                    "INSERT INTO audience_contacts (contact_id, customer_id) VALUES ($1, $2)"
                    " ON CONFLICT (contact_id) DO NOTHING",
                    payload.contact_id,
                    payload.customer_id,
                )
                values = contact_values(payload.details)
                await self._upsert(
                    conn, payload.customer_id, values, meta, only_empty=False, contact=True
                )
            case ContactUpdated():
                cid = await conn.fetchval(
                    "SELECT customer_id FROM audience_contacts WHERE contact_id = $1",
                    payload.contact_id,
                )
                values = contact_values(payload.values, payload.changed)
                if cid is not None and values:
                    await self._upsert(conn, str(cid), values, meta, only_empty=False, contact=True)
            case ContactMerged():
                await self.profiles.merge(
                    conn, payload.customer_id, payload.merged_customer_id, payload.merge_id, meta
                )
            case ContactMergeUndone():
                await self.profiles.unmerge(conn, payload.merge_id, meta)
            case LeadConverted():
                await self.profiles.merge(
                    conn,
                    payload.customer_id,
                    payload.lead_customer_id,
                    f"lead:{payload.lead_id}",
                    meta,
                )
            case CustomerIdentified():
                await self.profiles.merge(
                    conn,
                    payload.customer_id,
                    payload.alias_id,
                    f"identified:{payload.alias_id}",
                    meta,
                )
            case DealOpened():
                await conn.execute(
                    "INSERT INTO audience_deals (deal_id, customer_id, currency, lines)"
                    " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (deal_id) DO NOTHING",
                    payload.deal_id,
                    payload.customer_id,
                    payload.currency,
                    _lines_json(payload.lines),
                )
            case DealUpdated():
                if payload.lines is not None and "lines" in payload.changed:
                    await conn.execute(
                        "UPDATE audience_deals SET lines = $2::jsonb WHERE deal_id = $1",
                        payload.deal_id,
                        _lines_json(payload.lines),
                    )
                if payload.currency is not None:
                    await conn.execute(
                        "UPDATE audience_deals SET currency = $2 WHERE deal_id = $1",
                        payload.deal_id,
                        payload.currency,
                    )
            case DealWon():
                await self._deal_won(conn, event, payload, meta)
            case InvoiceIssued():
                await conn.execute(
                    "INSERT INTO audience_invoices (invoice_id, deal_id, customer_id, currency,"
                    " lines) VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
                    payload.invoice_id,
                    payload.deal_id,
                    payload.customer_id,
                    payload.currency,
                    _lines_json(
                        [
                            {
                                "product_id": ln.product_id,
                                "name": ln.name,
                                "amount_minor": ln.total_minor,
                            }
                            for ln in payload.lines
                        ]
                    ),
                )
            case InvoicePaid():
                await self._invoice_paid(conn, payload, meta)
            case _:
                pass

    async def _upsert(
        self,
        conn: Conn,
        customer_id: str,
        values: dict[str, Any],
        meta: Metadata,
        *,
        only_empty: bool,
        contact: bool = False,
    ) -> None:
        cid = await canonical(conn, customer_id)
        await lock(conn, cid)
        profile = await self.profiles.get(conn, cid)
        if profile.merged_into is not None:
            return
        if only_empty:
            values = {k: v for k, v in values.items() if v and not profile.values.get(k)}
        values = names_for(profile.values, values, contact=contact)
        if not profile.exists:
            profile = Profile.start(cid, "sales", {k: v for k, v in values.items() if v})
        else:
            profile.update("sales", values, only_empty=only_empty)
        await self.profiles.save(conn, profile, meta)

    async def _record_purchases(
        self, conn: Conn, customer_id: str, purchases: list[PurchaseRecorded], meta: Metadata
    ) -> None:
        cid = await canonical(conn, customer_id)
        await lock(conn, cid)
        profile = await self.profiles.get(conn, cid)
        if not profile.exists:
            profile = Profile.start(cid, "sales", {})
        elif profile.merged_into is not None:
            return
        for p in purchases:
            profile.record_purchase(p)
        await self.profiles.save(conn, profile, meta)

    async def _deal_won(
        self, conn: Conn, event: CloudEvent, payload: DealWon, meta: Metadata
    ) -> None:
        deal = await conn.fetchrow(
            "SELECT customer_id, currency, lines FROM audience_deals WHERE deal_id = $1",
            payload.deal_id,
        )
        customer_id = deal["customer_id"] if deal is not None else event.subject
        if customer_id is None or await _sold_already(conn, payload.deal_id):
            return
        lines = _lines(deal["lines"]) if deal is not None else []
        purchases = await _purchases(
            conn,
            source="deal",
            source_id=payload.deal_id,
            deal_id=payload.deal_id,
            lines=lines,
            total=payload.amount_minor,
            currency=payload.currency,
            at=event.time,
        )
        await self._record_purchases(conn, customer_id, purchases, meta)

    async def _invoice_paid(self, conn: Conn, payload: InvoicePaid, meta: Metadata) -> None:
        inv = await conn.fetchrow(
            "SELECT deal_id, customer_id, currency, lines FROM audience_invoices"
            " WHERE invoice_id = $1",
            payload.invoice_id,
        )
        if inv is None or (inv["deal_id"] and await _sold_already(conn, inv["deal_id"])):
            return
        purchases = await _purchases(
            conn,
            source="invoice",
            source_id=payload.invoice_id,
            deal_id=inv["deal_id"],
            lines=_lines(inv["lines"]),
            total=payload.paid_minor,
            currency=payload.currency,
            at=payload.paid_at,
        )
        await self._record_purchases(conn, inv["customer_id"], purchases, meta)


async def _sold_already(conn: Conn, deal_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM purchases WHERE deal_id = $1 LIMIT 1", deal_id))


def _lines_json(lines: list[Any]) -> str:
    out = []
    for ln in lines:
        if isinstance(ln, dict):
            out.append(ln)
        else:
            out.append(
                {
                    "product_id": ln.product_id,
                    "name": ln.name,
                    "amount_minor": ln.quantity * ln.unit_price_minor,
                }
            )
    return json.dumps(out)


def _lines(raw: Any) -> list[dict[str, Any]]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return list(value or [])


async def _purchases(
    conn: Conn,
    *,
    source: str,
    source_id: str,
    deal_id: str | None,
    lines: list[dict[str, Any]],
    total: int,
    currency: str,
    at: datetime,
) -> list[PurchaseRecorded]:
    if not lines:  # a sale without line items is still a purchase
        lines = [{"product_id": None, "name": None, "amount_minor": total}]
    ids = [ln["product_id"] for ln in lines if ln.get("product_id")]
    categories = {
        r["product_id"]: r["category"]
        for r in await conn.fetch(
            "SELECT product_id, category FROM product_categories WHERE product_id = ANY($1)", ids
        )
    }
    out = []
    for i, ln in enumerate(lines, start=1):
        product_id = ln.get("product_id") or (
            f"custom:{ln['name'][:80]}" if ln.get("name") else f"{source}:{source_id}"
        )
        out.append(
            PurchaseRecorded(
                customer_id="",
                purchase_id=f"{source}:{source_id}:{i}",
                source=source,
                source_id=source_id,
                deal_id=deal_id,
                product_id=product_id,
                product_name=ln.get("name"),
                category=categories.get(product_id),
                amount_minor=ln.get("amount_minor"),
                currency=currency,
                occurred_at=at,
            )
        )
    return out


async def run_audience_consumer(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Background task: consume sales' events into profiles (off with CONSUMERS_ENABLED=false).

    A failing batch is not committed: the consumer restarts and the batch comes again (applying
    it twice changes nothing).
    """
    if not ctx.settings.consumers_enabled:
        return
    from crm_runtime.consumer import KafkaConsumerRunner

    while not stop.is_set():
        runner = KafkaConsumerRunner(
            ctx.settings, ctx.pool, AudienceFromSales(ctx.store), [context_topic("sales")]
        )
        try:
            await runner.run(stop)
        except Exception:
            log.exception("audience consumer failed; restarting")
            if await sleep_or_stop(stop, 5.0):
                return
