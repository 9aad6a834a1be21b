"""Campaign commands and the jobs that start and finish sending.

Starting a campaign materialises its recipients: the segment's members at that moment become
message rows, queued (with consent and a contact point; due at once or at the end of their quiet
hours) or skipped with the reason — all in the transaction that records ``sending_started``.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta

import asyncpg

from crm_events.schemas.marketing_campaigns import Channel, SkipReason
from crm_marketing.campaigns import views
from crm_marketing.campaigns.domain import Campaign
from crm_marketing.campaigns.policy import QuietHours
from crm_marketing.delivery import messages, ports
from crm_marketing.delivery.messages import MessageKey, NewMessage
from crm_marketing.delivery.settings import DeliverySettings
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version

log = logging.getLogger(__name__)

PAST_GRACE = timedelta(minutes=5)  # a send_at this close behind the server's clock means now

SYSTEM = Metadata(actor="system:campaigns")


async def check_sources(
    conn: Conn, *, segment_id: str, template_id: str, channel: Channel, drafting: bool
) -> None:
    """The segment exists and is active, the template exists, is active and is for ``channel``.

    Drafting (the ids are in the request): an unknown id or a template of another channel is a
    422 naming the field; scheduling: a 409. An archived segment or template is a 409. The
    segment stays locked (FOR SHARE) until the caller's transaction ends, so it cannot be
    archived in between.
    """

    def bad(field: str, reason: str) -> Exception:
        if drafting:
            return InvalidInput(field, reason)
        return Conflict(f"{field}: {reason}", field=field)

    segment = await ports.segment_status(conn, segment_id, lock=True)
    if segment is None:
        raise bad("segment_id", f"segment {segment_id} does not exist")
    if segment != "active":
        raise Conflict(f"segment {segment_id} is archived", field="segment_id")
    template = await ports.template_status(conn, template_id)
    if template is None:
        raise bad("template_id", f"template {template_id} does not exist")
    if template[0] != channel:
        raise bad(
            "template_id", f"template {template_id} is a {template[0]} template, not {channel}"
        )
    if template[1] != "active":
        raise Conflict(f"template {template_id} is archived", field="template_id")


class CampaignHandlers:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.campaigns = Repository(store, Campaign)

    async def create(
        self,
        conn: Conn,
        *,
        name: str,
        template_id: str,
        segment_id: str,
        channel: Channel,
        metadata: Metadata,
        now: datetime,
    ) -> Campaign:
        await check_sources(
            conn, segment_id=segment_id, template_id=template_id, channel=channel, drafting=True
        )
        campaign = Campaign.create(
            str(uuid.uuid4()),
            name=name,
            template_id=template_id,
            segment_id=segment_id,
            channel=channel,
        )
        await self.campaigns.save(conn, campaign, metadata)
        await views.upsert(conn, campaign, now, created_by=metadata.actor)
        return campaign

    async def schedule(
        self,
        conn: Conn,
        campaign_id: str,
        send_at: datetime,
        *,
        expected: int | None,
        metadata: Metadata,
        now: datetime,
    ) -> Campaign:
        campaign = await self._load(conn, campaign_id, expected)
        if campaign.status in ("draft", "scheduled"):  # else the aggregate's 409 says why
            await check_sources(
                conn,
                segment_id=campaign.segment_id,
                template_id=campaign.template_id,
                channel=campaign.channel,
                drafting=False,
            )
        if send_at < now - PAST_GRACE:  # a typo in the year would otherwise send at once
            raise InvalidInput("send_at", "is in the past; leave it out to send now")
        campaign.schedule(max(send_at, now))
        await self.campaigns.save(conn, campaign, metadata)
        await views.upsert(conn, campaign, now)
        return campaign

    async def cancel(
        self,
        conn: Conn,
        campaign_id: str,
        reason: str | None,
        *,
        expected: int | None,
        metadata: Metadata,
        now: datetime,
    ) -> Campaign:
        campaign = await self._load(conn, campaign_id, expected)
        dropped = await conn.fetch(
            "UPDATE messages SET status = 'skipped', skip_reason = 'cancelled', version = 1"
            " WHERE campaign_id = $1 AND status = 'queued'"
            " RETURNING message_id, customer_id, channel, campaign_id, trigger_id",
            campaign_id,
        )
        campaign.cancel(reason, len(dropped))
        await self.campaigns.save(conn, campaign, metadata)
        await views.upsert(conn, campaign, now)
        await messages.skip_new(
            conn, self.store, [(MessageKey.of(r), "cancelled") for r in dropped], metadata
        )
        return campaign

    async def start(
        self, conn: Conn, campaign: Campaign, cfg: DeliverySettings, now: datetime
    ) -> None:
        """Materialise the recipients and move the campaign to sending (caller's transaction).

        Every message is rendered with the template's revision of now. NotFound / Conflict: the
        segment or template is gone, archived (segment) or of another channel."""
        revision, _ = await ports.current_template(conn, campaign.template_id, campaign.channel)
        members = list(dict.fromkeys(await ports.segment_members(conn, campaign.segment_id)))
        reach = await messages.reach(conn, [(m, campaign.channel) for m in members])
        quiet = QuietHours(cfg.quiet_hours_start, cfg.quiet_hours_end, cfg.default_timezone)
        rows: list[NewMessage] = []
        skipped: list[tuple[MessageKey, SkipReason]] = []
        reasons: Counter[str] = Counter()
        for customer_id, where in zip(members, reach, strict=True):
            message_id = uuid.uuid4()
            reason = where.skip_reason()
            due = now if reason else quiet.next_allowed(now, where.timezone)
            rows.append(
                (message_id, customer_id, campaign.channel, campaign.template_id, reason, due)
            )
            if reason is not None:
                key = MessageKey(message_id, customer_id, campaign.channel, campaign.id, None)
                skipped.append((key, reason))
                reasons[reason] += 1
        await messages.insert_messages(
            conn,
            rows,
            campaign_id=campaign.id,
            trigger_id=None,
            episode_id=None,
            now=now,
            template_revision=revision,
        )
        await messages.skip_new(conn, self.store, skipped, SYSTEM)
        campaign.start(members=len(members), queued=len(rows) - len(skipped), skipped=dict(reasons))
        await self.campaigns.save(conn, campaign, SYSTEM)
        await views.upsert(conn, campaign, now)

    async def _load(self, conn: Conn, campaign_id: str, expected: int | None) -> Campaign:
        await conn.execute("SELECT 1 FROM campaigns WHERE campaign_id = $1 FOR UPDATE", campaign_id)
        campaign = await self.campaigns.load(campaign_id, conn=conn)
        check_version(expected, campaign.version)
        return campaign


async def start_due_campaigns(
    pool: asyncpg.Pool, store: EventStore, cfg: DeliverySettings, now: datetime
) -> int:
    """Start every scheduled campaign whose time has come (one transaction each).

    A campaign that cannot start (its segment or template is gone, archived or of another
    channel) is cancelled with the reason, and the others start all the same."""
    handlers = CampaignHandlers(store)
    started = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            campaign_id = await conn.fetchval(
                "SELECT campaign_id FROM campaigns WHERE status = 'scheduled' AND send_at <= $1"
                " ORDER BY send_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                now,
            )
            if campaign_id is None:
                return started
            campaign = await handlers.campaigns.load(campaign_id, conn=conn)
            try:
                async with conn.transaction():  # a savepoint: a failed start leaves nothing
                    await handlers.start(conn, campaign, cfg, now)
            except (NotFound, Conflict, InvalidInput) as exc:
                log.warning(
                    "campaign cannot start; cancelled",
                    extra={"campaign_id": campaign_id, "error": type(exc).__name__},
                )
                campaign = await handlers.campaigns.load(campaign_id, conn=conn)
                campaign.cancel(f"could not start: {exc.detail}"[:500], 0)
                await handlers.campaigns.save(conn, campaign, SYSTEM)
                await views.upsert(conn, campaign, now)
                continue
            started += 1


async def complete_campaigns(pool: asyncpg.Pool, store: EventStore, now: datetime) -> int:
    """Mark sending campaigns whose every recipient was handled as sent."""
    handlers = CampaignHandlers(store)
    done = 0
    async with pool.acquire() as conn:
        ready = await conn.fetch(
            "SELECT c.campaign_id FROM campaigns c WHERE c.status = 'sending' AND NOT EXISTS"
            " (SELECT 1 FROM messages m WHERE m.campaign_id = c.campaign_id"
            "  AND m.status IN ('queued', 'sending'))"
        )
        for r in ready:
            async with conn.transaction():
                locked = await conn.fetchval(
                    "SELECT campaign_id FROM campaigns WHERE campaign_id = $1"
                    " AND status = 'sending' FOR UPDATE SKIP LOCKED",
                    r["campaign_id"],
                )
                if locked is None:
                    continue
                counts = await views.results(conn, locked)
                campaign = await handlers.campaigns.load(locked, conn=conn)
                campaign.finish(
                    sent=counts["sent"] - counts["bounced"],
                    bounced=counts["bounced"],
                    skipped=counts["by_status"].get("skipped", 0),
                )
                await handlers.campaigns.save(conn, campaign, SYSTEM)
                await views.upsert(conn, campaign, now)
                done += 1
    return done
