"""Fixtures and helpers of the segment and template tests (test_mks_*, test_mkt_*)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from crm_marketing.app import create_app
from crm_runtime.context import ServiceContext
from crm_runtime.eventstore import Metadata, NewEvent
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller


@dataclass
class Mks:
    client: httpx.AsyncClient
    ctx: ServiceContext
    marketer: ApiCaller
    admin: ApiCaller
    token: Callable[..., str]

    def caller(self, *roles: str, user: str = "u-other") -> ApiCaller:
        return ApiCaller(self.client, self.token(*roles, user=user))

    async def profile(self, cid: str | None = None, **fields: Any) -> str:
        """A profile row as the audience part keeps it (columns of migration 0001)."""
        cid = cid or str(uuid.uuid4())
        cols = ["customer_id", *fields]
        marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
        await self.ctx.pool.execute(
            f"INSERT INTO profiles ({', '.join(cols)}) VALUES ({marks})", cid, *fields.values()
        )
        return cid

    async def activity(
        self, cid: str, kind: str, at: datetime, *, category: str | None = None, **more: Any
    ) -> None:
        await self.ctx.pool.execute(
            "INSERT INTO web_activity (event_id, visitor_id, customer_id, kind, category,"
            " product_id, url, query, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            uuid.uuid4(),
            f"v-{cid}",
            cid,
            kind,
            category,
            more.get("product_id"),
            more.get("url"),
            more.get("query"),
            at,
        )

    async def purchase(self, cid: str, at: datetime, category: str = "phones") -> None:
        await self.ctx.pool.execute(
            "INSERT INTO purchases (purchase_id, customer_id, product_id, category, occurred_at)"
            " VALUES ($1, $2, 'p-1', $3, $4)",
            str(uuid.uuid4()),
            cid,
            category,
            at,
        )

    async def consent(self, cid: str, channel: str, status: str, at: datetime) -> None:
        await self.ctx.pool.execute(
            "INSERT INTO consents (customer_id, channel, status, changed_at)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (customer_id, channel) DO UPDATE SET status = EXCLUDED.status",
            cid,
            channel,
            status,
            at,
        )

    async def touch(self, *cids: str) -> None:
        """An event about each customer in the service's store, as the audience part appends
        with its row changes (only the subject matters to the segment tailer)."""
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            for cid in cids:
                await self.ctx.store.append(
                    conn,
                    f"test-{uuid.uuid4()}",
                    "test",
                    0,
                    [NewEvent(type="test.customer_touched", data={}, subject=cid)],
                    Metadata(actor="test"),
                )

    async def events(self, type_: str, segment_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self.ctx.pool.fetch(
            "SELECT subject, payload FROM events WHERE event_type = $1"
            " AND ($2::text IS NULL OR payload->>'segment_id' = $2) ORDER BY position",
            type_,
            segment_id,
        )
        return [{"subject": r["subject"], **json.loads(r["payload"])} for r in rows]


@pytest.fixture
async def mks(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Mks]:
    url = await fresh_db("crm_runtime.people", "crm_marketing")
    settings = settings_for(
        "marketing", database_url=url, scheduler_enabled=False, consumers_enabled=False
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://marketing") as c:
            yield Mks(
                c,
                app.state.ctx,
                ApiCaller(c, token("marketer", user="mia")),
                ApiCaller(c, token("admin", user="root")),
                token,
            )
