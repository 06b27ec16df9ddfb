"""PartitionLog: one partition's log, a directory ``<log_dir>/<topic>-<partition>/`` of segments.

Invariants:
- offsets are contiguous: each segment starts where the previous one ends, and within a
  segment every batch starts where the previous one ended;
- ``log_start_offset <= high_watermark <= log_end_offset``; ``recovery_point`` (everything
  before it is on disk) never passes the log end;
- only whole, validated batches are ever written or served: ``append`` validates length,
  magic and CRC of every batch before writing anything, writes the run with one write, and
  cuts the file back if the write fails; after a crash ``open()`` re-validates the segments
  past the recovery point and truncates a torn or corrupt tail.

Appends are synchronous (validate, assign offsets by rewriting headers, one ``os.pwrite``).
Durability is separate: ``await flush()`` returns once an fdatasync covering every append
made before the call has finished (group commit: one fdatasync in a worker thread serves all
the callers that arrived before it started, and the next covers those that arrived during it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from moldau.broker.log.config import LogConfig
from moldau.broker.log.errors import (
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    UnexpectedAppendOffsetError,
)
from moldau.broker.log.segment import (
    SUFFIXES,
    BatchInfo,
    Segment,
    parse_segment_name,
    segment_name,
)
from moldau.clients.records.batch import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    HEADER_SIZE,
    Compression,
    CorruptRecordError,
    compute_crc,
    parse_header,
    set_base_offset,
    set_leader_epoch,
    set_log_append_time,
    validate_batch,
)

log = logging.getLogger(__name__)

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
_CODECS = frozenset(int(c) for c in Compression)
# leftovers of interrupted file operations, removed when the log opens
_STRAY_SUFFIXES = (".tmp", ".deleted", ".cleaned", ".swap")
# a partition directory being deleted: ``<topic>-<partition>.<uuid>-delete``
DELETE_SUFFIX = "-delete"


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where an append landed. ``log_append_time`` is -1 unless the log uses LogAppendTime."""

    base_offset: int
    last_offset: int
    log_append_time: int
    record_count: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sync_fds(fds: list[int], directory: Path | None) -> None:
    """Run in a worker thread: fdatasync each descriptor (duplicates, closed here), then
    fsync the directory if its entries changed."""
    try:
        for fd in fds:
            os.fdatasync(fd)
        if directory is not None:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class PartitionLog:
    """A partition's segments. The constructor does no I/O: call ``open()`` first."""

    def __init__(self, directory: Path, config: LogConfig, topic: str, partition: int) -> None:
        self.directory = Path(directory)
        self.config = config
        self.topic = topic
        self.partition = partition
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._log_start_offset = 0
        self._recovery_point = 0
        self._high_watermark: int | None = None
        self._open = False
        self._deleted = False
        # group commit state
        self._sync_future: asyncio.Future[None] | None = None
        self._generation = 0  # bumped by truncation: an in-flight sync then proves nothing
        self._index_sync_pending: set[Segment] = set()  # rolled segments, indexes unsynced
        self._dir_dirty = False  # segment files were created or deleted since the last sync
        self._last_sync_ms = _now_ms()
        self.fsync_count = 0  # sync rounds run (each one fdatasync per file with new data)

    def __repr__(self) -> str:
        return (f"PartitionLog({self.topic}-{self.partition}, offsets "
                f"{self._log_start_offset}..{self.log_end_offset})")

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset if self._segments else self._log_start_offset

    @property
    def recovery_point(self) -> int:
        """Every offset below this is on disk (fdatasync'ed)."""
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def high_watermark(self) -> int:
        """The offset consumers may read up to; the log end unless replication set it."""
        if self._high_watermark is None:
            return self.log_end_offset
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._high_watermark = min(max(offset, self._log_start_offset), self.log_end_offset)

    @property
    def explicit_high_watermark(self) -> int | None:
        """The high watermark if replication set one, None while it follows the log end
        (only a set one is checkpointed, so an unset one still follows after a restart)."""
        return self._high_watermark

    @property
    def segments(self) -> list[Segment]:
        """The segments, oldest first (a copy; the last one is the active segment)."""
        return list(self._segments)

    @property
    def active_segment(self) -> Segment:
        return self._segments[-1]

    def update_config(self, config: LogConfig) -> None:
        """Take a new topic config; it applies from the next segment roll for sizes."""
        self.config = config
        for s in self._segments:
            s.config = config

    def _check_open(self) -> None:
        if not self._open:
            raise StorageError(f"log {self.name} is not open", errno.EBADF)

    # ------------------------------------------------------------------ lifecycle

    def open(self, recovery_point: int | None = None, log_start_offset: int | None = None,
             high_watermark: int | None = None) -> None:
        """Load the segments (blocking I/O: run it in a thread from async code).

        Segments wholly before ``recovery_point`` are trusted (loaded from their indexes);
        the one holding it and every later one are re-validated batch by batch and cut at
        the first torn or corrupt batch, and any segment after a cut is deleted, so the log
        ends at its last valid batch. None recovers every segment (no checkpoint known).
        """
        if self._open:
            return
        try:
            self._open_segments(recovery_point, log_start_offset)
        except OSError as e:
            for s in self._segments:
                s.close()
            self._segments = []
            self._bases = []
            raise StorageError.wrap(f"opening log {self.name}", e) from e
        leo = self.log_end_offset
        self._open = True
        if high_watermark is not None:
            self.high_watermark = high_watermark
        self._recovery_point = min(self._recovery_point, leo)

    def _open_segments(self, recovery_point: int | None, log_start_offset: int | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        bases: set[int] = set()
        for entry in os.scandir(self.directory):
            if entry.name.endswith(_STRAY_SUFFIXES):
                self._remove_stray(entry.path)
                continue
            parsed = parse_segment_name(entry.name)
            if parsed is not None and parsed[1] == ".log":
                bases.add(parsed[0])
        for entry in os.scandir(self.directory):
            parsed = parse_segment_name(entry.name)
            if parsed is not None and parsed[1] in SUFFIXES and parsed[0] not in bases:
                self._remove_stray(entry.path)  # an index without its data file
        ordered = sorted(bases)
        if not ordered:
            start = log_start_offset or 0
            seg = Segment(self.directory, start, self.config)
            seg.open()
            self._segments = [seg]
            self._bases = [start]
            self._log_start_offset = start
            self._recovery_point = start
            self._dir_dirty = True
            return
        segments = self._segments = []
        recovered = False
        for i, base in enumerate(ordered):
            seg = Segment(self.directory, base, self.config)
            if segments and base != segments[-1].next_offset:
                # a gap or an overlap: what follows cannot continue the log
                log.warning("log %s: segment %s does not continue offset %d; deleting it and"
                            " %d later segment(s)", self.name, segment_name(base),
                            segments[-1].next_offset, len(ordered) - i - 1)
                for b in ordered[i:]:
                    Segment(self.directory, b, self.config).delete()
                self._dir_dirty = True
                break
            trusted = recovery_point is not None and base <= recovery_point
            try:
                cut = seg.open(trusted=trusted)
                if recovery_point is not None and trusted and seg.next_offset > recovery_point:
                    # the segment holds the recovery point: what follows it is unproven
                    cut = seg.recover()
                if not trusted or seg.next_offset > (recovery_point or 0):
                    recovered = True
                    if seg.writable:
                        seg.flush()  # what recovery kept may be only in the page cache
            except OSError:
                seg.close()
                raise
            segments.append(seg)
            if cut:
                log.warning("log %s: recovery cut %d bytes of torn or corrupt data from %s;"
                            " the log now ends at offset %d", self.name, cut,
                            seg.log_path.name, seg.next_offset)
                if i + 1 < len(ordered):
                    log.warning("log %s: deleting %d segment(s) after the cut", self.name,
                                len(ordered) - i - 1)
                    for b in ordered[i + 1:]:
                        Segment(self.directory, b, self.config).delete()
                    self._dir_dirty = True
                break
        self._bases = [s.base_offset for s in segments]
        leo = segments[-1].next_offset
        start = max(segments[0].base_offset, log_start_offset or 0)
        self._log_start_offset = min(start, leo)
        if recovered or recovery_point is None:
            self._recovery_point = leo
        else:
            self._recovery_point = min(recovery_point, leo)
        if self._dir_dirty and segments[-1].writable:
            self._sync_directory()

    @staticmethod
    def _remove_stray(path: str) -> None:
        try:
            os.unlink(path)
        except OSError as e:
            log.warning("cannot remove leftover file %s: %s", path, e)

    def _sync_directory(self) -> None:
        _sync_fds([], self.directory)
        self._dir_dirty = False

    def close(self) -> None:
        """Sync what is not on disk yet (a clean shutdown), then close every file."""
        if not self._open:
            return
        try:
            self._flush_blocking()
        except OSError as e:
            log.warning("log %s: flush on close failed: %s", self.name, e)
        for s in self._segments:
            s.close()
        self._open = False

    def delete(self) -> None:
        """Close without syncing and remove the whole directory.

        The directory is first renamed ``<name>.<uuid>-delete`` (and the parent fsynced), so
        a crash midway leaves a directory the LogManager removes at start, never a
        half-deleted log that loads as if it were whole.
        """
        for s in self._segments:
            s.close()
        self._segments = []
        self._bases = []
        self._open = False
        self._deleted = True
        self._index_sync_pending.clear()
        target = self.directory
        if target.exists():
            doomed = target.with_name(f"{target.name}.{uuid.uuid4().hex}{DELETE_SUFFIX}")
            try:
                os.rename(target, doomed)
                _sync_fds([], target.parent)
                target = doomed
            except OSError as e:
                raise StorageError.wrap(f"deleting log {self.name}", e) from e
        shutil.rmtree(target, ignore_errors=True)

    def _flush_blocking(self) -> None:
        leo = self.log_end_offset
        for s in self._segments:
            if s.next_offset > self._recovery_point or s in self._index_sync_pending:
                s.flush()
        if self._dir_dirty:
            self._sync_directory()
        self._index_sync_pending.clear()
        self._recovery_point = leo
        self._last_sync_ms = _now_ms()

    # ------------------------------------------------------------------ appending

    def append(self, records: bytes | bytearray, leader_epoch: int = 0,
               now_ms: int | None = None) -> AppendInfo:
        """Validate a producer's run of batches, assign offsets, write them; return where.

        Every batch is checked (length, magic, CRC, record count, codec) before anything is
        written: ``CorruptRecordError`` or ``RecordTooLargeError`` (a batch over
        ``max.message.bytes``) leave the log untouched. A ``bytearray`` is rewritten in place
        (base offsets, leader epoch, log-append time). A failed write raises
        ``StorageError`` and leaves the log exactly as it was.
        """
        self._check_open()
        buf = records if isinstance(records, bytearray) else bytearray(records)
        now = _now_ms() if now_ms is None else now_ms
        base = self.log_end_offset
        max_size = self.config.max_message_bytes
        append_time = self.config.log_append_time
        infos: list[BatchInfo] = []
        count = 0
        next_offset = base
        pos = 0
        end = len(buf)
        if end == 0:
            raise CorruptRecordError("empty record set")
        while pos < end:
            if end - pos < HEADER_SIZE:
                raise CorruptRecordError(f"truncated batch header at byte {pos}")
            h = parse_header(buf, pos)
            if h.size > end - pos:
                raise CorruptRecordError(f"truncated batch at byte {pos}")
            if h.size > max_size:
                raise RecordTooLargeError(
                    f"batch of {h.size} bytes exceeds max.message.bytes {max_size}")
            if compute_crc(buf, pos, h.size) != h.crc:
                raise CorruptRecordError(f"CRC mismatch in the batch at byte {pos}")
            if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
                raise CorruptRecordError(
                    f"batch at byte {pos}: last offset delta {h.last_offset_delta} does not"
                    f" match record count {h.record_count}")
            if h.attributes & ATTR_COMPRESSION_MASK not in _CODECS:
                raise CorruptRecordError(
                    f"unsupported compression codec {h.attributes & ATTR_COMPRESSION_MASK}")
            if h.attributes & ATTR_CONTROL:
                raise CorruptRecordError("clients may not append control batches")
            set_base_offset(buf, pos, next_offset)
            set_leader_epoch(buf, pos, leader_epoch)
            max_ts = h.max_timestamp
            if append_time:
                set_log_append_time(buf, pos, now)
                max_ts = now
            nxt = next_offset + h.record_count
            infos.append(BatchInfo(pos, h.size, next_offset, nxt, max_ts))
            count += h.record_count
            next_offset = nxt
            pos += h.size
        self._write(buf, infos, now)
        return AppendInfo(base, next_offset - 1, now if append_time else -1, count)

    def append_as_follower(self, records: bytes | bytearray) -> AppendInfo:
        """Append batches copied from the leader, keeping their offsets and leader epochs.

        The first batch must start at the log end and each batch must continue the previous
        one (``UnexpectedAppendOffsetError`` otherwise); CRCs are checked as for ``append``.
        """
        self._check_open()
        data = records
        if not data:
            raise CorruptRecordError("empty record set")
        expected = self.log_end_offset
        base = expected
        infos: list[BatchInfo] = []
        count = 0
        pos = 0
        end = len(data)
        while pos < end:
            if end - pos < HEADER_SIZE:
                raise CorruptRecordError(f"truncated batch header at byte {pos}")
            h = validate_batch(data, pos)
            if h.base_offset != expected:
                raise UnexpectedAppendOffsetError(
                    f"batch at offset {h.base_offset} does not continue {self.name} at"
                    f" {expected}")
            infos.append(BatchInfo(pos, h.size, h.base_offset, h.next_offset, h.max_timestamp))
            count += h.record_count
            expected = h.next_offset
            pos += h.size
        self._write(data, infos, _now_ms())
        return AppendInfo(base, expected - 1, -1, count)

    def _write(self, data: bytes | bytearray, infos: list[BatchInfo], now_ms: int) -> None:
        seg = self._segments[-1]
        last = infos[-1].next_offset - 1
        if seg.size > 0:
            clock = seg.roll_clock_ms
            if (seg.size > self.config.segment_bytes - len(data)
                    or (clock is not None and now_ms - clock >= self.config.segment_ms)
                    or seg.index_full
                    or not seg.can_hold_offset(last)):
                seg = self._roll()
        try:
            seg.append(data, infos, now_ms)
        except OSError as e:
            raise StorageError.wrap(f"append to {self.name}", e) from e

    def _roll(self) -> Segment:
        """Start a new active segment at the log end (the old one's indexes are synced by
        the next sync round)."""
        base = self.log_end_offset
        seg = Segment(self.directory, base, self.config)
        try:
            for suffix in SUFFIXES:
                # a leftover file at this base can only hold data past the log end
                try:
                    os.unlink(self.directory / (segment_name(base) + suffix))
                except FileNotFoundError:
                    pass
            seg.open()
        except OSError as e:
            seg.close()
            raise StorageError.wrap(f"rolling a new segment of {self.name}", e) from e
        old = self._segments[-1]
        self._index_sync_pending.add(old)
        self._segments.append(seg)
        self._bases.append(base)
        self._dir_dirty = True
        log.debug("log %s: rolled segment %s", self.name, segment_name(base))
        return seg

    def roll(self) -> None:
        """Start a new segment now if the active one is not empty."""
        self._check_open()
        if self._segments[-1].size > 0:
            self._roll()

    # ------------------------------------------------------------------ durability

    def _flush_required(self) -> bool:
        if self.config.durable:
            return True
        fm = self.config.flush_messages
        return fm is not None and self.log_end_offset - self._recovery_point >= fm

    async def flush(self) -> None:
        """Return once every append made before this call is on disk (under the durable
        policy, or when ``flush.messages`` is reached); immediately under ``pagecache``.

        Concurrent callers share fdatasyncs; raises StorageError if the sync fails.
        """
        if not self._flush_required():
            return
        await self._sync_to(self.log_end_offset)

    async def sync(self) -> None:
        """Put everything appended so far on disk, whatever the policy (the LogManager's
        periodic flush and shutdown use this)."""
        target = self.log_end_offset
        if self._recovery_point >= target and not self._index_sync_pending:
            return
        if self._recovery_point >= target:
            # only rolled segments' indexes are left: run one round for them
            fut = self._sync_future or self._start_sync()
            await self._wait(fut)
            return
        await self._sync_to(target)

    def flush_due(self, now_ms: int) -> bool:
        """Whether the LogManager's periodic flush should sync this log now: a segment rolled
        since the last sync, or ``flush.ms`` passed with unsynced data."""
        if self._index_sync_pending:
            return True
        if self._recovery_point >= self.log_end_offset:
            return False
        fm = self.config.flush_ms
        return fm is not None and now_ms - self._last_sync_ms >= fm

    async def _sync_to(self, target: int) -> None:
        while True:
            if self._deleted:
                raise StorageError(f"log {self.name} was deleted", errno.ENOENT)
            # a truncation may have removed what the caller appended
            if self._recovery_point >= min(target, self.log_end_offset):
                return
            if not self._open:
                raise StorageError(f"log {self.name} is closed", errno.EBADF)
            fut = self._sync_future or self._start_sync()
            await self._wait(fut)

    async def _wait(self, fut: asyncio.Future[None]) -> None:
        try:
            await asyncio.shield(fut)
        except OSError as e:
            raise StorageError.wrap(f"syncing {self.name}", e) from e

    def _start_sync(self) -> asyncio.Future[None]:
        """Start a sync round; the returned future completes when it is on disk.

        The round is launched with ``call_soon``: the tasks already woken in this loop
        iteration (producers whose previous round just completed) append first, so one
        fdatasync covers all of them instead of only the first one's batch.
        """
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[None] = loop.create_future()
        self._sync_future = outer
        loop.call_soon(self._launch_sync, outer)
        return outer

    def _launch_sync(self, outer: asyncio.Future[None]) -> None:
        """Run one sync round in a worker thread, covering every append made so far."""
        loop = asyncio.get_running_loop()
        target = self.log_end_offset
        generation = self._generation
        pending = set(self._index_sync_pending)
        self._index_sync_pending.clear()
        dir_dirty = self._dir_dirty
        self._dir_dirty = False
        fds: list[int] = []

        def failed(exc: BaseException | None) -> None:
            self._sync_future = None
            self._index_sync_pending |= {s for s in pending if s in self._segments}
            self._dir_dirty |= dir_dirty
            if not outer.done():
                if exc is None:
                    outer.cancel()
                else:
                    outer.set_exception(exc)

        try:
            for s in self._segments:
                if s in pending:
                    fds.extend(s.dup_fds(with_indexes=True))
                elif s.next_offset > self._recovery_point:
                    fds.extend(s.dup_fds(with_indexes=False))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            failed(e)
            return
        inner: asyncio.Future[None] = loop.run_in_executor(
            None, _sync_fds, fds, self.directory if dir_dirty else None)
        self.fsync_count += 1

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                failed(None if f.cancelled() else f.exception())
                return
            self._sync_future = None
            self._last_sync_ms = _now_ms()
            if generation == self._generation:
                self._recovery_point = max(self._recovery_point,
                                           min(target, self.log_end_offset))
            if not outer.done():
                outer.set_result(None)

        inner.add_done_callback(done)

    # ------------------------------------------------------------------ reading

    def _segment_index(self, offset: int) -> int:
        return max(bisect_right(self._bases, offset) - 1, 0)

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``: up to ``max_bytes``, but at least
        one batch. Empty at the log end; OffsetOutOfRangeError outside
        ``[log_start_offset, log_end_offset]``."""
        return self.read_range(offset, max_bytes, None)

    def read_range(self, offset: int, max_bytes: int, max_offset: int | None) -> bytes:
        """As ``read``, stopping before any batch whose base offset is >= ``max_offset``
        (pass the high watermark to serve only committed batches)."""
        self._check_open()
        leo = self.log_end_offset
        if offset < self._log_start_offset or offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self._log_start_offset}, {leo}] of {self.name}")
        if offset == leo or (max_offset is not None and offset >= max_offset):
            return b""
        segments = self._segments
        try:
            for i in range(self._segment_index(offset), len(segments)):
                seg = segments[i]
                if max_offset is not None and seg.base_offset >= max_offset:
                    break
                data = seg.read(offset, max_bytes, max_offset)
                if data:
                    return data
        except OSError as e:
            raise StorageError.wrap(f"reading {self.name}", e) from e
        except CorruptRecordError as e:
            raise StorageError(f"reading {self.name}: corrupt data on disk: {e}",
                               errno.EIO) from e
        return b""

    def tail_start_offset(self, max_bytes: int) -> int:
        """An offset from which at least ``max_bytes`` of the log (or all of it) remain to
        the end: where a scan of the recent batches starts (replication rebuilds producer
        state from it). The sparse index makes the tail up to one index interval longer."""
        self._check_open()
        remaining = max_bytes
        for seg in reversed(self._segments):
            if seg.size <= remaining:
                remaining -= seg.size
                continue
            offset, _ = seg.index.lookup_position(seg.size - remaining)
            return max(offset, self._log_start_offset)
        return self._log_start_offset

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """ListOffsets by time: ``(offset, timestamp)`` of the first record whose timestamp
        is >= ``timestamp``, or None. ``EARLIEST_TIMESTAMP`` (-2) gives
        ``(log_start_offset, -1)`` and ``LATEST_TIMESTAMP`` (-1) ``(high_watermark, -1)``."""
        self._check_open()
        if timestamp == EARLIEST_TIMESTAMP:
            return self._log_start_offset, -1
        if timestamp == LATEST_TIMESTAMP:
            return self.high_watermark, -1
        try:
            for seg in self._segments:
                if seg.max_timestamp < timestamp or seg.next_offset <= self._log_start_offset:
                    continue
                found = seg.find_offset_by_timestamp(timestamp, self._log_start_offset)
                if found is not None:
                    return found
        except OSError as e:
            raise StorageError.wrap(f"reading {self.name}", e) from e
        except CorruptRecordError as e:
            raise StorageError(f"reading {self.name}: corrupt data on disk: {e}",
                               errno.EIO) from e
        return None

    # ------------------------------------------------------------------ truncation

    def truncate_to(self, offset: int) -> None:
        """Remove everything from ``offset`` on (replication: drop what the leader never
        committed). Truncation is by batch: a batch holding ``offset`` goes entirely."""
        self._check_open()
        if offset >= self.log_end_offset:
            return
        if offset < self._log_start_offset:
            self.truncate_fully_and_start_at(offset)
            return
        self._generation += 1
        try:
            while len(self._segments) > 1 and self._segments[-1].base_offset > offset:
                seg = self._segments.pop()
                self._bases.pop()
                self._index_sync_pending.discard(seg)
                seg.delete()
                self._dir_dirty = True
            self._segments[-1].truncate_to(offset)
        except OSError as e:
            raise StorageError.wrap(f"truncating {self.name}", e) from e
        except CorruptRecordError as e:
            raise StorageError(f"truncating {self.name}: corrupt data on disk: {e}",
                               errno.EIO) from e
        finally:
            self._clamp_offsets()
        log.info("log %s: truncated to offset %d", self.name, self.log_end_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and start empty at ``offset`` (a replica that fell behind
        the leader's log start)."""
        self._check_open()
        self._generation += 1
        try:
            # newest first: a crash midway leaves a shorter log, never a gap
            while self._segments:
                seg = self._segments.pop()
                self._bases.pop()
                seg.delete()
            self._index_sync_pending.clear()
            self._dir_dirty = True
            seg = Segment(self.directory, offset, self.config)
            seg.open()
        except OSError as e:
            self._open = False  # no consistent state to serve from; reopen to recover
            raise StorageError.wrap(f"truncating {self.name}", e) from e
        self._segments = [seg]
        self._bases = [offset]
        self._log_start_offset = offset
        self._recovery_point = offset
        if self._high_watermark is not None:
            self._high_watermark = offset
        log.info("log %s: truncated fully, starting at offset %d", self.name, offset)

    def _clamp_offsets(self) -> None:
        leo = self.log_end_offset
        self._recovery_point = min(self._recovery_point, leo)
        self._log_start_offset = min(self._log_start_offset, leo)
        if self._high_watermark is not None:
            self._high_watermark = min(self._high_watermark, leo)

    # ------------------------------------------------------------------ retention

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete whole segments past ``retention.ms`` or beyond ``retention.bytes``; return
        how many were deleted and move the log start offset to the first one left.

        Only segments wholly below the high watermark go. By time, a segment goes when its
        largest timestamp is older than ``retention.ms``; if that is true of the active
        segment too, a new empty segment is rolled first so it can go (Kafka does the same).
        By size, the oldest segments go while the rest still exceed ``retention.bytes``;
        the active segment is never deleted by size.
        """
        self._check_open()
        if not self.config.delete_enabled:
            return 0
        now = _now_ms() if now_ms is None else now_ms
        hw = self.high_watermark
        deleted = 0
        retention_ms = self.config.retention_ms
        try:
            if retention_ms >= 0:
                while self._segments:
                    seg = self._segments[0]
                    if (seg.is_empty or seg.next_offset > hw
                            or now - seg.largest_timestamp <= retention_ms):
                        break
                    if len(self._segments) == 1:
                        self._roll()
                    self._delete_oldest()
                    deleted += 1
            retention_bytes = self.config.retention_bytes
            if retention_bytes >= 0:
                excess = self.size_bytes - retention_bytes
                while len(self._segments) > 1:
                    seg = self._segments[0]
                    if seg.size > excess or seg.next_offset > hw:
                        break
                    excess -= seg.size
                    self._delete_oldest()
                    deleted += 1
        except StorageError as e:
            log.warning("log %s: retention stopped: %s", self.name, e)
        except OSError as e:
            log.warning("log %s: retention stopped: %s", self.name, e)
        if deleted:
            log.info("log %s: retention deleted %d segment(s); log start offset now %d",
                     self.name, deleted, self._log_start_offset)
        return deleted

    def _delete_oldest(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        self._index_sync_pending.discard(seg)
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self._recovery_point = max(self._recovery_point, self._log_start_offset)
        self._dir_dirty = True
        seg.delete()
