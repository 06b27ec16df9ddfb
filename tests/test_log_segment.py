"""Segment, OffsetIndex and TimeIndex: append/read, index lookups, recovery of damaged files."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from moldau.broker.log.config import LogConfig
from moldau.broker.log.offset_index import OffsetIndex
from moldau.broker.log.segment import BatchInfo, Segment, parse_segment_name, segment_name
from moldau.broker.log.time_index import TimeIndex
from moldau.clients.records import BatchBuilder, decode_all, iter_batches, set_base_offset


def make_batch(base_offset: int, count: int, ts: int, tag: str = "v", size: int = 20) -> bytes:
    """A batch of ``count`` records with values ``<tag><offset>`` padded to ``size``."""
    b = BatchBuilder()
    for i in range(count):
        b.append(ts + i, None, f"{tag}{base_offset + i}".encode().ljust(size, b"."))
    buf = bytearray(b.build())
    set_base_offset(buf, 0, base_offset)
    return bytes(buf)


def append_batches(seg: Segment, count: int, per_batch: int = 5, ts0: int = 1000) -> list[bytes]:
    out = []
    for _ in range(count):
        base = seg.next_offset
        data = make_batch(base, per_batch, ts0 + base)
        seg.append(data, [BatchInfo(0, len(data), base, base + per_batch,
                                    ts0 + base + per_batch - 1)])
        out.append(data)
    return out


def read_all(seg: Segment, start: int | None = None) -> list[int]:
    """Offsets of every record readable from ``start`` by repeated small reads."""
    offsets: list[int] = []
    off = seg.base_offset if start is None else start
    while True:
        data = seg.read(off, 300)
        if not data:
            return offsets
        recs = decode_all(data, off)
        offsets.extend(r.offset for r in recs)
        off = recs[-1].offset + 1


def cfg(**kw: object) -> LogConfig:
    return LogConfig.model_validate({"index.interval.bytes": 100, **kw})


def test_segment_names() -> None:
    assert segment_name(42) == "00000000000000000042"
    assert parse_segment_name("00000000000000000042.log") == (42, ".log")
    assert parse_segment_name("00000000000000000042.timeindex") == (42, ".timeindex")
    assert parse_segment_name("42.log") is None
    assert parse_segment_name("meta.properties") is None


def test_append_read_round_trip(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 100, cfg())
    seg.open()
    batches = append_batches(seg, 40)
    assert seg.next_offset == 300
    assert seg.size == sum(len(b) for b in batches)
    assert read_all(seg) == list(range(100, 300))
    # the read starts at the batch that holds the offset, so it may begin before it
    data = seg.read(152, 10_000)
    first = next(iter_batches(data))[1]
    assert first.base_offset == 150 and first.last_offset == 154
    # a max_bytes smaller than one batch still returns that whole batch
    assert seg.read(152, 1) == batches[10]
    # reads stop before a batch whose base offset is >= max_offset
    data = seg.read(100, 1_000_000, max_offset=120)
    assert [r.offset for r in decode_all(data)] == list(range(100, 120))
    assert seg.read(120, 1_000_000, max_offset=120) == b""
    assert seg.read(300, 1000) == b""
    seg.close()


def test_index_entries_every_interval_and_never_past_end(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0, cfg(**{"index.interval.bytes": 500}))
    seg.open()
    append_batches(seg, 60)
    entries = seg.index.entries()
    assert entries, "an index entry every 500 bytes"
    positions = {p: h.base_offset for p, h in seg.batch_headers()}
    for offset, position in entries:
        assert position < seg.size
        assert positions[position] == offset  # each entry names a batch start
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(entries)]
    assert all(g >= 500 for g in gaps)
    seg.close()


def test_find_offset_by_timestamp(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0, cfg())
    seg.open()
    append_batches(seg, 20, per_batch=5, ts0=10_000)  # record i has timestamp 10_000 + i
    assert seg.max_timestamp == 10_099
    for target in (0, 10_000, 10_003, 10_050, 10_099):
        expect = max(target - 10_000, 0)
        assert seg.find_offset_by_timestamp(target) == (expect, 10_000 + expect)
    assert seg.find_offset_by_timestamp(10_100) is None
    # never before the start offset given (the log start)
    assert seg.find_offset_by_timestamp(10_000, start_offset=42) == (42, 10_042)
    seg.close()


def test_reopen_trusted_uses_indexes(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0, cfg())
    seg.open()
    append_batches(seg, 30)
    entries, size = seg.index.entries(), seg.size
    seg.flush()
    seg.close()
    again = Segment(tmp_path, 0, cfg())
    assert again.open(trusted=True) == 0
    assert again.index.entries() == entries
    assert (again.size, again.next_offset) == (size, 150)
    assert again.max_timestamp == 1000 + 149
    assert read_all(again) == list(range(150))
    again.close()


def _damaged(tmp_path: Path, damage: str, trusted: bool) -> tuple[Segment, int]:
    """A 30-batch segment damaged one way; returns it reopened and the index of the first
    damaged batch (every batch before it must survive)."""
    seg = Segment(tmp_path, 0, cfg())
    seg.open()
    batches = append_batches(seg, 30)
    seg.close()
    starts = [sum(len(b) for b in batches[:i]) for i in range(len(batches))]
    log_path = tmp_path / "00000000000000000000.log"
    first_bad = 30
    if damage == "truncate":
        with open(log_path, "r+b") as f:
            f.truncate(starts[20] + 30)  # mid-batch
        first_bad = 20
    elif damage == "flip":
        with open(log_path, "r+b") as f:
            f.seek(starts[12] + 70)  # inside the payload, under the CRC
            b = f.read(1)
            f.seek(starts[12] + 70)
            f.write(bytes([b[0] ^ 0x40]))
        first_bad = 12
    elif damage == "garbage":
        with open(log_path, "ab") as f:
            f.write(os.urandom(200))
    elif damage == "delete-index":
        os.unlink(tmp_path / "00000000000000000000.index")
    elif damage == "corrupt-index":
        with open(tmp_path / "00000000000000000000.index", "r+b") as f:
            f.write(os.urandom(13))
    elif damage == "corrupt-timeindex":
        with open(tmp_path / "00000000000000000000.timeindex", "r+b") as f:
            f.write(b"\xff" * 24)
    again = Segment(tmp_path, 0, cfg())
    again.open(trusted=trusted)
    return again, first_bad


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "delete-index",
                                    "corrupt-index", "corrupt-timeindex"])
def test_recovery_keeps_every_batch_before_the_damage(tmp_path: Path, damage: str,
                                                      trusted: bool) -> None:
    seg, first_bad = _damaged(tmp_path, damage, trusted)
    if damage == "flip" and trusted:
        # a trusted segment is not re-validated: a bit flip under the CRC stays unseen
        # (the partition log trusts only segments wholly before its recovery point)
        seg.recover()
    assert seg.next_offset == first_bad * 5
    assert read_all(seg) == list(range(first_bad * 5))
    assert os.path.getsize(seg.log_path) == seg.size
    for _, position in seg.index.entries():
        assert position < seg.size
    for _, offset in seg.time_index.entries():
        assert offset < seg.next_offset
    # the recovered segment takes appends right after its last valid batch
    append_batches(seg, 2)
    assert read_all(seg) == list(range(first_bad * 5 + 10))
    seg.close()


def test_truncate_to(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0, cfg())
    seg.open()
    append_batches(seg, 30)
    removed = seg.truncate_to(72)  # inside the batch 70..74: that batch goes too
    assert removed > 0
    assert seg.next_offset == 70
    assert read_all(seg) == list(range(70))
    assert all(p < seg.size for _, p in seg.index.entries())
    assert seg.max_timestamp == 1000 + 69
    assert seg.truncate_to(500) == 0
    seg.truncate_to(0)
    assert seg.size == 0 and seg.next_offset == 0 and read_all(seg) == []
    seg.close()


def test_append_rejects_offset_gap(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0, cfg())
    seg.open()
    data = make_batch(7, 2, 0)
    with pytest.raises(ValueError, match="offset 7"):
        seg.append(data, [BatchInfo(0, len(data), 7, 9, 1)])
    assert seg.size == 0
    seg.close()


def test_offset_index_sanity_check(tmp_path: Path) -> None:
    idx = OffsetIndex(tmp_path / "x.index", 100)
    idx.open()
    idx.append(110, 500)
    idx.append(120, 900)
    assert idx.sanity_check(1000) is None
    assert idx.sanity_check(900) is not None  # points at the end of the data
    with pytest.raises(ValueError):
        idx.append(115, 1000)  # offsets must increase
    idx.close()
    with open(tmp_path / "x.index", "ab") as f:
        f.write(b"\x00\x00\x00")
    torn = OffsetIndex(tmp_path / "x.index", 100)
    torn.open()
    assert torn.sanity_check(10_000) is not None
    torn.close()


def test_time_index_basics(tmp_path: Path) -> None:
    idx = TimeIndex(tmp_path / "x.timeindex", 10)
    idx.open()
    assert idx.lookup(5) == (-1, 10)
    assert idx.maybe_append(100, 12)
    assert not idx.maybe_append(100, 15)  # timestamps must grow
    assert idx.maybe_append(200, 20)
    assert idx.lookup(150) == (100, 12)
    assert idx.lookup(250) == (200, 20)
    assert idx.sanity_check(21) is None
    assert idx.sanity_check(20) is not None
    idx.truncate_to(20)
    assert idx.entries() == [(100, 12)]
    idx.close()
    again = TimeIndex(tmp_path / "x.timeindex", 10)
    again.open()
    assert again.entries() == [(100, 12)]
    again.close()
