"""GET /customers/{id}/timeline: every touchpoint from every context, in time order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from crm_analytics import churn, crosssell, service
from crm_analytics.access import CustomerReader, check_customer, main_profile
from crm_analytics.customers import health
from crm_analytics.entrypoints import schemas
from crm_analytics.entrypoints.common import AsOf
from crm_analytics.entrypoints.schemas import ChurnOut
from crm_analytics.history import customer_as_of
from crm_analytics.timeline import customer_ids
from crm_runtime.errors import NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.http.params import Instant

router = APIRouter(tags=["timeline"])


CustomerId = Annotated[
    str, Path(description="any of the customer's ids: merged ids read as the one that stands")
]


class TimelineEntry(BaseModel):
    event_id: str = Field(description="the event's id (a UUID)")
    customer_id: str = Field(description="the id the event was recorded under")
    occurred_at: datetime = Field(
        description="when it happened (a logged activity's own time, else the event's)"
    )
    context: str = Field(description="the source context: sales, marketing or service")
    type: str = Field(description="the event type, e.g. `crm.sales.deal.opened`")
    summary: str = Field(description="one readable line")
    link: str | None = Field(
        description="the source record, `<context>:/<resources>/<id>`; null: none"
    )
    stream_id: str = Field(description="the source stream, `<kind>-<id>`")
    stream_version: int = Field(description="the event's position in its stream")
    data: dict[str, Any] = Field(description="the event's payload (its type's current schema)")


TIMELINE_EXAMPLE = {
    "items": [
        {
            "event_id": "0b5e1c9a-3f2d-4c8e-9a7b-6d5c4b3a2f10",
            "customer_id": "4f1c2d3e-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
            "occurred_at": "2026-11-20T14:03:00Z",
            "context": "sales",
            "type": "crm.sales.deal.stage_changed",
            "summary": "Deal moved from identified to demo",
            "link": "sales:/deals/2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "stream_id": "deal-2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "stream_version": 2,
            "data": {
                "deal_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
                "from_stage": "identified",
                "to_stage": "demo",
                "probability": 60,
            },
        }
    ],
    "next_cursor": "eyJ0IjoiMjAyNi0xMS0yMFQxNDowMzowMCswMDowMCIsImlkIjoiMGI1ZTFjOWEifQ",
}


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=Page[TimelineEntry],
    summary="The customer's touchpoints from every context, oldest first",
    description="Merged customers share one timeline: asking for either id returns the events of "
    "both (X-Customer-Id names the id that stands, X-Customer-Ids every id included). An undone "
    "merge separates them again.",
    responses={
        **schemas.ok(TIMELINE_EXAMPLE),
        **schemas.not_found("no event about this customer has been seen"),
    },
)
async def customer_timeline(
    customer_id: CustomerId,
    ctx: CtxDep,
    user: CustomerReader,
    response: Response,
    cursor: Annotated[
        str | None, Query(description="the previous page's next_cursor (same filters)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many entries")] = 100,
    context: Annotated[list[str] | None, Query(description="sales, marketing, service")] = None,
    type: Annotated[list[str] | None, Query(description="event types to include")] = None,
    since: Annotated[Instant | None, Query(description="only from this time on")] = None,
    until: Annotated[Instant | None, Query(description="only before this time")] = None,
) -> Page[TimelineEntry]:
    after = decode_cursor(cursor)
    async with ctx.pool.acquire() as conn:
        root, ids = await customer_ids(conn, customer_id)
        await check_customer(conn, user, root, ids)
        seen = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM customers WHERE customer_id = ANY($1::text[]))"
            " OR EXISTS (SELECT 1 FROM timeline WHERE customer_id = ANY($1::text[]))",
            ids,
        )
        if not seen:
            raise NotFound(f"no customer {customer_id} has been seen")
        rows = await conn.fetch(
            """
            SELECT event_id, customer_id, occurred_at, context, event_type, summary, link,
                   stream_id, stream_version, data
            FROM timeline
            WHERE customer_id = ANY($1::text[])
              AND ($2::timestamptz IS NULL OR (occurred_at, event_id) > ($2, $3::uuid))
              AND ($4::text[] IS NULL OR context = ANY($4))
              AND ($5::text[] IS NULL OR event_type = ANY($5))
              AND ($6::timestamptz IS NULL OR occurred_at >= $6)
              AND ($7::timestamptz IS NULL OR occurred_at < $7)
            ORDER BY occurred_at, event_id
            LIMIT $8
            """,
            ids,
            datetime.fromisoformat(after["t"]) if after else None,
            after["id"] if after else None,
            context,
            type,
            since,
            until,
            limit + 1,
        )
    items = [
        TimelineEntry(
            event_id=str(r["event_id"]),
            customer_id=r["customer_id"],
            occurred_at=r["occurred_at"],
            context=r["context"],
            type=r["event_type"],
            summary=r["summary"],
            link=r["link"],
            stream_id=r["stream_id"],
            stream_version=r["stream_version"],
            data=json.loads(r["data"]),
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor({"t": last.occurred_at.isoformat(), "id": last.event_id})
    response.headers["X-Customer-Id"] = root
    response.headers["X-Customer-Ids"] = ",".join(ids)
    return Page[TimelineEntry](items=items, next_cursor=next_cursor)


class DealSummary(BaseModel):
    deal_id: str
    name: str
    stage: str
    status: str = Field(description="`open` (the 360 lists the open deals)")
    probability: int = Field(description="percent, 0-100")
    amount_minor: int = Field(description="in the minor unit (cents) of `currency`")
    currency: str = Field(description="the deal's ISO 4217 currency")


class HealthOut(BaseModel):
    score: int = Field(ge=0, le=100, description="0-100, higher is healthier")
    reasons: list[str] = Field(
        description="what moved the score from 60, e.g. `last touch 3 days ago (+20)`"
    )


class Customer360(BaseModel):
    customer_id: str = Field(description="the id that stands (after merges)")
    merged_ids: list[str] = Field(description="other ids of the same customer")
    kind: str | None = Field(description="lead, contact or account")
    display_name: str | None
    owner_id: str | None
    team_id: str | None
    tier: str | None = Field(description="an account's tier")
    first_seen_at: datetime = Field(description="the first event about any of its ids")
    last_touch_at: datetime | None = Field(
        description="the latest interaction in any context; null: never touched"
    )
    last_touch_type: str | None = Field(description="the event type of that interaction")
    open_deals: list[DealSummary] = Field(description="latest changed first")
    open_pipeline_base: str = Field(
        description="the open deals' amounts in the base currency, minor units, as an integer "
        "string"
    )
    weighted_pipeline_base: str = Field(
        description="the same x each deal's probability, minor units, as an integer string"
    )
    won_deals: int
    lost_deals: int
    open_invoices: int = Field(description="invoices neither paid nor void")
    overdue_invoices: int = Field(description="of those, overdue")
    open_tickets: int = Field(description="open service-desk tickets")
    open_complaints: int = Field(description="open tickets of the kind complaint")
    health: HealthOut
    churn_risk: ChurnOut = Field(description="as it is now, also with `as_of`")


CUSTOMER_360_EXAMPLE = {
    "customer_id": "4f1c2d3e-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
    "merged_ids": ["9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"],
    "kind": "contact",
    "display_name": "Ada Lovelace",
    "owner_id": "alice",
    "team_id": "emea",
    "tier": None,
    "first_seen_at": "2026-02-11T08:15:00Z",
    "last_touch_at": "2026-11-23T16:40:00Z",
    "last_touch_type": "crm.sales.activity.logged",
    "open_deals": [
        {
            "deal_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "name": "Analytical Engines - 40 seats",
            "stage": "demo",
            "status": "open",
            "probability": 60,
            "amount_minor": 4800000,
            "currency": "USD",
        }
    ],
    "open_pipeline_base": "4416000",
    "weighted_pipeline_base": "2649600",
    "won_deals": 1,
    "lost_deals": 0,
    "open_invoices": 1,
    "overdue_invoices": 0,
    "open_tickets": 1,
    "open_complaints": 0,
    "health": {
        "score": 100,
        "reasons": [
            "last touch 3 days ago (+20)",
            "1 open deal(s) (+10)",
            "1 won deal(s) (+10)",
        ],
    },
    "churn_risk": {"score": 0, "level": "low", "factors": []},
}


@router.get(
    "/customers/{customer_id}",
    response_model=Customer360,
    summary="The 360 view: who, owner, open deals, invoices, last touch and a health score",
    responses={
        **schemas.ok(CUSTOMER_360_EXAMPLE),
        **schemas.not_found("no event about this customer has been seen"),
    },
)
async def customer_360(
    customer_id: CustomerId, ctx: CtxDep, user: CustomerReader, as_of: AsOf
) -> Customer360:
    async with ctx.pool.acquire() as conn:
        root, ids = await customer_ids(conn, customer_id)
        await check_customer(conn, user, root, ids)
        if as_of is not None:
            people, deals, invoices = await customer_as_of(conn, ids, as_of)
        else:
            people = await conn.fetch(
                "SELECT * FROM customers WHERE customer_id = ANY($1::text[])", ids
            )
            deals = await conn.fetch(
                "SELECT * FROM customer_deals WHERE customer_id = ANY($1::text[])"
                " ORDER BY updated_at DESC",
                ids,
            )
            invoices = await conn.fetch(
                "SELECT status, overdue FROM customer_invoices WHERE customer_id = ANY($1::text[])",
                ids,
            )
        # open tickets and churn risk: as they are now (not yet answered as of a past time)
        tickets = await service.open_tickets(conn, ids)
        now = datetime.now(UTC)
        risk = churn.churn_risk(now, await churn.signals(conn, ids, now))
    if not people:
        raise NotFound(
            f"no customer {customer_id} had been seen"
            if as_of
            else f"no customer {customer_id} has been seen"
        )
    main = main_profile(people, root)  # the standing id's profile first; a contact's over a lead's
    touches = [p["last_touch_at"] for p in people if p["last_touch_at"] is not None]
    last = max(touches) if touches else None
    last_type = next((p["last_touch_type"] for p in people if p["last_touch_at"] == last), None)
    open_deals = [d for d in deals if d["status"] == "open"]
    overdue = sum(1 for i in invoices if i["overdue"] and i["status"] not in ("paid", "void"))
    won = sum(1 for d in deals if d["status"] == "won")
    lost = sum(1 for d in deals if d["status"] == "lost")
    h = health(as_of or datetime.now(UTC), last, len(open_deals), won, lost, overdue)
    return Customer360(
        customer_id=root,
        merged_ids=[i for i in ids if i != root],
        kind=main["kind"],
        display_name=main["display_name"],
        owner_id=main["owner_id"],
        team_id=main["team_id"],
        tier=main["tier"],
        first_seen_at=min(p["first_seen_at"] for p in people),
        last_touch_at=last,
        last_touch_type=last_type,
        open_deals=[
            DealSummary(
                deal_id=d["deal_id"],
                name=d["name"],
                stage=d["stage"],
                status=d["status"],
                probability=d["probability"],
                amount_minor=d["amount_minor"],
                currency=d["currency"],
            )
            for d in open_deals
        ],
        open_pipeline_base=str(round(sum(d["amount_base"] for d in open_deals))),
        weighted_pipeline_base=str(
            round(sum(d["amount_base"] * d["probability"] / 100 for d in open_deals))
        ),
        won_deals=won,
        lost_deals=lost,
        open_invoices=sum(1 for i in invoices if i["status"] not in ("paid", "void")),
        overdue_invoices=overdue,
        open_tickets=tickets["open"],
        open_complaints=tickets["open_complaints"],
        health=HealthOut(score=h.score, reasons=h.reasons),
        churn_risk=ChurnOut(**churn.as_json(risk)),
    )


class SuggestionOut(BaseModel):
    product_id: str
    name: str | None = Field(description="its name on its latest deal line")
    confidence: float = Field(
        description="of the best rule from a product the customer owns, a fraction"
    )
    lift: float = Field(description="of that rule (> 1: bought together more than by chance)")
    support: float = Field(description="of that rule: share of won deals with both")
    because: list[str] = Field(description="owned products whose rules point here, best first")


class Suggestions(BaseModel):
    customer_id: str = Field(description="the id that stands (after merges)")
    owned: list[str] = Field(description="products on the customer's won deals")
    suggestions: list[SuggestionOut] = Field(description="most confident first")


SUGGESTIONS_EXAMPLE = {
    "customer_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "owned": ["p-seat", "p-setup"],
    "suggestions": [
        {
            "product_id": "p-support",
            "name": "Premium support",
            "confidence": 0.5,
            "lift": 2.0,
            "support": 0.0833,
            "because": ["p-seat", "p-setup"],
        }
    ],
}


@router.get(
    "/customers/{customer_id}/suggestions",
    response_model=Suggestions,
    summary="Cross-sell and upsell: products bought with what this customer owns, that it lacks",
    responses=schemas.ok(SUGGESTIONS_EXAMPLE),
)
async def customer_suggestions(
    customer_id: CustomerId,
    ctx: CtxDep,
    user: CustomerReader,
    min_support: Annotated[
        Decimal, Query(ge=0, le=1, description="least share of won deals holding both products")
    ] = Decimal("0.01"),
    min_confidence: Annotated[
        Decimal, Query(ge=0, le=1, description="least share of A's won deals that also hold B")
    ] = Decimal("0.1"),
    limit: Annotated[int, Query(ge=1, le=100, description="at most this many products")] = 10,
) -> Suggestions:
    async with ctx.pool.acquire() as conn:
        root, ids = await customer_ids(conn, customer_id)
        await check_customer(conn, user, root, ids)
        owned = await crosssell.owned_products(conn, ids)
        baskets = await crosssell.won_baskets(conn)
        names = await crosssell.product_names(conn)
    rules = crosssell.association_rules(baskets, Fraction(min_support), Fraction(min_confidence))
    found = crosssell.suggest(owned, rules)[:limit]
    return Suggestions(
        customer_id=root,
        owned=sorted(owned),
        suggestions=[
            SuggestionOut(
                product_id=s.product_id,
                name=names.get(s.product_id),
                confidence=round(float(s.confidence), 4),
                lift=round(float(s.lift), 4),
                support=round(float(s.support), 4),
                because=list(s.because),
            )
            for s in found
        ],
    )
