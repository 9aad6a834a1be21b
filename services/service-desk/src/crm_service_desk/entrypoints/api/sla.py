"""/calendars, /sla-policies, /escalation-rules, and the SLA state of tickets (/sla/...)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.service_routing import EscalationRule, Holiday, WorkingHours
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
from crm_runtime.http.inputs import ClientDate, ClientTime, Name
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.repository import Repository
from crm_service_desk.adapters import sla_view
from crm_service_desk.application import sla
from crm_service_desk.domain.calendar import Calendar
from crm_service_desk.domain.escalation import RULES_ID, EscalationRules
from crm_service_desk.domain.sla import SlaPolicy, TicketSla
from crm_service_desk.entrypoints.api.agents import (
    AsOf,
    ConfigId,
    ConfigReader,
    HistoryEntry,
    IfMatch,
    Limit,
    ServiceManager,
    history_of,
    load_as_of,
    saved,
)

router = APIRouter(tags=["SLAs and escalation"])

PriorityPath = Annotated[Literal["low", "normal", "high", "urgent"], Path()]


# --- calendars --------------------------------------------------------------------------------


class HolidayIn(BaseModel):
    """A holiday as a client sends it (the event's ``Holiday``, with the day checked)."""

    model_config = ConfigDict(extra="forbid")

    day: ClientDate
    name: str | None = None


class CalendarIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Berlin office",
                    "timezone": "Europe/Berlin",
                    "hours": [
                        {"weekday": d, "intervals": [["09:00", "12:30"], ["13:30", "17:00"]]}
                        for d in ("mon", "tue", "wed", "thu", "fri")
                    ],
                    "holidays": [{"day": "2026-12-25", "name": "Christmas Day"}],
                }
            ]
        },
    )

    name: Name
    timezone: str = Field(min_length=1, max_length=64, description="IANA name")
    hours: list[WorkingHours] = Field(
        max_length=7, description="weekdays not listed have no working time"
    )
    holidays: list[HolidayIn] = Field(default_factory=list, max_length=1000)


class CalendarOut(BaseModel):
    calendar_id: str
    name: str
    timezone: str
    hours: list[WorkingHours]
    holidays: list[Holiday]
    version: int


def calendar_out(c: Calendar) -> CalendarOut:
    d = c.definition
    assert d is not None
    return CalendarOut(
        calendar_id=c.id,
        name=d.name,
        timezone=d.timezone,
        hours=d.hours,
        holidays=d.holidays,
        version=c.version,
    )


@router.get("/calendars", response_model=list[CalendarOut], summary="Business-hours calendars")
async def list_calendars(ctx: CtxDep, user: ConfigReader) -> list[CalendarOut]:
    async with ctx.pool.acquire() as conn:
        ids = [
            r["calendar_id"]
            for r in await conn.fetch("SELECT calendar_id FROM calendars ORDER BY calendar_id")
        ]
    repo = Repository(ctx.store, Calendar)
    return [calendar_out(await repo.load(i)) for i in ids]


@router.get("/calendars/{calendar_id}", response_model=CalendarOut, summary="A calendar")
async def get_calendar(
    calendar_id: str, ctx: CtxDep, user: ConfigReader, response: Response, as_of: AsOf = None
) -> CalendarOut:
    c = await load_as_of(Repository(ctx.store, Calendar), calendar_id, as_of)
    response.headers["ETag"] = etag(c.version)
    return calendar_out(c)


@router.get("/calendars/{calendar_id}/history", response_model=list[HistoryEntry])
async def calendar_history(calendar_id: str, ctx: CtxDep, user: ConfigReader) -> list[HistoryEntry]:
    return history_of(await Repository(ctx.store, Calendar).history(calendar_id))


@router.get(
    "/calendars/{calendar_id}/business-time",
    summary="Business minutes between two instants, and the instant N business minutes later",
)
async def business_time(
    calendar_id: str,
    ctx: CtxDep,
    user: ConfigReader,
    start: ClientTime,
    end: ClientTime | None = None,
    add_minutes: Annotated[float | None, Query(ge=0, le=10_000_000)] = None,
) -> dict[str, Any]:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(name, "needs a time zone, e.g. 2026-11-25T10:00:00Z")
    if end is not None and end - start > timedelta(days=3660):
        raise InvalidInput("end", "must be at most 10 years after start")
    cal = (await Repository(ctx.store, Calendar).load(calendar_id)).business
    out: dict[str, Any] = {"calendar_id": calendar_id, "start": start}
    if end is not None:
        out["end"] = end
        out["business_minutes"] = cal.business_minutes(start, end)
    if add_minutes is not None:
        out["add_minutes"] = add_minutes
        out["reached_at"] = cal.add_business_minutes(start, add_minutes)
    return out


