"""The per-recipient message table and its events (stream ``message-<id>``, subject = customer).

A message's state lives in its row; every change of it appends the matching event in the same
transaction, with the row's ``version`` as the stream's expected version (the row is locked or
guarded by its status, so the two cannot drift apart).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from crm_events import EventPayload, registry
from crm_events.schemas.marketing_campaigns import Channel, MessageSkipped, SkipReason
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata, NewEvent, StreamAppend

STREAM_TYPE = "message"

# A message's status only moves forward along this order (bounced and skipped are ends).
PROGRESS = {"sent": 1, "delivered": 2, "opened": 3, "clicked": 4, "unsubscribed": 5}


def stream_id(message_id: UUID) -> str:
    return f"{STREAM_TYPE}-{message_id}"


def advanced(current: str, new: str) -> str:
    """The status after ``new`` happened to a message in ``current`` (never moves back)."""
    if current not in PROGRESS or new not in PROGRESS:
        return current
    return new if PROGRESS[new] > PROGRESS[current] else current


@dataclass(frozen=True)
class MessageKey:
    message_id: UUID
    customer_id: str
    channel: Channel
    campaign_id: str | None
    trigger_id: str | None

    def ref(self) -> dict[str, object]:
        return {
            "message_id": str(self.message_id),
            "customer_id": self.customer_id,
            "channel": self.channel,
            "campaign_id": self.campaign_id,
            "trigger_id": self.trigger_id,
        }

    @classmethod
    def of(cls, row: asyncpg.Record) -> MessageKey:
        return cls(
            row["message_id"],
            row["customer_id"],
            row["channel"],
            row["campaign_id"],
            row["trigger_id"],
        )


def new_event(payload: EventPayload, subject: str) -> NewEvent:
    type_, version = registry.type_of(payload)
    return NewEvent(
        type=type_, schema_version=version, data=payload.model_dump(mode="json"), subject=subject
    )


async def append(
    conn: Conn,
    store: EventStore,
    key: MessageKey,
    version: int,
    payloads: Sequence[EventPayload],
    metadata: Metadata,
) -> int:
    """Append ``payloads`` to the message's stream at ``version``; returns the new version."""
    events = [new_event(p, key.customer_id) for p in payloads]
    stored = await store.append(
        conn, stream_id(key.message_id), STREAM_TYPE, version, events, metadata
    )
    return stored[-1].version if stored else version


async def start_streams(
    conn: Conn,
    store: EventStore,
    firsts: Sequence[tuple[MessageKey, EventPayload]],
    metadata: Metadata,
) -> None:
    """Append the first event of many message streams at once (one COPY)."""
    if firsts:
        await store.append_new_streams(
            conn,
            [
                StreamAppend(
                    stream_id(key.message_id), STREAM_TYPE, 0, [new_event(p, key.customer_id)]
                )
                for key, p in firsts
            ],
            metadata,
        )


async def skip_new(
    conn: Conn,
    store: EventStore,
    skipped: Sequence[tuple[MessageKey, SkipReason]],
    metadata: Metadata,
) -> None:
    """Record skips of messages whose streams have no events yet (one COPY for all)."""
    if not skipped:
        return
    batches = [
        StreamAppend(
            stream_id(key.message_id),
            STREAM_TYPE,
            0,
            [new_event(MessageSkipped(**key.ref(), reason=reason), key.customer_id)],
        )
        for key, reason in skipped
    ]
    await store.append_new_streams(conn, batches, metadata)


NewMessage = tuple[UUID, str, str, str, str | None, datetime]
"""(message_id, customer_id, channel, template_id, skip_reason or None, due_at)"""


async def insert_messages(
    conn: Conn,
    rows: Sequence[NewMessage],
    *,
    campaign_id: str | None,
    trigger_id: str | None,
    episode_id: UUID | None,
    now: datetime,
    template_revision: int | None = None,
) -> None:
    """Queued rows, or skipped ones at version 1 (the caller appends their skip events);
    ``template_revision``: the revision every row is rendered with (None: fixed at first claim)."""
    await conn.copy_records_to_table(
        "messages",
        records=[
            (
                mid,
                campaign_id,
                trigger_id,
                episode_id,
                cid,
                channel,
                template_id,
                "skipped" if reason else "queued",
                reason,
                due,
                1 if reason else 0,
                now,
                template_revision,
            )
            for mid, cid, channel, template_id, reason, due in rows
        ],
        columns=[
            "message_id",
            "campaign_id",
            "trigger_id",
            "episode_id",
            "customer_id",
            "channel",
            "template_id",
            "status",
            "skip_reason",
            "due_at",
            "version",
            "created_at",
            "template_revision",
        ],
    )


@dataclass(frozen=True)
class Reach:
    """Whether and where a customer can be reached on a channel, and their time zone."""

    consent: str | None  # pending | granted | withdrawn | None (never asked)
    address: str | None
    timezone: str | None

    def skip_reason(self) -> SkipReason | None:
        if self.consent == "withdrawn":
            return "consent_withdrawn"
        if self.consent != "granted":
            return "no_consent"
        if not self.address:
            return "no_contact_point"
        return None


_REACH = """
SELECT u.ord, p.timezone,
       CASE WHEN u.channel = 'email' AND c.status = 'granted' AND c.address IS NOT NULL
                 AND c.address <> lower(p.email)
            THEN 'pending'  -- granted for an address that is no longer theirs
            WHEN u.channel = 'sms' AND c.status = 'granted' AND p.phone IS NOT NULL
                 AND c.address IS DISTINCT FROM regexp_replace(p.phone, '[^0-9+]', '', 'g')
            THEN 'pending'  -- granted for a number that is not (or no longer) theirs
            ELSE c.status END AS consent,
       CASE u.channel
           WHEN 'email' THEN p.email
           WHEN 'sms' THEN p.phone
           ELSE (SELECT d.token FROM push_devices d WHERE d.customer_id = u.cid
                 ORDER BY d.registered_at DESC LIMIT 1)
       END AS address
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(cid, channel, ord)
LEFT JOIN consents c ON c.customer_id = u.cid AND c.channel = u.channel
LEFT JOIN profiles p ON p.customer_id = u.cid
"""


async def reach(conn: Conn, targets: Sequence[tuple[str, str]]) -> list[Reach]:
    """Consent, contact point and time zone of many (customer, channel) pairs in one query.

    Reads the audience tables (profiles, consents, push_devices) the way the audience's
    ``contact_point`` does, but for a whole batch: a contact point counts only with consent
    (for e-mail and SMS, consent given for the address or number the profile has now).
    """
    if not targets:
        return []
    rows = await conn.fetch(_REACH, [t[0] for t in targets], [t[1] for t in targets])
    by_ord = {int(r["ord"]): r for r in rows}
    out = []
    for i in range(1, len(targets) + 1):
        r = by_ord[i]
        out.append(Reach(r["consent"], r["address"], r["timezone"]))
    return out


def links_json(links: Sequence[str]) -> str:
    return json.dumps(list(links))
