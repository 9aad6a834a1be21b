"""Read models of routing (plain SQL): agents, queues, each ticket's routing; open work.

Open work is counted from SD-A's ``tickets`` table, read defensively: without it every agent
has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crm_runtime.db import Conn
from crm_service_desk.domain.agent import Agent
from crm_service_desk.domain.routing import Candidate, Queue

CLOSED_STATUSES = ("resolved", "closed", "merged")


async def has_table(conn: Conn, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def upsert_agent(conn: Conn, agent: Agent, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO agents (agent_id, email, display_name, skills, languages, queues, active,
                            available, unavailable_reason, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
        ON CONFLICT (agent_id) DO UPDATE SET
            email = EXCLUDED.email, display_name = EXCLUDED.display_name,
            skills = EXCLUDED.skills, languages = EXCLUDED.languages, queues = EXCLUDED.queues,
            active = EXCLUDED.active, available = EXCLUDED.available,
            unavailable_reason = EXCLUDED.unavailable_reason, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        agent.id,
        agent.email,
        agent.display_name,
        agent.skills,
        agent.languages,
        agent.queues,
        agent.active,
        agent.available,
        agent.unavailable_reason,
        agent.version,
        now,
    )


async def upsert_queue(conn: Conn, queue: Queue, now: datetime) -> None:
    d = queue.definition
    assert d is not None
    await conn.execute(
        """
        INSERT INTO queues (queue_id, name, description, active, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        ON CONFLICT (queue_id) DO UPDATE SET
            name = EXCLUDED.name, description = EXCLUDED.description, active = EXCLUDED.active,
            version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
        """,
        queue.id,
        d.name,
        d.description,
        d.active,
        queue.version,
        now,
    )


async def queue_ids(conn: Conn, *, active_only: bool = False) -> set[str]:
    rows = await conn.fetch("SELECT queue_id FROM queues WHERE active OR NOT $1::bool", active_only)
    return {r["queue_id"] for r in rows}


async def candidates(conn: Conn, queue_id: str) -> list[Candidate]:
    rows = await conn.fetch(
        "SELECT agent_id, queues, skills, languages, active, available FROM agents"
        " WHERE $1 = ANY(queues) AND active AND available ORDER BY agent_id",
        queue_id,
    )
    return [
        Candidate(
            agent_id=r["agent_id"],
            queues=tuple(r["queues"]),
            skills=tuple(r["skills"]),
            languages=tuple(r["languages"]),
            active=r["active"],
            available=r["available"],
        )
        for r in rows
    ]


async def agent_row(conn: Conn, agent_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM agents WHERE agent_id = $1", agent_id)
    return _plain(row) if row else None


async def open_work_of(conn: Conn, agent_ids: Sequence[str]) -> dict[str, int]:
    """Open tickets (not resolved, closed or merged) per agent, from SD-A's ``tickets``."""
    if not agent_ids or not await has_table(conn, "tickets"):
        return {}
    rows = await conn.fetch(
        "SELECT assignee_id, count(*) AS n FROM tickets"
        " WHERE assignee_id = ANY($1::text[]) AND status <> ALL($2::text[])"
        " GROUP BY assignee_id",
        list(agent_ids),
        list(CLOSED_STATUSES),
    )
    return {r["assignee_id"]: int(r["n"]) for r in rows}


async def record_routing(
    conn: Conn,
    *,
    ticket_id: str,
    queue_id: str | None,
    agent_id: str | None,
    rule_id: str | None,
    reason: str,
    manual: bool,
    now: datetime,
    version: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO ticket_routing (ticket_id, queue_id, agent_id, rule_id, reason, manual,
                                    routed_at, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (ticket_id) DO UPDATE SET
            queue_id = EXCLUDED.queue_id, agent_id = EXCLUDED.agent_id,
            rule_id = EXCLUDED.rule_id, reason = EXCLUDED.reason, manual = EXCLUDED.manual,
            routed_at = EXCLUDED.routed_at, version = EXCLUDED.version
        """,
        ticket_id,
        queue_id,
        agent_id,
        rule_id,
        reason,
        manual,
        now,
        version,
    )


async def list_agents(
    conn: Conn,
    *,
    after: str | None,
    limit: int,
    queue_id: str | None,
    skill: str | None,
    language: str | None,
    available: bool | None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT * FROM agents
        WHERE ($1::text IS NULL OR agent_id > $1)
          AND ($2::text IS NULL OR $2 = ANY(queues))
          AND ($3::text IS NULL OR $3 = ANY(skills))
          AND ($4::text IS NULL OR $4 = ANY(languages))
          AND ($5::bool IS NULL OR (available AND active) = $5)
        ORDER BY agent_id LIMIT $6
        """,
        after,
        queue_id,
        skill.lower() if skill else None,
        language.lower() if language else None,
        available,
        limit + 1,
    )
    return [_plain(r) for r in rows]


async def list_queues(
    conn: Conn, *, after: str | None, limit: int, active: bool | None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT q.*, (SELECT count(*) FROM agents a WHERE q.queue_id = ANY(a.queues)
                     AND a.active AND a.available) AS available_agents
        FROM queues q
        WHERE ($1::text IS NULL OR q.queue_id > $1) AND ($2::bool IS NULL OR q.active = $2)
        ORDER BY q.queue_id LIMIT $3
        """,
        after,
        active,
        limit + 1,
    )
    return [_plain(r) for r in rows]


async def routing_of(conn: Conn, ticket_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM ticket_routing WHERE ticket_id = $1", ticket_id)
    return _plain(row) if row else None


def _plain(row: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in dict(row).items()}
