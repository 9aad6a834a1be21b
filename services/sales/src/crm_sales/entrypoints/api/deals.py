"""/pipelines, /deals and /exchange-rates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from crm_events.money import is_currency
from crm_events.schemas.sales import DealLine, Stage
from crm_runtime.db import Conn
from crm_runtime.errors import InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.pagination import Page
from crm_runtime.http.params import Instant
from crm_runtime.http.routing import CommandRoute
from crm_sales import access
from crm_sales.adapters import deal_view, listing
from crm_sales.application.deals import DealHandlers, LineRequest
from crm_sales.domain.deal import Deal, Terms, lines_amount
from crm_sales.domain.pipeline import Pipeline
from crm_sales.entrypoints.api.common import (
    IdempotencyKey,
    IfMatch,
    Manager,
    SalesUser,
    after_of,
    history,
    list_item,
    next_cursor,
    refuse_nulls,
)
from crm_sales.entrypoints.api.inputs import CURRENCY_REASON
from crm_sales.entrypoints.api.schemas import (
    Board,
    BoardColumn,
    DealCreate,
    DealPublic,
    DealTerms,
    HistoryEntry,
    LineIn,
    LineOut,
    PipelineCreate,
    PipelinePublic,
    PipelineStages,
    RateIn,
    Reassign,
    StageIn,
    StageMove,
    StageOut,
    StageSpanOut,
)

deals_router = APIRouter(prefix="/deals", tags=["deals"], route_class=CommandRoute)
pipelines_router = APIRouter(prefix="/pipelines", tags=["pipelines"], route_class=CommandRoute)
rates_router = APIRouter(
    prefix="/exchange-rates", tags=["exchange rates"], route_class=CommandRoute
)


def _handlers(ctx: Any) -> DealHandlers:
    return DealHandlers(ctx.store, ctx.settings.base_currency)


def pipeline_out(p: Pipeline) -> dict[str, Any]:
    return PipelinePublic(
        id=p.id,
        name=p.name,
        stages=[StageOut.model_validate(s.model_dump()) for s in p.stages],  # as stored
        version=p.version,
    ).model_dump(mode="json")


def _stages(items: list[StageIn]) -> list[Stage]:
    return [Stage.model_validate(s.model_dump()) for s in items]


# --- pipelines ------------------------------------------------------------------------------


@pipelines_router.get("", response_model=list[PipelinePublic], summary="List pipelines")
async def list_pipelines(ctx: CtxDep, user: SalesUser) -> list[dict[str, Any]]:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn:
        await handlers.pipeline(conn, None)  # the default exists from the first look
        ids = await conn.fetch(
            "SELECT DISTINCT substr(stream_id, 10) AS id FROM events"
            " WHERE stream_type = 'pipeline' ORDER BY 1"
        )
    return [pipeline_out(await handlers.pipelines.load(r["id"])) for r in ids]


@pipelines_router.post(
    "", status_code=201, response_model=PipelinePublic, summary="Define a pipeline"
)
async def create_pipeline(
    body: PipelineCreate, ctx: CtxDep, user: Manager, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        p = await handlers.define_pipeline(
            conn, body.name, _stages(body.stages), metadata_for(user)
        )
        return CommandResult(
            201, pipeline_out(p), {"ETag": etag(p.version), "Location": f"/pipelines/{p.id}"}
        )

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@pipelines_router.get("/{pipeline_id}", response_model=PipelinePublic, summary="Read a pipeline")
async def get_pipeline(
    pipeline_id: str, ctx: CtxDep, user: SalesUser, response: Response
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        p = await _handlers(ctx).pipeline(conn, pipeline_id)
    response.headers["ETag"] = etag(p.version)
    return pipeline_out(p)


@pipelines_router.put(
    "/{pipeline_id}/stages",
    response_model=PipelinePublic,
    summary="Replace a pipeline's stages (a stage with open deals cannot be removed)",
)
async def put_stages(
    pipeline_id: str, body: PipelineStages, ctx: CtxDep, user: Manager, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        p = await handlers.change_stages(
            conn, pipeline_id, _stages(body.stages), metadata_for(user), expected_version(if_match)
        )
        return CommandResult(200, pipeline_out(p), {"ETag": etag(p.version)})

    return await run_command(ctx, user, None, None, command)


@pipelines_router.get(
    "/{pipeline_id}/board",
    response_model=Board,
    summary="Deals per stage with amounts in the base currency, weighted by win probability",
)
async def pipeline_board(pipeline_id: str, ctx: CtxDep, user: SalesUser) -> Board:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn:
        p = await handlers.pipeline(conn, pipeline_id)
        rows = {
            r["stage"]: r
            for r in await deal_view.board(
                conn,
                p.id,
                see_all=access.sees_all(user, "deal"),
                user_id=user.user_id,
                team=user.team,
            )
        }
    columns = []
    for s in p.stages:
        r = rows.get(s.key)
        columns.append(
            BoardColumn(
                stage=s.key,
                name=s.name,
                probability=s.probability,
                outcome=s.outcome,
                deals=int(r["deals"]) if r else 0,
                amount_base_minor=_minor(r["amount_base"]) if r else 0,
                weighted_base_minor=_minor(r["weighted_base"]) if r else 0,
            )
        )
    return Board(pipeline_id=p.id, base_currency=handlers.base_currency, columns=columns)


def _minor(value: Any) -> int:
    return int(Decimal(value or 0).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- deals ----------------------------------------------------------------------------------


def deal_out(d: Deal, spans: list[StageSpanOut] | None = None) -> dict[str, Any]:
    return DealPublic(
        id=d.id,
        customer_id=d.customer_id,
        name=d.name,
        pipeline_id=d.pipeline_id,
        stage=d.stage,
        status=d.status,
        probability=d.probability,
        amount_minor=d.amount_minor,
        currency=d.currency,
        base_currency=d.base_currency,
        exchange_rate=d.exchange_rate,
        expected_close=d.expected_close,
        owner_id=d.owner_id,
        team_id=d.team_id,
        account_id=d.account_id,
        contact_id=d.contact_id,
        lead_id=d.lead_id,
        source=d.source,
        lines=[LineOut.model_validate(line.model_dump()) for line in d.lines],  # as stored
        close_reason=d.close_reason,
        stage_history=spans,
        version=d.version,
    ).model_dump(mode="json")


def _line_requests(items: list[LineIn]) -> list[LineRequest]:
    return [LineRequest(**item.model_dump()) for item in items]


def _check_amount(amount_minor: int, lines: list[DealLine]) -> None:
    """An amount sent for a deal with line items must be what they add up to: it is not kept
    otherwise, and a 200 that changed nothing would hide that."""
    if lines and amount_minor != lines_amount(lines):
        raise InvalidInput(
            "amount_minor",
            f"the deal has line items: its amount is their sum ({lines_amount(lines)}); change "
            'the lines, or send "lines": [] to set an amount of your own',
        )


def _result(d: Deal, status: int = 200) -> CommandResult:
    return CommandResult(
        status, deal_out(d), {"ETag": etag(d.version), "Location": f"/deals/{d.id}"}
    )


@deals_router.post(
    "",
    status_code=201,
    response_model=DealPublic,
    summary="Open a deal for a contact or an account",
    responses={422: {"description": "invalid field, or no exchange rate for the currency"}},
)
async def create_deal(
    body: DealCreate, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    if body.owner_id not in (None, user.user_id) and not user.has("sales_manager"):
        raise InvalidInput("owner_id", "a sales rep opens deals for itself")
    # A rep's deal is its own; a manager's without an owner goes through the assignment rules.
    owner = body.owner_id or (None if user.has("sales_manager") else user.user_id)
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        parties = await handlers.parties(
            conn, body.contact_id, body.account_id, lambda r: access.check_record_read(user, r)
        )
        lines = await handlers.priced_lines(conn, _line_requests(body.lines), body.currency)
        if "amount_minor" in body.model_fields_set:
            _check_amount(body.amount_minor, lines)
        d = await handlers.open(
            conn,
            metadata_for(user),
            customer_id=parties.customer_id,
            name=body.name,
            amount_minor=body.amount_minor,
            currency=body.currency,
            expected_close=body.expected_close,
            lines=lines,
            pipeline_id=body.pipeline_id,
            stage=body.stage,
            owner_id=owner,
            team_id=user.team,
            account_id=body.account_id,
            contact_id=body.contact_id,
            region=parties.region,
            product_line=body.product_line,
        )
        return _result(d, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@deals_router.get("", response_model=Page[dict[str, Any]], summary="List deals, newest first")
async def list_deals(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    pipeline_id: str | None = None,
    stage: str | None = None,
    status: Literal["open", "won", "lost"] | None = None,
    owner_id: str | None = None,
    account_id: str | None = None,
    contact_id: str | None = None,
) -> Page[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await listing.list_visible(
            conn,
            "deals",
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "deal"),
            unassigned="sales_manager" in user.roles,
            user_id=user.user_id,
            team=user.team,
            filters={
                "pipeline_id": pipeline_id,
                "stage": stage,
                "status": status,
                "owner_id": owner_id,
                "account_id": account_id,
                "contact_id": contact_id,
            },
        )
    items = [list_item(r, "deal_id") for r in rows[:limit]]
    for row in items:
        row["amount_base"] = str(row["amount_base"])  # exact, in the base currency's minor unit
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor(rows, limit, "deal_id"))


async def _deal(handlers: DealHandlers, deal_id: str, as_of: datetime | None = None) -> Deal:
    try:
        return await handlers.deals.load(deal_id, as_of=as_of)
    except NotFound:
        raise NotFound(
            f"deal {deal_id} does not exist" + (f" as of {as_of}" if as_of else "")
        ) from None


async def _spans(
    handlers: DealHandlers, deal_id: str, as_of: datetime | None
) -> list[StageSpanOut]:
    """Time in each stage, from the stage-change events."""
    events = await handlers.store.read_stream(f"deal-{deal_id}", as_of=as_of)
    spans: list[StageSpanOut] = []
    end = as_of or datetime.now(UTC)
    for e in events:
        if e.type == "crm.sales.deal.opened":
            spans.append(
                StageSpanOut(
                    stage=e.data["stage"], entered_at=e.occurred_at, left_at=None, seconds=0
                )
            )
        elif e.type == "crm.sales.deal.stage_changed" and spans:
            spans[-1].left_at = e.occurred_at
            spans.append(
                StageSpanOut(
                    stage=e.data["to_stage"], entered_at=e.occurred_at, left_at=None, seconds=0
                )
            )
        elif e.type in ("crm.sales.deal.won", "crm.sales.deal.lost") and spans:
            spans[-1].left_at = spans[-1].left_at or e.occurred_at
    for s in spans:
        s.seconds = ((s.left_at or end) - s.entered_at).total_seconds()
    return spans


@deals_router.get(
    "/{deal_id}", response_model=DealPublic, summary="Read a deal, with time in each stage"
)
async def get_deal(
    deal_id: str,
    ctx: CtxDep,
    user: SalesUser,
    response: Response,
    as_of: Annotated[Instant | None, Query(description="ISO 8601 time with zone")] = None,
) -> dict[str, Any]:
    handlers = _handlers(ctx)
    d = await _deal(handlers, deal_id, as_of)
    access.check_read(user, "deal", d.owner_id, d.team_id)
    response.headers["ETag"] = etag(d.version)
    return deal_out(d, await _spans(handlers, deal_id, as_of))


@deals_router.get(
    "/{deal_id}/history", response_model=list[HistoryEntry], summary="A deal's events"
)
async def deal_history(deal_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    d = await _deal(handlers, deal_id)
    access.check_read(user, "deal", d.owner_id, d.team_id)
    return history(await handlers.deals.history(deal_id))


@deals_router.post(
    "/{deal_id}/stage",
    response_model=DealPublic,
    summary="Move a deal to a stage (won/lost close it; lost needs a reason)",
    responses={409: {"description": "closed deal, unknown stage, same stage"}},
)
async def move_deal(
    deal_id: str, body: StageMove, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        d = await _deal_in(handlers, conn, deal_id)
        access.check_change(user, "deal", d.owner_id, d.team_id)
        d = await handlers.move(
            conn, d, body.stage, body.reason, metadata_for(user), expected_version(if_match)
        )
        return _result(d)

    return await run_command(ctx, user, None, None, command)


async def _deal_in(handlers: DealHandlers, conn: Conn, deal_id: str) -> Deal:
    try:
        return await handlers.deals.load(deal_id, conn=conn)
    except NotFound:
        raise NotFound(f"deal {deal_id} does not exist") from None


@deals_router.patch(
    "/{deal_id}",
    response_model=DealPublic,
    summary="Change a deal's terms (only the fields sent)",
    description="null clears `expected_close`; a null `name`, `amount_minor`, `currency` or "
    "`lines` is a 422 (`lines: []` removes the lines). A deal with line items has their sum as "
    "its amount: an `amount_minor` that differs from it is a 422.",
    responses={409: {"description": "the deal is closed"}},
)
async def patch_deal(
    deal_id: str, body: DealTerms, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    refuse_nulls(body, "name", "amount_minor", "currency", "lines")  # expected_close: null clears
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        d = await _deal_in(handlers, conn, deal_id)
        access.check_change(user, "deal", d.owner_id, d.team_id)
        sent = body.model_fields_set
        currency = body.currency or d.currency
        lines = (
            await handlers.priced_lines(conn, _line_requests(body.lines), currency)
            if body.lines is not None
            else d.lines
        )
        if body.amount_minor is not None and not d.is_closed:  # closed: the 409 says why
            _check_amount(body.amount_minor, lines)
        terms = Terms(
            name=body.name or d.name,
            amount_minor=body.amount_minor if body.amount_minor is not None else d.amount_minor,
            currency=currency,
            exchange_rate=d.exchange_rate,
            expected_close=body.expected_close if "expected_close" in sent else d.expected_close,
            lines=lines,
        )
        d = await handlers.change_terms(
            conn, d, terms, metadata_for(user), expected_version(if_match)
        )
        return _result(d)

    return await run_command(ctx, user, None, None, command)


@deals_router.post("/{deal_id}/reassign", response_model=DealPublic, summary="Reassign a deal")
async def reassign_deal(
    deal_id: str, body: Reassign, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    owner = body.owner_id

    async def command(conn: Conn) -> CommandResult:
        d = await _deal_in(handlers, conn, deal_id)
        access.check_change(user, "deal", d.owner_id, d.team_id)
        team = body.team_id if body.team_id is not None else d.team_id
        d = await handlers.reassign(
            conn, d, owner, team, metadata_for(user), expected_version(if_match)
        )
        return _result(d)

    return await run_command(ctx, user, None, None, command)


# --- exchange rates -------------------------------------------------------------------------


@rates_router.get("", summary="Exchange rates to the base currency")
async def list_rates(ctx: CtxDep, user: SalesUser) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        rows = await deal_view.rates(conn)
    return {
        "base_currency": ctx.settings.base_currency,
        "rates": [
            {"currency": r["currency"], "rate": str(r["rate"]), "set_at": r["set_at"]} for r in rows
        ],
    }


@rates_router.put("/{currency}", status_code=204, summary="Set an exchange rate (new deals use it)")
async def put_rate(currency: str, body: RateIn, ctx: CtxDep, user: Manager) -> Response:
    if not is_currency(currency):
        raise InvalidInput("currency", CURRENCY_REASON)
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        await handlers.set_rate(conn, currency, body.rate, metadata_for(user))
        return CommandResult(204, None)

    await run_command(ctx, user, None, None, command)
    return Response(status_code=204)
