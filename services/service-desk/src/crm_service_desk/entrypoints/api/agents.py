"""/agents and /queues: agent profiles (skills, languages, queues, availability) and queues."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from crm_runtime.aggregate import Aggregate
from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden, InvalidInput, NotFound
from crm_runtime.eventstore import StoredEvent
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal, require
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime, Label, Name
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.repository import Repository
from crm_service_desk.adapters import routing_view
from crm_service_desk.application.routing import AgentHandlers, QueueHandlers
from crm_service_desk.domain.agent import Agent
from crm_service_desk.domain.routing import Queue

agents_router = APIRouter(prefix="/agents", tags=["routing"])
queues_router = APIRouter(prefix="/queues", tags=["routing"])

# Who reads the routing and SLA configuration, and who changes it.
ConfigReader = Annotated[Principal, Depends(require("service_agent", "service_manager", "analyst"))]
ServiceUser = Annotated[Principal, Depends(require("service_agent", "service_manager"))]
ServiceManager = Annotated[Principal, Depends(require("service_manager"))]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]
AsOf = Annotated[ClientTime | None, Query(description="read the record as it was at this time")]
Limit = Annotated[int, Query(ge=1, le=200)]
ConfigId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
Language = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=20)]
QueueRef = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


class HistoryEntry(BaseModel):
    version: int
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    data: dict[str, Any]


def history_of(events: list[StoredEvent]) -> list[HistoryEntry]:
    return [
        HistoryEntry(
            version=e.version,
            event_id=str(e.event_id),
            type=e.type,
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            actor=e.metadata.get("actor"),
            data=e.data,
        )
        for e in events
    ]


async def load_as_of(repo: Repository[Any], ident: str, as_of: datetime | None) -> Any:
    if as_of is not None and as_of.tzinfo is None:
        raise InvalidInput("as_of", "needs a time zone, e.g. 2026-11-25T10:00:00Z")
    return await repo.load(ident, as_of=as_of)


def keyset_page(rows: list[dict[str, Any]], limit: int, key: str) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor({"id": rows[limit - 1][key]})


def _after(cursor: str | None) -> str | None:
    after = decode_cursor(cursor)
    return str(after["id"]) if after and "id" in after else None


def saved(agg: Aggregate, body: Any, created: bool, location: str) -> CommandResult:
    headers = {"ETag": etag(agg.version)}
    if created:
        headers["Location"] = location
    return CommandResult(201 if created else 200, body, headers)


# --- agents -----------------------------------------------------------------------------------


class AgentProfile(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ana@crm.example",
                    "display_name": "Ana",
                    "skills": ["webshop", "billing"],
                    "languages": ["en", "de"],
                    "queues": ["support-emea"],
                }
            ]
        },
    )

    email: EmailStr | None = Field(default=None, description="where the agent is reached")
    display_name: str | None = Field(default=None, max_length=200)
    skills: list[Label] = Field(
        default_factory=list, max_length=100, description="products (as skills) and topics"
    )
    languages: list[Language] = Field(default_factory=list, max_length=30)
    queues: list[QueueRef] = Field(default_factory=list, max_length=50)
    active: bool = Field(default=True, description="inactive agents are never routed to")


class Availability(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"available": False, "reason": "holiday"}]}
    )

    available: bool
    reason: str | None = Field(default=None, max_length=200)


class AgentOut(BaseModel):
    agent_id: str
    email: str | None
    display_name: str | None
    skills: list[str]
    languages: list[str]
    queues: list[str]
    active: bool
    available: bool
    unavailable_reason: str | None
    open_work: int | None = Field(default=None, description="open tickets (lists and reads)")
    version: int


def agent_out(agent: Agent, open_work: int | None = None) -> AgentOut:
    return AgentOut(
        agent_id=agent.id,
        email=agent.email,
        display_name=agent.display_name,
        skills=agent.skills,
        languages=agent.languages,
        queues=agent.queues,
        active=agent.active,
        available=agent.available,
        unavailable_reason=agent.unavailable_reason,
        open_work=open_work,
        version=agent.version,
    )


@agents_router.get("", response_model=Page[AgentOut], summary="Agents and their routing profiles")
async def list_agents(
    ctx: CtxDep,
    user: ConfigReader,
    cursor: str | None = None,
    limit: Limit = 50,
    queue_id: str | None = None,
    skill: str | None = None,
    language: str | None = None,
    available: Annotated[
        bool | None, Query(description="true: active and available agents only")
    ] = None,
) -> Page[AgentOut]:
    async with ctx.pool.acquire() as conn:
        rows = await routing_view.list_agents(
            conn,
            after=_after(cursor),
            limit=limit,
            queue_id=queue_id,
            skill=skill,
            language=language,
            available=available,
        )
        page, nxt = keyset_page(rows, limit, "agent_id")
        work = await routing_view.open_work_of(conn, [r["agent_id"] for r in page])
    items = [
        AgentOut(
            **{k: r[k] for k in AgentOut.model_fields if k not in ("open_work",)},
            open_work=work.get(r["agent_id"], 0),
        )
        for r in page
    ]
    return Page(items=items, next_cursor=nxt)


@agents_router.get("/{agent_id}", response_model=AgentOut, summary="An agent's profile")
async def get_agent(
    agent_id: str, ctx: CtxDep, user: ConfigReader, response: Response, as_of: AsOf = None
) -> AgentOut:
    try:
        agent = await load_as_of(Repository(ctx.store, Agent), agent_id, as_of)
    except NotFound:
        raise NotFound(f"agent {agent_id} has no profile") from None
    response.headers["ETag"] = etag(agent.version)
    async with ctx.pool.acquire() as conn:
        work = (await routing_view.open_work_of(conn, [agent_id])).get(agent_id, 0)
    return agent_out(agent, None if as_of else work)


@agents_router.get(
    "/{agent_id}/history", response_model=list[HistoryEntry], summary="An agent's events"
)
async def agent_history(agent_id: str, ctx: CtxDep, user: ConfigReader) -> list[HistoryEntry]:
    return history_of(await Repository(ctx.store, Agent).history(agent_id))


@agents_router.put(
    "/{agent_id}",
    response_model=AgentOut,
    status_code=200,
    responses={201: {"description": "profile created"}},
    summary="Create or replace an agent's profile (service managers)",
)
async def put_agent(
    agent_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: AgentProfile,
    ctx: CtxDep,
    user: ServiceManager,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = AgentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        agent, created = await handlers.set_profile(
            conn,
            agent_id,
            metadata_for(user),
            email=str(body.email) if body.email else None,
            display_name=body.display_name,
            skills=body.skills,
            languages=body.languages,
            queues=body.queues,
            active=body.active,
            expected=expected_version(if_match),
        )
        return saved(agent, agent_out(agent), created, f"/agents/{agent_id}")

    return await run_command(ctx, user, None, None, command)


@agents_router.post(
    "/{agent_id}/availability",
    response_model=AgentOut,
    summary="Mark an agent available or not (the agent itself, or a service manager)",
)
async def set_availability(
    agent_id: str, body: Availability, ctx: CtxDep, user: ServiceUser
) -> JSONResponse:
    if user.user_id != agent_id and not user.has("service_manager"):
        raise Forbidden("only the agent itself or a service manager may change its availability")
    handlers = AgentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        agent = await handlers.set_availability(
            conn, agent_id, body.available, body.reason, metadata_for(user)
        )
        return CommandResult(200, agent_out(agent), {"ETag": etag(agent.version)})

    return await run_command(ctx, user, None, None, command)


# --- queues -----------------------------------------------------------------------------------


class QueueIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Support EMEA", "description": "first-line support"}]
        },
    )

    name: Name
    description: str | None = Field(default=None, max_length=2000)
    active: bool = Field(
        default=True, description="rules pointing at an inactive queue are skipped"
    )


class QueueOut(BaseModel):
    queue_id: str
    name: str
    description: str | None
    active: bool
    available_agents: int | None = None
    version: int


def queue_out(queue: Queue) -> QueueOut:
    d = queue.definition
    assert d is not None
    return QueueOut(
        queue_id=queue.id,
        name=d.name,
        description=d.description,
        active=d.active,
        version=queue.version,
    )


@queues_router.get("", response_model=Page[QueueOut], summary="Queues")
async def list_queues(
    ctx: CtxDep,
    user: ConfigReader,
    cursor: str | None = None,
    limit: Limit = 50,
    active: bool | None = None,
) -> Page[QueueOut]:
    async with ctx.pool.acquire() as conn:
        rows = await routing_view.list_queues(
            conn, after=_after(cursor), limit=limit, active=active
        )
    page, nxt = keyset_page(rows, limit, "queue_id")
    return Page(
        items=[QueueOut(**{k: r[k] for k in QueueOut.model_fields}) for r in page], next_cursor=nxt
    )


@queues_router.get("/{queue_id}", response_model=QueueOut, summary="A queue")
async def get_queue(
    queue_id: str, ctx: CtxDep, user: ConfigReader, response: Response, as_of: AsOf = None
) -> QueueOut:
    queue = await load_as_of(Repository(ctx.store, Queue), queue_id, as_of)
    response.headers["ETag"] = etag(queue.version)
    return queue_out(queue)


@queues_router.get(
    "/{queue_id}/history", response_model=list[HistoryEntry], summary="A queue's events"
)
async def queue_history(queue_id: str, ctx: CtxDep, user: ConfigReader) -> list[HistoryEntry]:
    return history_of(await Repository(ctx.store, Queue).history(queue_id))


@queues_router.put(
    "/{queue_id}",
    response_model=QueueOut,
    responses={201: {"description": "queue created"}},
    summary="Create or change a queue (service managers)",
)
async def put_queue(
    queue_id: ConfigId, body: QueueIn, ctx: CtxDep, user: ServiceManager, if_match: IfMatch = None
) -> JSONResponse:
    handlers = QueueHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        queue, created = await handlers.set(
            conn,
            queue_id,
            metadata_for(user),
            name=body.name,
            description=body.description,
            active=body.active,
            expected=expected_version(if_match),
        )
        return saved(queue, queue_out(queue), created, f"/queues/{queue_id}")

    return await run_command(ctx, user, None, None, command)
