"""The customer-timeline projection: every event with a subject becomes one touchpoint row
(website activity becomes one row per visit, see ``visits``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from crm_analytics import visits
from crm_events import CloudEvent, EventPayload, registry
from crm_events.money import MINOR_DIGITS as MINOR_DIGITS  # (charts.py reads it here)
from crm_runtime.db import Conn

Summariser = Callable[[dict[str, Any]], str]

# Type-specific wording; any other registered type falls back to its schema's one-line summary,
# so new event types appear on the timeline without touching this module.
SUMMARIES: dict[str, Summariser] = {
    "crm.sales.lead.captured": lambda d: (
        f"Lead captured from {d['source'].replace('_', ' ')}"
        + (f" ({d['company']})" if d.get("company") else "")
    ),
    "crm.sales.lead.qualified": lambda d: f"Lead qualified with score {d['score']}",
    "crm.sales.lead.disqualified": lambda d: f"Lead disqualified: {d['reason']}",
    "crm.sales.lead.assigned": lambda d: (
        f"Lead assigned to {d['owner_id']}" if d.get("owner_id") else "Lead put back in the queue"
    ),
    "crm.sales.deal.opened": lambda d: (
        f"Deal opened: {d['name']} ({_money(d['amount_minor'], d['currency'])})"
    ),
    "crm.sales.deal.stage_changed": lambda d: (
        f"Deal moved from {d['from_stage']} to {d['to_stage']}"
    ),
    "crm.sales.deal.lost": lambda d: f"Deal lost: {d['reason']}",
    "crm.sales.activity.logged": lambda d: f"{d['kind'].title()} logged: {d['subject']}",
    "crm.sales.task.created": lambda d: f"Task created: {d['title']}",
    "crm.sales.contact.created": lambda d: (
        "Contact created: "
        + " ".join(p for p in (d["details"].get("first_name"), d["details"].get("last_name")) if p)
    ),
    "crm.sales.account.created": lambda d: f"Account created: {d['details'].get('name')}",
    "crm.sales.quote.sent": lambda d: (
        f"Quote sent (revision {d['revision']}, {_money(d['total_minor'], d['currency'])})"
    ),
    "crm.sales.invoice.issued": lambda d: (
        f"Invoice {d['invoice_number']} issued"
        f" ({_money(d['totals']['total_minor'], d['currency'])})"
    ),
    "crm.sales.invoice.payment_received": lambda d: (
        f"Payment of {_money(d['amount_minor'], d['currency'])} received"
        f" ({_money(d['balance_minor'], d['currency'])} still due)"
    ),
    "crm.sales.invoice.paid": lambda d: (
        f"Invoice paid in full ({_money(d['paid_minor'], d['currency'])})"
    ),
    "crm.sales.customer.identified": lambda d: (
        f"Recognised by e-mail in {d['sighted_in']} as an existing "
        + ("contact" if d["matched_by"] == "contact_email" else "lead")
    ),
    "crm.marketing.person.sighted": lambda d: (
        "First seen in marketing" + (f" ({d['source_detail']})" if d.get("source_detail") else "")
    ),
    "crm.service.person.sighted": lambda d: (
        "First seen by the service desk"
        + (f" ({d['source_detail']})" if d.get("source_detail") else "")
    ),
    "crm.marketing.form.submitted": lambda d: (
        "Submitted a web form" + (" (new to us)" if d.get("new_person") else "")
    ),
    "crm.marketing.visitor.identified": lambda d: (
        "Identified on the website"
        + (" by a form" if d["via"] == "form" else " by an e-mail click")
        + (f"; {d['joined_activity']} earlier page events joined" if d["joined_activity"] else "")
    ),
    "crm.marketing.consent.granted": lambda d: f"Consent given for {d['channel']}",
    "crm.marketing.consent.withdrawn": lambda d: f"Consent withdrawn for {d['channel']}",
    "crm.marketing.message.sent": lambda d: (
        f"Marketing {d['channel']} sent"
        + (f" (campaign {d['campaign_id']})" if d.get("campaign_id") else " (trigger)")
    ),
    "crm.marketing.message.opened": lambda d: f"Opened a marketing {d['channel']}",
    "crm.marketing.message.clicked": lambda d: f"Clicked {d['url']} in a marketing {d['channel']}",
    "crm.marketing.message.bounced": lambda d: f"Marketing {d['channel']} bounced",
    "crm.marketing.message.unsubscribed": lambda d: f"Unsubscribed from {d['channel']}",
    "crm.service.ticket.opened": lambda d: (
        f"Ticket opened ({d['kind'].replace('_', ' ')}, {d['priority']}): {d['subject']}"
        + f" via {d['channel']}"
    ),
    "crm.service.ticket.assigned": lambda d: (
        f"Ticket assigned to {d['assignee_id']}"
        if d.get("assignee_id")
        else f"Ticket queued in {d.get('queue_id')}"
    ),
    "crm.service.ticket.status_changed": lambda d: (
        f"Ticket moved from {d['from_status'].replace('_', ' ')}"
        f" to {d['to_status'].replace('_', ' ')}"
    ),
    "crm.marketing.profile.created": lambda d: "Marketing profile created",
    "crm.service.ticket.replied": lambda d: "Support answered the customer",
    "crm.service.ticket.customer_replied": lambda d: "The customer wrote on the ticket",
    "crm.service.ticket.resolved": lambda d: "Ticket resolved",
    "crm.service.ticket.reopened": lambda d: "Ticket reopened",
    "crm.service.ticket.closed": lambda d: "Ticket closed",
    "crm.service.ticket.rated": lambda d: f"Rated the support {d['score']}/5",
    "crm.service.ticket.escalated": lambda d: f"Ticket escalated: {d['reason']}",
    "crm.sales.account.inactivity_flagged": lambda d: (
        f"No activity for {d['days_without_activity']} days; the owner was reminded"
    ),
}


def _money(amount_minor: int, currency: str) -> str:
    digits = MINOR_DIGITS.get(currency, 2)
    return f"{amount_minor / 10**digits:,.{digits}f} {currency}"


def summarise(event: CloudEvent) -> str:
    fn = SUMMARIES.get(event.type)
    if fn is not None:
        try:
            return fn(event.data)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # an unexpected shape never stops the projection; the generic summary stands
    generic = _GENERIC.get(event.type)
    if generic is None:
        spec = next((s for s in registry.specs() if s.type == event.type), None)
        generic = _GENERIC[event.type] = (
            spec.summary.rstrip(".") if spec and spec.summary else event.type
        )
    return generic


_GENERIC: dict[str, str] = {}  # event type -> its schema's one-line summary


def link(event: CloudEvent) -> str | None:
    """Where the source record lives: the owning service and the resource path."""
    kind, _, ident = event.streamid.partition("-")
    if not ident:
        return None
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    return f"{event.context}:/{plural}/{ident}"


def occurred_at(event: CloudEvent) -> datetime:
    """When the touchpoint happened: a logged activity says so itself (a call logged today may
    have been last Tuesday's), every other event when it was recorded."""
    if event.type == "crm.sales.activity.logged":
        at = event.data.get("occurred_at")
        if isinstance(at, str):
            return datetime.fromisoformat(at)
    return event.time


class TimelineProjection:
    name = "analytics.timeline"

    def handles(self, event_type: str) -> bool:
        return registry.knows(event_type)

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        await self.apply_batch(conn, [(event, payload)])

    async def apply_batch(self, conn: Conn, items: list[tuple[CloudEvent, EventPayload]]) -> None:
        """Write the touchpoints of many events with one pipelined statement, in order."""
        rows = [
            (
                event.id,
                event.subject,
                occurred_at(event),
                event.context,
                event.type,
                summarise(event),
                event.streamid,
                event.streamversion,
                link(event),
                json.dumps(payload.model_dump(mode="json")),
            )
            for event, payload in items
            # events about no customer have no timeline; web activity shows per visit
            if event.subject and not event.type.startswith(visits.WEB_PREFIX)
        ]
        if rows:
            await conn.executemany(INSERT_TOUCHPOINT, rows)
        for event, _ in items:
            if event.type in IDENTITY_TYPES:
                await apply_identity(conn, event)
            elif event.type in visits.COUNTER:
                await visits.apply_web(conn, event)
            elif event.type == visits.IDENTIFIED:
                await visits.identify(conn, event)


INSERT_TOUCHPOINT = """
INSERT INTO timeline (event_id, customer_id, occurred_at, context, event_type, summary,
                      stream_id, stream_version, link, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""


MERGED = ("crm.sales.contact.merged", "crm.sales.account.merged")
UNDONE = ("crm.sales.contact.merge_undone", "crm.sales.account.merge_undone")
IDENTIFIED = "crm.sales.customer.identified"
IDENTITY_TYPES = frozenset({*MERGED, *UNDONE, "crm.sales.lead.converted", IDENTIFIED})


async def apply_identity(conn: Conn, event: CloudEvent) -> None:
    """Keep the links that make several customer ids one customer on the timeline."""
    d = event.data
    if event.type in MERGED:
        await link_customers(
            conn, d["merge_id"], d["merged_customer_id"], d["customer_id"], "merge", event
        )
    elif event.type in UNDONE:
        await conn.execute("DELETE FROM customer_links WHERE link_id = $1", d["merge_id"])
    elif event.type == IDENTIFIED:  # another context's provisional id is this customer (§5)
        await link_customers(
            conn,
            f"identified:{d['alias_id']}",
            d["alias_id"],
            d["customer_id"],
            "identified",
            event,
        )
    elif event.type == "crm.sales.lead.converted" and d["lead_customer_id"] != d["customer_id"]:
        await link_customers(
            conn, f"lead:{d['lead_id']}", d["lead_customer_id"], d["customer_id"], "lead", event
        )


async def link_customers(
    conn: Conn, link_id: str, alias: str, customer: str, reason: str, event: CloudEvent
) -> None:
    await conn.execute(
        "INSERT INTO customer_links (link_id, alias_id, customer_id, reason, linked_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (link_id) DO NOTHING",
        link_id,
        alias,
        customer,
        reason,
        event.time,
    )


CUSTOMER_TREE = """
WITH RECURSIVE up(id, depth) AS (
    SELECT $1::text, 0
    UNION
    SELECT l.customer_id, up.depth + 1 FROM customer_links l JOIN up ON l.alias_id = up.id
    WHERE up.depth < 20
), root AS (
    SELECT id FROM up ORDER BY depth DESC LIMIT 1
), down(id, depth) AS (
    SELECT id, 0 FROM root
    UNION
    SELECT l.alias_id, down.depth + 1 FROM customer_links l JOIN down ON l.customer_id = down.id
    WHERE down.depth < 20
)
SELECT (SELECT id FROM root) AS root, array_agg(DISTINCT id) AS ids FROM down
"""


async def customer_ids(conn: Conn, customer_id: str) -> tuple[str, list[str]]:
    """The customer id that stands for ``customer_id`` and every id merged into it."""
    row = await conn.fetchrow(CUSTOMER_TREE, customer_id)
    if row is None or row["root"] is None:
        return customer_id, [customer_id]
    return str(row["root"]), sorted(row["ids"])
