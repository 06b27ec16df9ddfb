"""LeaderEpochCache: which leader epoch wrote which offsets of a partition (KIP-101).

A leader stamps its epoch on every batch it appends; the cache keeps, per epoch, the first
offset written in it. A follower that returns after a leadership change asks the leader
where its own latest epoch ends (OffsetForLeaderEpoch) and truncates there, so it never
keeps records the leader of that epoch did not keep (records that were never committed).

On disk ``<partition directory>/leader-epoch-checkpoint``, Kafka's format::

    0                       version
    <count>                 number of lines that follow
    <epoch> <start_offset>  one per epoch, ascending
    ...

Invariants: epochs and start offsets both strictly increase (an epoch that wrote nothing is
replaced by the next one starting at the same offset, as Kafka does); no entry starts past
the log end. The file is replaced atomically (temp file, fsync, rename, fsync the
directory) on every change, and changes are rare (one per leadership change), so the file is
always at least as new as the batches it describes.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "leader-epoch-checkpoint"
VERSION = 0
UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class LeaderEpochCache:
    """The epoch -> start offset entries of one partition (no I/O until ``load``)."""

    def __init__(self, directory: Path | None) -> None:
        # None: in memory only (tests)
        self.path = directory / CHECKPOINT_FILE if directory is not None else None
        self._epochs: list[int] = []
        self._starts: list[int] = []

    def __repr__(self) -> str:
        return f"LeaderEpochCache({self.entries()})"

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts, strict=True))

    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    @property
    def earliest_entry(self) -> tuple[int, int] | None:
        return (self._epochs[0], self._starts[0]) if self._epochs else None

    def __len__(self) -> int:
        return len(self._epochs)

    # ------------------------------------------------------------------ file

    def load(self) -> bool:
        """Read the checkpoint; False if it is missing or unreadable (then rebuild)."""
        if self.path is None:
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("cannot read %s: %s", self.path, e)
            return False
        try:
            entries = parse(text)
        except ValueError as e:
            log.warning("ignoring %s: %s", self.path, e)
            return False
        self._epochs = [e for e, _ in entries]
        self._starts = [s for _, s in entries]
        return True

    def _persist(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = format_entries(self.entries()).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            # the partition directory may be going away (topic deleted); the log itself
            # reports real storage trouble
            log.warning("cannot write %s: %s", self.path, e)

    # ------------------------------------------------------------------ changes

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; False if that changes nothing.

        An older epoch is ignored; entries that start at or after ``start_offset`` are
        replaced (an epoch that wrote nothing gives way to the next one)."""
        if epoch < 0:
            return False
        if self._epochs:
            last_epoch, last_start = self._epochs[-1], self._starts[-1]
            if epoch < last_epoch or (epoch == last_epoch and start_offset >= last_start):
                return False
        while self._epochs and (self._epochs[-1] >= epoch or self._starts[-1] >= start_offset):
            self._epochs.pop()
            self._starts.pop()
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self._persist()
        return True

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was cut at ``end_offset``: forget epochs that start at or after it."""
        n = len(self._starts)
        while self._starts and self._starts[-1] >= end_offset:
            self._epochs.pop()
            self._starts.pop()
        if len(self._starts) != n:
            self._persist()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at ``start_offset``: drop epochs wholly before it, and move the
        start of the one holding it there."""
        i = bisect.bisect_right(self._starts, start_offset) - 1
        if i < 0:
            return
        changed = i > 0 or self._starts[0] != start_offset
        del self._epochs[:i]
        del self._starts[:i]
        self._starts[0] = start_offset
        if changed:
            self._persist()

    def clear(self) -> None:
        if self._epochs:
            self._epochs.clear()
            self._starts.clear()
            self._persist()

    def rebuild(self, batches: Iterable[tuple[int, int]]) -> None:
        """Replace the entries from the log's batches: ``(partition_leader_epoch,
        base_offset)`` in offset order."""
        self._epochs, self._starts = [], []
        for epoch, base in batches:
            if epoch >= 0 and (not self._epochs or epoch > self._epochs[-1]):
                self._epochs.append(epoch)
                self._starts.append(base)
        self._persist()

    # ------------------------------------------------------------------ queries

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's ``endOffsetFor``: ``(e, end)`` where ``e`` is the largest known epoch <=
        ``epoch`` and ``end`` the start of the epoch after it (the log end for the latest);
        ``(epoch, first start)`` if every known epoch is larger; ``(-1, -1)`` if ``epoch``
        is above every known one or nothing is known."""
        if epoch < 0 or not self._epochs:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if epoch == self._epochs[-1]:
            return epoch, log_end_offset
        if epoch > self._epochs[-1]:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        i = bisect.bisect_right(self._epochs, epoch)  # first entry with a larger epoch
        if i == 0:
            return epoch, self._starts[0]
        return self._epochs[i - 1], self._starts[i]

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch that wrote ``offset`` (-1 if before every entry)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return self._epochs[i] if i >= 0 else UNDEFINED_EPOCH


def format_entries(entries: list[tuple[int, int]]) -> str:
    lines = [str(VERSION), str(len(entries))]
    lines += [f"{e} {s}" for e, s in entries]
    return "\n".join(lines) + "\n"


def parse(text: str) -> list[tuple[int, int]]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0].strip() != str(VERSION):
        raise ValueError("missing or unknown version line")
    count = int(lines[1])
    body = lines[2:]
    if count != len(body):
        raise ValueError(f"count says {count} entries but there are {len(body)}")
    out: list[tuple[int, int]] = []
    for line in body:
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"bad line {line!r}")
        e, s = int(parts[0]), int(parts[1])
        if out and (e <= out[-1][0] or s <= out[-1][1]):
            raise ValueError(f"entries not increasing at {line!r}")
        out.append((e, s))
    return out
