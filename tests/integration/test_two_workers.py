"""Two analytics workers in one consumer group give the same results as one: every event is on
the timeline exactly once, split between the workers by partition."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crm_runtime import db
from crm_runtime.context import open_context
from crm_runtime.eventstore import Metadata, NewEvent
from crm_runtime.relay import OutboxRelay
from crm_runtime.settings import Settings
from crm_runtime.testing import unique_name

pytestmark = pytest.mark.integration


async def test_two_workers_one_group_same_result(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    kafka: tuple[str, bool],
    tmp_path: Path,
) -> None:
    sales_db = await fresh_db("crm_sales")
    analytics_db = await fresh_db("crm_analytics")
    await db.migrate_url(analytics_db, ["crm_runtime", "crm_analytics"])
    settings = settings_for("sales", database_url=sales_db, kafka_partitions=4)
    env = {
        **os.environ,
        "ANALYTICS_DATABASE_URL": analytics_db,
        "KAFKA_BOOTSTRAP_SERVERS": kafka[0],
        "KAFKA_EMBEDDED": str(kafka[1]).lower(),
        "KAFKA_PARTITIONS": "4",
        "ANALYTICS_APP_ID": unique_name("analytics"),
        "LOG_LEVEL": "WARNING",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "crm_runtime.cli", "analytics-worker"],
            env={**env, "CRM_HOME": str(tmp_path / f"worker{i}")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    ctx = await open_context(settings, ["crm_sales"])
    stop = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(ctx.pool, ctx.store, settings, "sales").run(stop))
    conn = await asyncpg.connect(analytics_db)
    try:
        customers = [str(uuid.uuid4()) for _ in range(200)]
        async with ctx.pool.acquire() as c:
            for customer in customers:
                lead = str(uuid.uuid4())
                event = NewEvent(
                    "crm.sales.lead.captured",
                    {"lead_id": lead, "customer_id": customer, "name": "N", "source": "import"},
                    schema_version=2,
                    subject=customer,
                )
                async with c.transaction():
                    await ctx.store.append(c, f"lead-{lead}", "lead", 0, [event], Metadata())
        deadline = time.monotonic() + 90
        rows = 0
        while time.monotonic() < deadline:
            rows = await conn.fetchval(
                "SELECT count(*) FROM timeline WHERE customer_id = ANY($1::text[])", customers
            )
            if rows >= len(customers):
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1)  # anything applied twice would show up now
        # (the topic is shared with other tests: only this test's customers are counted)
        per_customer = await conn.fetch(
            "SELECT customer_id, count(*) AS n FROM timeline WHERE customer_id = ANY($1::text[])"
            " GROUP BY customer_id",
            customers,
        )
        assert len(per_customer) == len(customers)
        assert {r["customer_id"] for r in per_customer} == set(customers)
        assert all(r["n"] == 1 for r in per_customer)
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        await conn.close()
        stop.set()
        await relay
        await ctx.close()
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
