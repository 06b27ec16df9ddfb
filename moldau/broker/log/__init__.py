"""A broker's storage: partition logs of segments with sparse indexes, and their manager.

``LogManager`` owns every ``PartitionLog`` of a broker; a ``PartitionLog`` is a directory of
``Segment``s, each a .log file of record batches with an ``OffsetIndex`` and a ``TimeIndex``.
"""

from moldau.broker.log.checkpoint import OffsetCheckpoint
from moldau.broker.log.config import LogConfig
from moldau.broker.log.errors import (
    InconsistentBrokerIdError,
    LogDirLockedError,
    LogError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    UnexpectedAppendOffsetError,
)
from moldau.broker.log.log_manager import LogManager
from moldau.broker.log.offset_index import OffsetIndex
from moldau.broker.log.partition_log import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    AppendInfo,
    PartitionLog,
)
from moldau.broker.log.segment import Segment
from moldau.broker.log.time_index import TimeIndex

__all__ = [
    "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "AppendInfo", "InconsistentBrokerIdError",
    "LogConfig", "LogDirLockedError", "LogError", "LogManager", "OffsetCheckpoint",
    "OffsetIndex", "OffsetOutOfRangeError", "PartitionLog", "RecordTooLargeError", "Segment",
    "StorageError", "TimeIndex", "UnexpectedAppendOffsetError",
]
