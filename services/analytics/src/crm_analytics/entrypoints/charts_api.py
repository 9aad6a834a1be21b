"""/analytics/charts/*: the sales analytics as chart-ready series (see crm_analytics.charts)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from crm_analytics import charts, sales
from crm_analytics.access import AnalyticsReader
from crm_analytics.entrypoints import schemas
from crm_analytics.entrypoints.common import YEARS, AsOf, month_of, year_of
from crm_runtime.http.app import CtxDep

router = APIRouter(prefix="/analytics/charts", tags=["charts"])

# Every chart has the same shape (schemas.Chart): amounts in major units of the base currency.
CHART: dict[str, Any] = {
    "response_model": schemas.Chart,
    "responses": schemas.ok(schemas.CHART_EXAMPLE),
}


@router.get("/pipeline-by-stage", summary="Open pipeline (amount and weighted) per stage", **CHART)
async def pipeline_by_stage(ctx: CtxDep, _: AnalyticsReader, as_of: AsOf) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await sales.pipeline(conn, "stage", as_of)
    return charts.pipeline_by_stage(rows, ctx.settings.base_currency)


@router.get(
    "/forecast", summary="Forecast per quarter against what was won the year before", **CHART
)
async def forecast(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    year: Annotated[
        int | None, Query(ge=YEARS[0], le=YEARS[1], description="default: this year (as_of's)")
    ] = None,
    product_id: Annotated[str | None, Query(description="only this product's lines")] = None,
) -> dict[str, Any]:
    y = year_of(year, as_of)
    async with ctx.pool.acquire() as conn:
        quarters = await sales.forecast(conn, y, Decimal("0.2"), product_id, as_of)
    return charts.forecast(y, quarters, ctx.settings.base_currency)


@router.get("/win-rate", summary="Win rate per month of closing", **CHART)
async def win_rate(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    until: Annotated[
        str | None,
        Query(
            pattern=r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])$",
            description="last month, YYYY-MM, 1970-2199 (default: this month, or as_of's)",
        ),
    ] = None,
    months: Annotated[int, Query(ge=1, le=120, description="how many months up to `until`")] = 12,
) -> dict[str, Any]:
    last = datetime.strptime(until, "%Y-%m").date() if until else month_of(as_of)
    y, m = divmod(last.year * 12 + last.month - 1 - (months - 1), 12)
    async with ctx.pool.acquire() as conn:
        rows = await sales.win_rate_by_month(conn, date(y, m + 1, 1), months, as_of)
    return charts.win_rate(rows)


@router.get(
    "/stage-conversion", summary="Share of the deals entering each stage that moved on", **CHART
)
async def stage_conversion(
    ctx: CtxDep,
    _: AnalyticsReader,
    as_of: AsOf,
    pipeline_id: Annotated[str, Query(description="the pipeline's id")] = "default",
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await sales.stages(conn, pipeline_id, as_of)
    return charts.stage_conversion(pipeline_id, rows)
