"""Consumer lag per topic partition, measured against the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from crm_analytics.lag import measure
from crm_runtime import kafka
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


async def test_lag_is_end_offset_minus_committed(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for("analytics", kafka_partitions=2)
    topic = f"lag.test.{uuid.uuid4().hex[:8]}"
    group = f"lag-group-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await kafka.ensure_topics(admin, [topic], 2, 1)
    finally:
        await admin.close()
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, value=b"{}", partition=i % 2)
    finally:
        await producer.stop()
    assert await measure(settings, group, [topic, "no.such.topic"]) == {
        (topic, 0): 5,
        (topic, 1): 5,
    }
    consumer = kafka.consumer(settings, group_id=group)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "")})
    finally:
        await consumer.stop()
    assert await measure(settings, group, [topic]) == {(topic, 0): 2, (topic, 1): 5}