@router.put(
    "/calendars/{calendar_id}",
    response_model=CalendarOut,
    responses={201: {"description": "calendar created"}},
    summary="Create or replace a business-hours calendar (service managers)",
)
async def put_calendar(
    calendar_id: ConfigId,
    body: CalendarIn,
    ctx: CtxDep,
    user: ServiceManager,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        c, created = await sla.set_calendar(
            conn,
            ctx.store,
            calendar_id,
            metadata_for(user),
            name=body.name,
            timezone=body.timezone,
            hours=body.hours,
            holidays=[Holiday(day=h.day, name=h.name) for h in body.holidays],
            expected=expected_version(if_match),
        )
        return saved(c, calendar_out(c), created, f"/calendars/{calendar_id}")

    return await run_command(ctx, user, None, None, command)


# --- SLA policies -----------------------------------------------------------------------------


class PolicyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "calendar_id": "berlin",
                    "first_response_minutes": 60,
                    "resolution_minutes": 480,
                    "at_risk_percent": 80,
                }
            ]
        },
    )

    calendar_id: str = Field(min_length=1, max_length=40)
    first_response_minutes: int = Field(gt=0, le=1_000_000, description="business minutes")
    resolution_minutes: int = Field(gt=0, le=1_000_000, description="business minutes")
    at_risk_percent: int = Field(default=80, ge=1, le=99, description="warn at this share")


class PolicyOut(PolicyIn):
    priority: str
    version: int


def policy_out(p: SlaPolicy) -> PolicyOut:
    d = p.policy
    assert d is not None
    return PolicyOut(
        priority=d.priority,
        calendar_id=d.calendar_id,
        first_response_minutes=d.first_response_minutes,
        resolution_minutes=d.resolution_minutes,
        at_risk_percent=d.at_risk_percent,
        version=p.version,
    )


@router.get("/sla-policies", response_model=list[PolicyOut], summary="SLA policies per priority")
async def list_policies(ctx: CtxDep, user: ConfigReader) -> list[PolicyOut]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM sla_policies ORDER BY priority")
    return [PolicyOut(**{k: r[k] for k in PolicyOut.model_fields}) for r in rows]


@router.get("/sla-policies/{priority}", response_model=PolicyOut, summary="A priority's policy")
async def get_policy(
    priority: PriorityPath, ctx: CtxDep, user: ConfigReader, response: Response, as_of: AsOf = None
) -> PolicyOut:
    p = await load_as_of(Repository(ctx.store, SlaPolicy), priority, as_of)
    response.headers["ETag"] = etag(p.version)
    return policy_out(p)


@router.get("/sla-policies/{priority}/history", response_model=list[HistoryEntry])
async def policy_history(
    priority: PriorityPath, ctx: CtxDep, user: ConfigReader
) -> list[HistoryEntry]:
    return history_of(await Repository(ctx.store, SlaPolicy).history(priority))


@router.put(
    "/sla-policies/{priority}",
    response_model=PolicyOut,
    responses={201: {"description": "policy created"}},
    summary="Set the SLA targets of a priority (service managers)",
)
async def put_policy(
    priority: PriorityPath,
    body: PolicyIn,
    ctx: CtxDep,
    user: ServiceManager,
    if_match: IfMatch = None,
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        p, created = await sla.set_policy(
            conn,
            ctx.store,
            priority,
            metadata_for(user),
            calendar_id=body.calendar_id,
            first_response_minutes=body.first_response_minutes,
            resolution_minutes=body.resolution_minutes,
            at_risk_percent=body.at_risk_percent,
            expected=expected_version(if_match),
        )
        return saved(p, policy_out(p), created, f"/sla-policies/{priority}")

    return await run_command(ctx, user, None, None, command)


# --- escalation rules -------------------------------------------------------------------------


class EscalationRulesIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rules": [
                        {
                            "rule_id": "unanswered-2d",
                            "kind": "no_public_answer",
                            "after_days": 2,
                            "notify_emails": ["service-manager@crm.example"],
                        },
                        {
                            "rule_id": "top-tier-breach",
                            "kind": "sla_breach",
                            "customer_tiers": ["top"],
                            "notify_emails": ["service-manager@crm.example"],
                            "notify_account_owner": True,
                        },
                    ]
                }
            ]
        },
    )

    rules: list[EscalationRule] = Field(max_length=200)


class EscalationRulesOut(BaseModel):
    rules: list[EscalationRule]
    version: int


@router.get("/escalation-rules", response_model=EscalationRulesOut, summary="Escalation rules")
async def get_escalation_rules(
    ctx: CtxDep, user: ConfigReader, response: Response
) -> EscalationRulesOut:
    async with ctx.pool.acquire() as conn:
        current = await sla.escalation_rules(conn, ctx.store)
    response.headers["ETag"] = etag(current.version)
    return EscalationRulesOut(rules=current.rules, version=current.version)


