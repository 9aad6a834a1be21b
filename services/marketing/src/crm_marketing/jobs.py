"""The marketing service's scheduled jobs, and the loops that run them beside the API.

- ``run_scheduler``: the scheduler (one replica leads, ``SCHEDULER_INTERVAL``) runs every job of
  ``jobs_for`` — the segments' and the audience's periodic jobs, campaigns, delivery, triggers.
- ``run_sender``: the low-latency path on every replica (``MARKETING_SENDER_INTERVAL``, default
  1 s): start due campaigns, evaluate triggers, send due messages, finish campaigns. Replicas
  share the work safely: messages and campaigns are claimed with ``FOR UPDATE SKIP LOCKED``,
  the trigger processor's checkpoint row is locked while it works.

Both are off when ``SCHEDULER_ENABLED`` is false (tests drive ``jobs_for`` with a ManualClock).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from datetime import UTC, datetime

import asyncpg

from crm_marketing.campaigns.application import complete_campaigns, start_due_campaigns
from crm_marketing.delivery.sender import Deliverer
from crm_marketing.delivery.settings import delivery_settings
from crm_marketing.triggers.application import expire_episodes, process_events
from crm_runtime.context import ServiceContext
from crm_runtime.scheduler import Job, Scheduler
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)


def campaign_jobs(ctx: ServiceContext, deliverer: Deliverer | None = None) -> dict[str, Job]:
    cfg = delivery_settings(ctx)
    sender = deliverer or Deliverer(ctx.pool, ctx.store, ctx.settings, cfg)

    async def start(pool: asyncpg.Pool, now: datetime) -> int:
        return await start_due_campaigns(pool, ctx.store, cfg, now)

    async def triggers(pool: asyncpg.Pool, now: datetime) -> int:
        return await process_events(pool, ctx.store, now)

    async def deliver(pool: asyncpg.Pool, now: datetime) -> int:
        return await sender.drain(now)

    async def complete(pool: asyncpg.Pool, now: datetime) -> int:
        return await complete_campaigns(pool, ctx.store, now)

    async def expire(pool: asyncpg.Pool, now: datetime) -> int:
        return await expire_episodes(pool, ctx.store, now)

    # Order matters within a tick: start, then fire triggers, then send what is due, then finish.
    return {
        "campaigns.start": start,
        "triggers.process": triggers,
        "triggers.expire": expire,
        "messages.deliver": deliver,
        "campaigns.complete": complete,
    }


def _jobs_of(ctx: ServiceContext, module: str, factory: str) -> dict[str, Job]:
    """Another part's jobs, if that part is installed in this build."""
    try:
        found = getattr(importlib.import_module(module), factory, None)
    except ImportError:
        return {}
    return dict(found(ctx)) if found is not None else {}


def jobs_for(ctx: ServiceContext) -> dict[str, Job]:
    # Segments first: a campaign starting this tick sees their members fresh.
    jobs = _jobs_of(ctx, "crm_marketing.segments.api", "segment_jobs")
    jobs.update(_jobs_of(ctx, "crm_marketing.web.jobs", "audience_jobs"))
    jobs.update(campaign_jobs(ctx))
    return jobs


async def run_scheduler(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """The scheduler beside the API (``SCHEDULER_ENABLED``; one replica leads)."""
    if ctx.settings.scheduler_enabled:
        await Scheduler(ctx.pool, jobs_for(ctx)).run(stop, ctx.settings.scheduler_interval)


async def run_sender(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Send due messages within about a second, on every replica (``SCHEDULER_ENABLED``)."""
    if not ctx.settings.scheduler_enabled:
        return
    cfg = delivery_settings(ctx)
    deliverer = Deliverer(ctx.pool, ctx.store, ctx.settings, cfg)
    jobs = campaign_jobs(ctx, deliverer)
    del jobs["triggers.expire"]  # periodic: the scheduler's
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            for name, job in jobs.items():
                try:
                    await job(ctx.pool, now)
                except Exception:
                    log.exception("sender step failed", extra={"job": name})
            await sleep_or_stop(stop, cfg.sender_interval)
    finally:
        await deliverer.close()
