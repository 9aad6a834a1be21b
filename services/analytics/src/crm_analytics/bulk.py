"""The rebuild's write path: every projection folded in memory, then written with COPY.

The worker applies events with SQL statements, a few per event and projection, which is right for
a trickle and far too slow for a history of millions (each statement is a round trip). A rebuild
starts from empty tables and owns them (it holds the rebuild lock), so it can do better: it folds
the events into the rows they produce in memory, by the same rules as each projection's SQL, and
writes each table once with COPY. The append-only timeline rows go out in chunks as they come.

The rules here mirror ``customers``, ``timeline``/``visits``, ``sales``, ``service`` and
``marketing``; ``test_an_bulk`` checks on a mixed history (every context, merges, duplicates,
out-of-order web activity) that the tables come out exactly as the worker's statements leave them.
A projection this module does not know is refused (the rebuild then uses the per-event path).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from crm_analytics import customers as cu
from crm_analytics import marketing as mk
from crm_analytics import sales as sa
from crm_analytics import service as sv
from crm_analytics import timeline as tl
from crm_analytics import visits as vi
from crm_events import CloudEvent
from crm_events.money import minor_digits, to_base_minor
from crm_runtime.db import Conn

KNOWN = frozenset(
    {
        tl.TimelineProjection.name,
        cu.CustomerProfileProjection.name,
        sa.SalesAnalyticsProjection.name,
        sv.ServiceAnalyticsProjection.name,
        mk.MarketingAnalyticsProjection.name,
    }
)
TIMELINE_COLUMNS = (
    "event_id", "customer_id", "occurred_at", "context", "event_type", "summary", "stream_id",
    "stream_version", "link", "data",
)  # fmt: skip
CHUNK = 20_000  # timeline rows per COPY


def _concat_ws(*parts: str | None) -> str:
    """PostgreSQL's ``concat_ws(' ', ...)``: NULLs skipped, empty strings kept."""
    return " ".join(p for p in parts if p is not None)


