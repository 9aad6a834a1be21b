"""/analytics/service/*, /analytics/marketing/* and churn risk: the analytical service and
marketing CRM, and customer retention."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import TypeAdapter

from crm_analytics import access, churn, marketing, service
from crm_analytics.entrypoints import schemas
from crm_analytics.timeline import customer_ids
from crm_runtime.errors import Forbidden, InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import CurrentUser, Principal, require

service_router = APIRouter(prefix="/analytics/service", tags=["service analytics"])
marketing_router = APIRouter(prefix="/analytics/marketing", tags=["marketing analytics"])
retention_router = APIRouter(tags=["retention"])

ServiceAnalyst = Annotated[
    Principal, Depends(require("analyst", "service_manager", "sales_manager"))
]
MarketingAnalyst = Annotated[
    Principal, Depends(require("analyst", "marketer", "sales_manager", "service_manager"))
]
Since = Annotated[datetime | None, Query(description="only from this time on")]
Until = Annotated[datetime | None, Query(description="only before this time")]

# The ticket spikes are written as they are, not validated against their model on the way out: a
# year of days for each product is tens of thousands of rows (schemas.TicketSpikes documents
# them; test_an_openapi holds the model to the real answer).
_AS_IS = TypeAdapter(dict[str, Any])


@service_router.get(
    "/ticket-spikes",
    summary="Tickets per product per day against its trailing baseline; spikes flagged",
    responses=schemas.ok(schemas.TICKET_SPIKES_EXAMPLE, schemas.TicketSpikes),
)
async def ticket_spikes(
    ctx: CtxDep,
    _: ServiceAnalyst,
    start: Annotated[
        date | None,
        Query(description="first day (default: 13 days before end); at most 366 days before end"),
    ] = None,
    end: Annotated[date | None, Query(description="last day (default: today, UTC)")] = None,
    product: Annotated[str | None, Query(description="only this product")] = None,
    baseline_days: Annotated[
        int, Query(ge=3, le=180, description="the trailing days each day is compared with")
    ] = 28,
    min_count: Annotated[int, Query(ge=1, description="a spike has at least this many")] = 5,
    sigmas: Annotated[
        float, Query(gt=0, le=10, description="a spike exceeds mean + sigmas x max(sd, 1)")
    ] = 3.0,
) -> Response:
    last = end or datetime.now(UTC).date()
    first = start or last - timedelta(days=13)
    if first > last:
        raise InvalidInput("start", "is after end")
    if (last - first).days > 366:
        raise InvalidInput("end", "at most 366 days after start")
    if not (date(1970, 1, 1) <= first and last <= date(2199, 12, 31)):
        raise InvalidInput("start" if first.year < 1970 else "end", "between 1970 and 2199")
    async with ctx.pool.acquire() as conn:
        products = await service.ticket_spikes(
            conn,
            first,
            last,
            baseline_days=baseline_days,
            min_count=min_count,
            sigmas=sigmas,
            product=product,
        )
    body = {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "baseline_days": baseline_days,
        "sigmas": sigmas,
        "min_count": min_count,
        "products": products,
    }
    return Response(_AS_IS.dump_json(body), media_type="application/json")


@service_router.get(
    "/response-times",
    summary="First-response and resolution time percentiles (hours)",
    response_model=schemas.ResponseTimes,
    responses=schemas.ok(schemas.RESPONSE_TIMES_EXAMPLE),
)
async def response_times(
    ctx: CtxDep,
    _: ServiceAnalyst,
    since: Since = None,
    until: Until = None,
    priority: Annotated[
        Literal["low", "normal", "high", "urgent"] | None,
        Query(description="only tickets of this priority"),
    ] = None,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return await service.response_times(conn, since, until, priority)


@service_router.get(
    "/sla",
    summary="SLA breach rate of the tickets opened in a period",
    response_model=schemas.BreachRate,
    responses=schemas.ok(schemas.SLA_EXAMPLE),
)
async def sla(
    ctx: CtxDep, _: ServiceAnalyst, since: Since = None, until: Until = None
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return await service.breach_rate(conn, since, until)


@service_router.get(
    "/csat",
    summary="CSAT by agent or product over time",
    response_model=schemas.Csat,
    responses=schemas.ok(schemas.CSAT_EXAMPLE),
)
async def csat(
    ctx: CtxDep,
    _: ServiceAnalyst,
    by: Annotated[
        Literal["agent", "product"],
        Query(description="agent: who held the ticket when it was rated"),
    ] = "agent",
    interval: Annotated[
        Literal["week", "month", "quarter"], Query(description="the period of each row")
    ] = "month",
    since: Since = None,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await service.csat(conn, by, interval, since)
    return {"by": by, "interval": interval, "scale": "1-5", "rows": rows}


@marketing_router.get(
    "/campaigns/{campaign_id}/funnel",
    summary="sent → delivered → opened → clicked → lead → deal → won revenue",
    response_model=schemas.Funnel,
    responses={
        **schemas.ok(schemas.FUNNEL_EXAMPLE),
        **schemas.not_found("no message of the campaign has been seen"),
    },
)
async def campaign_funnel(
    campaign_id: Annotated[str, Path(description="the marketing campaign's id")],
    ctx: CtxDep,
    _: MarketingAnalyst,
    window_days: Annotated[int, Query(ge=1, le=365, description="attribution window")] = 30,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        result = await marketing.funnel(conn, campaign_id, window_days)
    if result["channel"] is None:  # no message of it was seen
        raise NotFound(f"no message of campaign {campaign_id} has been seen")
    return result


@marketing_router.get(
    "/open-rates",
    summary="Open rate per message, underperformers flagged against their peers",
    response_model=schemas.OpenRates,
    responses=schemas.ok(schemas.OPEN_RATES_EXAMPLE),
)
async def open_rates(
    ctx: CtxDep,
    _: MarketingAnalyst,
    since: Since = None,
    min_sent: Annotated[
        int, Query(ge=1, description="only messages sent at least this many times")
    ] = 20,
    min_ratio: Annotated[
        float, Query(gt=0, lt=1, description="flag below this share of the peers' median")
    ] = 0.7,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await marketing.open_rates(conn, since, min_sent, min_ratio)
    return {"min_sent": min_sent, "min_ratio": min_ratio, "messages": rows}


@marketing_router.get(
    "/leads-by-source",
    summary="Lead volume and quality (qualified, converted, won) per source",
    response_model=schemas.LeadsBySource,
    responses=schemas.ok(schemas.LEADS_BY_SOURCE_EXAMPLE),
)
async def leads_by_source(ctx: CtxDep, _: MarketingAnalyst, since: Since = None) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return {"sources": await marketing.leads_by_source(conn, since)}


MANAGERS = ("admin", "analyst", "sales_manager", "service_manager")


@retention_router.get(
    "/analytics/customers/at-risk",
    summary="Customers by churn risk with the factors that explain it, per owner",
    response_model=schemas.AtRisk,
    responses=schemas.ok(schemas.AT_RISK_EXAMPLE),
)
async def customers_at_risk(
    ctx: CtxDep,
    user: CurrentUser,
    owner_id: Annotated[str | None, Query(description="default for reps: themselves")] = None,
    min_score: Annotated[
        int, Query(ge=0, le=100, description="leave out customers scoring below this")
    ] = 30,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many customers")] = 100,
) -> dict[str, Any]:
    manager = any(r in MANAGERS for r in user.roles)
    if not manager:
        if "sales_rep" not in user.roles:
            raise Forbidden("only reps (their own customers), managers and analysts")
        if owner_id not in (None, user.user_id):
            raise Forbidden("reps see their own customers only")
        owner_id = user.user_id
    async with ctx.pool.acquire() as conn:
        rows = await churn.at_risk(conn, datetime.now(UTC), owner_id, min_score, limit)
    return {"owner_id": owner_id, "min_score": min_score, "customers": rows}


@retention_router.get(
    "/customers/{customer_id}/churn-risk",
    summary="One customer's churn risk with the factors that explain it",
    response_model=schemas.CustomerChurnRisk,
    responses=schemas.ok(schemas.CHURN_RISK_EXAMPLE),
)
async def customer_churn_risk(
    customer_id: Annotated[str, Path(description="any of the customer's ids (merges followed)")],
    ctx: CtxDep,
    user: access.CustomerReader,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        root, ids = await customer_ids(conn, customer_id)
        await access.check_customer(conn, user, root, ids)
        risk = churn.churn_risk(
            datetime.now(UTC), await churn.signals(conn, ids, datetime.now(UTC))
        )
    return {"customer_id": root, **churn.as_json(risk)}
