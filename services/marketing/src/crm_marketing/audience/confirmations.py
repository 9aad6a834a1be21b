"""Sending the double opt-in mails of a context: after commit, and by the retry job."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from crm_marketing.audience import consent_mail
from crm_marketing.settings import marketing_settings, now, public_base_url
from crm_runtime.context import ServiceContext
from crm_runtime.mail import Mailer


def mailer_of(ctx: ServiceContext) -> Mailer:
    return Mailer(ctx.settings.smtp_url, ctx.settings.mail_from)


def links_of(ctx: ServiceContext) -> consent_mail.LinkMaker:
    return consent_mail.LinkMaker(
        ctx.settings.jwt_secret,
        public_base_url(ctx),
        timedelta(hours=marketing_settings(ctx).consent_link_ttl_hours),
    )


async def send_confirmations(ctx: ServiceContext, request_ids: list[str]) -> int:
    """After commit: send these opt-in mails now (the retry job sends what fails here)."""
    if not request_ids:
        return 0
    return await consent_mail.send_pending(
        ctx.pool, mailer_of(ctx), links_of(ctx), now(ctx), request_ids
    )


def retry_job(ctx: ServiceContext) -> consent_mail.SendJob:
    """``async (pool, now) -> int``: send the opt-in mails that are still unsent."""
    mailer, links = mailer_of(ctx), links_of(ctx)

    async def job(pool: asyncpg.Pool, at: datetime) -> int:
        return await consent_mail.send_pending(pool, mailer, links, at)

    return job
