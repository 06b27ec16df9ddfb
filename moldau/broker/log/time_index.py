"""TimeIndex: a segment's sparse map from timestamp to the first offset that reached it.

On disk (``NNNNNNNNNNNNNNNNNNNN.timeindex``), entries of 12 bytes, big-endian:

    timestamp        i64   the largest batch max timestamp seen so far in the segment
    relative_offset  u32   base offset (- segment base) of the first batch with that timestamp

Invariant: timestamps strictly increase and offsets never decrease. An entry ``(t, o)`` means
every batch before offset ``o`` has a max timestamp below ``t``, so a search for the first
batch whose max timestamp is >= T may start at the batch of ``lookup(T)``'s offset. Entries
are added at the same points as the offset index's, only when the maximum grew.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from pathlib import Path

from moldau.broker.log._index_file import IndexFile, IndexFileOwner

ENTRY = struct.Struct(">qI")
ENTRY_SIZE = ENTRY.size
MAX_RELATIVE = 2**32 - 1
NO_TIMESTAMP = -1


class TimeIndex(IndexFileOwner):
    """Sparse timestamp -> offset index of one segment (``open()`` does the I/O)."""

    __slots__ = ("_file", "_offsets", "_timestamps", "_torn", "base_offset", "max_entries")

    def __init__(self, path: Path, base_offset: int, max_entries: int = 10 * 1024 * 1024 // 12
                 ) -> None:
        self._file = IndexFile(path, ENTRY_SIZE)
        self.base_offset = base_offset
        self.max_entries = max(1, max_entries)
        self._timestamps = array("q")
        self._offsets = array("I")
        self._torn = False

    @property
    def path(self) -> Path:
        return self._file.path

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> bool:
        """Open (creating it if missing) and load; True if the file already existed."""
        data, existed = self._file.open_file()
        whole = len(data) - len(data) % ENTRY_SIZE
        self._torn = whole != len(data)
        self._timestamps, self._offsets = _decode(data[:whole])
        return existed

    def sanity_check(self, next_offset: int) -> str | None:
        """Why this index cannot be trusted for a segment ending at ``next_offset``, or None."""
        if self._torn:
            return "time index size is not a multiple of 12"
        n = len(self._timestamps)
        if n == 0:
            return None
        if n > self.max_entries:
            return f"time index has {n} entries, more than its maximum {self.max_entries}"
        if self.base_offset + self._offsets[-1] >= next_offset:
            return f"time index offset {self.base_offset + self._offsets[-1]} past the log end"
        ts = self._timestamps.tolist()
        offs = self._offsets.tolist()
        if ts != sorted(ts) or len(set(ts)) != n or offs != sorted(offs):
            return "time index entries are not in order"
        return None

    def make_writable(self) -> None:
        """Reopen read-write if needed and write back entries the file is missing."""
        if self._file.make_writable():
            self._file.rewrite(b"".join(ENTRY.pack(t, o) for t, o in
                                        zip(self._timestamps, self._offsets, strict=True)))

    # ------------------------------------------------------------------ entries

    def __len__(self) -> int:
        return len(self._timestamps)

    @property
    def is_full(self) -> bool:
        return len(self._timestamps) >= self.max_entries

    @property
    def last_entry(self) -> tuple[int, int]:
        """The last ``(timestamp, offset)``, or ``(-1, base_offset)`` when empty."""
        if not self._timestamps:
            return NO_TIMESTAMP, self.base_offset
        return self._timestamps[-1], self.base_offset + self._offsets[-1]

    def entries(self) -> list[tuple[int, int]]:
        base = self.base_offset
        return [(t, base + o) for t, o in zip(self._timestamps, self._offsets, strict=True)]

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """The entry with the largest timestamp <= ``timestamp``; ``(-1, base_offset)`` if none."""
        i = bisect_right(self._timestamps, timestamp) - 1
        if i < 0:
            return NO_TIMESTAMP, self.base_offset
        return self._timestamps[i], self.base_offset + self._offsets[i]

    def maybe_append(self, timestamp: int, offset: int) -> bool:
        """Add ``(timestamp, offset)`` if the timestamp is larger than the last one's; return
        whether it was added. Raises ValueError for an offset out of order, OSError on I/O."""
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return False
        rel = offset - self.base_offset
        if rel < 0 or rel > MAX_RELATIVE or (self._offsets and rel < self._offsets[-1]):
            raise ValueError(f"time index offset {offset} out of order")
        if self.is_full:
            return False
        self._file.write_at(len(self._timestamps), ENTRY.pack(timestamp, rel))
        self._timestamps.append(timestamp)
        self._offsets.append(rel)
        return True

    def truncate_to(self, offset: int) -> None:
        """Remove every entry with offset >= ``offset``."""
        rel = offset - self.base_offset
        keep = 0 if rel <= 0 else bisect_right(self._offsets, rel - 1)
        self.truncate_entries(keep)

    def truncate_entries(self, count: int) -> None:
        if count >= len(self._timestamps):
            return
        self._file.truncate_entries(count)
        del self._timestamps[count:]
        del self._offsets[count:]

    def reset(self) -> None:
        self._file.truncate_entries(0)
        self._timestamps = array("q")
        self._offsets = array("I")
        self._torn = False


def _decode(data: bytes) -> tuple[array[int], array[int]]:
    """Split 12-byte entries into timestamp and offset arrays with C-speed slicing (an
    index of a 1 GiB segment has ~260,000 entries: a Python loop would take a while)."""
    n = len(data) // ENTRY_SIZE
    words = array("I")
    words.frombytes(data)  # three big-endian u32 per entry: ts high, ts low, offset
    pairs = array("I", bytes(8 * n))
    pairs[0::2] = words[0::3]
    pairs[1::2] = words[1::3]
    timestamps = array("q")
    timestamps.frombytes(pairs.tobytes())
    offsets = words[2::3]
    if sys.byteorder == "little":
        timestamps.byteswap()
        offsets.byteswap()
    return timestamps, offsets
