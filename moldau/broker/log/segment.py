"""Segment: one file of a partition log and its two indexes.

On disk, in the partition directory, three files named by the segment's base offset (the
offset of its first batch) in 20 digits:

    00000000000000000000.log        record batches back to back, exactly as appended
    00000000000000000000.index      OffsetIndex: offset -> position, one entry per
                                    ``index.interval.bytes`` of log
    00000000000000000000.timeindex  TimeIndex: max timestamp so far -> offset

Invariants:
- the .log holds whole, CRC-valid batches with contiguous offsets from ``base_offset`` to
  ``next_offset - 1``; ``size`` is where the last of them ends. Bytes past ``size`` (a failed
  write that could not be cut back) are never read and are overwritten or truncated away.
- no index entry points at or past ``size``.
- ``read`` serves only whole batches, never bytes past ``size``.

``recover()`` re-validates every batch (length, magic, CRC, offset continuity), truncates the
file at the first bad one and rebuilds both indexes from what is left.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from moldau.broker.log._index_file import READ_ONLY_ERRNOS
from moldau.broker.log.config import LogConfig
from moldau.broker.log.offset_index import MAX_RELATIVE, OffsetIndex
from moldau.broker.log.time_index import ENTRY_SIZE as TIME_ENTRY_SIZE
from moldau.broker.log.time_index import NO_TIMESTAMP, TimeIndex
from moldau.clients.records.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    CorruptRecordError,
    decode_records,
    parse_header,
    validate_batch,
)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)

_LENGTH = struct.Struct(">qi")  # base offset, batch length
# read-ahead when walking batch headers from an index entry (the index interval is 4 KiB)
_SCAN_CHUNK = 16 * 1024
# read size while re-validating a whole segment
_RECOVER_CHUNK = 4 * 1024 * 1024


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


def parse_segment_name(name: str) -> tuple[int, str] | None:
    """``(base_offset, suffix)`` of a segment file name, or None if it is not one."""
    stem, dot, suffix = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + suffix


class BatchInfo(NamedTuple):
    """What a segment needs to know of each batch it appends (positions relative to the
    start of the appended bytes)."""

    position: int
    size: int
    base_offset: int
    next_offset: int
    max_timestamp: int


class _TornTail(CorruptRecordError):
    """The walk over batch headers met something that is not a whole batch."""


class Segment:
    """A segment's data file and indexes. The constructor does no I/O; ``open()`` does."""

    def __init__(self, directory: Path, base_offset: int, config: LogConfig) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        name = segment_name(base_offset)
        self.log_path = directory / (name + LOG_SUFFIX)
        self.index = OffsetIndex(directory / (name + INDEX_SUFFIX), base_offset,
                                 config.max_index_entries)
        self.time_index = TimeIndex(directory / (name + TIME_INDEX_SUFFIX), base_offset,
                                    max(1, config.segment_index_bytes // TIME_ENTRY_SIZE))
        self._fd = -1
        self._writable = False
        self._size = 0
        self._next_offset = base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = base_offset
        self._bytes_since_index = 0
        self._first_append_ms: int | None = None
        # the file may hold bytes past ``_size`` that a failed write left behind
        self._dirty_tail = False

    def __repr__(self) -> str:
        return (f"Segment({self.log_path.name}, offsets {self.base_offset}.."
                f"{self._next_offset - 1}, {self._size} bytes)")

    # ------------------------------------------------------------------ properties

    @property
    def size(self) -> int:
        """Bytes of whole batches in the .log file."""
        return self._size

    @property
    def next_offset(self) -> int:
        """One past the last offset in this segment (``base_offset`` when empty)."""
        return self._next_offset

    @property
    def is_empty(self) -> bool:
        return self._size == 0

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def max_timestamp(self) -> int:
        """The largest batch max timestamp in the segment, -1 if none."""
        return self._max_timestamp

    @property
    def largest_timestamp(self) -> int:
        """What retention.ms compares: the largest record timestamp, or the file's
        modification time when the batches carry none (Kafka's rule)."""
        if self._max_timestamp >= 0:
            return self._max_timestamp
        return self.last_modified_ms

    @property
    def last_modified_ms(self) -> int:
        try:
            return int(os.stat(self.log_path).st_mtime * 1000)
        except OSError:
            return 0

    @property
    def roll_clock_ms(self) -> int | None:
        """When segment.ms started counting: the wall-clock time of the first append into
        this segment, or for a segment loaded from disk the file's modification time (so a
        restart never rolls a segment earlier than it would have). None while empty."""
        if self._size == 0:
            return None
        if self._first_append_ms is None:
            self._first_append_ms = self.last_modified_ms
        return self._first_append_ms

    @property
    def index_full(self) -> bool:
        return self.index.is_full or self.time_index.is_full

    def can_hold_offset(self, offset: int) -> bool:
        """Whether ``offset`` fits the u32 relative offsets of this segment's indexes."""
        return 0 <= offset - self.base_offset <= MAX_RELATIVE

    # ------------------------------------------------------------------ lifecycle

    def open(self, *, trusted: bool = False) -> int:
        """Open (creating missing files) and load. Returns how many bytes recovery cut off.

        A ``trusted`` segment (wholly before the recovery point) is loaded from its indexes
        plus a walk over the batch headers after the last index entry; if an index fails its
        sanity check or the walk meets a torn batch, the segment is recovered instead. An
        untrusted segment is always recovered (every batch re-validated).
        """
        existed = self.log_path.exists()
        try:
            self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._writable = True
        except OSError as e:
            if e.errno not in READ_ONLY_ERRNOS or not existed:
                raise
            self._fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
            self._writable = False
        file_size = os.fstat(self._fd).st_size
        index_existed = self.index.open()
        self.time_index.open()
        if (trusted and (index_existed or file_size < self.config.index_interval_bytes)
                and self._load_trusted(file_size)):
            return 0
        return self.recover()

    def _load_trusted(self, file_size: int) -> bool:
        if self.index.sanity_check(file_size) is not None:
            return False
        self._size = file_size
        try:
            self._rescan_tail()
        except (CorruptRecordError, OSError):
            return False
        return self.time_index.sanity_check(self._next_offset) is None

    def _rescan_tail(self) -> None:
        """Recompute next offset, max timestamp and index bookkeeping from the last index
        entry to ``size`` by walking batch headers (no CRC check). Raises _TornTail if the
        bytes there are not whole batches continuing the index's offsets."""
        entry_offset, pos = self.index.last_entry
        ts, ts_offset = self.time_index.last_entry
        self._max_timestamp = ts
        self._offset_of_max_timestamp = ts_offset
        expected = entry_offset
        self._bytes_since_index = 0
        for p, h in self._iter_headers(pos, self._size):
            if h.base_offset != expected or p + h.size > self._size:
                raise _TornTail(f"batch at {p} does not continue offset {expected}")
            if h.max_timestamp > self._max_timestamp:
                self._max_timestamp = h.max_timestamp
                self._offset_of_max_timestamp = h.base_offset
            self._bytes_since_index += h.size
            expected = h.next_offset
        self._next_offset = expected

    def recover(self) -> int:
        """Re-validate every batch; cut the file at the first torn or corrupt one (bad length,
        magic or CRC, or an offset that does not continue the previous batch) and rebuild
        both indexes. Returns the number of bytes cut off."""
        file_size = os.fstat(self._fd).st_size
        self.index.reset()
        self.time_index.reset()
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = self.base_offset
        self._bytes_since_index = 0
        expected = self.base_offset
        pos = 0
        buf = b""
        buf_start = 0
        while pos < file_size:
            # make [pos, pos + HEADER_SIZE) available
            if pos + HEADER_SIZE > file_size:
                break
            if pos + HEADER_SIZE > buf_start + len(buf):
                buf = os.pread(self._fd, max(_RECOVER_CHUNK, HEADER_SIZE), pos)
                buf_start = pos
            off = pos - buf_start
            _, length = _LENGTH.unpack_from(buf, off)
            size = length + LOG_OVERHEAD
            if length < HEADER_SIZE - LOG_OVERHEAD or pos + size > file_size:
                break
            if off + size > len(buf):
                buf = os.pread(self._fd, max(_RECOVER_CHUNK, size), pos)
                buf_start = pos
                off = 0
            try:
                h = validate_batch(memoryview(buf)[off : off + size])
            except CorruptRecordError:
                break
            if h.base_offset != expected or not self.can_hold_offset(h.next_offset - 1):
                break
            self._index_batch(pos, h.size, h.base_offset, h.max_timestamp)
            pos += size
            expected = h.next_offset
        self._size = pos
        self._next_offset = expected
        cut = file_size - pos
        if cut:
            if self._writable:
                os.ftruncate(self._fd, pos)
            else:
                self._dirty_tail = True
        return cut

    def ensure_writable(self) -> None:
        """Reopen files read-write if they were opened read-only, write back index entries
        made meanwhile, and cut bytes a failed write left past the end. Raises OSError."""
        if not self._writable:
            fd = os.open(self.log_path, os.O_RDWR | os.O_CLOEXEC)
            os.close(self._fd)
            self._fd = fd
            self._writable = True
        self.index.make_writable()
        self.time_index.make_writable()
        if self._dirty_tail:
            os.ftruncate(self._fd, self._size)
            self._dirty_tail = False

    def flush(self) -> None:
        """fdatasync the data and fsync both indexes (blocking)."""
        if self._fd >= 0 and self._writable:
            os.fdatasync(self._fd)
        self.index.flush()
        self.time_index.flush()

    def dup_fds(self, with_indexes: bool) -> list[int]:
        """Duplicates of the descriptors to sync from another thread: a concurrent close or
        delete of this segment then cannot make the sync hit a reused descriptor."""
        if self._fd < 0 or not self._writable:
            return []
        fds = [os.dup(self._fd)]
        if with_indexes:
            for fd in (self.index.dup_fd(), self.time_index.dup_fd()):
                if fd is not None:
                    fds.append(fd)
        return fds

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.index.close()
        self.time_index.close()

    def delete(self) -> None:
        """Close and remove the three files."""
        self.close()
        for path in (self.log_path, self.index.path, self.time_index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ writing

    def _index_batch(self, position: int, size: int, base_offset: int, max_ts: int) -> None:
        """Index bookkeeping for a batch written at ``position`` (Kafka's rule: an entry for
        the batch that starts after ``index.interval.bytes`` of unindexed data)."""
        if max_ts > self._max_timestamp:
            self._max_timestamp = max_ts
            self._offset_of_max_timestamp = base_offset
        if (position > 0 and self._bytes_since_index >= self.config.index_interval_bytes
                and not self.index.is_full):
            self.index.append(base_offset, position)
            self.time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
            self._bytes_since_index = 0
        self._bytes_since_index += size

    def append(self, data: bytes | bytearray | memoryview, batches: Sequence[BatchInfo],
               now_ms: int | None = None) -> None:
        """Write already-validated batches (offsets assigned) at the end of the segment.

        All or nothing: on OSError the file and both indexes are cut back to where they were
        and the error is re-raised.
        """
        if not batches:
            return
        if batches[0].base_offset != self._next_offset:
            raise ValueError(f"append at offset {batches[0].base_offset} to a segment ending"
                             f" at {self._next_offset}")
        self.ensure_writable()
        start = self._size
        n_index = len(self.index)
        n_time = len(self.time_index)
        saved = (self._max_timestamp, self._offset_of_max_timestamp, self._bytes_since_index)
        view = memoryview(data)
        pos = start
        try:
            # one write for the whole run; loop only on a short write (disk nearly full)
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
            for b in batches:
                self._index_batch(start + b.position, b.size, b.base_offset, b.max_timestamp)
        except (OSError, ValueError):
            self._max_timestamp, self._offset_of_max_timestamp, self._bytes_since_index = saved
            self.index.truncate_entries(n_index)
            self.time_index.truncate_entries(n_time)
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._dirty_tail = True
            raise
        self._size = start + len(data)
        self._next_offset = batches[-1].next_offset
        if self._first_append_ms is None:
            self._first_append_ms = now_ms if now_ms is not None else int(time.time() * 1000)

    def truncate_to(self, offset: int) -> int:
        """Remove the batch holding ``offset`` and all after it; return the bytes removed."""
        found = self._find_batch(offset)
        if found is None:
            return 0
        pos, h = found
        self.ensure_writable()
        removed = self._size - pos
        os.ftruncate(self._fd, pos)
        self.index.truncate_to(h.base_offset)
        self.time_index.truncate_to(h.base_offset)
        self._size = pos
        self._rescan_tail()
        if self._size == 0:
            self._first_append_ms = None
        return removed

    # ------------------------------------------------------------------ reading

    def _pread(self, size: int, pos: int) -> bytes:
        data = os.pread(self._fd, size, pos)
        if len(data) != size:
            raise OSError(5, f"short read of {self.log_path.name} at {pos}")  # EIO
        return data

    def _iter_headers(self, pos: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Yield ``(position, header)`` of the batches from ``pos`` to ``end``, reading
        ahead in chunks. Raises _TornTail if fewer than a header's bytes remain."""
        buf = b""
        buf_start = pos
        while pos < end:
            if pos + HEADER_SIZE > end:
                raise _TornTail(f"partial batch header at {pos}")
            off = pos - buf_start
            if off < 0 or off + HEADER_SIZE > len(buf):
                buf = os.pread(self._fd, min(_SCAN_CHUNK, end - pos), pos)
                buf_start = pos
                off = 0
                if len(buf) < HEADER_SIZE:
                    raise _TornTail(f"short read at {pos}")
            h = parse_header(buf, off)
            yield pos, h
            pos += h.size

    def _find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= ``offset``."""
        if offset >= self._next_offset:
            return None
        entry_offset, pos = self.index.lookup(offset)
        for p, h in self._iter_headers(pos, self._size):
            if p == pos and h.base_offset != entry_offset:
                # the sanity check at open cannot prove every entry: refuse to serve from
                # a position that is not the batch the index says
                raise CorruptRecordError(
                    f"{self.index.path.name}: entry ({entry_offset}, {pos}) points at the"
                    f" batch of offset {h.base_offset}")
            if h.last_offset >= offset:
                return p, h
        return None

    def read(self, start_offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Whole batches from the one holding ``start_offset``, up to ``max_bytes`` (but at
        least that first batch, however large), none whose base offset is >= ``max_offset``.
        Empty when the segment has nothing at or after ``start_offset``."""
        found = self._find_batch(start_offset)
        if found is None:
            return b""
        pos, h = found
        if max_offset is not None and h.base_offset >= max_offset:
            return b""
        want = min(max_bytes, self._size - pos)
        if want <= h.size:
            return self._pread(h.size, pos)
        buf = self._pread(want, pos)
        p = 0
        end = len(buf)
        while p + LOG_OVERHEAD <= end:
            base, length = _LENGTH.unpack_from(buf, p)
            if max_offset is not None and base >= max_offset:
                break
            size = length + LOG_OVERHEAD
            if p + size > end:
                break
            p += size
        return buf if p == end else buf[:p]

    def find_offset_by_timestamp(self, timestamp: int, start_offset: int | None = None
                                 ) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record at or after ``start_offset`` whose
        timestamp is >= ``timestamp``, or None. Decodes only the batch that holds it."""
        if self._max_timestamp < timestamp or self._size == 0:
            return None
        start = self.base_offset if start_offset is None else max(start_offset,
                                                                  self.base_offset)
        _, ts_offset = self.time_index.lookup(timestamp)
        _, pos = self.index.lookup(max(ts_offset, start))
        for p, h in self._iter_headers(pos, self._size):
            if h.last_offset < start or h.max_timestamp < timestamp:
                continue
            try:
                records = decode_records(self._pread(h.size, p), 0, h)
            except CorruptRecordError:
                return max(h.base_offset, start), h.max_timestamp
            for r in records:
                if r.offset >= start and r.timestamp >= timestamp:
                    return r.offset, r.timestamp
        return None

    def batch_headers(self) -> list[tuple[int, BatchHeader]]:
        """Every batch's ``(position, header)`` (for tests and tools; walks the file)."""
        return list(self._iter_headers(0, self._size))
