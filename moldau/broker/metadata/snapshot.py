"""Snapshots of the metadata tree and its sessions.

On disk, in the data directory: ``snapshot.<zxid>`` (the zxid of the last transaction the
image includes, 16 hex digits)::

    snapshot = b"MDSNAP01" | u32 crc32c(payload) (big-endian) | payload
    payload  = msgpack DataTree.snapshot()

Invariant: a snapshot file is complete or absent under its final name: it is written to
``<name>.tmp``, fsynced, renamed, and the directory fsynced. Loading picks the newest file that
passes its checksum; at most ``keep`` newest snapshots are kept.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import crc32c
import msgpack

log = logging.getLogger(__name__)

MAGIC = b"MDSNAP01"
_CRC = struct.Struct(">I")
_NAME = re.compile(r"^snapshot\.([0-9a-f]{16})$")


def snapshot_name(zxid: int) -> str:
    return f"snapshot.{zxid:016x}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """``(zxid, path)`` of every snapshot file, oldest first."""
    out = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1), 16), p))
    return sorted(out)


def encode_snapshot(image: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(image, use_bin_type=True)
    return MAGIC + _CRC.pack(crc32c.crc32c(payload)) + payload


def decode_snapshot(data: bytes) -> dict[str, Any]:
    """ValueError unless ``data`` is a whole, uncorrupted snapshot."""
    head = len(MAGIC) + _CRC.size
    if len(data) < head or not data.startswith(MAGIC):
        raise ValueError("not a snapshot file")
    (crc,) = _CRC.unpack_from(data, len(MAGIC))
    payload = memoryview(data)[head:]
    if crc32c.crc32c(payload) != crc:
        raise ValueError("snapshot checksum mismatch")
    try:
        image = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types on garbage
        raise ValueError(f"undecodable snapshot: {e}") from None
    if not isinstance(image, dict):
        raise ValueError("snapshot payload is not a map")
    return image


def write_snapshot(directory: Path, zxid: int, image: dict[str, Any]) -> Path:
    """Blocking: write ``image`` durably as the snapshot at ``zxid``."""
    return write_snapshot_bytes(directory, zxid, encode_snapshot(image))


def write_snapshot_bytes(directory: Path, zxid: int, data: bytes) -> Path:
    """Blocking: write an encoded snapshot (``encode_snapshot``) durably."""
    path = directory / snapshot_name(zxid)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def load_newest(directory: Path) -> tuple[int, dict[str, Any]] | None:
    """Blocking: ``(zxid, image)`` of the newest valid snapshot, or None."""
    for tmp in directory.glob("snapshot.*.tmp"):
        tmp.unlink(missing_ok=True)  # a write that a crash interrupted
    for zxid, path in reversed(list_snapshots(directory)):
        try:
            return zxid, decode_snapshot(path.read_bytes())
        except (OSError, ValueError) as e:
            log.warning("skipping snapshot %s: %s", path.name, e)
    return None


def purge_snapshots(directory: Path, keep: int = 2) -> int:
    """Blocking: delete all but the ``keep`` newest snapshots; returns the zxid of the
    oldest one kept (0 if none), below which no log record is needed any more."""
    snaps = list_snapshots(directory)
    for _, path in snaps[:-keep]:
        path.unlink(missing_ok=True)
    kept = snaps[-keep:]
    return kept[0][0] if kept else 0
