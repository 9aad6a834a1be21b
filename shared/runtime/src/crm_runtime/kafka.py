"""Kafka clients configured from settings, and explicit topic creation (no auto-creation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from crm_runtime.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence,
        "linger_ms": 0,
        "request_timeout_ms": 15_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15_000
    )


async def ensure_topics(
    client: AIOKafkaAdminClient, topics: list[str], partitions: int, replication: int
) -> list[str]:
    """Create the topics that do not exist yet; return the ones this call created."""
    existing = set(await client.list_topics())
    missing = [t for t in topics if t not in existing]
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):  # another replica was first
            await client.create_topics(
                [
                    NewTopic(t, num_partitions=partitions, replication_factor=replication)
                    for t in missing
                ]
            )
        log.info("topics created", extra={"topics": missing})
    return missing


async def broker_reachable(settings: Settings, wait: float = 3.0) -> bool:
    """A cheap metadata round trip, for readiness."""
    client = admin(settings)
    try:
        await asyncio.wait_for(client.start(), wait)
        await asyncio.wait_for(client.list_topics(), wait)
        return True
    except Exception:  # any failure means "not ready"
        return False
    finally:
        with contextlib.suppress(Exception):  # closing a client that never connected
            await client.close()
