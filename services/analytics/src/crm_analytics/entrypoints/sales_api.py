"""/analytics/sales/*: pipeline, forecast against last year, win rate and cycle, stages,
coverage and cross-sell rules — now, or ``as_of`` a past time (from the event history)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from crm_analytics import crosssell, sales
from crm_analytics.access import AnalyticsReader
from crm_analytics.entrypoints import schemas
from crm_analytics.entrypoints.common import YEARS, AsOf, year_of
from crm_runtime.http.app import CtxDep

router = APIRouter(prefix="/analytics/sales", tags=["sales analytics"])

MinSupport = Annotated[
    Decimal, Query(ge=0, le=1, description="least share of won deals holding both products")
]
MinConfidence = Annotated[
    Decimal, Query(ge=0, le=1, description="least share of A's won deals that also hold B")
]


@router.get(
    "/pipeline",
    summary="Open pipeline by stage, owner, region or pipeline",
    response_model=schemas.Pipeline,
    responses=schemas.ok(schemas.PIPELINE_EXAMPLE),
)
async def pipeline(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    group_by: Annotated[
        Literal["stage", "owner", "region", "pipeline"],
        Query(description="region: the customer's current region"),
    ] = "stage",
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await sales.pipeline(conn, group_by, as_of)
    return {
        "group_by": group_by,
        "as_of": as_of,
        "base_currency": ctx.settings.base_currency,
        "rows": rows,
    }


@router.get(
    "/forecast",
    summary="Forecast per quarter (won + weighted open deals) against the same quarter last year",
    response_model=schemas.Forecast,
    responses=schemas.ok(schemas.FORECAST_EXAMPLE),
)
async def forecast(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    year: Annotated[
        int | None, Query(ge=YEARS[0], le=YEARS[1], description="default: this year (as_of's year)")
    ] = None,
    product_id: Annotated[str | None, Query(description="only this product's lines")] = None,
    drop_threshold: Annotated[
        Decimal, Query(gt=0, lt=1, description="flag a drop larger than this share")
    ] = Decimal("0.2"),
) -> dict[str, Any]:
    y = year_of(year, as_of)
    async with ctx.pool.acquire() as conn:
        quarters = await sales.forecast(conn, y, drop_threshold, product_id, as_of)
    return {
        "year": y,
        "as_of": as_of,
        "product_id": product_id,
        "base_currency": ctx.settings.base_currency,
        "drop_threshold": str(drop_threshold),
        "quarters": quarters,
    }


@router.get(
    "/win-rate",
    summary="Won / (won + lost), and the average sales cycle of won deals",
    response_model=schemas.WinRate,
    responses=schemas.ok(schemas.WIN_RATE_EXAMPLE),
)
async def win_rate(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    since: Annotated[datetime | None, Query(description="closed at or after")] = None,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return {**await sales.win_rate(conn, since, as_of), "as_of": as_of}


@router.get(
    "/stages",
    summary="Per stage: deals that entered, moved on, conversion, time in it",
    response_model=schemas.Stages,
    responses=schemas.ok(schemas.STAGES_EXAMPLE),
)
async def stages(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    pipeline_id: Annotated[str, Query(description="the pipeline's id")] = "default",
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await sales.stages(conn, pipeline_id, as_of)
    return {"pipeline_id": pipeline_id, "as_of": as_of, "stages": rows}


@router.get(
    "/coverage",
    summary="Accounts per owner, and accounts nobody touched for N days (or ever)",
    response_model=schemas.Coverage,
    responses=schemas.ok(schemas.COVERAGE_EXAMPLE),
)
async def coverage(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    untouched_days: Annotated[
        int, Query(ge=1, le=3650, description="untouched: no touch for this many days")
    ] = 30,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        result = await sales.coverage(conn, datetime.now(UTC), untouched_days, as_of)
    return {**result, "as_of": as_of}


@router.get(
    "/cross-sell/rules",
    summary="Association rules A -> B between the products of won deals (support, confidence, "
    "lift)",
    response_model=schemas.Rules,
    responses=schemas.ok(schemas.RULES_EXAMPLE),
)
async def cross_sell_rules(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    min_support: MinSupport = Decimal("0.01"),
    min_confidence: MinConfidence = Decimal("0.1"),
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many rules")] = 100,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        baskets = await crosssell.won_baskets(conn, as_of)
        names = await crosssell.product_names(conn)
    rules = crosssell.association_rules(baskets, Fraction(min_support), Fraction(min_confidence))
    return {
        "as_of": as_of,
        "baskets": len([b for b in baskets if b]),
        "min_support": str(min_support),
        "min_confidence": str(min_confidence),
        "rules": [r.as_dict(names) for r in rules[:limit]],
    }
