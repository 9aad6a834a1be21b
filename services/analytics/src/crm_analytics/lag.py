"""Consumer lag of the analytics processors, per topic and partition, as a Prometheus gauge.

The analytics API process refreshes it every few seconds (it has /metrics; the faust worker
serves no HTTP): lag = the partition's end offset - the offset the worker's consumer group has
committed (the whole partition when nothing is committed yet).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.structs import TopicPartition
from prometheus_client import Gauge

from crm_events import context_topic
from crm_runtime import kafka
from crm_runtime.context import ServiceContext
from crm_runtime.settings import Settings
from crm_runtime.tasks import sleep_or_stop

log = logging.getLogger(__name__)

LAG = Gauge(
    "crm_consumer_lag",
    "Records not yet processed by a consumer group, per topic partition",
    ["group", "topic", "partition"],
)
CONTEXTS = ("sales", "marketing", "service")


async def measure(settings: Settings, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition) of ``group`` on ``topics`` (topics that do not exist: none)."""
    admin = kafka.admin(settings)
    consumer = kafka.consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        existing = set(await consumer.topics())
        partitions = [
            TopicPartition(t, p)
            for t in topics
            if t in existing
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        lag: dict[tuple[str, int], int] = {}
        for tp in partitions:
            done = committed.get(tp)
            offset = done.offset if done is not None and done.offset >= 0 else 0
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - offset)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Refresh the gauge every 5 s until ``stop`` is set (a background task of the API)."""
    settings = ctx.settings
    group = settings.analytics_app_id
    topics = [context_topic(c) for c in CONTEXTS]
    while True:
        try:
            for (topic, partition), value in (await measure(settings, group, topics)).items():
                LAG.labels(group, topic, str(partition)).set(value)
        except Exception as exc:  # the broker may be away; try again next time
            log.warning("consumer lag not measured", extra={"error": type(exc).__name__})
        if await sleep_or_stop(stop, 5.0):
            return
