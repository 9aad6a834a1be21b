"""The sales service's scheduled jobs, and the hooks that run them beside the API."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg

from crm_runtime.context import ServiceContext
from crm_runtime.mail import Mailer
from crm_runtime.scheduler import Job, Scheduler
from crm_sales.application.reminders import flag_inactive_top_accounts, send_pending_reminders


def jobs_for(ctx: ServiceContext) -> dict[str, Job]:
    settings = ctx.settings
    mailer = Mailer(settings.smtp_url, settings.mail_from)

    async def flag(pool: asyncpg.Pool, now: datetime) -> int:
        return await flag_inactive_top_accounts(
            pool, ctx.store, now, settings.reminder_inactive_days
        )

    async def mail(pool: asyncpg.Pool, now: datetime) -> int:
        return await send_pending_reminders(pool, mailer, now)

    jobs: dict[str, Job] = {"reminders.flag": flag, "reminders.mail": mail}
    jobs.update(_billing_jobs(ctx))
    return jobs


def _billing_jobs(ctx: ServiceContext) -> dict[str, Job]:
    try:
        from crm_sales.application.billing import mark_overdue
    except ImportError:  # billing not installed in this build
        return {}

    async def overdue(pool: asyncpg.Pool, now: datetime) -> int:
        async with pool.acquire() as conn, conn.transaction():
            return int(await mark_overdue(conn, ctx.store, now))

    return {"invoices.overdue": overdue}


async def run_scheduler(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """The scheduler beside the API (``SCHEDULER_ENABLED``; one replica leads)."""
    if ctx.settings.scheduler_enabled:
        await Scheduler(ctx.pool, jobs_for(ctx)).run(stop, ctx.settings.scheduler_interval)
