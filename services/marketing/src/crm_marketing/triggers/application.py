"""Trigger commands, and the processor that evaluates triggers as behaviour arrives.

The processor tails the service's own event log in commit order (``read_committed`` from a
checkpoint kept in ``trigger_progress``, advanced in the transaction of what it decided, so a
restart neither skips nor repeats anything). Product views of a known customer, a visitor's
identification (their earlier anonymous views join them), purchases and profile merges make it
re-evaluate that customer against every active trigger, reading the behaviour tables (web
activity, purchases). A periodic pass re-evaluates open episodes, whose views age out of the
window. A firing queues a message due after the trigger's delay; the sender honours consent,
quiet hours and the frequency cap like for any campaign message.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from crm_events.schemas.marketing_campaigns import MessageSkipped, TriggerFired, TriggerRule
from crm_marketing.delivery import messages, ports
from crm_marketing.delivery.messages import MessageKey
from crm_marketing.triggers.domain import Trigger, decide
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, NotFound
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, StoredEvent
from crm_runtime.repository import Repository, check_version

SYSTEM = Metadata(actor="system:triggers")
PROGRESS = "triggers"
EPISODE_STREAM = "trigger_episode"
WATCHED = frozenset(
    {
        "crm.marketing.web.product_viewed",
        "crm.marketing.visitor.identified",
        "crm.marketing.purchase.recorded",
        "crm.marketing.profile.merged",
    }
)


# --- commands ---------------------------------------------------------------------------------


class TriggerHandlers:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.triggers = Repository(store, Trigger)

    async def define(
        self, conn: Conn, name: str, rule: TriggerRule, metadata: Metadata, now: datetime
    ) -> Trigger:
        trigger = Trigger.define(f"trg-{uuid.uuid4().hex[:16]}", name, rule)
        await self.triggers.save(conn, trigger, metadata)
        await _upsert(conn, trigger, now)
        return trigger

    async def change(
        self,
        conn: Conn,
        trigger_id: str,
        name: str,
        rule: TriggerRule,
        *,
        expected: int | None,
        metadata: Metadata,
        now: datetime,
    ) -> Trigger:
        trigger = await self._load(conn, trigger_id, expected)
        if trigger.change(name, rule):
            await self.triggers.save(conn, trigger, metadata)
            await _upsert(conn, trigger, now)
        return trigger

    async def pause(
        self,
        conn: Conn,
        trigger_id: str,
        *,
        expected: int | None,
        metadata: Metadata,
        now: datetime,
    ) -> Trigger:
        trigger = await self._load(conn, trigger_id, expected)
        trigger.pause()
        await self.triggers.save(conn, trigger, metadata)
        await _upsert(conn, trigger, now)
        await conn.execute(
            "UPDATE trigger_episodes SET ended_at = $2, end_reason = 'trigger_paused'"
            " WHERE trigger_id = $1 AND ended_at IS NULL",
            trigger_id,
            now,
        )
        # Its delayed messages not sent yet are dropped, each with its event.
        dropped = await conn.fetch(
            "UPDATE messages SET status = 'skipped', skip_reason = 'cancelled',"
            " version = version + 1 WHERE trigger_id = $1 AND status = 'queued'"
            " RETURNING message_id, customer_id, channel, campaign_id, trigger_id, version",
            trigger_id,
        )
        for row in dropped:
            key = MessageKey.of(row)
            skipped = MessageSkipped(**key.ref(), reason="cancelled")
            await messages.append(conn, self.store, key, row["version"] - 1, [skipped], metadata)
        return trigger

    async def resume(
        self,
        conn: Conn,
        trigger_id: str,
        *,
        expected: int | None,
        metadata: Metadata,
        now: datetime,
    ) -> Trigger:
        trigger = await self._load(conn, trigger_id, expected)
        trigger.resume()
        await self.triggers.save(conn, trigger, metadata)
        await _upsert(conn, trigger, now)
        return trigger

    async def _load(self, conn: Conn, trigger_id: str, expected: int | None) -> Trigger:
        await conn.execute("SELECT 1 FROM triggers WHERE trigger_id = $1 FOR UPDATE", trigger_id)
        trigger = await self.triggers.load(trigger_id, conn=conn)
        check_version(expected, trigger.version)
        return trigger


async def _upsert(conn: Conn, t: Trigger, now: datetime) -> None:
    assert t.rule is not None
    await conn.execute(
        "INSERT INTO triggers (trigger_id, name, rule, active, version, created_at, updated_at)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $6) ON CONFLICT (trigger_id) DO UPDATE SET"
        " name = EXCLUDED.name, rule = EXCLUDED.rule, active = EXCLUDED.active,"
        " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        t.id,
        t.name,
        json.dumps(t.rule.model_dump(mode="json")),
        t.active,
        t.version,
        now,
    )


# --- evaluation -------------------------------------------------------------------------------


def _rule(row: asyncpg.Record) -> TriggerRule:
    raw: Any = row["rule"]
    return TriggerRule.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


async def _active_triggers(conn: Conn) -> list[tuple[str, TriggerRule]]:
    rows = await conn.fetch(
        "SELECT trigger_id, rule FROM triggers WHERE active ORDER BY trigger_id"
    )
    return [(r["trigger_id"], _rule(r)) for r in rows]


async def evaluate(
    conn: Conn,
    store: EventStore,
    trigger_id: str,
    rule: TriggerRule,
    customer_id: str,
    now: datetime,
) -> str:
    """Start or end the customer's episode of one trigger (caller's transaction); the step."""
    since = now - timedelta(seconds=rule.within_seconds)
    views = int(
        await conn.fetchval(
            "SELECT count(*) FROM web_activity WHERE customer_id = $1 AND kind = 'product_view'"
            " AND lower(category) = lower($2) AND occurred_at > $3",
            customer_id,
            rule.category,
            since,
        )
    )
    purchased = bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM purchases WHERE customer_id = $1"
            " AND lower(category) = lower($2) AND occurred_at > $3)",
            customer_id,
            rule.category,
            since,
        )
    )
    episode = await conn.fetchrow(
        "SELECT episode_id, message_id FROM trigger_episodes"
        " WHERE trigger_id = $1 AND customer_id = $2 AND ended_at IS NULL FOR UPDATE",
        trigger_id,
        customer_id,
    )
    last_fired = await conn.fetchval(
        "SELECT max(started_at) FROM trigger_episodes"
        " WHERE trigger_id = $1 AND customer_id = $2 AND fired",
        trigger_id,
        customer_id,
    )
    step = decide(
        rule,
        views=views,
        purchased=purchased,
        episode_open=episode is not None,
        last_fired_at=last_fired,
        now=now,
    )
    if step.step == "start":
        await _start(conn, store, trigger_id, rule, customer_id, views, step.fire, now)
    elif step.step == "end" and episode is not None:
        await conn.execute(
            "UPDATE trigger_episodes SET ended_at = $2, end_reason = $3 WHERE episode_id = $1",
            episode["episode_id"],
            now,
            step.end_reason,
        )
        if step.end_reason == "purchased" and episode["message_id"] is not None:
            await _withdraw_message(conn, store, episode["message_id"])
    return step.step


async def _start(
    conn: Conn,
    store: EventStore,
    trigger_id: str,
    rule: TriggerRule,
    customer_id: str,
    views: int,
    fire: bool,
    now: datetime,
) -> None:
    episode_id = uuid.uuid4()
    message_id = uuid.uuid4() if fire else None
    send_at = now + timedelta(seconds=rule.delay_seconds) if fire else None
    await conn.execute(
        "INSERT INTO trigger_episodes (episode_id, trigger_id, customer_id, started_at, fired,"
        " message_id) VALUES ($1, $2, $3, $4, $5, $6)",
        episode_id,
        trigger_id,
        customer_id,
        now,
        fire,
        message_id,
    )
    if message_id is not None and send_at is not None:
        try:  # rendered later with the template as it is now
            revision: int | None = (
                await ports.current_template(conn, rule.template_id, rule.channel)
            )[0]
        except (NotFound, Conflict):
            revision = None  # it will not render: the sender skips it (render_failed)
        await messages.insert_messages(
            conn,
            [(message_id, customer_id, rule.channel, rule.template_id, None, send_at)],
            campaign_id=None,
            trigger_id=trigger_id,
            episode_id=episode_id,
            now=now,
            template_revision=revision,
        )
    fired = TriggerFired(
        trigger_id=trigger_id,
        customer_id=customer_id,
        episode_id=str(episode_id),
        views=views,
        message_id=str(message_id) if message_id else None,
        send_at=send_at,
    )
    await store.append(
        conn,
        f"{EPISODE_STREAM}-{episode_id}",
        EPISODE_STREAM,
        0,
        [messages.new_event(fired, customer_id)],
        SYSTEM,
    )


async def _withdraw_message(conn: Conn, store: EventStore, message_id: uuid.UUID) -> None:
    """A delayed message not sent yet is dropped once the customer bought."""
    row = await conn.fetchrow(
        "UPDATE messages SET status = 'skipped', skip_reason = 'no_longer_qualifies',"
        " version = version + 1 WHERE message_id = $1 AND status = 'queued'"
        " RETURNING message_id, customer_id, channel, campaign_id, trigger_id, version",
        message_id,
    )
    if row is not None:
        key = MessageKey.of(row)
        skipped = MessageSkipped(**key.ref(), reason="no_longer_qualifies")
        await messages.append(conn, store, key, row["version"] - 1, [skipped], SYSTEM)


# --- the processor ----------------------------------------------------------------------------


def _customers(events: list[StoredEvent]) -> list[str]:
    found: dict[str, None] = {}
    for e in events:
        if e.type not in WATCHED:
            continue
        for cid in (e.subject, e.data.get("customer_id")):
            if isinstance(cid, str) and cid:
                found[cid] = None
    return list(found)


async def process_events(
    pool: asyncpg.Pool, store: EventStore, now: datetime, batch: int = 500
) -> int:
    """Evaluate the customers whose behaviour changed since the checkpoint; returns how many
    trigger episodes started or ended."""
    changed = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT txid, position FROM trigger_progress WHERE name = $1 FOR UPDATE", PROGRESS
            )
            if row is None:
                await conn.execute(
                    "INSERT INTO trigger_progress (name, txid, position) VALUES ($1, 0, 0)"
                    " ON CONFLICT DO NOTHING",
                    PROGRESS,
                )
                row = await conn.fetchrow(
                    "SELECT txid, position FROM trigger_progress WHERE name = $1 FOR UPDATE",
                    PROGRESS,
                )
            assert row is not None
            events = await store.read_committed(
                Checkpoint(row["txid"], row["position"]), batch, conn=conn
            )
            if not events:
                return changed
            customers = _customers(events)
            if customers:
                triggers = await _active_triggers(conn)
                for customer_id in customers:
                    for trigger_id, rule in triggers:
                        step = await evaluate(conn, store, trigger_id, rule, customer_id, now)
                        changed += step != "stay"
            last = events[-1].checkpoint
            await conn.execute(
                "UPDATE trigger_progress SET txid = $2, position = $3 WHERE name = $1",
                PROGRESS,
                last.txid,
                last.position,
            )
            if len(events) < batch:
                return changed


async def expire_episodes(pool: asyncpg.Pool, store: EventStore, now: datetime) -> int:
    """Re-evaluate open episodes: views age out of the window, so an episode can end."""
    ended = 0
    async with pool.acquire() as conn:
        open_ = await conn.fetch(
            "SELECT e.trigger_id, e.customer_id, t.rule FROM trigger_episodes e"
            " JOIN triggers t ON t.trigger_id = e.trigger_id AND t.active"
            " WHERE e.ended_at IS NULL ORDER BY e.started_at"
        )
        for r in open_:
            async with conn.transaction():
                step = await evaluate(conn, store, r["trigger_id"], _rule(r), r["customer_id"], now)
                ended += step == "end"
    return ended
