"""The file under an index: fixed-size entries appended at the end, truncated from the end.

Shared by ``OffsetIndex`` and ``TimeIndex``. The file holds exactly ``count * entry_size``
bytes (no preallocation), so its size alone tells how many entries it has; a size that is
not a multiple of the entry size means a torn write and fails the sanity check.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# opening for writing fails with these on a read-only directory; the index is then opened
# read-only and serves lookups, and writes raise until the log reopens it writable
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class IndexFile:
    """An open index file (``open()`` does the I/O, the constructor none)."""

    __slots__ = ("_fd", "_writable", "entry_size", "path", "stale")

    def __init__(self, path: Path, entry_size: int) -> None:
        self.path = path
        self.entry_size = entry_size
        self._fd = -1
        self._writable = False
        # the file no longer matches the entries in memory (changed while read-only, or a
        # write or cut failed): it is rewritten from memory before the next append
        self.stale = False

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def writable(self) -> bool:
        return self._writable

    def open_file(self, create: bool = True) -> tuple[bytes, bool]:
        """Open (read-write if possible) and return ``(contents, existed)``."""
        existed = self.path.exists()
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self._fd = os.open(self.path, flags | os.O_CLOEXEC, 0o644)
            self._writable = True
        except OSError as e:
            if e.errno not in READ_ONLY_ERRNOS:
                raise
            if not existed:
                # nothing to read, nothing to write: an empty read-only index
                return b"", False
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._writable = False
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        return data, existed

    def make_writable(self) -> bool:
        """Reopen read-write if the file was opened read-only (raises OSError if it still
        cannot be). Returns True if the file must be rewritten from memory (``stale``)."""
        if not self._writable:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = fd
            self._writable = True
        return self.stale

    def write_at(self, count: int, data: bytes) -> None:
        """Write ``data`` (whole entries) after the first ``count`` entries; on failure cut
        the file back to ``count`` entries and re-raise. While the file is read-only or
        stale the change is kept in memory only, to be written by ``rewrite``."""
        if not self._writable or self.stale:
            self.stale = True
            return
        pos = count * self.entry_size
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
        except OSError:
            try:
                os.ftruncate(self._fd, count * self.entry_size)
            except OSError:
                self.stale = True
            raise

    def truncate_entries(self, count: int) -> None:
        """Cut the file to ``count`` entries. Never raises: if the file cannot be cut it
        is marked stale, so memory (the truth) is always updated by the caller."""
        if not self._writable or self.stale:
            self.stale = True
            return
        try:
            os.ftruncate(self._fd, count * self.entry_size)
        except OSError:
            self.stale = True

    def rewrite(self, data: bytes) -> None:
        """Replace the whole file with ``data`` (the entries held in memory)."""
        self.stale = False
        try:
            os.ftruncate(self._fd, 0)
            self.write_at(0, data)
        except OSError:
            self.stale = True
            raise

    def sync(self) -> None:
        if self._fd >= 0 and self._writable:
            os.fsync(self._fd)

    def dup_fd(self) -> int | None:
        """A duplicate of the descriptor to sync from another thread, or None if read-only."""
        return os.dup(self._fd) if self._fd >= 0 and self._writable else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class IndexFileOwner:
    """What the offset and time indexes share: their file's state and life cycle."""

    _file: IndexFile

    @property
    def writable(self) -> bool:
        return self._file.writable

    def flush(self) -> None:
        self._file.sync()

    def dup_fd(self) -> int | None:
        return self._file.dup_fd()

    def close(self) -> None:
        self._file.close()

    def delete(self) -> None:
        self._file.delete()
