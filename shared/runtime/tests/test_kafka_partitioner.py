"""The relay's partitioner: the same partitions as aiokafka's (and the Java client's) default."""

from __future__ import annotations

import os
import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from crm_runtime.kafka import default_partitions, murmur2, murmur2_many

# From the Java client's own tests (org.apache.kafka.common.utils.UtilsTest), as signed ints.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_client() -> None:
    for data, expected in JAVA_VECTORS.items():
        assert murmur2(data) == expected & 0xFFFFFFFF
    assert murmur2_many(list(JAVA_VECTORS)) == [v & 0xFFFFFFFF for v in JAVA_VECTORS.values()]


def test_murmur2_many_matches_aiokafka_for_every_length() -> None:
    rng = random.Random(7)
    for length in range(0, 80):
        keys = [rng.randbytes(length) for _ in range(9)]  # grouped: the wide-integer path
        expected = [aiokafka_murmur2(k) for k in keys]
        assert murmur2_many(keys) == expected, length
        assert [murmur2(k) for k in keys] == expected, length
    mixed = [os.urandom(rng.randrange(0, 64)) for _ in range(2000)]
    mixed += (
        [b"\xff" * 37] * 9 + [b"\x00" * 36] * 5 + [str(uuid.uuid4()).encode() for _ in range(500)]
    )
    rng.shuffle(mixed)
    assert murmur2_many(mixed) == [aiokafka_murmur2(k) for k in mixed]


def test_default_partitions_are_the_default_partitioners() -> None:
    keys = [str(uuid.uuid4()).encode() for _ in range(700)] + ["kunde-ü".encode(), b""]
    for n in (1, 3, 6, 7, 12):
        parts = list(range(n))
        expected = [DefaultPartitioner()(k, parts, parts) for k in keys]
        assert default_partitions(keys, parts) == expected
    chosen = default_partitions([None, b"a", None], [0, 1, 2])
    assert chosen[1] == DefaultPartitioner()(b"a", [0, 1, 2], [0, 1, 2])
    assert all(p in (0, 1, 2) for p in chosen)
