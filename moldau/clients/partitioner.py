"""Choosing a record's partition, exactly as Kafka's default partitioner does.

Keyed records: ``toPositive(murmur2(key)) % num_partitions`` with Kafka's ``Utils.murmur2``
(seed ``0x9747b28c``), so a key lands on the same partition number a Java Kafka client
would choose for a topic with the same partition count. Records without a key stick to one
partition per topic until a new batch has to be opened for it (the previous one filled up
or was sent), then switch to another partition at random (Kafka's sticky partitioner),
preferring partitions that currently have a leader.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import Protocol

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C
_WORDS: dict[int, struct.Struct] = {}
_CACHE_MAX = 16384
_cache: dict[bytes, int] = {}


def _words(n: int) -> struct.Struct:
    s = _WORDS.get(n)
    if s is None:
        s = _WORDS[n] = struct.Struct(f"<{n}I")
    return s


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's 32-bit murmur2 of ``data``, as the signed int Java returns."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length >> 2
    if n4:
        for k in _words(n4).unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    rem = length & 3
    if rem:
        tail = length - rem
        if rem == 3:
            h ^= data[tail + 2] << 16
        if rem >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``)."""
    return n & 0x7FFFFFFF


def key_partition(key: bytes | bytearray | memoryview, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    if type(key) is not bytes:
        key = bytes(key)
    h = _cache.get(key)
    if h is None:
        # keys repeat in most workloads (user ids, sensor ids): a bounded memo pays off
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        h = _cache[key] = murmur2(key) & 0x7FFFFFFF
    return h % num_partitions


class Partitioner(Protocol):
    """What ``Producer(partitioner=...)`` accepts."""

    def partition(self, topic: str, key: bytes | None, num_partitions: int,
                  available: Sequence[int]) -> int:
        """The partition for a record; ``available`` lists partitions that have a leader."""
        ...

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int,
                     available: Sequence[int]) -> None:
        """Called before a new batch is opened on ``prev_partition`` for a record this
        partitioner placed, so a sticky partitioner can move on."""
        ...


class DefaultPartitioner:
    """murmur2 for keyed records, sticky partitioning for records without a key."""

    __slots__ = ("_rng", "sticky")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.sticky: dict[str, int] = {}  # topic -> its current sticky partition
        self._rng = rng or random.Random()

    def partition(self, topic: str, key: bytes | None, num_partitions: int,
                  available: Sequence[int] = ()) -> int:
        if key is not None:
            return key_partition(key, num_partitions)
        p = self.sticky.get(topic)
        if p is None or p >= num_partitions:
            p = self._next(topic, -1, num_partitions, available)
        return p

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int,
                     available: Sequence[int] = ()) -> None:
        if self.sticky.get(topic, prev_partition) == prev_partition:
            self._next(topic, prev_partition, num_partitions, available)

    def sticky_partition(self, topic: str) -> int | None:
        return self.sticky.get(topic)

    def _next(self, topic: str, prev: int, num_partitions: int,
              available: Sequence[int]) -> int:
        choices: Sequence[int] = [p for p in available if p < num_partitions]
        if not choices:
            choices = range(num_partitions)
        if len(choices) > 1 and prev in choices:
            p = prev
            while p == prev:
                p = choices[self._rng.randrange(len(choices))]
        else:
            p = choices[self._rng.randrange(len(choices))]
        self.sticky[topic] = p
        return p
