"""/reps, /assignment-rules, /activities and /tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from crm_events.envelope import encode_time
from crm_events.schemas.sales import About, AssignmentRule
from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden, InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime, HappenedAt, Label, Name
from crm_runtime.http.pagination import Page
from crm_runtime.http.params import Instant
from crm_runtime.http.routing import CommandRoute
from crm_runtime.repository import check_version
from crm_sales import access
from crm_sales.adapters import listing
from crm_sales.application.work import RepHandlers, Router, WorkHandlers
from crm_sales.domain.assignment import Rep
from crm_sales.domain.work import Activity, Task
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
from crm_sales.entrypoints.api.schemas import HistoryEntry

reps_router = APIRouter(prefix="/reps", tags=["reps and assignment"], route_class=CommandRoute)
rules_router = APIRouter(
    prefix="/assignment-rules", tags=["reps and assignment"], route_class=CommandRoute
)
activities_router = APIRouter(prefix="/activities", tags=["activities"], route_class=CommandRoute)
tasks_router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=CommandRoute)

# --- reps -----------------------------------------------------------------------------------


class RepProfile(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "alice@crm.example",
                    "team_id": "emea",
                    "regions": ["EMEA"],
                    "product_lines": ["analytics"],
                }
            ]
        },
    )

    email: EmailStr | None = Field(default=None, description="where reminders are sent")
    team_id: str | None = Field(default=None, max_length=100)
    regions: list[Label] = Field(default_factory=list, max_length=50)
    product_lines: list[Label] = Field(default_factory=list, max_length=50)


class Availability(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"available": False, "reason": "holiday"}]}
    )

    available: bool
    reason: str | None = Field(default=None, max_length=200)


class RepOut(RepProfile):
    model_config = ConfigDict(extra="forbid")

    # as stored: the input rules of RepProfile (trimmed, not blank) came later than some rows
    regions: list[str] = Field(default_factory=list)
    product_lines: list[str] = Field(default_factory=list)

    user_id: str
    available: bool
    unavailable_reason: str | None
    version: int


def rep_out(rep: Rep) -> dict[str, Any]:
    return RepOut(
        user_id=rep.id,
        email=rep.email,
        team_id=rep.team_id,
        regions=rep.regions,
        product_lines=rep.product_lines,
        available=rep.available,
        unavailable_reason=rep.unavailable_reason,
        version=rep.version,
    ).model_dump(mode="json")


def _self_or_manager(user: Principal, user_id: str) -> None:
    if user.user_id != user_id and not user.has("sales_manager"):
        raise Forbidden("only the rep itself or a sales manager may change this profile")


@reps_router.get("", summary="Reps with their routing profile and availability")
async def list_reps(ctx: CtxDep, user: SalesUser) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM reps ORDER BY user_id")
    return [{k: (list(v) if isinstance(v, list) else v) for k, v in dict(r).items()} for r in rows]


@reps_router.get("/{user_id}", response_model=RepOut, summary="A rep's profile")
async def get_rep(user_id: str, ctx: CtxDep, user: SalesUser, response: Response) -> dict[str, Any]:
    try:
        rep = await RepHandlers(ctx.store).reps.load(user_id)
    except NotFound:
        raise NotFound(f"rep {user_id} has no profile") from None
    response.headers["ETag"] = etag(rep.version)
    return rep_out(rep)


@reps_router.put("/{user_id}", response_model=RepOut, summary="Set a rep's profile (routing)")
async def put_rep(
    user_id: str, body: RepProfile, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    _self_or_manager(user, user_id)
    handlers = RepHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        if not user.has("sales_manager"):  # a rep keeps its e-mail current, nothing else
            current = await handlers.load_or_new(conn, user_id)
            routing = (body.team_id, sorted(set(body.regions)), sorted(set(body.product_lines)))
            if routing != (current.team_id, current.regions, current.product_lines):
                raise Forbidden(
                    "a rep may change its own e-mail; team, regions and product lines decide "
                    "routing and are set by a sales manager"
                )
        rep = await handlers.set_profile(
            conn,
            user_id,
            metadata_for(user),
            email=str(body.email) if body.email else None,
            team_id=body.team_id,
            regions=body.regions,
            product_lines=body.product_lines,
            expected=expected_version(if_match),
        )
        return CommandResult(200, rep_out(rep), {"ETag": etag(rep.version)})

    return await run_command(ctx, user, None, None, command)


@reps_router.post(
    "/{user_id}/availability",
    response_model=RepOut,
    summary="Mark a rep available or unavailable (unavailable reps get nothing new)",
)
async def set_availability(
    user_id: str, body: Availability, ctx: CtxDep, user: SalesUser
) -> JSONResponse:
    _self_or_manager(user, user_id)
    handlers = RepHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        rep = await handlers.set_availability(
            conn, user_id, body.available, body.reason, metadata_for(user)
        )
        return CommandResult(200, rep_out(rep), {"ETag": etag(rep.version)})

    return await run_command(ctx, user, None, None, command)


# --- assignment rules -----------------------------------------------------------------------


class Rules(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rules": [
                        {
                            "rule_id": "emea-analytics",
                            "applies_to": ["lead", "deal"],
                            "region": "EMEA",
                            "product_line": "analytics",
                            "strategy": "least_open",
                        },
                        {"rule_id": "fallback", "applies_to": ["lead"], "strategy": "round_robin"},
                    ]
                }
            ]
        },
    )

    rules: list[AssignmentRule] = Field(
        max_length=200, description="evaluated in order; the first that matches and has a rep wins"
    )


class RulesOut(Rules):
    version: int


@rules_router.get("", response_model=RulesOut, summary="The assignment rules, in order")
async def get_rules(ctx: CtxDep, user: SalesUser, response: Response) -> RulesOut:
    async with ctx.pool.acquire() as conn:
        current = await Router(ctx.store).current_rules(conn)
    response.headers["ETag"] = etag(current.version)
    return RulesOut(rules=current.rules, version=current.version)


@rules_router.put("", response_model=RulesOut, summary="Replace the assignment rules")
async def put_rules(
    body: Rules, ctx: CtxDep, user: Manager, if_match: IfMatch = None
) -> JSONResponse:
    router = Router(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        current = await router.set_rules(
            conn, body.rules, metadata_for(user), expected_version(if_match)
        )
        return CommandResult(
            200,
            RulesOut(rules=current.rules, version=current.version),
            {"ETag": etag(current.version)},
        )

    return await run_command(ctx, user, None, None, command)


# --- activities -----------------------------------------------------------------------------


class AboutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: str | None = None
    account_id: str | None = None
    deal_id: str | None = None


class ActivityIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "call",
                    "subject": "Discovery call",
                    "body": "Talked about the rollout plan",
                    "duration_minutes": 30,
                    "direction": "outbound",
                    "outcome": "demo booked",
                    "about": {"contact_id": "…", "deal_id": "…"},
                }
            ]
        },
    )

    kind: Literal["call", "meeting", "email", "note"]
    subject: Name
    body: str | None = Field(default=None, max_length=20_000)
    occurred_at: HappenedAt | None = Field(
        default=None, description="defaults to now; at most 1 day ahead (clock skew)"
    )
    duration_minutes: int | None = Field(default=None, ge=0, le=24 * 60)
    direction: Literal["inbound", "outbound"] | None = None
    outcome: str | None = Field(default=None, max_length=200)
    about: AboutIn


def activity_out(a: Activity) -> dict[str, Any]:
    assert a.logged is not None
    return {"id": a.id, **a.logged.model_dump(mode="json"), "version": a.version}


async def _check_about(user: Principal, records: list[Any]) -> None:
    for record in records:
        access.check_record_read(user, record)


@activities_router.post("", status_code=201, summary="Log a call, meeting, e-mail or note")
async def log_activity(
    body: ActivityIn, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = WorkHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        about, customer, records = await handlers.resolve(conn, About(**body.about.model_dump()))
        await _check_about(user, records)
        occurred = body.occurred_at or datetime.now(UTC)
        if occurred.tzinfo is None:
            raise InvalidInput("occurred_at", "needs a time zone, e.g. 2026-11-25T10:00:00Z")
        a = await handlers.log_activity(
            conn,
            metadata_for(user),
            about=about,
            customer_id=customer,
            kind=body.kind,
            subject=body.subject,
            occurred_at=occurred,
            body=body.body,
            duration_minutes=body.duration_minutes,
            direction=body.direction,
            outcome=body.outcome,
            owner_id=user.user_id,
            team_id=user.team,
        )
        return CommandResult(201, activity_out(a), {"Location": f"/activities/{a.id}"})

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@activities_router.get("", response_model=Page[dict[str, Any]], summary="List activities")
async def list_activities(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    contact_id: str | None = None,
    account_id: str | None = None,
    deal_id: str | None = None,
    kind: Literal["call", "meeting", "email", "note"] | None = None,
) -> Page[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await listing.list_visible(
            conn,
            "activities",
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "deal"),
            unassigned="sales_manager" in user.roles,
            user_id=user.user_id,
            team=user.team,
            filters={
                "contact_id": contact_id,
                "account_id": account_id,
                "deal_id": deal_id,
                "kind": kind,
            },
        )
    items = [list_item(r, "activity_id") for r in rows[:limit]]
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor(rows, limit, "activity_id"))


@activities_router.get("/{activity_id}", summary="Read an activity")
async def get_activity(activity_id: str, ctx: CtxDep, user: SalesUser) -> dict[str, Any]:
    try:
        a = await WorkHandlers(ctx.store).activities.load(activity_id)
    except NotFound:
        raise NotFound(f"activity {activity_id} does not exist") from None
    assert a.logged is not None
    access.check_read(user, "deal", a.logged.owner_id, a.logged.team_id)
    return activity_out(a)


# --- tasks ----------------------------------------------------------------------------------

Priority = Literal["low", "normal", "high"]


class TaskIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Send the proposal",
                    "due_at": "2026-11-28T17:00:00Z",
                    "priority": "high",
                    "about": {"deal_id": "…"},
                }
            ]
        },
    )

    title: Name
    notes: str | None = Field(default=None, max_length=5000)
    due_at: ClientTime | None = None
    assignee_id: str | None = Field(default=None, max_length=100, description="default: you")
    priority: Priority = "normal"
    about: AboutIn = Field(default_factory=AboutIn)


class TaskPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"due_at": "2026-12-01T17:00:00Z", "priority": "high"}]},
    )

    title: Name | None = None
    due_at: ClientTime | None = None
    assignee_id: str | None = Field(default=None, max_length=100)
    priority: Priority | None = None


class Done(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"outcome": "Proposal sent"}]}
    )

    outcome: str | None = Field(default=None, max_length=500)


def task_out(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "notes": t.notes,
        "due_at": encode_time(t.due_at) if t.due_at else None,
        "assignee_id": t.assignee_id,
        "team_id": t.team_id,
        "priority": t.priority,
        "about": t.about.model_dump(),
        "customer_id": t.customer_id,
        "origin": t.origin,
        "done": t.done,
        "outcome": t.outcome,
        "version": t.version,
    }


def _task_result(t: Task, status: int = 200) -> CommandResult:
    return CommandResult(
        status, task_out(t), {"ETag": etag(t.version), "Location": f"/tasks/{t.id}"}
    )


@tasks_router.post("", status_code=201, summary="Create a task (optionally about a record)")
async def create_task(
    body: TaskIn, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    assignee = body.assignee_id or user.user_id
    if assignee != user.user_id and not user.has("sales_manager"):
        raise Forbidden("a sales rep creates tasks for itself; a manager assigns them")
    handlers = WorkHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        about, customer = About(), None
        if body.about.contact_id or body.about.account_id or body.about.deal_id:
            about, customer, records = await handlers.resolve(
                conn, About(**body.about.model_dump())
            )
            await _check_about(user, records)
        task = Task.create(
            str(uuid.uuid4()),
            title=body.title,
            about=about,
            customer_id=customer,
            due_at=body.due_at,
            assignee_id=assignee,
            team_id=user.team,
            priority=body.priority,
            notes=body.notes,
        )
        await handlers.create_task(conn, task, metadata_for(user))
        return _task_result(task, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@tasks_router.get("", response_model=Page[dict[str, Any]], summary="List tasks (yours by default)")
async def list_tasks(
    ctx: CtxDep,
    user: SalesUser,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    assignee_id: str | None = Query(
        default=None, description="default: you; 'any' for all you may see"
    ),
    done: bool | None = None,
    due_before: Instant | None = None,
    account_id: str | None = None,
    deal_id: str | None = None,
) -> Page[dict[str, Any]]:
    assignee = None if assignee_id == "any" else (assignee_id or user.user_id)
    async with ctx.pool.acquire() as conn:
        rows = await listing.list_visible(
            conn,
            "tasks",
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "deal"),
            unassigned="sales_manager" in user.roles,
            user_id=user.user_id,
            team=user.team,
            filters={
                "assignee_id": assignee,
                "done": done,
                "due_before": due_before,
                "account_id": account_id,
                "deal_id": deal_id,
            },
        )
    items = [list_item(r, "task_id") for r in rows[:limit]]
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor(rows, limit, "task_id"))


async def _task(handlers: WorkHandlers, task_id: str, conn: Conn | None = None) -> Task:
    try:
        return await handlers.tasks.load(task_id, conn=conn)
    except NotFound:
        raise NotFound(f"task {task_id} does not exist") from None


@tasks_router.get("/{task_id}", summary="Read a task")
async def get_task(
    task_id: str, ctx: CtxDep, user: SalesUser, response: Response
) -> dict[str, Any]:
    t = await _task(WorkHandlers(ctx.store), task_id)
    access.check_read(user, "deal", t.assignee_id, t.team_id)
    response.headers["ETag"] = etag(t.version)
    return task_out(t)


@tasks_router.get(
    "/{task_id}/history", response_model=list[HistoryEntry], summary="A task's events"
)
async def task_history(task_id: str, ctx: CtxDep, user: SalesUser) -> list[HistoryEntry]:
    handlers = WorkHandlers(ctx.store)
    t = await _task(handlers, task_id)
    access.check_read(user, "deal", t.assignee_id, t.team_id)
    return history(await handlers.tasks.history(task_id))


def _task_command(
    ctx: Any, user: Principal, task_id: str, if_match: str | None, change: Any
) -> Any:
    handlers = WorkHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        t = await _task(handlers, task_id, conn)
        access.check_change(user, "deal", t.assignee_id, t.team_id)
        check_version(expected_version(if_match), t.version)
        change(t)
        await handlers.save_task(conn, t, metadata_for(user))
        return _task_result(t)

    return run_command(ctx, user, None, None, command)


@tasks_router.patch(
    "/{task_id}",
    summary="Change a task's title, due date, assignee or priority (only those sent)",
    description="null clears `due_at` and `assignee_id`; a null `title` or `priority` is a 422.",
)
async def patch_task(
    task_id: str, body: TaskPatch, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    refuse_nulls(body, "title", "priority")  # due_at and assignee_id: null clears
    sent = {k: getattr(body, k) for k in body.model_fields_set}
    if (
        "assignee_id" in sent
        and sent["assignee_id"] != user.user_id
        and not user.has("sales_manager")
    ):
        raise Forbidden("a sales rep cannot give a task to someone else; a manager can")
    result: JSONResponse = await _task_command(
        ctx, user, task_id, if_match, lambda t: t.update(**sent)
    )
    return result


@tasks_router.post("/{task_id}/complete", summary="Mark a task done")
async def complete_task(
    task_id: str, body: Done, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    result: JSONResponse = await _task_command(
        ctx, user, task_id, if_match, lambda t: t.complete(body.outcome)
    )
    return result


@tasks_router.post("/{task_id}/reopen", summary="Reopen a done task")
async def reopen_task(
    task_id: str, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
) -> JSONResponse:
    result: JSONResponse = await _task_command(ctx, user, task_id, if_match, lambda t: t.reopen())
    return result
