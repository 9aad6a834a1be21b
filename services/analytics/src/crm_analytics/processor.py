"""The faust-streaming worker: consumes every context topic and feeds the analytics projections."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import asyncpg
import faust

from crm_analytics.faust_transport import configure_fetch_wait
from crm_analytics.projections import AnalyticsProcessor, all_projections
from crm_analytics.rebuild import worker_turn
from crm_events import context_topic
from crm_runtime import kafka
from crm_runtime.consumer import ConsumedRecord, KafkaDeadLetters
from crm_runtime.context import open_context
from crm_runtime.settings import Settings

log = logging.getLogger(__name__)

CONTEXTS = ("sales", "marketing", "service")


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if raw is None:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def create_faust_app(settings: Settings) -> faust.App:
    configure_fetch_wait(settings.fetch_max_wait_ms)
    datadir = os.path.join(os.environ.get("CRM_HOME", ".crm"), "analytics-data")
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(
        settings.analytics_app_id,
        broker=f"crmkafka://{settings.kafka_bootstrap_servers}",
        store="memory://",
        web_enabled=False,
        datadir=datadir,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Short timeouts so a (re)joining worker gets its partitions in seconds, not a minute.
        broker_rebalance_timeout=5.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    topic = app.topic(
        *(context_topic(c) for c in CONTEXTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka_partitions,
    )
    state: dict[str, Any] = {}
    ready = asyncio.Lock()

    async def processor() -> AnalyticsProcessor:
        async with ready:
            if "processor" not in state:
                ctx = await open_context(settings, ["crm_analytics"], pool_size=4)
                producer = kafka.producer(settings)
                await producer.start()
                state.update(ctx=ctx, producer=producer)
                letters = KafkaDeadLetters(producer, settings)
                state["processor"] = AnalyticsProcessor(ctx.pool, all_projections(), letters)
        proc: AnalyticsProcessor = state["processor"]
        return proc

    @app.agent(topic, name="crm-analytics-timeline")
    async def timeline(stream: Any) -> None:
        proc = await processor()
        # Batches: one transaction per batch (every projection) instead of one commit per event.
        async for batch in stream.take_events(500, within=0.005):
            records = [
                ConsumedRecord(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    _headers(e.message.headers),
                )
                for e in batch
            ]
            # never while `crm analytics rebuild` runs (it holds the lock exclusively)
            async with worker_turn(state["ctx"].pool):
                await proc.process_batch(records)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _close(_: Any, **__: Any) -> None:
        if "producer" in state:
            await state["producer"].stop()
        if "ctx" in state:
            pool: asyncpg.Pool = state["ctx"].pool
            await pool.close()

    return app


async def prepare_topics(settings: Settings) -> None:
    """Create the source topics up front (explicitly, with the configured partition count)."""
    client = kafka.admin(settings)
    await client.start()
    try:
        await kafka.ensure_topics(
            client,
            [context_topic(c) for c in CONTEXTS],
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
    finally:
        await client.close()


def main() -> None:
    """Run the worker (blocks until SIGINT/SIGTERM)."""
    import sys

    settings = Settings.for_service("analytics")
    asyncio.run(prepare_topics(settings))
    app = create_faust_app(settings)
    given = settings.log_level.lower()
    level = {"warning": "warn", "critical": "crit"}.get(given, given)
    # --without-web: the CLI default would open a web server on 0.0.0.0:6066 whatever the app
    # config says; the worker needs none.
    sys.argv = [sys.argv[0], "worker", "--without-web", "--loglevel", level]
    app.main()
