"""Scheduled jobs of the audience and website part (to be run by the service's Scheduler)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from crm_marketing.audience.confirmations import retry_job
from crm_marketing.web import ratelimit
from crm_runtime.context import ServiceContext
from crm_runtime.scheduler import Job


def audience_jobs(ctx: ServiceContext) -> dict[str, Job]:
    """``audience.consent_mails``: resend unsent opt-in mails; ``web.rate_limits``: purge."""

    async def purge(pool: asyncpg.Pool, now: datetime) -> int:
        async with pool.acquire() as conn:
            return await ratelimit.purge(conn, now)

    return {"audience.consent_mails": retry_job(ctx), "web.rate_limits": purge}
