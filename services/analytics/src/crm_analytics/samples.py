"""A synthetic mixed event history (for the rebuild benchmark and tests): every customer's
story across the three contexts, as the services record it (sales, marketing and service-desk
event types, in the proportions a CRM sees: web activity most, then e-mail, sales and tickets).

One story (28 events): anonymous browsing (page and product views, a search, a cart), a web form
that identifies the visitor, the sales lead it becomes and its contact, the marketing profile, a
campaign e-mail sent, opened and clicked, a call, a deal opened, moved twice and won or lost, a
quote sent, an invoice issued and paid, a support ticket opened, answered, resolved and rated.
Payloads start from the event contract's examples (so they validate) with the story's own ids.
"""

from __future__ import annotations

import heapq
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from crm_events import CloudEvent, KafkaRecord, registry
from crm_events.envelope import binary_record

STORY_LENGTH = 28
_PRODUCTS = ("analytics", "crm", "support", "voice", "storage")
_CATEGORIES = ("phones", "laptops", "audio", "tablets")
_REGIONS = ("EMEA", "AMER", "APAC")
_OWNERS = ("alice", "bob", "carol", "dave")


@cache
def _example(type_: str) -> tuple[int, dict[str, Any]]:
    version = registry.current_version(type_)
    text = resources.files("crm_events").joinpath("examples", type_, f"v{version}.json").read_text()
    return version, json.loads(text)


class _Event(NamedTuple):
    id: uuid.UUID
    type: str
    time: datetime
    subject: str | None
    streamid: str
    streamversion: int
    schemaversion: int
    data: dict[str, Any]

    @property
    def context(self) -> str:
        return self.type.split(".")[1]

    def cloud_event(self) -> CloudEvent:
        return CloudEvent(
            id=self.id,
            source=f"/crm/{self.context}",
            type=self.type,
            time=self.time,
            subject=self.subject,
            streamid=self.streamid,
            streamversion=self.streamversion,
            schemaversion=self.schemaversion,
            data=self.data,
        )

    def record(self) -> KafkaRecord:
        """The record the relay would publish (built directly, as the relay does)."""
        return binary_record(
            event_id=self.id,
            source=f"/crm/{self.context}",
            type_=self.type,
            time=self.time,
            subject=self.subject,
            streamid=self.streamid,
            streamversion=self.streamversion,
            schemaversion=self.schemaversion,
            correlationid=None,
            causationid=None,
            value=json.dumps(self.data, separators=(",", ":")).encode(),
        )


class _Story:
    """One customer's events, each stream numbered from 1."""

    def __init__(self, n: int, start: datetime, rnd: random.Random) -> None:
        self.rnd = rnd
        self.at = start
        self.customer = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        self.versions: dict[str, int] = {}
        self.events: list[_Event] = []
        self.n = n

    def id(self) -> str:
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))

    def add(
        self,
        type_: str,
        stream: str,
        *,
        subject: str | None = None,
        gap: float = 60.0,
        **data: Any,
    ) -> None:
        version, example = _example(type_)
        self.at += timedelta(seconds=gap * (0.5 + self.rnd.random()))
        self.versions[stream] = self.versions.get(stream, 0) + 1
        self.events.append(
            _Event(
                uuid.UUID(int=self.rnd.getrandbits(128), version=4),
                type_,
                self.at,
                subject,
                stream,
                self.versions[stream],
                version,
                {**example, **data},
            )
        )