@router.put(
    "/escalation-rules",
    response_model=EscalationRulesOut,
    summary="Replace the escalation rules (service managers)",
)
async def put_escalation_rules(
    body: EscalationRulesIn, ctx: CtxDep, user: ServiceManager, if_match: IfMatch = None
) -> JSONResponse:
    for i, rule in enumerate(body.rules):
        for j, email in enumerate(rule.notify_emails):
            if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
                raise InvalidInput(f"rules.{i}.notify_emails.{j}", "is not an e-mail address")

    async def command(conn: Conn) -> CommandResult:
        current = await sla.set_escalation_rules(
            conn, ctx.store, body.rules, metadata_for(user), expected_version(if_match)
        )
        out = EscalationRulesOut(rules=current.rules, version=current.version)
        return CommandResult(200, out, {"ETag": etag(current.version)})

    return await run_command(ctx, user, None, None, command)


@router.get("/escalation-rules/history", response_model=list[HistoryEntry])
async def escalation_rules_history(ctx: CtxDep, user: ConfigReader) -> list[HistoryEntry]:
    try:
        return history_of(await Repository(ctx.store, EscalationRules).history(RULES_ID))
    except NotFound:
        return []


@router.get("/escalations", response_model=Page[dict[str, Any]], summary="Escalations so far")
async def list_escalations(
    ctx: CtxDep,
    user: ConfigReader,
    cursor: str | None = None,
    limit: Limit = 50,
    ticket_id: str | None = None,
) -> Page[dict[str, Any]]:
    after = decode_cursor(cursor)
    key = (datetime.fromisoformat(after["t"]), str(after["id"])) if after else None
    async with ctx.pool.acquire() as conn:
        rows = await sla_view.list_escalations(conn, ticket_id=ticket_id, after=key, limit=limit)
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(
            {"t": rows[-1]["escalated_at"].isoformat(), "id": rows[-1]["escalation_id"]}
        )
    return Page(items=rows, next_cursor=nxt)


# --- SLA state --------------------------------------------------------------------------------


class SlaState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ticket_id: str
    target: str
    episode: int
    priority: str
    status: str = Field(description="running | paused | at_risk | breached | met")
    started_at: datetime
    stopped_at: datetime | None
    elapsed_minutes: float
    target_minutes: int
    at_risk_percent: int
    due_at: datetime | None
    at_risk_at: datetime | None
    breached_at: datetime | None
    evaluated_at: datetime
    subject: str | None = None
    queue_id: str | None = None
    assignee_id: str | None = None
    customer_id: str | None = None


IncludeBreached = Annotated[
    bool,
    Query(
        description="also list targets already breached (default); false: only those at risk"
        " and not breached yet. The same parameter and default as GET /views/at-risk"
    ),
]


@router.get(
    "/sla/at-risk",
    response_model=Page[SlaState],
    summary="Running SLA targets of open tickets at risk or breached, the soonest due first",
    description="The rows GET /views/at-risk lists (same filter and order), with the whole SLA"
    " state and cursor pages. `status` says at_risk or breached.",
)
async def at_risk(
    ctx: CtxDep,
    user: ConfigReader,
    cursor: str | None = None,
    limit: Limit = 50,
    queue_id: str | None = None,
    assignee_id: str | None = None,
    include_breached: IncludeBreached = True,
) -> Page[SlaState]:
    after = decode_cursor(cursor)
    key = (
        (datetime.fromisoformat(after["t"]), str(after["id"]), str(after["target"]))
        if after
        else None
    )
    async with ctx.pool.acquire() as conn:
        rows = await sla_view.at_risk(
            conn,
            limit=limit,
            after=key,
            queue_id=queue_id,
            assignee_id=assignee_id,
            include_breached=include_breached,
        )
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        nxt = encode_cursor(
            {"t": last["sort_at"].isoformat(), "id": last["ticket_id"], "target": last["target"]}
        )
    return Page(items=[SlaState.model_validate(r) for r in rows], next_cursor=nxt)


@router.get(
    "/sla/tickets/{ticket_id}",
    summary="A ticket's SLA state per target and episode, and its SLA events",
)
async def ticket_sla(ticket_id: str, ctx: CtxDep, user: ConfigReader) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        states = await sla_view.states_for_ticket(conn, ticket_id)
    if not states:
        raise NotFound(f"ticket {ticket_id} has no SLA state (no policy, or not evaluated yet)")
    try:
        events = history_of(await Repository(ctx.store, TicketSla).history(ticket_id))
    except NotFound:
        events = []
    return {
        "ticket_id": ticket_id,
        "targets": [SlaState.model_validate(s).model_dump(mode="json") for s in states],
        "events": [e.model_dump(mode="json") for e in events],
    }
