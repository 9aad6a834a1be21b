"""/analytics/sales/*: pipeline, forecast against last year, win rate and cycle, stages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from crm_analytics import sales
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal, require

router = APIRouter(prefix="/analytics/sales", tags=["sales analytics"])
Analyst = Annotated[Principal, Depends(require("analyst", "sales_manager"))]


@router.get("/pipeline", summary="Open pipeline by stage, owner, region or pipeline")
async def pipeline(
    ctx: CtxDep,
    _: Analyst,
    group_by: Literal["stage", "owner", "region", "pipeline"] = "stage",
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await sales.pipeline(conn, group_by)
    return {"group_by": group_by, "base_currency": ctx.settings.base_currency, "rows": rows}


@router.get(
    "/forecast",
    summary="Forecast per quarter (won + weighted open deals) against the same quarter last year",
)
async def forecast(
    ctx: CtxDep,
    _: Analyst,
    year: Annotated[int | None, Query(ge=2000, le=2100, description="default: this year")] = None,
    product_id: Annotated[str | None, Query(description="only this product's lines")] = None,
    drop_threshold: Annotated[
        Decimal, Query(gt=0, lt=1, description="flag a drop larger than this share")
    ] = Decimal("0.2"),
) -> dict[str, Any]:
    y = year or datetime.now(UTC).year
    async with ctx.pool.acquire() as conn:
        quarters = await sales.forecast(conn, y, drop_threshold, product_id)
    return {
        "year": y,
        "product_id": product_id,
        "base_currency": ctx.settings.base_currency,
        "drop_threshold": str(drop_threshold),
        "quarters": quarters,
    }


@router.get("/win-rate", summary="Won / (won + lost), and the average sales cycle of won deals")
async def win_rate(
    ctx: CtxDep,
    _: Analyst,
    since: Annotated[datetime | None, Query(description="closed at or after")] = None,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return await sales.win_rate(conn, since)


@router.get("/stages", summary="Per stage: deals that entered, moved on, conversion, time in it")
async def stages(ctx: CtxDep, _: Analyst, pipeline_id: str = "default") -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return {"pipeline_id": pipeline_id, "stages": await sales.stages(conn, pipeline_id)}


@router.get(
    "/coverage", summary="Accounts per owner, and accounts nobody touched for N days (or ever)"
)
async def coverage(
    ctx: CtxDep,
    _: Analyst,
    untouched_days: Annotated[int, Query(ge=1, le=3650)] = 30,
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return await sales.coverage(conn, datetime.now(UTC), untouched_days)
