"""The service desk's scheduled jobs (ticket mail retries, auto-close, the SLA jobs), and the
background task that runs them beside the API (``SCHEDULER_ENABLED``; one replica leads)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import asyncpg

from crm_runtime.context import ServiceContext
from crm_runtime.errors import CrmError
from crm_runtime.eventstore import Metadata
from crm_runtime.http.app import BackgroundTask
from crm_runtime.mail import Mailer
from crm_runtime.scheduler import Job, Scheduler
from crm_service_desk.adapters import tickets_view
from crm_service_desk.application import tickets_mail
from crm_service_desk.application.sla import sla_jobs
from crm_service_desk.application.tickets import TicketHandlers
from crm_service_desk.application.tickets_links import Links
from crm_service_desk.config import DeskSettings

log = logging.getLogger(__name__)
SYSTEM = Metadata(actor="system:auto-close")


def jobs_for(ctx: ServiceContext, desk: DeskSettings) -> dict[str, Job]:
    mailer = Mailer(ctx.settings.smtp_url, desk.support_address)
    handlers = TicketHandlers(ctx.store, desk, Links.of(ctx.settings, desk))

    async def mail(pool: asyncpg.Pool, now: datetime) -> int:
        return await tickets_mail.send_pending(pool, mailer, now)

    async def auto_close(pool: asyncpg.Pool, now: datetime) -> int:
        """Resolved tickets nobody answered for ``auto_close_days`` are closed."""
        async with pool.acquire() as conn:
            due = await tickets_view.resolved_before(
                conn, now - timedelta(days=desk.auto_close_days)
            )
        closed = 0
        for ticket_id in due:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    ticket = await handlers.load(conn, ticket_id)
                    if ticket.status != "resolved":
                        continue
                    await handlers.close(conn, ticket, "no reply after resolution", SYSTEM, now)
                    closed += 1
            except CrmError:  # changed concurrently: the next tick sees it again
                continue
        return closed

    jobs: dict[str, Job] = {"tickets.mail": mail, "tickets.auto_close": auto_close}
    jobs.update(sla_jobs(ctx))
    return jobs


def background(desk: DeskSettings) -> BackgroundTask:
    async def run_scheduler(ctx: ServiceContext, stop: asyncio.Event) -> None:
        if ctx.settings.scheduler_enabled:
            await Scheduler(ctx.pool, jobs_for(ctx, desk)).run(
                stop, ctx.settings.scheduler_interval
            )

    return run_scheduler