class BulkState:
    """Every analytics table's rows, built in memory from events applied in order."""

    def __init__(self, projections: Iterable[str]) -> None:
        self.projections = set(projections)
        unknown = self.projections - KNOWN
        if unknown:
            raise ValueError(f"no bulk rules for {sorted(unknown)}")
        self.timeline: list[tuple[Any, ...]] = []  # pending touchpoint rows
        self.links: dict[str, tuple[Any, ...]] = {}
        self.visits: dict[str, dict[str, Any]] = {}
        self.visits_of: dict[str, list[str]] = {}  # visitor -> visit ids
        self.customers: dict[str, dict[str, Any]] = {}
        self.deals: dict[str, dict[str, Any]] = {}  # customer_deals
        self.invoices: dict[str, dict[str, Any]] = {}
        self.deal_events: dict[str, list[tuple[Any, ...]]] = {}
        self.arrival = 0
        self.tickets: dict[str, dict[str, Any]] = {}
        self.breaches: dict[tuple[str, str, int], datetime] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.leads: dict[str, dict[str, Any]] = {}
        self.funnel: dict[str, dict[str, Any]] = {}

    # --- applying ------------------------------------------------------------------------

    def rule(self, name: str) -> Callable[[CloudEvent, str], None]:
        """Projection ``name``'s rule: ``rule(event, dumped)`` applies one fresh event."""
        return {
            tl.TimelineProjection.name: self._timeline,
            cu.CustomerProfileProjection.name: self._customer,
            sa.SalesAnalyticsProjection.name: self._deal_event,
            sv.ServiceAnalyticsProjection.name: self._ticket,
            mk.MarketingAnalyticsProjection.name: self._marketing,
        }[name]

    def _deal_event(self, event: CloudEvent, dumped: str) -> None:
        self.arrival += 1
        self.deal_events.setdefault(str(event.data["deal_id"]), []).append(
            (event.id, event.time, event.streamversion, self.arrival, event.type, dumped)
        )

    # timeline, links, visits

    def _timeline(self, event: CloudEvent, dumped: str) -> None:
        t = event.type
        if event.subject and not t.startswith(vi.WEB_PREFIX):
            self.timeline.append(
                (event.id, event.subject, tl.occurred_at(event), event.context, t,
                 tl.summarise(event), event.streamid, event.streamversion, tl.link(event), dumped)
            )  # fmt: skip
        if t in tl.IDENTITY_TYPES:
            self._identity(event)
        elif t in vi.COUNTER:
            self._web(event)
        elif t == vi.IDENTIFIED:
            d = event.data
            for visit_id in self.visits_of.get(d["visitor_id"], ()):
                v = self.visits[visit_id]
                if v["customer_id"] is None:
                    v["customer_id"] = d["customer_id"]

    def _link(self, link_id: str, alias: str, customer: str, reason: str, at: datetime) -> None:
        self.links.setdefault(link_id, (link_id, alias, customer, reason, at))

    def _identity(self, event: CloudEvent) -> None:
        d = event.data
        if event.type in tl.MERGED:
            self._link(
                d["merge_id"], d["merged_customer_id"], d["customer_id"], "merge", event.time
            )
        elif event.type in tl.UNDONE:
            self.links.pop(d["merge_id"], None)
        elif event.type == tl.IDENTIFIED:
            self._link(
                f"identified:{d['alias_id']}", d["alias_id"], d["customer_id"], "identified",
                event.time,
            )  # fmt: skip
        elif event.type == "crm.sales.lead.converted" and d["lead_customer_id"] != d["customer_id"]:
            self._link(
                f"lead:{d['lead_id']}", d["lead_customer_id"], d["customer_id"], "lead", event.time
            )

    def _web(self, event: CloudEvent) -> None:
        d, at = event.data, event.time
        visitor = d["visitor_id"]
        ids = self.visits_of.setdefault(visitor, [])
        near = sorted(
            (
                self.visits[i]
                for i in ids
                if self.visits[i]["started_at"] - vi.VISIT_GAP <= at
                and self.visits[i]["ended_at"] + vi.VISIT_GAP >= at
            ),
            key=lambda v: (v["started_at"], v["visit_id"]),
        )
        customer = d.get("customer_id") or event.subject
        if not near:
            visit_id = f"{visitor}@{event.id}"
            v = {
                "visit_id": visit_id, "visitor_id": visitor, "customer_id": customer,
                "started_at": at, "ended_at": at, "pages": 0, "products": 0, "searches": 0,
                "carts": 0, "categories": [], "last_url": None,
            }  # fmt: skip
            self.visits[visit_id] = v
            ids.append(visit_id)
        else:
            v = near[0]
            for o in near[1:]:  # this event bridges visits: they are one
                v["started_at"] = min(v["started_at"], o["started_at"])
                v["ended_at"] = max(v["ended_at"], o["ended_at"])
                for c in ("pages", "products", "searches", "carts"):
                    v[c] += o[c]
                v["categories"] = sorted(set(v["categories"]) | set(o["categories"]))
                if v["customer_id"] is None:
                    v["customer_id"] = o["customer_id"]
                del self.visits[o["visit_id"]]
                ids.remove(o["visit_id"])
        column = vi.COUNTER[event.type]
        v[column] += 1
        if at >= v["ended_at"] and d.get("url") is not None:
            v["last_url"] = d["url"]
        v["started_at"] = min(v["started_at"], at)
        v["ended_at"] = max(v["ended_at"], at)
        category = d.get("category")
        if category is not None and category not in v["categories"]:
            bisect.insort(v["categories"], category)
        if v["customer_id"] is None:
            v["customer_id"] = customer

    # the customer 360

    def _customer(self, event: CloudEvent, dumped: str) -> None:
        c = event.subject
        if not c:
            return
        d, at, t = event.data, event.time, event.type
        row = self.customers.get(c)
        if row is None:
            row = self.customers[c] = {
                "customer_id": c, "kind": None, "display_name": None, "first_name": None,
                "last_name": None, "owner_id": None, "team_id": None, "tier": None,
                "first_seen_at": at, "last_touch_at": None, "last_touch_type": None,
                "updated_at": at, "region": None,
            }  # fmt: skip
        elif at < row["first_seen_at"]:
            row["first_seen_at"] = at
        handler = _CUSTOMER_RULES.get(t)
        if handler is not None:
            handler(self, row, d, at)
        if t in cu.TOUCH_TYPES:
            given = d.get("occurred_at") if t == "crm.sales.activity.logged" else None
            when = datetime.fromisoformat(given) if isinstance(given, str) else at
            if row["last_touch_at"] is None or row["last_touch_at"] <= when:
                row.update(last_touch_at=when, last_touch_type=t, updated_at=when)

    # service

    def _ticket(self, event: CloudEvent, dumped: str) -> None:
        d, at, t = event.data, event.time, event.type
        ticket = d["ticket_id"]
        if t == "crm.service.ticket.opened":
            if ticket not in self.tickets:
                self.tickets[ticket] = {
                    "ticket_id": ticket, "customer_id": d["customer_id"], "kind": d["kind"],
                    "priority": d.get("priority") or "normal", "product": d.get("product"),
                    "channel": d.get("channel"), "status": "new", "queue_id": None,
                    "assignee_id": None, "opened_at": at, "first_response_at": None,
                    "resolved_at": None, "closed_at": None, "csat_score": None, "csat_at": None,
                    "csat_agent_id": None, "updated_at": at,
                }  # fmt: skip
            return
        if t == "crm.service.sla.breached":
            self.breaches.setdefault((ticket, d["target"], d["episode"]), at)
            return
        row = self.tickets.get(ticket)
        if row is None:
            return  # the statements update no row
        if t == "crm.service.ticket.assigned":
            _set(row, at, status=d.get("to_status"), queue_id=d.get("queue_id"),
                 assignee_id=d.get("assignee_id"))  # fmt: skip
        elif t == "crm.service.ticket.status_changed":
            _set(row, at, status=d["to_status"])
        elif t == "crm.service.ticket.updated":
            _set(row, at, priority=d.get("priority"), product=d.get("product"))
        elif t == "crm.service.ticket.replied":
            first = row["first_response_at"]
            row.update(first_response_at=at if first is None else min(first, at), updated_at=at)
        elif t == "crm.service.ticket.resolved":
            _set(row, at, status="resolved", resolved_at=at)
        elif t == "crm.service.ticket.reopened":
            row.update(status=d.get("to_status") or "in_progress", resolved_at=None, updated_at=at)
        elif t == "crm.service.ticket.closed":
            _set(row, at, status="closed", closed_at=at)
        elif t == "crm.service.ticket.merged_into":
            _set(row, at, status="merged")
        elif t == "crm.service.ticket.rated" and row["csat_score"] is None:
            row.update(
                csat_score=d["score"], csat_at=at, csat_agent_id=row["assignee_id"], updated_at=at
            )

    # marketing

    def _marketing(self, event: CloudEvent, dumped: str) -> None:
        d, at, t = event.data, event.time, event.type
        if t in mk.MESSAGE_STEPS:
            column = mk.MESSAGE_STEPS[t]
            row = self.messages.get(d["message_id"])
            if row is None:
                self.messages[d["message_id"]] = {
                    "message_id": d["message_id"], "customer_id": d["customer_id"],
                    "campaign_id": d.get("campaign_id"), "trigger_id": d.get("trigger_id"),
                    "template_id": d.get("template_id"), "channel": d["channel"],
                    **dict.fromkeys(mk.MESSAGE_STEPS.values()), column: at,
                }  # fmt: skip
            else:
                row[column] = at if row[column] is None else min(row[column], at)
                if row["template_id"] is None:
                    row["template_id"] = d.get("template_id")
        elif t == "crm.sales.lead.captured":
            self.leads.setdefault(
                d["lead_id"],
                {
                    "lead_id": d["lead_id"], "customer_id": d["customer_id"],
                    "source": d["source"], "source_detail": d.get("source_detail"),
                    "utm_campaign": (d.get("attribution") or {}).get("utm_campaign"),
                    "captured_at": at, "qualified_at": None, "disqualified_at": None,
                    "converted_at": None, "deal_id": None,
                },
            )  # fmt: skip
        elif t == "crm.sales.lead.qualified":
            lead = self.leads.get(d["lead_id"])
            if lead is not None and lead["qualified_at"] is None:
                lead["qualified_at"] = at
        elif t == "crm.sales.lead.disqualified":
            lead = self.leads.get(d["lead_id"])
            if lead is not None:
                lead["disqualified_at"] = at
        elif t == "crm.sales.lead.converted":
            lead = self.leads.get(d["lead_id"])
            if lead is not None:
                lead.update(converted_at=at, deal_id=d.get("deal_id"))
        elif t == "crm.sales.deal.opened":
            self.funnel.setdefault(
                d["deal_id"],
                {
                    "deal_id": d["deal_id"], "customer_id": d["customer_id"], "opened_at": at,
                    "currency": d["currency"], "exchange_rate": Decimal(d["exchange_rate"]),
                    "base_currency": d["base_currency"], "won_at": None, "won_base": None,
                },
            )  # fmt: skip
        elif t == "crm.sales.deal.won":
            deal = self.funnel.get(d["deal_id"])
            if deal is not None:
                digits = minor_digits(d["currency"])
                won = Decimal(d["amount_minor"]).scaleb(-digits) * deal["exchange_rate"]
                unit = Decimal(1).scaleb(-minor_digits(deal["base_currency"]))
                deal.update(won_at=at, won_base=won.quantize(unit, rounding=ROUND_HALF_UP))

    # --- writing -------------------------------------------------------------------------

    def take_timeline(self, least: int = CHUNK) -> list[tuple[Any, ...]]:
        """The touchpoints gathered so far, once there are ``least`` (they never change once
        written: ``copy_timeline`` them)."""
        if len(self.timeline) < max(least, 1):
            return []
        rows, self.timeline = self.timeline, []
        return rows

    def parts(self) -> list[Callable[[Conn], Awaitable[None]]]:
        """What is left to write, in independent parts (each may run on its own connection,
        concurrently with the others): the timeline's last rows and the visits, the 360, the
        deals' history, the tickets, the marketing facts."""
        parts: list[Callable[[Conn], Awaitable[None]]] = []
        if tl.TimelineProjection.name in self.projections:
            for v in self.visits.values():
                if v["customer_id"] is not None:
                    self.timeline.append(_visit_touchpoint(v))
            parts += [self._write_timeline, self._write_visits]
        if cu.CustomerProfileProjection.name in self.projections:
            parts.append(self._write_customers)
        if sa.SalesAnalyticsProjection.name in self.projections:
            parts.append(self._write_deals)
        if sv.ServiceAnalyticsProjection.name in self.projections:
            parts.append(self._write_tickets)
        if mk.MarketingAnalyticsProjection.name in self.projections:
            parts.append(self._write_marketing)
        return parts

    async def write(self, conn: Conn) -> None:
        """Write every table, part after part on one connection."""
        for part in self.parts():
            await part(conn)

    async def _write_timeline(self, conn: Conn) -> None:
        await copy_timeline(conn, self.take_timeline(0))

    async def _write_visits(self, conn: Conn) -> None:
        await _copy(conn, "customer_links",
                    ("link_id", "alias_id", "customer_id", "reason", "linked_at"),
                    self.links.values())  # fmt: skip
        await _copy_dicts(conn, "web_visits", self.visits.values())

    async def _write_customers(self, conn: Conn) -> None:
        await _copy_dicts(conn, "customers", self.customers.values())
        await _copy_dicts(conn, "customer_deals", self.deals.values())
        await _copy_dicts(conn, "customer_invoices", self.invoices.values())

    async def _write_tickets(self, conn: Conn) -> None:
        await _copy_dicts(conn, "ticket_facts", self.tickets.values())
        await _copy(conn, "ticket_breaches",
                    ("ticket_id", "target", "episode", "breached_at"),
                    ((*k, at) for k, at in self.breaches.items()))  # fmt: skip

    async def _write_marketing(self, conn: Conn) -> None:
        await _copy_dicts(conn, "message_facts", self.messages.values())
        await _copy_dicts(conn, "lead_facts", self.leads.values())
        await _copy_dicts(conn, "funnel_deals", self.funnel.values())

    async def _write_deals(self, conn: Conn) -> None:
        """``deal_events`` as kept, and ``deal_versions`` folded from them in order."""
        events: list[tuple[Any, ...]] = []
        versions: list[tuple[Any, ...]] = []
        for deal, kept in self.deal_events.items():
            kept.sort(key=lambda e: (e[1], e[2], e[3]))  # (time, stream version, arrival)
            state: sa.State | None = None
            folded: list[tuple[tuple[Any, ...], sa.State]] = []
            for e in kept:
                events.append((deal, *e))
                state = sa.fold(state, e[4], json.loads(e[5]), e[1])
                if state is not None:
                    folded.append((e, state))
            ends: list[datetime | None] = [e[1] for e, _ in folded[1:]]
            ends += [None] * bool(folded)  # the last version is current
            for (e, s), end in zip(folded, ends, strict=True):
                versions.append(
                    (deal, e[0], e[4], e[1], end, e[2], e[3],
                     *(json.dumps(s[c]) if c == "lines" else s[c] for c in sa.STATE))
                )  # fmt: skip
        await _copy(
            conn,
            "deal_events",
            ("deal_id", "event_id", "occurred_at", "stream_version", "arrival", "event_type",
             "data"),
            events,
        )  # fmt: skip
        await _copy(
            conn,
            "deal_versions",
            ("deal_id", "event_id", "event_type", "valid_from", "valid_to", "stream_version",
             "arrival", *sa.STATE),
            versions,
        )  # fmt: skip
        if self.arrival:  # the worker's next deal events arrive after these
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('deal_events', 'arrival'), $1)",
                self.arrival,
            )


