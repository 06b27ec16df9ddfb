"""The write-ahead log of metadata transactions.

On disk, in the data directory: files ``log.<zxid>`` named by the zxid of their first record
(16 hex digits), each a run of records::

    record = u32 length (big-endian, of payload) | u32 crc32c(payload) | payload
    payload = Txn.encode()  (msgpack [zxid, time, session, op, args])

Invariants: zxids increase strictly along the files in name order. A record is acknowledged
only after an fdatasync covered it (group commit: one ``flush`` covers every record appended
before it started, and runs off the event loop). Recovery keeps the longest valid prefix: the
first torn, corrupt or out-of-order record and everything after it (the rest of its file and
every later file) is removed, since none of it can have been acknowledged. A new file is
started after each snapshot (``roll``); files whose records are all covered by the oldest
snapshot kept are deleted (``purge``). A quorum follower may also cut the log's tail
(``truncate_from``: entries a deposed leader never got committed) or drop it whole
(``reset``, after installing a leader's snapshot); both are made durable by the next
``flush``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from pathlib import Path

import crc32c

from moldau.broker.metadata.tree import Txn

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_NAME = re.compile(r"^log\.([0-9a-f]{16})$")


def log_name(first_zxid: int) -> str:
    return f"log.{first_zxid:016x}"


def frame_record(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def read_records(data: bytes) -> tuple[list[Txn], int]:
    """Decode the valid prefix of one file's bytes: ``(txns, length of the valid prefix)``."""
    txns: list[Txn] = []
    pos, n = 0, len(data)
    view = memoryview(data)
    while pos < n:
        if n - pos < _HEADER.size:
            break
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > n:
            break
        payload = view[pos + _HEADER.size : end]
        if crc32c.crc32c(payload) != crc:
            break
        try:
            txn = Txn.decode(payload)
        except Exception:  # msgpack raises several types on garbage
            break
        if txns and txn.zxid <= txns[-1].zxid:
            break
        txns.append(txn)
        pos = end
    return txns, pos


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TxnLog:
    """Appends framed transactions to the current file; ``flush()`` makes them durable.

    Not thread-safe except as used here: ``append``, ``roll`` and ``purge`` run on the event
    loop; only the fdatasync inside ``flush`` runs in a worker thread, on file descriptors
    that are closed only after it returns.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: list[tuple[int, Path]] = []  # (first zxid, path), ascending
        self._fd = -1
        self._retiring: list[int] = []  # rolled-over files not yet synced and closed
        self._dir_dirty = False
        self._appended = 0  # records appended by this process
        self._durable = 0  # of those, how many an fdatasync has covered
        self.last_zxid = 0  # zxid of the last record in the log

    @property
    def appended(self) -> int:
        return self._appended

    @property
    def durable(self) -> int:
        return self._durable

    def files(self) -> list[tuple[int, Path]]:
        return list(self._files)

    def _scan(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append((int(m.group(1), 16), p))
        return sorted(out)

    def recover(self, after_zxid: int) -> list[Txn]:
        """Blocking: validate every file, cut the log after its last valid record, open the
        log for appending, and return the transactions with a zxid above ``after_zxid``."""
        files = self._scan()
        txns: list[Txn] = []
        last = 0
        valid: list[tuple[int, Path]] = []
        for i, (first, path) in enumerate(files):
            data = path.read_bytes()
            records, good = read_records(data)
            if records and (records[0].zxid != first or records[0].zxid <= last):
                records, good = [], 0
            bad = good < len(data)
            if records or not bad:
                valid.append((first, path))
            for t in records:
                if t.zxid > after_zxid:
                    txns.append(t)
            if records:
                last = records[-1].zxid
            if bad:
                log.warning("txn log %s: invalid data at byte %d of %d; truncating the log there",
                            path.name, good, len(data))
                if records:
                    os.truncate(path, good)
                else:
                    path.unlink()
                for _, later in files[i + 1:]:
                    log.warning("txn log %s: removed, it follows the truncation", later.name)
                    later.unlink()
                _fsync_dir(self.directory)
                break
        if valid and valid[0][0] > after_zxid + 1:
            raise RuntimeError(
                f"txn log starts at zxid {valid[0][0]:#x} but the snapshot ends at "
                f"{after_zxid:#x}: log files are missing from {self.directory}")
        self._files = valid
        self.last_zxid = max(last, after_zxid)
        if self._files:
            self._fd = os.open(self._files[-1][1], os.O_WRONLY | os.O_APPEND)
        else:
            self._open_new(self.last_zxid + 1)
        return txns

    def _open_new(self, first_zxid: int) -> None:
        path = self.directory / log_name(first_zxid)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        self._files.append((first_zxid, path))
        self._dir_dirty = True

    def append(self, txn: Txn) -> int:
        """Write one transaction (not yet durable); returns its sequence number for
        ``flush``. Raises OSError on a failed write: the log is then unusable."""
        if txn.zxid <= self.last_zxid:
            raise ValueError(f"zxid {txn.zxid:#x} not after {self.last_zxid:#x}")
        buf = memoryview(frame_record(txn.encode()))
        while buf:
            written = os.write(self._fd, buf)
            buf = buf[written:]
        self.last_zxid = txn.zxid
        self._appended += 1
        return self._appended

    def roll(self) -> None:
        """Start a new file for the records appended from now on."""
        if self._files and self._files[-1][0] == self.last_zxid + 1:
            return  # the current file is still empty
        self._retiring.append(self._fd)
        self._open_new(self.last_zxid + 1)

    async def flush(self) -> int:
        """Make every record appended so far durable; returns the sequence number covered."""
        target = self._appended
        if target == self._durable and not self._dir_dirty:
            return target
        fds = [*self._retiring, self._fd]
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        await asyncio.to_thread(self._sync, fds, dir_dirty)
        for fd in fds[:-1]:
            self._retiring.remove(fd)
            os.close(fd)
        self._durable = max(self._durable, target)
        return target

    def _sync(self, fds: list[int], dir_dirty: bool) -> None:
        for fd in fds:
            os.fdatasync(fd)
        if dir_dirty:
            _fsync_dir(self.directory)

    def truncate_from(self, zxid: int) -> None:
        """Remove every record with a zxid >= ``zxid`` (durable after the next flush)."""
        if zxid > self.last_zxid:
            return
        keep = [(f, p) for f, p in self._files if f < zxid]
        for f, path in self._files:
            if f >= zxid:
                path.unlink(missing_ok=True)
        # an fd is never closed here: a flush running in a worker thread may be syncing it
        self._retiring.append(self._fd)
        self._fd = -1
        self._files = keep
        self._dir_dirty = True
        if not keep:
            self.last_zxid = zxid - 1
            self._open_new(zxid)
            return
        path = keep[-1][1]
        data = path.read_bytes()
        pos, last = 0, keep[-1][0] - 1
        while pos + _HEADER.size <= len(data):
            length, _ = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if end > len(data) or Txn.decode(data[pos + _HEADER.size:end]).zxid >= zxid:
                break
            last = Txn.decode(data[pos + _HEADER.size:end]).zxid
            pos = end
        os.truncate(path, pos)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.last_zxid = last

    def reset(self, after_zxid: int) -> None:
        """Drop every record and continue after ``after_zxid`` (a snapshot covers it)."""
        for _, path in self._files:
            path.unlink(missing_ok=True)
        self._retiring.append(self._fd)
        self._fd = -1
        self._files = []
        self._dir_dirty = True
        self.last_zxid = after_zxid
        self._open_new(after_zxid + 1)

    def purge(self, covered_zxid: int) -> list[Path]:
        """Delete files all of whose records have a zxid <= ``covered_zxid``."""
        removed = []
        while len(self._files) > 1 and self._files[1][0] <= covered_zxid + 1:
            _, path = self._files.pop(0)
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    async def close(self) -> None:
        await self.flush()
        for fd in [*self._retiring, self._fd]:
            if fd >= 0:
                os.close(fd)
        self._retiring.clear()
        self._fd = -1
