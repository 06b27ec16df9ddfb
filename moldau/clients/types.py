"""The nouns the client API hands out and takes: partitions, record metadata, topic specs.

Consumer records are ``moldau.clients.records.Record`` (topic, partition, offset, timestamp,
key, value, headers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """One partition of a topic; a plain ``(topic, partition)`` tuple compares and hashes
    equal, which the hot paths use to avoid building this class per record."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. ``offset`` is -1 when acks=0 (nothing is
    acknowledged); ``timestamp`` is the broker's log-append time when the topic uses it,
    else the record's own timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class NewTopic:
    """A topic to create. ``replica_assignment`` (partition -> broker ids) overrides
    ``num_partitions`` and ``replication_factor`` when given."""

    name: str
    num_partitions: int = 1
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)
    replica_assignment: dict[int, list[int]] | None = None


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition as the metadata reports it; ``leader`` is -1 when it has none."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    internal: bool
    partitions: tuple[PartitionInfo, ...]


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    rack: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
