"""Loading, saving and projecting profiles; merges; the alias directory of customer ids.

Every writer of a profile (API, forms, the consumer of sales' events) first takes the profile's
advisory lock in its transaction, so the profile's stream never sees two writers at once (no
concurrency errors between the consumer and the API), and its rows follow its events.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from crm_events import registry
from crm_events.schemas.marketing import (
    ConsentGranted,
    ConsentRequested,
    ConsentWithdrawn,
    ProfileMerged,
    ProfileRestored,
    PurchaseRecorded,
)
from crm_marketing.audience.domain import ATTRIBUTES, Profile
from crm_runtime.db import Conn
from crm_runtime.errors import NotFound
from crm_runtime.eventstore import EventStore, Metadata, StoredEvent
from crm_runtime.repository import Repository

MAX_LINK_DEPTH = 20


async def lock(conn: Conn, customer_id: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"profile:{customer_id}"
    )


async def canonical(conn: Conn, customer_id: str) -> str:
    """The customer id ``customer_id`` stands for now (merges, conversions, identifications)."""
    current = customer_id
    for _ in range(MAX_LINK_DEPTH):
        nxt = await conn.fetchval(
            "SELECT customer_id FROM profile_aliases WHERE alias_id = $1"
            " ORDER BY created_at DESC, link_id LIMIT 1",
            current,
        )
        if nxt is None or nxt == current:
            return current
        current = str(nxt)
    return current


async def link(conn: Conn, link_id: str, alias_id: str, customer_id: str) -> None:
    if alias_id != customer_id:
        await conn.execute(
            "INSERT INTO profile_aliases (link_id, alias_id, customer_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (link_id) DO NOTHING",
            link_id,
            alias_id,
            customer_id,
        )


class Profiles:
    """The repository of profiles plus their read model (``profiles``, ``consents``, …)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.repo = Repository(store, Profile)

    async def get(self, conn: Conn, customer_id: str) -> Profile:
        """The profile (a new, not yet existing one if it has no stream). Lock it first."""
        events = await self.store.read_stream(f"profile-{customer_id}", conn=conn)
        return Profile.rehydrate(
            customer_id,
            ((registry.decode(e.type, e.schema_version, e.data), e.version) for e in events),
        )

    async def load_active(self, conn: Conn, customer_id: str) -> Profile:
        """Lock and load the live profile ``customer_id`` stands for; NotFound if none."""
        cid = await canonical(conn, customer_id)
        await lock(conn, cid)
        profile = await self.get(conn, cid)
        if not profile.exists or profile.merged_into is not None:
            raise NotFound(f"there is no audience profile for customer {customer_id}")
        return profile

    async def save(self, conn: Conn, profile: Profile, metadata: Metadata) -> list[StoredEvent]:
        stored = await self.repo.save(conn, profile, metadata)
        if stored:
            await project(conn, profile, stored)
        return stored

    async def merge(
        self, conn: Conn, survivor_id: str, merged_id: str, link_id: str, metadata: Metadata
    ) -> bool:
        """Fold the profile of ``merged_id`` into ``survivor_id`` and link the ids.

        Returns False when there was nothing to fold (no live profile of ``merged_id``).
        """
        await link(conn, link_id, merged_id, survivor_id)
        survivor_id = await canonical(conn, survivor_id)
        if survivor_id == merged_id:
            return False
        for cid in sorted({survivor_id, merged_id}):  # one lock order: no deadlocks
            await lock(conn, cid)
        merged = await self.get(conn, merged_id)
        if not merged.exists or merged.merged_into is not None:
            return False
        survivor = await self.get(conn, survivor_id)
        if not survivor.exists:
            survivor = Profile.start(survivor_id, "sales", {})
        survivor.absorb(merged, link_id)
        merged.fold_into(survivor_id, link_id)
        await self.save(conn, survivor, metadata)
        await self.save(conn, merged, metadata)
        for table in ("purchases", "web_activity", "visitors", "form_submissions"):
            await conn.execute(
                f"UPDATE {table} SET customer_id = $1 WHERE customer_id = $2",
                survivor_id,
                merged_id,
            )
        return True

    async def unmerge(self, conn: Conn, link_id: str, metadata: Metadata) -> bool:
        """A merge was undone: the merged profile stands on its own again (what it had then)."""
        row = await conn.fetchrow(
            "DELETE FROM profile_aliases WHERE link_id = $1 RETURNING alias_id", link_id
        )
        if row is None:
            return False
        await lock(conn, row["alias_id"])
        merged = await self.get(conn, row["alias_id"])
        if not merged.restore(link_id):
            return False
        await self.save(conn, merged, metadata)
        return True


