"""Reminders: a top-tier account with no logged activity for N days gets a task for its owner
and an e-mail to the owner. Once per lapse: the lapse is identified by the time of the last
activity (or the account's creation), so a new activity starts a new lapse and nothing repeats
on every tick. The e-mail goes out after the task is committed and is retried until sent.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from crm_events.schemas.sales import About, AccountInactivityFlagged
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_runtime.mail import Mailer, MailError, OutgoingMail
from crm_runtime.repository import Repository
from crm_sales.adapters import work_view
from crm_sales.domain.work import Task

MAX_MAIL_ATTEMPTS = 10
SYSTEM = Metadata(actor="system:reminders")


async def flag_inactive_top_accounts(
    pool: asyncpg.Pool, store: EventStore, now: datetime, threshold_days: int
) -> int:
    """Create the reminder task (and its event) for every top account that lapsed; return count."""
    cutoff = now - timedelta(days=threshold_days)
    async with pool.acquire() as conn:
        lapsed = await conn.fetch(
            """
            SELECT a.account_id, a.customer_id, a.name, a.tier, a.owner_id, a.team_id,
                   a.created_at, max(act.occurred_at) AS last_activity
            FROM accounts a
            LEFT JOIN activities act ON act.account_id = a.account_id
            WHERE a.tier = 'top' AND a.merged_into IS NULL
            GROUP BY a.account_id
            HAVING coalesce(max(act.occurred_at), a.created_at) < $1
            """,
            cutoff,
        )
    tasks = Repository(store, Task)
    flagged = 0
    for row in lapsed:
        since = row["last_activity"] or row["created_at"]
        async with pool.acquire() as conn, conn.transaction():
            task_id = str(uuid.uuid4())
            claimed = await conn.fetchval(
                "INSERT INTO reminders (account_id, lapse_since, task_id, owner_id, flagged_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING task_id",
                row["account_id"],
                since,
                task_id,
                row["owner_id"],
                now,
            )
            if claimed is None:
                continue  # this lapse was handled already
            days = (now - since).days
            task = Task.create(
                task_id,
                title=f"Get in touch with {row['name']}: no activity for {days} days",
                about=About(account_id=row["account_id"]),
                customer_id=row["customer_id"],
                due_at=now + timedelta(days=2),
                assignee_id=row["owner_id"],
                team_id=row["team_id"],
                priority="high",
                origin="reminder:inactive-top-account",
            )
            await tasks.save(conn, task, SYSTEM)
            await work_view.upsert_task(conn, task, now)
            flag = AccountInactivityFlagged(
                account_id=row["account_id"],
                tier=row["tier"],
                last_activity_at=row["last_activity"],
                days_without_activity=days,
                threshold_days=threshold_days,
                owner_id=row["owner_id"],
                task_id=task_id,
            )
            await store.append(
                conn,
                f"reminder-{task_id}",
                "reminder",
                0,
                [
                    NewEvent(
                        type="crm.sales.account.inactivity_flagged",
                        data=flag.model_dump(mode="json"),
                        subject=row["customer_id"],
                    )
                ],
                SYSTEM,
            )
            flagged += 1
    return flagged


async def send_pending_reminders(pool: asyncpg.Pool, mailer: Mailer, now: datetime) -> int:
    """E-mail the owners of flagged accounts; retry failures on later ticks. Returns sent count."""
    async with pool.acquire() as conn:
        pending = await conn.fetch(
            """
            SELECT r.account_id, r.lapse_since, r.task_id, r.owner_id, r.flagged_at,
                   a.name, a.tier, rep.email
            FROM reminders r
            JOIN accounts a ON a.account_id = r.account_id
            LEFT JOIN reps rep ON rep.user_id = r.owner_id
            WHERE r.mailed_at IS NULL AND r.attempts < $1
            ORDER BY r.flagged_at
            LIMIT 100
            """,
            MAX_MAIL_ATTEMPTS,
        )
    sent = 0
    for r in pending:
        if not r["email"]:
            await _mark(pool, r, None, "the owner has no e-mail in its rep profile", final=True)
            continue
        days = (now - r["lapse_since"]).days
        text = (
            f"{r['name']} is a {r['tier']}-tier account and has had no logged activity for "
            f"{days} days.\n\nA high-priority task is waiting for you: /tasks/{r['task_id']}\n"
            f"Account: /accounts/{r['account_id']}\n"
        )
        try:
            await mailer.send(
                OutgoingMail(
                    to=[r["email"]],
                    subject=f"Reminder: {r['name']} needs attention",
                    text=text,
                )
            )
        except MailError as exc:
            await _mark(pool, r, None, str(exc)[:500], final=False)
            continue
        await _mark(pool, r, now, None, final=False)
        sent += 1
    return sent


async def _mark(
    pool: asyncpg.Pool,
    r: asyncpg.Record,
    mailed_at: datetime | None,
    error: str | None,
    *,
    final: bool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE reminders SET mailed_at = $3, mail_error = $4,"
            " attempts = CASE WHEN $5 THEN $6 ELSE attempts + 1 END"
            " WHERE account_id = $1 AND lapse_since = $2",
            r["account_id"],
            r["lapse_since"],
            mailed_at,
            error,
            final,
            MAX_MAIL_ATTEMPTS,
        )
