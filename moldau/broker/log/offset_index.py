"""OffsetIndex: a segment's sparse map from offset to the file position of a batch.

On disk (``NNNNNNNNNNNNNNNNNNNN.index``), entries of 8 bytes, big-endian:

    relative_offset  u32   batch base offset - segment base offset
    position         u32   byte position of that batch in the segment's .log file

Invariant: entries are in strictly increasing offset and position order, each names the
first byte of a batch whose base offset is ``base_offset + relative_offset``, and none
points at or past the end of the data. The index is sparse (one entry per
``index.interval.bytes`` of log), so ``lookup(o)`` gives a position to scan forward from.

The entries live in memory as two ``array('I')`` (8 bytes per entry) and are written through
to the file on append; the file is never preallocated, so its size is ``8 * entries``.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from pathlib import Path

from moldau.broker.log._index_file import IndexFile, IndexFileOwner

ENTRY = struct.Struct(">II")
ENTRY_SIZE = ENTRY.size
MAX_RELATIVE = 2**32 - 1


class OffsetIndex(IndexFileOwner):
    """Sparse offset -> position index of one segment (``open()`` does the I/O)."""

    __slots__ = ("_file", "_offsets", "_positions", "_torn", "base_offset", "max_entries")

    def __init__(self, path: Path, base_offset: int, max_entries: int = 10 * 1024 * 1024 // 8
                 ) -> None:
        self._file = IndexFile(path, ENTRY_SIZE)
        self.base_offset = base_offset
        self.max_entries = max(1, max_entries)
        self._offsets = array("I")
        self._positions = array("I")
        self._torn = False

    @property
    def path(self) -> Path:
        return self._file.path

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> bool:
        """Open (creating it if missing) and load; True if the file already existed.

        Call ``sanity_check`` afterwards: loading accepts whatever bytes are there.
        """
        data, existed = self._file.open_file()
        self._load(data)
        return existed

    def _load(self, data: bytes) -> None:
        whole = len(data) - len(data) % ENTRY_SIZE
        raw = array("I")
        raw.frombytes(data[:whole])
        if sys.byteorder == "little":
            raw.byteswap()
        self._offsets = raw[0::2]
        self._positions = raw[1::2]
        self._torn = len(data) != whole

    def sanity_check(self, log_size: int) -> str | None:
        """Why this index cannot be trusted for a log of ``log_size`` bytes, or None."""
        if self._torn:
            return "index size is not a multiple of 8"
        offs, poss = self._offsets, self._positions
        n = len(offs)
        if n == 0:
            return None
        if n > self.max_entries:
            return f"index has {n} entries, more than its maximum {self.max_entries}"
        if poss[-1] >= log_size:
            return f"index entry position {poss[-1]} at or past the log end {log_size}"
        if n > 1 and not (_strictly_increasing(offs) and _strictly_increasing(poss)):
            return "index entries are not strictly increasing"
        return None

    def make_writable(self) -> None:
        """Reopen read-write if needed and write back entries the file is missing."""
        if self._file.make_writable():
            self._file.rewrite(b"".join(ENTRY.pack(o, p) for o, p in
                                        zip(self._offsets, self._positions, strict=True)))

    # ------------------------------------------------------------------ entries

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def is_full(self) -> bool:
        return len(self._offsets) >= self.max_entries

    @property
    def last_entry(self) -> tuple[int, int]:
        """The last ``(offset, position)``, or ``(base_offset, 0)`` when empty."""
        if not self._offsets:
            return self.base_offset, 0
        return self.base_offset + self._offsets[-1], self._positions[-1]

    def entries(self) -> list[tuple[int, int]]:
        base = self.base_offset
        return [(base + o, p) for o, p in zip(self._offsets, self._positions, strict=True)]

    def lookup(self, offset: int) -> tuple[int, int]:
        """The entry with the largest offset <= ``offset``; ``(base_offset, 0)`` if none."""
        rel = offset - self.base_offset
        if rel < 0 or not self._offsets:
            return self.base_offset, 0
        i = bisect_right(self._offsets, min(rel, MAX_RELATIVE)) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[i], self._positions[i]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """The entry with the largest position <= ``position``; ``(base_offset, 0)`` if
        none (where to start scanning the batches from a byte position on)."""
        if not self._positions:
            return self.base_offset, 0
        i = bisect_right(self._positions, max(position, 0)) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[i], self._positions[i]

    def can_append(self, offset: int, position: int) -> bool:
        rel = offset - self.base_offset
        if rel < 0 or rel > MAX_RELATIVE or position > MAX_RELATIVE:
            return False
        return not self._offsets or (rel > self._offsets[-1] and position > self._positions[-1])

    def append(self, offset: int, position: int) -> None:
        """Add an entry after the last; raises ValueError if out of order, OSError on I/O."""
        if not self.can_append(offset, position):
            raise ValueError(
                f"index entry ({offset}, {position}) does not follow {self.last_entry}"
                f" in the index of base offset {self.base_offset}")
        if self.is_full:
            raise ValueError(f"offset index of base offset {self.base_offset} is full")
        rel = offset - self.base_offset
        self._file.write_at(len(self._offsets), ENTRY.pack(rel, position))
        self._offsets.append(rel)
        self._positions.append(position)

    def truncate_to(self, offset: int) -> None:
        """Remove every entry with offset >= ``offset``."""
        rel = offset - self.base_offset
        keep = 0 if rel <= 0 else bisect_right(self._offsets, rel - 1)
        self.truncate_entries(keep)

    def truncate_entries(self, count: int) -> None:
        """Keep only the first ``count`` entries."""
        if count >= len(self._offsets):
            return
        self._file.truncate_entries(count)
        del self._offsets[count:]
        del self._positions[count:]

    def reset(self) -> None:
        """Remove every entry (the index is about to be rebuilt)."""
        self._file.truncate_entries(0)
        self._offsets = array("I")
        self._positions = array("I")
        self._torn = False


def _strictly_increasing(a: array[int]) -> bool:
    # sorted() and set() run in C: a million entries check in milliseconds
    items = a.tolist()
    return items == sorted(items) and len(set(items)) == len(items)
