"""The default partitioner: Kafka's murmur2 bit for bit, and sticky placement of keyless
records."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moldau.clients.partitioner import (
    DefaultPartitioner,
    key_partition,
    murmur2,
    to_positive,
)

# Values Java's org.apache.kafka.common.utils.Utils.murmur2 returns for these inputs (the
# vectors Kafka's own unit tests and other Kafka-compatible clients check against).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
}


@pytest.mark.parametrize(("data", "expected"), sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_key_partition_is_to_positive_mod() -> None:
    # Kafka: toPositive(murmur2(key)) % numPartitions, toPositive clears the sign bit
    for key, h in KAFKA_VECTORS.items():
        for n in (1, 2, 3, 6, 7, 100):
            assert key_partition(key, n) == (h & 0x7FFFFFFF) % n
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    # abs() would differ: the sign bit is cleared, not negated
    assert key_partition(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7 != abs(-790332482) % 7


@given(st.binary(max_size=64))
def test_murmur2_is_a_signed_32_bit_int_and_accepts_buffers(data: bytes) -> None:
    h = murmur2(data)
    assert -(2**31) <= h < 2**31
    assert murmur2(bytearray(data)) == h
    assert murmur2(memoryview(data)) == h
    assert key_partition(bytearray(data), 5) == key_partition(data, 5)


def test_keyed_distribution_is_even() -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    n = 8
    counts = Counter(key_partition(rng.randbytes(12), n) for _ in range(40000))
    assert set(counts) == set(range(n))
    for c in counts.values():
        assert abs(c - 5000) < 500, counts


def test_keyed_records_ignore_stickiness() -> None:
    p = DefaultPartitioner(random.Random(1))
    for key in KAFKA_VECTORS:
        assert p.partition("t", key, 6) == key_partition(key, 6)


def test_sticky_until_new_batch_then_switches() -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    p = DefaultPartitioner(random.Random(seed))
    first = p.partition("t", None, 4)
    assert all(p.partition("t", None, 4) == first for _ in range(100))
    p.on_new_batch("t", first, 4)
    second = p.partition("t", None, 4)
    assert second != first
    # a stale notification (for a partition no longer sticky) changes nothing
    p.on_new_batch("t", first, 4)
    assert p.partition("t", None, 4) == second
    # topics are independent
    other = p.partition("u", None, 4)
    p.on_new_batch("u", other, 4)
    assert p.partition("t", None, 4) == second


def test_sticky_prefers_available_partitions_and_spreads() -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    p = DefaultPartitioner(random.Random(seed))
    seen = Counter()
    for _ in range(2000):
        cur = p.partition("t", None, 6, (1, 3, 5))
        assert cur in (1, 3, 5)
        seen[cur] += 1
        p.on_new_batch("t", cur, 6, (1, 3, 5))
    assert set(seen) == {1, 3, 5}
    assert min(seen.values()) > 500
    # one partition: stays there
    p.on_new_batch("one", p.partition("one", None, 1), 1)
    assert p.partition("one", None, 1) == 0
    # no partition available: any of them
    assert 0 <= p.partition("none", None, 3, ()) < 3


def test_sticky_partition_follows_a_shrunk_count() -> None:
    p = DefaultPartitioner(random.Random(3))
    p.partition("t", None, 10)
    while p.sticky_partition("t") is not None and p.sticky_partition("t") < 5:
        p.on_new_batch("t", p.sticky_partition("t"), 10)  # type: ignore[arg-type]
    assert p.partition("t", None, 5) < 5
