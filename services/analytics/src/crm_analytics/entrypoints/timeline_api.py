"""GET /customers/{id}/timeline: every touchpoint from every context, in time order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from crm_analytics import churn, crosssell, service
from crm_analytics.access import CustomerReader, check_customer, main_profile
from crm_analytics.customers import health
from crm_analytics.entrypoints.common import AsOf
from crm_analytics.history import customer_as_of
from crm_analytics.timeline import customer_ids
from crm_runtime.errors import NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.http.params import Instant

router = APIRouter(tags=["timeline"])


class TimelineEntry(BaseModel):
    event_id: str
    customer_id: str = Field(description="the id the event was recorded under")
    occurred_at: datetime
    context: str
    type: str
    summary: str
    link: str | None
    stream_id: str
    stream_version: int
    data: dict[str, Any]


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=Page[TimelineEntry],
    summary="The customer's touchpoints from every context, oldest first",
    description="Merged customers share one timeline: asking for either id returns the events of "
    "both (X-Customer-Id names the id that stands, X-Customer-Ids every id included). An undone "
    "merge separates them again.",
)
async def customer_timeline(
    customer_id: str,
    ctx: CtxDep,
    user: CustomerReader,
    response: Response,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    context: Annotated[list[str] | None, Query(description="sales, marketing, service")] = None,
    type: Annotated[list[str] | None, Query(description="event types to include")] = None,
    since: Instant | None = None,
    until: Instant | None = None,
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
    status: str
    probability: int
    amount_minor: int
    currency: str


class HealthOut(BaseModel):
    score: int = Field(ge=0, le=100)
    reasons: list[str]


class ChurnFactor(BaseModel):
    name: str
    points: int
    detail: str


class ChurnOut(BaseModel):
    score: int = Field(description="0-100, higher is likelier to churn")
    level: Literal["low", "medium", "high"]
    factors: list[ChurnFactor]


class Customer360(BaseModel):
    customer_id: str = Field(description="the id that stands (after merges)")
    merged_ids: list[str] = Field(description="other ids of the same customer")
    kind: str | None = Field(description="lead, contact or account")
    display_name: str | None
    owner_id: str | None
    team_id: str | None
    tier: str | None
    first_seen_at: datetime
    last_touch_at: datetime | None
    last_touch_type: str | None
    open_deals: list[DealSummary]
    open_pipeline_base: str = Field(description="open deal amounts in the base currency (minor)")
    weighted_pipeline_base: str
    won_deals: int
    lost_deals: int
    open_invoices: int
    overdue_invoices: int
    open_tickets: int = Field(description="open service-desk tickets")
    open_complaints: int = Field(description="open tickets of the kind complaint")
    health: HealthOut
    churn_risk: ChurnOut


@router.get(
    "/customers/{customer_id}",
    response_model=Customer360,
    summary="The 360 view: who, owner, open deals, invoices, last touch and a health score",
    responses={404: {"description": "no event about this customer has been seen"}},
)
async def customer_360(
    customer_id: str, ctx: CtxDep, user: CustomerReader, as_of: AsOf
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
    name: str | None
    confidence: float = Field(description="of the best rule from a product the customer owns")
    lift: float
    support: float
    because: list[str] = Field(description="owned products whose rules point here, best first")


class Suggestions(BaseModel):
    customer_id: str = Field(description="the id that stands (after merges)")
    owned: list[str] = Field(description="products on the customer's won deals")
    suggestions: list[SuggestionOut]


@router.get(
    "/customers/{customer_id}/suggestions",
    response_model=Suggestions,
    summary="Cross-sell and upsell: products bought with what this customer owns, that it lacks",
)
async def customer_suggestions(
    customer_id: str,
    ctx: CtxDep,
    user: CustomerReader,
    min_support: Annotated[Decimal, Query(ge=0, le=1)] = Decimal("0.01"),
    min_confidence: Annotated[Decimal, Query(ge=0, le=1)] = Decimal("0.1"),
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
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
