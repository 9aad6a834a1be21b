"""Read models for reps and routing, activities, tasks and reminders."""

from __future__ import annotations

from datetime import datetime

from crm_runtime.db import Conn
from crm_sales.domain.assignment import Candidate, Rep
from crm_sales.domain.work import Activity, Task


async def upsert_rep(conn: Conn, rep: Rep, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO reps (user_id, team_id, regions, product_lines, available, version,
                          updated_at, email)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (user_id) DO UPDATE SET team_id = EXCLUDED.team_id, email = EXCLUDED.email,
            regions = EXCLUDED.regions, product_lines = EXCLUDED.product_lines,
            available = EXCLUDED.available, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        rep.id,
        rep.team_id,
        rep.regions,
        rep.product_lines,
        rep.available,
        rep.version,
        at,
        rep.email,
    )


async def candidates(conn: Conn) -> list[Candidate]:
    rows = await conn.fetch("SELECT * FROM reps ORDER BY user_id")
    return [
        Candidate(
            r["user_id"],
            r["team_id"],
            tuple(r["regions"]),
            tuple(r["product_lines"]),
            r["available"],
        )
        for r in rows
    ]


async def open_work(conn: Conn) -> dict[str, int]:
    """Open leads + open deals per owner: the load that least-open routing balances."""
    rows = await conn.fetch(
        """
        SELECT owner_id, count(*) AS n FROM (
            SELECT owner_id FROM leads WHERE status IN ('new', 'qualified') AND owner_id IS NOT NULL
            UNION ALL
            SELECT owner_id FROM deals WHERE status = 'open' AND owner_id IS NOT NULL
        ) w GROUP BY owner_id
        """
    )
    return {r["owner_id"]: int(r["n"]) for r in rows}


async def last_chosen(conn: Conn) -> dict[str, str]:
    # Lock the round-robin cursors so two concurrent assignments take turns, not the same rep.
    rows = await conn.fetch("SELECT rule_id, last_user_id FROM assignment_state FOR UPDATE")
    return {r["rule_id"]: r["last_user_id"] for r in rows}


async def remember_choice(conn: Conn, rule_id: str, user_id: str) -> None:
    await conn.execute(
        "INSERT INTO assignment_state (rule_id, last_user_id) VALUES ($1, $2)"
        " ON CONFLICT (rule_id) DO UPDATE SET last_user_id = EXCLUDED.last_user_id",
        rule_id,
        user_id,
    )


async def insert_activity(conn: Conn, a: Activity, at: datetime) -> None:
    e = a.logged
    assert e is not None
    await conn.execute(
        """
        INSERT INTO activities (activity_id, kind, subject, occurred_at, customer_id, contact_id,
                                account_id, deal_id, owner_id, team_id, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (activity_id) DO NOTHING
        """,
        a.id,
        e.kind,
        e.subject,
        e.occurred_at,
        e.customer_id,
        e.about.contact_id,
        e.about.account_id,
        e.about.deal_id,
        e.owner_id,
        e.team_id,
        at,
    )


async def upsert_task(conn: Conn, t: Task, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO tasks (task_id, title, due_at, assignee_id, team_id, priority, done,
                           customer_id, contact_id, account_id, deal_id, origin, version,
                           created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
        ON CONFLICT (task_id) DO UPDATE SET title = EXCLUDED.title, due_at = EXCLUDED.due_at,
            assignee_id = EXCLUDED.assignee_id, priority = EXCLUDED.priority,
            done = EXCLUDED.done, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
        """,
        t.id,
        t.title,
        t.due_at,
        t.assignee_id,
        t.team_id,
        t.priority,
        t.done,
        t.customer_id,
        t.about.contact_id,
        t.about.account_id,
        t.about.deal_id,
        t.origin,
        t.version,
        at,
    )
