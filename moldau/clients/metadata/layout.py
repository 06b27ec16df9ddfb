"""Where cluster state lives in the metadata tree, and how it is encoded (pure, no I/O).

Kafka's ZooKeeper layout, JSON-encoded data::

    /brokers/ids/<id>                         ephemeral  {"host", "port", "rack", "version"}
    /brokers/topics/<topic>                   persistent {"version": 1, "partitions":
                                                          {"0": [1, 2, 3], ...}}
    /brokers/topics/<topic>/partitions/<p>/state
                                              persistent {"leader", "leader_epoch", "isr",
                                                          "controller_epoch", "version"}
    /config/topics/<topic>                    persistent {"version": 1, "config": {k: v}}
    /admin/delete_topics/<topic>              persistent (marks a deletion in progress)
    /controller                               ephemeral  {"brokerid", "timestamp", "version"}
    /controller_epoch                         persistent "<int>"
    /cluster/id                               persistent {"id"}
    /latest_producer_id_block                 persistent {"version", "broker", "block_start",
                                                          "block_end"}

Fencing: the controller bumps ``/controller_epoch`` when it takes over and makes every later
write a multi-op that checks that node's version, so a controller that lost its node (a
zombie) cannot overwrite a newer one's decisions. Partition state nodes are written only
with the version last read (by the controller, or by the leader changing its ISR), so a
decision based on a stale read fails with BAD_VERSION instead of landing.

Whoever creates a topic (a broker serving CreateTopics, or ``moldau topics --zookeeper``)
writes the topic node, its config node and each partition's state in one multi-op, so a
reader never sees a topic without its partitions.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BROKER_IDS = "/brokers/ids"
TOPICS = "/brokers/topics"
CONFIG_TOPICS = "/config/topics"
DELETE_TOPICS = "/admin/delete_topics"
CONTROLLER = "/controller"
CONTROLLER_EPOCH = "/controller_epoch"
CLUSTER_ID = "/cluster/id"
LATEST_PRODUCER_ID_BLOCK = "/latest_producer_id_block"

# created by the first broker (or tool) that finds them missing
PERSISTENT_ROOTS = ("/brokers", BROKER_IDS, TOPICS, "/config", CONFIG_TOPICS, "/admin",
                    DELETE_TOPICS, "/cluster")

_TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


class InvalidTopicName(ValueError):
    pass


def validate_topic_name(name: str) -> None:
    """Kafka's rule: 1-249 characters of ``[a-zA-Z0-9._-]``, and not ``.`` or ``..``."""
    if not isinstance(name, str) or not name:
        raise InvalidTopicName("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicName(f"topic name cannot be {name!r}")
    if len(name) > 249:
        raise InvalidTopicName(f"topic name is {len(name)} characters long (at most 249)")
    if not _TOPIC_RE.match(name):
        raise InvalidTopicName(
            f"topic name {name!r} is illegal: it may contain only ASCII letters, digits, "
            "'.', '_' and '-'")


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{TOPICS}/{topic}/partitions"


def partition_path(topic: str, partition: int) -> str:
    return f"{TOPICS}/{topic}/partitions/{partition}"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{TOPICS}/{topic}/partitions/{partition}/state"


def topic_config_path(topic: str) -> str:
    return f"{CONFIG_TOPICS}/{topic}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _loads(data: bytes) -> Any:
    return json.loads(data.decode() or "null")


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    rack: str | None = None

    def encode(self) -> bytes:
        return _dumps({"host": self.host, "port": self.port, "rack": self.rack, "version": 1})

    @classmethod
    def decode(cls, broker_id: int, data: bytes) -> BrokerInfo:
        d = _loads(data)
        return cls(broker_id, d["host"], int(d["port"]), d.get("rack"))


@dataclass(frozen=True, slots=True)
class PartitionState:
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0

    def encode(self) -> bytes:
        return _dumps({"leader": self.leader, "leader_epoch": self.leader_epoch,
                       "isr": list(self.isr), "controller_epoch": self.controller_epoch,
                       "version": 1})

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        d = _loads(data)
        return cls(int(d["leader"]), int(d["leader_epoch"]), tuple(int(b) for b in d["isr"]),
                   int(d.get("controller_epoch", 0)))


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    """Replica lists per partition; the first replica is the preferred leader."""

    partitions: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dumps({"version": 1, "partitions": {
            str(p): list(r) for p, r in sorted(self.partitions.items())}})

    @classmethod
    def decode(cls, data: bytes) -> TopicAssignment:
        d = _loads(data)
        return cls({int(p): tuple(int(b) for b in r) for p, r in d["partitions"].items()})


def encode_topic_config(config: Mapping[str, str]) -> bytes:
    return _dumps({"version": 1, "config": {k: str(v) for k, v in config.items()}})


def decode_topic_config(data: bytes) -> dict[str, str]:
    d = _loads(data)
    return {k: str(v) for k, v in (d or {}).get("config", {}).items()}


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    broker_id: int
    timestamp: int = 0

    def encode(self) -> bytes:
        return _dumps({"brokerid": self.broker_id, "timestamp": str(self.timestamp),
                       "version": 1})

    @classmethod
    def decode(cls, data: bytes) -> ControllerInfo:
        d = _loads(data)
        return cls(int(d["brokerid"]), int(d.get("timestamp", 0)))


def encode_controller_epoch(epoch: int) -> bytes:
    return str(int(epoch)).encode()


def decode_controller_epoch(data: bytes) -> int:
    return int(data.decode().strip() or 0)


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    """Producer ids ``block_start..block_end`` (inclusive), claimed by ``broker``."""

    broker: int
    block_start: int
    block_end: int

    def encode(self) -> bytes:
        return _dumps({"version": 1, "broker": self.broker,
                       "block_start": str(self.block_start), "block_end": str(self.block_end)})

    @classmethod
    def decode(cls, data: bytes) -> ProducerIdBlock:
        d = _loads(data)
        return cls(int(d["broker"]), int(d["block_start"]), int(d["block_end"]))


class AssignmentError(ValueError):
    pass


def assign_replicas(
    brokers: Sequence[int],
    num_partitions: int,
    replication_factor: int,
    *,
    first_partition: int = 0,
    start_index: int | None = None,
    rng: random.Random | None = None,
) -> dict[int, tuple[int, ...]]:
    """Kafka's rack-unaware assignment: leaders round-robin over the sorted brokers from a
    random start, followers shifted so no two replicas of a partition share a broker."""
    if num_partitions < 1:
        raise AssignmentError(f"number of partitions must be at least 1, got {num_partitions}")
    if replication_factor < 1:
        raise AssignmentError(
            f"replication factor must be at least 1, got {replication_factor}")
    ids = sorted(set(brokers))
    n = len(ids)
    if replication_factor > n:
        raise AssignmentError(
            f"replication factor: {replication_factor} larger than available brokers: {n}")
    r = rng or random.Random()
    start = r.randrange(n) if start_index is None else start_index % n
    shift = r.randrange(n) if n > 1 else 0
    out: dict[int, tuple[int, ...]] = {}
    for i in range(num_partitions):
        p = first_partition + i
        idx = (start + p) % n
        if p > 0 and p % n == 0:
            shift += 1
        replicas = [ids[idx]]
        for j in range(replication_factor - 1):
            replicas.append(ids[(idx + 1 + (shift + j) % (n - 1)) % n] if n > 1 else ids[idx])
        out[p] = tuple(replicas)
    return out


def topic_creation_ops(topic: str, assignment: Mapping[int, Sequence[int]],
                       config: Mapping[str, str]) -> list[dict[str, Any]]:
    """The metadata multi-op that creates a topic with its partitions' initial state."""
    ops: list[dict[str, Any]] = [
        {"op": "create", "path": topic_config_path(topic), "data": encode_topic_config(config)},
        {"op": "create", "path": topic_path(topic), "data": TopicAssignment(
            {p: tuple(r) for p, r in assignment.items()}).encode()},
        {"op": "create", "path": partitions_path(topic), "data": b""},
    ]
    for p, replicas in sorted(assignment.items()):
        ops.append({"op": "create", "path": partition_path(topic, p), "data": b""})
        ops.append({"op": "create", "path": partition_state_path(topic, p),
                    "data": PartitionState(replicas[0], 0, tuple(replicas)).encode()})
    return ops
