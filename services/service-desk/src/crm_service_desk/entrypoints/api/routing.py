"""/routing-rules (which queue a ticket goes to) and each ticket's routing record."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.service_routing import RoutingRule
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
from crm_runtime.repository import Repository
from crm_service_desk.adapters import routing_view
from crm_service_desk.application.routing import TICKET_KINDS, current_rules, set_rules
from crm_service_desk.domain.routing import RULES_ID, RoutingRules, TicketRouting
from crm_service_desk.entrypoints.api.agents import (
    ConfigReader,
    HistoryEntry,
    IfMatch,
    QueueRef,
    ServiceManager,
    history_of,
)

router = APIRouter(tags=["routing"])


class RulesIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rules": [
                        {
                            "rule_id": "returns",
                            "kinds": ["product_return"],
                            "queue_id": "returns",
                        },
                        {
                            "rule_id": "webshop-de",
                            "products": ["webshop"],
                            "languages": ["de"],
                            "queue_id": "support-dach",
                        },
                        {"rule_id": "emea", "regions": ["EMEA"], "queue_id": "support-emea"},
                    ],
                    "default_queue_id": "support-emea",
                }
            ]
        },
    )

    rules: list[RoutingRule] = Field(
        max_length=500,
        description="in order: the first rule that matches a ticket wins. `kinds` are ticket"
        " kinds (" + ", ".join(TICKET_KINDS) + "), `languages` language tags (en, pt-br);"
        " anything else is a 422 naming the rule's field",
    )
    default_queue_id: QueueRef | None = Field(
        default=None, description="where tickets go when no rule matches"
    )


class RulesOut(BaseModel):
    rules: list[RoutingRule]
    default_queue_id: str | None
    version: int


@router.get("/routing-rules", response_model=RulesOut, summary="The routing rules, in order")
async def get_rules(ctx: CtxDep, user: ConfigReader, response: Response) -> RulesOut:
    async with ctx.pool.acquire() as conn:
        current = await current_rules(conn, ctx.store)
    response.headers["ETag"] = etag(current.version)
    return RulesOut(
        rules=current.rules, default_queue_id=current.default_queue_id, version=current.version
    )


@router.put(
    "/routing-rules",
    response_model=RulesOut,
    summary="Replace the routing rules (service managers; If-Match guards concurrent edits)",
)
async def put_rules(
    body: RulesIn, ctx: CtxDep, user: ServiceManager, if_match: IfMatch = None
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        current = await set_rules(
            conn,
            ctx.store,
            body.rules,
            body.default_queue_id,
            metadata_for(user),
            expected_version(if_match),
        )
        out = RulesOut(
            rules=current.rules, default_queue_id=current.default_queue_id, version=current.version
        )
        return CommandResult(200, out, {"ETag": etag(current.version)})

    return await run_command(ctx, user, None, None, command)


@router.get("/routing-rules/history", response_model=list[HistoryEntry], summary="Rule changes")
async def rules_history(ctx: CtxDep, user: ConfigReader) -> list[HistoryEntry]:
    try:
        return history_of(await Repository(ctx.store, RoutingRules).history(RULES_ID))
    except NotFound:
        return []


@router.get(
    "/routing/tickets/{ticket_id}",
    summary="A ticket's routing: the current queue and agent, and every decision with its rule",
)
async def ticket_routing(ticket_id: str, ctx: CtxDep, user: ConfigReader) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        current = await routing_view.routing_of(conn, ticket_id)
    if current is None:
        raise NotFound(f"ticket {ticket_id} was never routed")
    decisions = history_of(await Repository(ctx.store, TicketRouting).history(ticket_id))
    return {**current, "decisions": [d.model_dump(mode="json") for d in decisions]}
