"""/triggers: define, change, pause and resume event-based triggers; their episodes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.marketing_campaigns import TriggerRule
from crm_marketing.campaigns.http import (
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    Marketer,
    after_of,
    history,
    next_cursor,
)
from crm_marketing.triggers.application import TriggerHandlers, _rule
from crm_marketing.triggers.domain import Trigger
from crm_runtime.db import Conn
from crm_runtime.errors import NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientAwareTime, Name, NotBlank
from crm_runtime.http.pagination import Page

router = APIRouter(prefix="/triggers", tags=["triggers"])

_EXAMPLE: dict[str, Any] = {
    "name": "Phone browsers",
    "rule": {
        "category": "phones",
        "min_views": 3,
        "within_seconds": 604800,
        "require_no_purchase": True,
        "template_id": "tpl-phones-offer",
        "channel": "email",
        "delay_seconds": 3600,
        "cooldown_seconds": 2592000,
    },
}


class TriggerRuleIn(TriggerRule):
    """A trigger's rule as a client sends it (the event's ``TriggerRule``, its category and
    template id checked)."""

    category: Annotated[str, Field(min_length=1, max_length=200), NotBlank]
    template_id: Annotated[str, Field(min_length=1, max_length=100), NotBlank]

    def to_rule(self) -> TriggerRule:
        return TriggerRule(**self.model_dump())


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: Name
    rule: TriggerRuleIn


class TriggerOut(BaseModel):
    id: str
    name: str
    rule: TriggerRule
    active: bool
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class EpisodeOut(BaseModel):
    episode_id: str
    customer_id: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    fired: bool
    message_id: str | None


def _from_row(r: Any) -> TriggerOut:
    return TriggerOut(
        id=r["trigger_id"],
        name=r["name"],
        rule=_rule(r),
        active=r["active"],
        version=r["version"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _from_aggregate(t: Trigger) -> TriggerOut:
    assert t.rule is not None
    return TriggerOut(id=t.id, name=t.name, rule=t.rule, active=t.active, version=t.version)


async def _row(conn: Conn, trigger_id: str) -> Any:
    row = await conn.fetchrow("SELECT * FROM triggers WHERE trigger_id = $1", trigger_id)
    if row is None:
        raise NotFound(f"trigger {trigger_id} does not exist")
    return row


@router.post("", status_code=201, response_model=TriggerOut, summary="Define a trigger")
async def define_trigger(
    body: TriggerIn, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        t = await TriggerHandlers(ctx.store).define(
            conn, body.name, body.rule.to_rule(), metadata_for(user), datetime.now(UTC)
        )
        return CommandResult(
            201,
            _from_row(await _row(conn, t.id)),
            {"ETag": etag(t.version), "Location": f"/triggers/{t.id}"},
        )

    return await run_command(ctx, user, idempotency_key, body, command)


@router.get("", response_model=Page[TriggerOut], summary="Triggers, newest first")
async def list_triggers(
    ctx: CtxDep,
    user: Marketer,
    active: bool | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TriggerOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM triggers WHERE ($1::boolean IS NULL OR active = $1)"
            " AND ($2::timestamptz IS NULL OR (created_at, trigger_id) < ($2, $3))"
            " ORDER BY created_at DESC, trigger_id DESC LIMIT $4",
            active,
            after[0] if after else None,
            after[1] if after else "",
            limit + 1,
        )
    items = [dict(r) for r in rows]
    return Page(
        items=[_from_row(r) for r in items[:limit]],
        next_cursor=next_cursor(items, limit, "created_at", "trigger_id"),
    )


@router.get("/{trigger_id}", response_model=TriggerOut, summary="A trigger (as_of: in the past)")
async def get_trigger(
    trigger_id: str,
    ctx: CtxDep,
    user: Marketer,
    response: Response,
    as_of: Annotated[ClientAwareTime | None, Query(description="ISO 8601 time with zone")] = None,
) -> TriggerOut:
    if as_of is not None:
        t = await TriggerHandlers(ctx.store).triggers.load(trigger_id, as_of=as_of)
        response.headers["ETag"] = etag(t.version)
        return _from_aggregate(t)
    async with ctx.pool.acquire() as conn:
        row = await _row(conn, trigger_id)
    response.headers["ETag"] = etag(row["version"])
    return _from_row(row)


@router.get("/{trigger_id}/history", response_model=list[HistoryEntry], summary="Its events")
async def trigger_history(trigger_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await TriggerHandlers(ctx.store).triggers.history(trigger_id))


def _command(ctx: CtxDep, user: Marketer, if_match: str | None, action: Any) -> Any:
    async def command(conn: Conn) -> CommandResult:
        t: Trigger = await action(conn, expected_version(if_match))
        return CommandResult(200, _from_row(await _row(conn, t.id)), {"ETag": etag(t.version)})

    return run_command(ctx, user, None, None, command)


@router.put("/{trigger_id}", response_model=TriggerOut, summary="Change a trigger's name or rule")
async def change_trigger(
    trigger_id: str, body: TriggerIn, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    handlers = TriggerHandlers(ctx.store)

    async def action(conn: Conn, expected: int | None) -> Trigger:
        return await handlers.change(
            conn,
            trigger_id,
            body.name,
            body.rule.to_rule(),
            expected=expected,
            metadata=metadata_for(user),
            now=datetime.now(UTC),
        )

    result: JSONResponse = await _command(ctx, user, if_match, action)
    return result


@router.post(
    "/{trigger_id}/pause",
    response_model=TriggerOut,
    summary="Stop firing (open episodes end)",
    responses={409: {"description": "paused already"}},
)
async def pause_trigger(
    trigger_id: str, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    handlers = TriggerHandlers(ctx.store)

    async def action(conn: Conn, expected: int | None) -> Trigger:
        return await handlers.pause(
            conn, trigger_id, expected=expected, metadata=metadata_for(user), now=datetime.now(UTC)
        )

    result: JSONResponse = await _command(ctx, user, if_match, action)
    return result


@router.post(
    "/{trigger_id}/resume",
    response_model=TriggerOut,
    summary="Fire again",
    responses={409: {"description": "active already"}},
)
async def resume_trigger(
    trigger_id: str, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    handlers = TriggerHandlers(ctx.store)

    async def action(conn: Conn, expected: int | None) -> Trigger:
        return await handlers.resume(
            conn, trigger_id, expected=expected, metadata=metadata_for(user), now=datetime.now(UTC)
        )

    result: JSONResponse = await _command(ctx, user, if_match, action)
    return result


@router.get(
    "/{trigger_id}/episodes",
    response_model=Page[EpisodeOut],
    summary="Qualifying episodes, newest first (one firing each)",
)
async def trigger_episodes(
    trigger_id: str,
    ctx: CtxDep,
    user: Marketer,
    customer_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[EpisodeOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        await _row(conn, trigger_id)
        rows = await conn.fetch(
            "SELECT episode_id::text AS episode_id, customer_id, started_at, ended_at, end_reason,"
            " fired, message_id::text AS message_id FROM trigger_episodes"
            " WHERE trigger_id = $1 AND ($2::text IS NULL OR customer_id = $2)"
            " AND ($3::timestamptz IS NULL OR (started_at, episode_id::text) < ($3, $4))"
            " ORDER BY started_at DESC, episode_id::text DESC LIMIT $5",
            trigger_id,
            customer_id,
            after[0] if after else None,
            after[1] if after else "",
            limit + 1,
        )
    items = [dict(r) for r in rows]
    return Page(
        items=[EpisodeOut(**r) for r in items[:limit]],
        next_cursor=next_cursor(items, limit, "started_at", "episode_id"),
    )