def new_request_id() -> str:
    return str(uuid.uuid4())


async def project(conn: Conn, profile: Profile, stored: list[StoredEvent]) -> None:
    """Bring the rows of ``profile`` up to its state after ``stored`` (same transaction)."""
    cid = profile.id
    if profile.merged_into is not None:
        for table in ("profiles", "consents", "push_devices"):
            await conn.execute(f"DELETE FROM {table} WHERE customer_id = $1", cid)
        return
    at = stored[-1].occurred_at
    values = [profile.values.get(k) for k in ATTRIBUTES]
    cols = ", ".join(ATTRIBUTES)
    params = ", ".join(f"${i + 2}" for i in range(len(ATTRIBUTES)))
    sets = ", ".join(f"{k} = EXCLUDED.{k}" for k in ATTRIBUTES)
    n = len(ATTRIBUTES) + 2
    await conn.execute(
        f"INSERT INTO profiles (customer_id, {cols}, created_at, updated_at)"
        f" VALUES ($1, {params}, ${n}, ${n}) ON CONFLICT (customer_id) DO UPDATE SET {sets},"
        " updated_at = EXCLUDED.updated_at",
        cid,
        *values,
        at,
    )
    touched: dict[str, datetime] = {}
    restored = False
    for e in stored:
        payload = registry.decode(e.type, e.schema_version, e.data)
        if isinstance(payload, ConsentRequested | ConsentGranted | ConsentWithdrawn):
            touched[payload.channel] = e.occurred_at
        elif isinstance(payload, ProfileMerged):
            for c in payload.consents:
                touched[c.channel] = e.occurred_at
        elif isinstance(payload, ProfileRestored):
            restored = True
        elif isinstance(payload, PurchaseRecorded):
            await _insert_purchase(conn, cid, payload)
    if restored:
        touched.update(dict.fromkeys(profile.consents, at))
    for channel, changed_at in touched.items():
        state = profile.consents[channel]
        await conn.execute(
            "INSERT INTO consents (customer_id, channel, status, changed_at, address, request_id,"
            " source) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (customer_id, channel)"
            " DO UPDATE SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at,"
            " address = EXCLUDED.address, request_id = EXCLUDED.request_id,"
            " source = EXCLUDED.source",
            cid,
            channel,
            state.status,
            changed_at,
            state.address,
            state.request_id,
            state.source,
        )
    tokens = list(profile.devices)
    await conn.execute(
        "DELETE FROM push_devices WHERE customer_id = $1 AND NOT (token = ANY($2::text[]))",
        cid,
        tokens,
    )
    if tokens:
        await conn.execute(
            "INSERT INTO push_devices (customer_id, token, platform, registered_at)"
            " SELECT $1, t, p, $4 FROM unnest($2::text[], $3::text[]) AS d(t, p)"
            " ON CONFLICT (customer_id, token) DO UPDATE SET platform = EXCLUDED.platform",
            cid,
            tokens,
            [profile.devices[t] for t in tokens],
            at,
        )


async def _insert_purchase(conn: Conn, cid: str, p: PurchaseRecorded) -> None:
    await conn.execute(
        "INSERT INTO purchases (purchase_id, customer_id, product_id, product_name, category,"
        " amount_minor, currency, occurred_at, source, source_id, deal_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        p.purchase_id,
        cid,
        p.product_id,
        p.product_name,
        p.category,
        p.amount_minor,
        p.currency,
        p.occurred_at,
        p.source,
        p.source_id,
        p.deal_id,
    )
