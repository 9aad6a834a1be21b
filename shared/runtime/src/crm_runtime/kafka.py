"""Kafka clients configured from settings, and explicit topic creation (no auto-creation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Sequence

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


# The default partitioner of the Java client (and aiokafka's): murmur2 of the key, as unsigned
# 32 bits, masked to 31 bits, modulo the partition count. aiokafka computes it in pure Python
# one key at a time (tens of microseconds a key); the relay computes a whole page at once with
# the same arithmetic on wide integers (one 64-bit lane a key), which gives identical partitions.
_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of one key (unsigned 32 bits), as ``aiokafka.partitioner.murmur2``."""
    length = len(data)
    h = _SEED ^ length
    n4 = length >> 2
    if n4:
        for k in struct.unpack_from(f"<{n4}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rest = length & 3
    if rest:
        i = n4 << 2
        if rest == 3:
            h ^= data[i + 2] << 16
        if rest >= 2:
            h ^= data[i + 1] << 8
        h ^= data[i]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def _murmur2_same_length(keys: Sequence[bytes], length: int) -> tuple[int, ...]:
    """murmur2 of many keys of one length: every step on all keys at once, one 64-bit lane a
    key (a 32-bit value times the 31-bit constant stays inside its lane; shifts right only
    spill into bits of the lane below that the 32-bit mask clears)."""
    n = len(keys)
    lanes = struct.Struct(f"<{n}Q")
    mask = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * n, "little")

    def pack(column: Sequence[int]) -> int:
        return int.from_bytes(lanes.pack(*column), "little")

    n4, rest = length >> 2, length & 3
    fields = struct.Struct(f"<{n4}I{rest}B")
    columns = list(zip(*fields.iter_unpack(b"".join(keys)), strict=True))
    h = (_SEED ^ length) * int.from_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00" * n, "little")
    for j in range(n4):
        k = (pack(columns[j]) * _M) & mask
        k = (k ^ (k >> 24)) & mask
        h = ((h * _M) & mask) ^ ((k * _M) & mask)
    if rest:
        tail = pack(columns[n4])
        if rest >= 2:
            tail ^= pack(columns[n4 + 1]) << 8
        if rest == 3:
            tail ^= pack(columns[n4 + 2]) << 16
        h = ((h ^ tail) * _M) & mask
    h = (h ^ (h >> 13)) & mask
    h = (h * _M) & mask
    h = (h ^ (h >> 15)) & mask
    return lanes.unpack(h.to_bytes(8 * n, "little"))


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """``[murmur2(k) for k in keys]``, computed a key length at a time."""
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    out = [0] * len(keys)
    for length, idx in by_length.items():
        if len(idx) < 4 or length == 0:
            for i in idx:
                out[i] = murmur2(keys[i])
            continue
        for i, h in zip(idx, _murmur2_same_length([keys[i] for i in idx], length), strict=True):
            out[i] = h
    return out


def default_partitions(keys: Sequence[bytes | None], partitions: Sequence[int]) -> list[int]:
    """The partitions aiokafka's default partitioner picks (random for a record without key)."""
    present = [k for k in keys if k is not None]
    hashes = iter(murmur2_many(present))
    n = len(partitions)
    return [
        partitions[(next(hashes) & 0x7FFFFFFF) % n] if k is not None else random.choice(partitions)
        for k in keys
    ]