async def copy_timeline(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table("timeline", records=rows, columns=TIMELINE_COLUMNS)


def _set(row: dict[str, Any], at: datetime, **values: Any) -> None:
    fields = {k: v for k, v in values.items() if v is not None and k in sv.COLUMNS}
    if fields:
        row.update(fields, updated_at=at)


def _visit_touchpoint(v: dict[str, Any]) -> tuple[Any, ...]:
    data = vi.touchpoint_data(v)
    return (
        vi.touchpoint_id(v["visit_id"]), v["customer_id"], v["started_at"], "marketing",
        vi.VISIT_TYPE, vi.summary(v), f"visit-{v['visit_id']}", 1, None, json.dumps(data),
    )  # fmt: skip


async def _copy(
    conn: Conn, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    records = list(rows)
    if records:
        await conn.copy_records_to_table(table, records=records, columns=columns)


async def _copy_dicts(conn: Conn, table: str, rows: Iterable[dict[str, Any]]) -> None:
    records = list(rows)
    if records:
        columns = tuple(records[0])
        await conn.copy_records_to_table(
            table, records=[tuple(r.values()) for r in records], columns=columns
        )


# --- the 360's rules, one per event type (as the statements in ``customers``) ---------------


def _lead(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    given = {
        "kind": "lead",
        "display_name": d["name"],
        "owner_id": d.get("owner_id"),
        "team_id": d.get("team_id"),
    }
    for column, value in given.items():
        if row[column] is None:
            row[column] = value
    row["updated_at"] = at


def _owner(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    row.update(owner_id=d.get("owner_id"), team_id=d.get("team_id"), updated_at=at)


def _contact(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    det = d["details"]
    first, last = det.get("first_name"), det.get("last_name")
    row.update(
        kind="contact", first_name=first, last_name=last, display_name=_concat_ws(first, last),
        owner_id=d.get("owner_id"), team_id=d.get("team_id"), updated_at=at,
        region=det.get("region"),
    )  # fmt: skip


def _region(row: dict[str, Any], d: dict[str, Any]) -> None:
    if "region" in d["changed"]:
        row["region"] = d["values"].get("region")


def _contact_updated(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    _region(row, d)
    changed = set(d["changed"])
    if not changed & {"first_name", "last_name"}:
        return
    values = d["values"]
    if "first_name" in changed:
        row["first_name"] = values.get("first_name")
    if "last_name" in changed:
        row["last_name"] = values.get("last_name")
    row["updated_at"] = at
    row["display_name"] = _concat_ws(row["first_name"], row["last_name"])


def _account(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    det = d["details"]
    row.update(
        kind="account", display_name=det.get("name"), tier=det.get("tier") or "standard",
        owner_id=d.get("owner_id"), team_id=d.get("team_id"), updated_at=at,
        region=det.get("region"),
    )  # fmt: skip


def _account_updated(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    _region(row, d)
    values, changed = d["values"], set(d["changed"])
    if "name" in changed:
        row["display_name"] = values["name"]
    if "tier" in changed:
        row["tier"] = values.get("tier")


def _deal_opened(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    if d["deal_id"] in s.deals:
        return
    s.deals[d["deal_id"]] = {
        "deal_id": d["deal_id"], "customer_id": row["customer_id"], "name": d["name"],
        "stage": d["stage"], "status": "open", "probability": d["probability"],
        "amount_minor": d["amount_minor"], "currency": d["currency"],
        "amount_base": to_base_minor(
            d["amount_minor"], d["currency"], d["exchange_rate"], d["base_currency"]
        ),
        "base_currency": d["base_currency"], "owner_id": d.get("owner_id"), "updated_at": at,
    }  # fmt: skip


def _deal_stage(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    deal = s.deals.get(d["deal_id"])
    if deal is not None:
        deal.update(stage=d["to_stage"], probability=d["probability"], updated_at=at)


def _deal_updated(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    deal = s.deals.get(d["deal_id"])
    if deal is not None and {"amount_minor", "currency", "exchange_rate"} & set(d["changed"]):
        deal.update(
            amount_minor=d["amount_minor"], currency=d["currency"],
            amount_base=to_base_minor(
                d["amount_minor"], d["currency"], d["exchange_rate"], deal["base_currency"]
            ),
            updated_at=at,
        )  # fmt: skip


def _deal_closed(status: str) -> Any:
    def rule(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
        deal = s.deals.get(d["deal_id"])
        if deal is not None:
            deal.update(status=status, updated_at=at)

    return rule


def _deal_owner(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    deal = s.deals.get(d["deal_id"])
    if deal is not None:
        deal.update(owner_id=d.get("owner_id"), updated_at=at)


def _invoice_issued(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
    s.invoices.setdefault(
        d["invoice_id"],
        {"invoice_id": d["invoice_id"], "customer_id": row["customer_id"], "status": "issued",
         "overdue": False, "updated_at": at},
    )  # fmt: skip


def _invoice(status: str | None, overdue: bool | None) -> Any:
    def rule(s: BulkState, row: dict[str, Any], d: dict[str, Any], at: datetime) -> None:
        invoice = s.invoices.get(d["invoice_id"])
        if invoice is not None:
            if status is not None:
                invoice["status"] = status
            if overdue is not None:
                invoice["overdue"] = overdue
            invoice["updated_at"] = at

    return rule


_CUSTOMER_RULES: dict[str, Any] = {
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
assert set(_CUSTOMER_RULES) == set(cu.HANDLERS), "the 360's bulk rules and statements differ"


def processed_rows(consumer: str, ids: Iterable[UUID]) -> list[tuple[str, UUID]]:
    return [(consumer, i) for i in ids]
