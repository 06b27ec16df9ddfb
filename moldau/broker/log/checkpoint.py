"""OffsetCheckpoint: Kafka's per-log-directory checkpoint files of one offset per partition.

A log directory holds three, each mapping ``(topic, partition)`` to an offset:

    recovery-point-offset-checkpoint   everything below the offset is on disk
    log-start-offset-checkpoint        the first offset still in the log
    replication-offset-checkpoint      the high watermark

Format (text, as Kafka writes it):

    0                    version
    <count>              number of lines that follow
    <topic> <partition> <offset>
    ...

Invariant: a checkpoint file is always whole: it is written to ``<name>.tmp``, fsynced,
renamed over the old one, and the directory is fsynced, so a crash leaves either the old or
the new file. Topic names never contain spaces (``validate_topic_name``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
REPLICATION_CHECKPOINT = "replication-offset-checkpoint"
VERSION = 0

TopicPartition = tuple[str, int]


class CorruptCheckpointError(ValueError):
    """A checkpoint file that does not parse; the message names the file and line."""


class OffsetCheckpoint:
    """One checkpoint file (no I/O until ``read``/``write``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OffsetCheckpoint({self.path})"

    def read(self) -> dict[TopicPartition, int]:
        """The offsets in the file; empty if it does not exist. Raises
        CorruptCheckpointError on a malformed file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return parse_checkpoint(text, str(self.path))

    def write(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Replace the file atomically (temp file, fsync, rename, fsync the directory)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = format_checkpoint(offsets).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def format_checkpoint(offsets: Mapping[TopicPartition, int]) -> str:
    lines = [str(VERSION), str(len(offsets))]
    for (topic, partition), offset in sorted(offsets.items()):
        if not topic or any(c.isspace() for c in topic):
            raise ValueError(f"topic name {topic!r} cannot be checkpointed")
        lines.append(f"{topic} {partition} {offset}")
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str, source: str = "checkpoint") -> dict[TopicPartition, int]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise CorruptCheckpointError(f"{source}: missing version or count line")
    if lines[0].strip() != str(VERSION):
        raise CorruptCheckpointError(f"{source}: unknown version {lines[0]!r}")
    try:
        count = int(lines[1])
    except ValueError:
        raise CorruptCheckpointError(f"{source}: bad count {lines[1]!r}") from None
    entries = lines[2:]
    if count != len(entries):
        raise CorruptCheckpointError(
            f"{source}: count says {count} entries but there are {len(entries)}")
    out: dict[TopicPartition, int] = {}
    for n, line in enumerate(entries, start=3):
        parts = line.split(" ")
        if len(parts) != 3:
            raise CorruptCheckpointError(f"{source} line {n}: expected 'topic partition"
                                         f" offset', got {line!r}")
        topic, partition, offset = parts
        try:
            out[(topic, int(partition))] = int(offset)
        except ValueError:
            raise CorruptCheckpointError(f"{source} line {n}: bad number in {line!r}") from None
    return out
