"""Operational views of the service desk: the backlog, the oldest waiting tickets, SLA risk."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from crm_runtime.http.app import CtxDep
from crm_service_desk.access import Reader
from crm_service_desk.adapters import sla_view

router = APIRouter(prefix="/views", tags=["operational views"])

OPEN = ["new", "assigned", "in_progress", "waiting_on_customer"]


class Bucket(BaseModel):
    key: str | None = Field(description="queue id or agent id; null: none yet")
    open: int
    by_status: dict[str, int]


class Backlog(BaseModel):
    open: int
    by_status: dict[str, int]
    by_queue: list[Bucket]
    by_agent: list[Bucket]


class WaitingTicket(BaseModel):
    id: str
    subject: str
    status: str
    priority: str
    queue_id: str | None
    assignee_id: str | None
    waiting_since: datetime = Field(description="the customer's last message (or the opening)")
    waiting_seconds: int


class AtRiskTicket(BaseModel):
    id: str
    subject: str
    status: str
    priority: str
    queue_id: str | None
    assignee_id: str | None
    target: str = Field(description="first_response or resolution")
    sla_status: str = Field(description="at_risk or breached")
    due_at: datetime | None


class AtRisk(BaseModel):
    sla_available: bool = Field(description="false: this build keeps no SLA state yet")
    items: list[AtRiskTicket]


def _buckets(rows: list[dict[str, object]], column: str) -> list[Bucket]:
    out: dict[str | None, Bucket] = {}
    for r in rows:
        key = r[column]
        b = out.setdefault(
            None if key is None else str(key),
            Bucket(key=None if key is None else str(key), open=0, by_status={}),
        )
        n = int(str(r["n"]))
        b.open += n
        b.by_status[str(r["status"])] = b.by_status.get(str(r["status"]), 0) + n
    return sorted(out.values(), key=lambda b: (-b.open, b.key or ""))


@router.get("/backlog", response_model=Backlog, summary="Open tickets by status, queue and agent")
async def backlog(ctx: CtxDep, user: Reader) -> Backlog:
    async with ctx.pool.acquire() as conn:
        rows = [
            dict(r)
            for r in await conn.fetch(
                "SELECT status, queue_id, assignee_id, count(*) AS n FROM tickets"
                " WHERE status = ANY($1::text[]) GROUP BY status, queue_id, assignee_id",
                OPEN,
            )
        ]
    by_status = dict.fromkeys(OPEN, 0)
    for r in rows:
        by_status[str(r["status"])] += int(r["n"])
    return Backlog(
        open=sum(by_status.values()),
        by_status=by_status,
        by_queue=_buckets(rows, "queue_id"),
        by_agent=_buckets(rows, "assignee_id"),
    )


@router.get(
    "/oldest-waiting",
    response_model=list[WaitingTicket],
    summary="Open tickets waiting on us the longest (since the customer's last message)",
)
async def oldest_waiting(
    ctx: CtxDep,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    queue_id: str | None = None,
    assignee_id: str | None = None,
) -> list[WaitingTicket]:
    now = datetime.now(UTC)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT ticket_id, subject, status, priority, queue_id, assignee_id,
                   coalesce(last_customer_message_at, created_at) AS since
            FROM tickets
            WHERE status IN ('new', 'assigned', 'in_progress')
              AND ($2::text IS NULL OR queue_id = $2)
              AND ($3::text IS NULL OR assignee_id = $3)
            ORDER BY since, ticket_id
            LIMIT $1
            """,
            limit,
            queue_id,
            assignee_id,
        )
    return [
        WaitingTicket(
            id=r["ticket_id"],
            subject=r["subject"],
            status=r["status"],
            priority=r["priority"],
            queue_id=r["queue_id"],
            assignee_id=r["assignee_id"],
            waiting_since=r["since"],
            waiting_seconds=max(0, int((now - r["since"]).total_seconds())),
        )
        for r in rows
    ]


@router.get(
    "/at-risk",
    response_model=AtRisk,
    summary="Open tickets whose SLA is at risk or breached, the soonest due first",
    description="One item per running SLA target at risk or breached (`sla_status`), the rows"
    " GET /sla/at-risk lists (same query, filters and order; that one pages with a cursor and"
    " gives the whole SLA state).",
)
async def at_risk(
    ctx: CtxDep,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    queue_id: str | None = None,
    assignee_id: str | None = None,
    include_breached: Annotated[
        bool,
        Query(
            description="also list targets already breached (default); false: only those at"
            " risk and not breached yet. The same parameter and default as GET /sla/at-risk"
        ),
    ] = True,
) -> AtRisk:
    async with ctx.pool.acquire() as conn:
        if not await conn.fetchval("SELECT to_regclass('sla_states') IS NOT NULL"):
            return AtRisk(sla_available=False, items=[])
        rows = await sla_view.at_risk(
            conn,
            limit=limit,
            after=None,
            queue_id=queue_id,
            assignee_id=assignee_id,
            include_breached=include_breached,
        )
    return AtRisk(
        sla_available=True,
        items=[
            AtRiskTicket(
                id=r["ticket_id"],
                subject=r["subject"],
                status=r["ticket_status"],
                priority=r["ticket_priority"],
                queue_id=r["queue_id"],
                assignee_id=r["assignee_id"],
                target=r["target"],
                sla_status=r["status"],
                due_at=r["due_at"],
            )
            for r in rows[:limit]  # (at_risk reads one more, to tell that a page follows)
        ],
    )
