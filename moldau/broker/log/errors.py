"""The storage layer's errors, each carrying the ``ErrorCode`` a broker answers with.

``CorruptRecordError`` (a batch that fails validation) comes from ``moldau.clients.records``
and maps to ``ErrorCode.CORRUPT_MESSAGE``.
"""

from __future__ import annotations

import errno as _errno
import os

from moldau.clients.protocol.errors import ErrorCode, MoldauError


class LogError(MoldauError):
    """Base of the storage errors; ``code`` is the error code to answer a client with."""

    code_default = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str = "") -> None:
        super().__init__(self.code_default, message)


class StorageError(LogError):
    """A disk operation failed (ENOSPC, EROFS, EIO, ...). ``errno`` is the OS error number.

    The log that raised it is left as it was before the failed operation: nothing partial is
    ever visible to readers, and a later operation may succeed once the cause is fixed.
    """

    code_default = ErrorCode.KAFKA_STORAGE_ERROR

    def __init__(self, message: str, errno: int | None = None) -> None:
        self.errno = errno
        name = _errno.errorcode.get(errno, str(errno)) if errno is not None else ""
        detail = f" ({name}: {os.strerror(errno)})" if errno is not None else ""
        super().__init__(f"{message}{detail}")

    @classmethod
    def wrap(cls, what: str, e: OSError) -> StorageError:
        path = f" {e.filename}" if e.filename else ""
        return cls(f"{what}{path} failed", e.errno)


class RecordTooLargeError(LogError):
    """A batch is larger than the log's ``max.message.bytes``."""

    code_default = ErrorCode.MESSAGE_TOO_LARGE


class OffsetOutOfRangeError(LogError):
    """An offset outside ``[log_start_offset, log_end_offset]``."""

    code_default = ErrorCode.OFFSET_OUT_OF_RANGE


class LogDirLockedError(LogError):
    """Another process (another broker) holds the lock on a log directory."""

    code_default = ErrorCode.KAFKA_STORAGE_ERROR


class InconsistentBrokerIdError(LogError):
    """A log directory's ``meta.properties`` names another broker id."""

    code_default = ErrorCode.KAFKA_STORAGE_ERROR


class UnexpectedAppendOffsetError(LogError):
    """A follower append whose first offset does not continue the log end."""

    code_default = ErrorCode.UNKNOWN_SERVER_ERROR
