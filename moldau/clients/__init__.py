"""moldau's client library: ``Producer``, ``Consumer``, ``Admin`` (asyncio), their blocking
wrappers, and the wire protocol and record format everything else builds on.

The names below load on first use, so importing ``moldau.clients.protocol`` (as the daemons
and the command-line tools do) does not pay for the whole client library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Producer": "moldau.clients.producer",
    "BufferFullError": "moldau.clients.producer",
    "Consumer": "moldau.clients.consumer",
    "NoOffsetForPartitionError": "moldau.clients.consumer",
    "OffsetOutOfRangeError": "moldau.clients.consumer",
    "Admin": "moldau.clients.admin",
    "ClusterClient": "moldau.clients.cluster",
    "DefaultPartitioner": "moldau.clients.partitioner",
    "murmur2": "moldau.clients.partitioner",
    "SyncProducer": "moldau.clients.sync",
    "SyncConsumer": "moldau.clients.sync",
    "SyncAdmin": "moldau.clients.sync",
    "TopicPartition": "moldau.clients.types",
    "RecordMetadata": "moldau.clients.types",
    "NewTopic": "moldau.clients.types",
    "PartitionInfo": "moldau.clients.types",
    "TopicDescription": "moldau.clients.types",
    "BrokerMetadata": "moldau.clients.types",
    "Record": "moldau.clients.records",
    "ErrorCode": "moldau.clients.protocol",
    "MoldauError": "moldau.clients.protocol",
}

__all__ = [
    "Admin", "BrokerMetadata", "BufferFullError", "ClusterClient", "Consumer",
    "DefaultPartitioner", "ErrorCode", "MoldauError", "NewTopic", "NoOffsetForPartitionError",
    "OffsetOutOfRangeError", "PartitionInfo", "Producer", "Record", "RecordMetadata",
    "SyncAdmin", "SyncConsumer", "SyncProducer", "TopicDescription", "TopicPartition",
    "murmur2",
]

if TYPE_CHECKING:
    from moldau.clients.admin import Admin
    from moldau.clients.cluster import ClusterClient
    from moldau.clients.consumer import (
        Consumer,
        NoOffsetForPartitionError,
        OffsetOutOfRangeError,
    )
    from moldau.clients.partitioner import DefaultPartitioner, murmur2
    from moldau.clients.producer import BufferFullError, Producer
    from moldau.clients.protocol import ErrorCode, MoldauError
    from moldau.clients.records import Record
    from moldau.clients.sync import SyncAdmin, SyncConsumer, SyncProducer
    from moldau.clients.types import (
        BrokerMetadata,
        NewTopic,
        PartitionInfo,
        RecordMetadata,
        TopicDescription,
        TopicPartition,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moldau.clients' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