def story(n: int, start: datetime, rnd: random.Random) -> list[_Event]:
    s = _Story(n, start, rnd)
    c = s.customer
    visitor = f"v-{rnd.getrandbits(48):012x}"
    category = rnd.choice(_CATEGORIES)
    product = rnd.choice(_PRODUCTS)
    region = rnd.choice(_REGIONS)
    owner = rnd.choice(_OWNERS)
    email = f"person{n}@example.com"
    web: dict[str, Any] = {"site_key_id": "pk_bench", "visitor_id": visitor}
    vs = f"visitor-{visitor}"
    s.add("crm.marketing.web.page_viewed", vs, **web, url="https://shop.example/", title="Shop")
    for i in range(3):
        s.add(
            "crm.marketing.web.product_viewed",
            vs,
            **web,
            customer_id=None,
            url=f"https://shop.example/p/{category}-{i}",
            product_id=f"p-{category}-{i}",
            category=category,
        )
    s.add("crm.marketing.web.searched", vs, **web, query=category)
    s.add("crm.marketing.web.added_to_cart", vs, **web, product_id=f"p-{category}-0")
    submission = s.id()
    s.add(
        "crm.marketing.form.submitted",
        f"submission-{submission}",
        subject=c,
        submission_id=submission,
        customer_id=c,
        visitor_id=visitor,
        values={"email": email, "first_name": f"Person {n}"},
    )
    s.add(
        "crm.marketing.visitor.identified",
        vs,
        subject=c,
        visitor_id=visitor,
        customer_id=c,
        gap=1,
    )
    lead = s.id()
    s.add(
        "crm.sales.lead.captured",
        f"lead-{lead}",
        subject=c,
        lead_id=lead,
        customer_id=c,
        name=f"Person {n}",
        email=email,
        owner_id=owner,
        region=region,
        product_line=product,
    )
    s.add(
        "crm.marketing.profile.created",
        f"profile-{c}",
        subject=c,
        customer_id=c,
        values={"email": email, "first_name": f"Person {n}", "country": "DE"},
    )
    contact = s.id()
    _, cex = _example("crm.sales.contact.created")
    s.add(
        "crm.sales.contact.created",
        f"contact-{contact}",
        subject=c,
        contact_id=contact,
        customer_id=c,
        lead_id=lead,
        owner_id=owner,
        details={**cex["details"], "first_name": "Person", "last_name": str(n), "region": region},
    )
    message = s.id()
    campaign = f"00000000-0000-4000-8000-{n % 20:012d}"
    for type_ in ("sent", "opened", "clicked"):
        s.add(
            f"crm.marketing.message.{type_}",
            f"message-{message}",
            subject=c,
            message_id=message,
            customer_id=c,
            campaign_id=campaign,
            gap=3600,
        )
    s.add(
        "crm.sales.activity.logged",
        f"activity-{s.id()}",
        subject=c,
        customer_id=c,
        owner_id=owner,
        occurred_at=s.at.isoformat(),
    )
    deal = s.id()
    won = rnd.random() < 0.6
    amount = rnd.randrange(1_000, 100_000) * 100
    s.add(
        "crm.sales.deal.opened",
        f"deal-{deal}",
        subject=c,
        deal_id=deal,
        customer_id=c,
        contact_id=contact,
        lead_id=lead,
        owner_id=owner,
        amount_minor=amount,
        lines=[{"product_id": product, "name": product, "quantity": 1, "unit_price_minor": amount}],
        gap=86400,
    )
    for frm, to, p in (("identified", "demo", 40), ("demo", "proposal", 70)):
        s.add(
            "crm.sales.deal.stage_changed",
            f"deal-{deal}",
            subject=c,
            deal_id=deal,
            from_stage=frm,
            to_stage=to,
            probability=p,
            gap=86400,
        )
    if won:
        s.add("crm.sales.deal.won", f"deal-{deal}", subject=c, deal_id=deal, amount_minor=amount)
    else:
        s.add("crm.sales.deal.lost", f"deal-{deal}", subject=c, deal_id=deal)
    quote = s.id()
    s.add("crm.sales.quote.sent", f"quote-{quote}", subject=c, quote_id=quote, contact_id=contact)
    invoice = s.id()
    s.add(
        "crm.sales.invoice.issued",
        f"invoice-{invoice}",
        subject=c,
        invoice_id=invoice,
        deal_id=deal,
        customer_id=c,
        contact_id=contact,
        quote_id=quote,
    )
    s.add(
        "crm.sales.invoice.payment_received",
        f"invoice-{invoice}",
        subject=c,
        invoice_id=invoice,
        payment_id=s.id(),
        gap=86400,
    )
    s.add("crm.sales.invoice.paid", f"invoice-{invoice}", subject=c, invoice_id=invoice)
    ticket = f"T-{rnd.getrandbits(40):010X}"
    s.add(
        "crm.service.ticket.opened",
        f"ticket-{ticket}",
        subject=c,
        ticket_id=ticket,
        customer_id=c,
        customer_email=email,
        product=product,
        region=region,
        kind="query",
        product_return=None,
        gap=86400,
    )
    s.add(
        "crm.service.ticket.replied",
        f"ticket-{ticket}",
        subject=c,
        ticket_id=ticket,
        to=[email],
        gap=1800,
    )
    s.add("crm.service.ticket.resolved", f"ticket-{ticket}", subject=c, ticket_id=ticket)
    s.add(
        "crm.service.ticket.rated",
        f"ticket-{ticket}",
        subject=c,
        ticket_id=ticket,
        score=rnd.randint(1, 5),
        comment=None,
    )
    s.add(
        "crm.marketing.web.page_viewed",
        vs,
        subject=c,
        **web,
        customer_id=c,
        url="https://shop.example/account",
        title="Account",
        gap=86400,
    )
    assert len(s.events) == STORY_LENGTH, len(s.events)
    return s.events


def history(n_events: int, seed: int = 7) -> Iterator[_Event]:
    """At least ``n_events`` events (whole stories), in time order across customers; stories
    overlap in time (a new customer arrives every few minutes over a year). Generated as they
    are yielded: only the stories under way are held."""
    rnd = random.Random(seed)
    stories = -(-n_events // STORY_LENGTH)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    spread = timedelta(days=365) / stories
    pending: list[tuple[datetime, int, _Event]] = []  # a heap by time (then generation order)
    made = 0
    for i in range(stories):
        begins = start + spread * i  # every later event is after this
        while pending and pending[0][0] < begins:
            yield heapq.heappop(pending)[2]
        for e in story(i, begins, rnd):
            made += 1
            heapq.heappush(pending, (e.time, made, e))
    while pending:
        yield heapq.heappop(pending)[2]
