"""Who may read and work which tickets.

- admin: everything.
- service_manager: everything in the service desk (tickets, reassignment, merges, views).
- service_agent: reads every ticket; works (replies, notes, status, returns, merges) the
  tickets in its queues and the ones assigned to it. Its queues come from its agent profile
  (SD-B's ``agents`` table); without a profile, its ``team`` claim is its one queue.
- any other role (sales, marketing, analyst): reads tickets, changes nothing.
- customers: no token; only their own ticket, through a signed link (see tickets_links).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden
from crm_runtime.http.auth import ROLES, Principal, require

SERVICE = ("service_agent", "service_manager")

Reader = Annotated[Principal, Depends(require(*sorted(ROLES)))]
Worker = Annotated[Principal, Depends(require(*SERVICE))]
Manager = Annotated[Principal, Depends(require("service_manager"))]


def manages(user: Principal) -> bool:
    return user.has("service_manager")


async def agent_queues(conn: Conn, user: Principal) -> set[str]:
    """The queues an agent works: its profile's, or its team claim when it has no profile."""
    if await conn.fetchval("SELECT to_regclass('agents') IS NOT NULL"):
        queues = await conn.fetchval("SELECT queues FROM agents WHERE agent_id = $1", user.user_id)
        if queues is not None:
            return {str(q).lower() for q in queues}
    return {user.team.lower()} if user.team else set()


async def can_work(
    conn: Conn, user: Principal, queue_id: str | None, assignee_id: str | None
) -> bool:
    if manages(user):
        return True
    if "service_agent" not in user.roles:
        return False
    if assignee_id == user.user_id:
        return True
    return queue_id is not None and queue_id.lower() in await agent_queues(conn, user)


async def check_work(
    conn: Conn, user: Principal, queue_id: str | None, assignee_id: str | None
) -> None:
    if not await can_work(conn, user, queue_id, assignee_id):
        raise Forbidden("this ticket is not in your queues; a service manager can reassign it")
