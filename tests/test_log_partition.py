"""PartitionLog: offsets, validation, rolling, retention, reads, truncation, recovery,
group commit, and disk failures (a full disk and a read-only directory on a real tmpfs)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldau.broker.log import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordTooLargeError,
    StorageError,
    UnexpectedAppendOffsetError,
)
from moldau.clients.records import (
    BatchBuilder,
    CorruptRecordError,
    decode_all,
    encode_values,
    iter_batches,
)

REPO = Path(__file__).resolve().parents[1]


def batch(first: int, count: int, ts: int = 1_000, size: int = 20) -> bytes:
    """A producer batch whose record values name the offsets they should get."""
    b = BatchBuilder()
    for i in range(count):
        b.append(ts, None, f"r{first + i}".encode().ljust(size, b"."))
    return b.build()


def value_of(offset: int, size: int = 20) -> bytes:
    return f"r{offset}".encode().ljust(size, b".")


def make_log(path: Path, **config: object) -> PartitionLog:
    plog = PartitionLog(path / "t-0", LogConfig.model_validate(config), "t", 0)
    plog.open()
    return plog


def read_all(plog: PartitionLog, start: int | None = None, max_bytes: int = 700,
             size: int = 20) -> list[int]:
    """Offsets read from ``start`` to the log end, checking every value."""
    off = plog.log_start_offset if start is None else start
    seen: list[int] = []
    while off < plog.log_end_offset:
        data = plog.read(off, max_bytes)
        assert data, f"no data at {off} below the log end {plog.log_end_offset}"
        recs = decode_all(data, off)
        for r in recs:
            assert r.value == value_of(r.offset, size)
        seen.extend(r.offset for r in recs)
        off = recs[-1].offset + 1
    assert plog.read(off, max_bytes) == b""
    return seen


def fill(plog: PartitionLog, batches: int, per_batch: int = 5, ts: int = 1_000) -> None:
    for _ in range(batches):
        plog.append(batch(plog.log_end_offset, per_batch, ts))


# ---------------------------------------------------------------------- appending


def test_append_assigns_contiguous_offsets_and_stamps_epoch(tmp_path: Path) -> None:
    plog = make_log(tmp_path)
    info = plog.append(batch(0, 3), leader_epoch=7)
    assert (info.base_offset, info.last_offset, info.record_count) == (0, 2, 3)
    assert info.log_append_time == -1
    run = batch(3, 2) + batch(5, 4) + batch(9, 1)  # several batches in one append
    info = plog.append(bytearray(run), leader_epoch=8)
    assert (info.base_offset, info.last_offset, info.record_count) == (3, 9, 7)
    assert plog.log_end_offset == 10
    assert read_all(plog) == list(range(10))
    epochs = {h.base_offset: h.partition_leader_epoch
              for _, h in iter_batches(plog.read(0, 10_000))}
    assert epochs == {0: 7, 3: 8, 5: 8, 9: 8}
    plog.close()


def test_log_append_time(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"message.timestamp.type": "LogAppendTime"})
    info = plog.append(batch(0, 3, ts=5), now_ms=123_456)
    assert info.log_append_time == 123_456
    recs = decode_all(plog.read(0, 10_000))
    assert [r.timestamp for r in recs] == [123_456] * 3
    assert plog.offset_for_timestamp(100_000) == (0, 123_456)
    plog.close()


@pytest.mark.parametrize("bad", ["crc", "truncated", "garbage", "empty", "bad-count",
                                 "second-batch-crc"])
def test_invalid_batches_leave_the_log_untouched(tmp_path: Path, bad: str) -> None:
    plog = make_log(tmp_path)
    fill(plog, 3)
    size, leo = plog.size_bytes, plog.log_end_offset
    good = bytearray(batch(15, 4))
    if bad == "crc":
        good[-3] ^= 1
        data = bytes(good)
    elif bad == "truncated":
        data = bytes(good[:-5])
    elif bad == "garbage":
        data = os.urandom(200)
    elif bad == "empty":
        data = b""
    elif bad == "bad-count":
        good[57:61] = (9).to_bytes(4, "big")  # record_count, under the CRC: recompute it
        import crc32c
        good[17:21] = crc32c.crc32c(bytes(good[21:])).to_bytes(4, "big")
        data = bytes(good)
    else:
        tail = bytearray(batch(19, 2))
        tail[-1] ^= 0xFF
        data = bytes(good) + bytes(tail)
    with pytest.raises(CorruptRecordError):
        plog.append(data)
    assert (plog.size_bytes, plog.log_end_offset) == (size, leo)
    assert read_all(plog) == list(range(15))
    plog.close()


def test_record_too_large(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"max.message.bytes": 500})
    plog.append(batch(0, 2))
    with pytest.raises(RecordTooLargeError) as e:
        plog.append(batch(2, 40))
    assert e.value.code.name == "MESSAGE_TOO_LARGE"
    assert plog.log_end_offset == 2
    plog.close()


def test_roll_by_size(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 1000})
    fill(plog, 30)
    segs = plog.segments
    assert len(segs) > 5
    for a, b in itertools.pairwise(segs):
        assert a.next_offset == b.base_offset  # contiguous
        assert a.size <= 1000
    names = sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))
    assert names == [f"{s.base_offset:020d}.log" for s in segs]
    assert read_all(plog) == list(range(150))
    # a batch larger than segment.bytes still goes in (alone in its segment)
    big = batch(150, 60)
    assert len(big) > 1000
    plog.append(big)
    assert plog.active_segment.base_offset == 150
    assert plog.active_segment.size == len(big)
    plog.close()


def test_roll_by_time(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.ms": 1000})
    plog.append(batch(0, 1), now_ms=10_000)
    plog.append(batch(1, 1), now_ms=10_500)
    assert len(plog.segments) == 1
    plog.append(batch(2, 1), now_ms=11_000)  # 1000 ms after the segment's first append
    assert [s.base_offset for s in plog.segments] == [0, 2]
    plog.append(batch(3, 1), now_ms=11_999)
    assert len(plog.segments) == 2
    plog.close()


# ---------------------------------------------------------------------- retention


def test_retention_by_time(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600, "retention.ms": 10_000})
    for ts in range(0, 50_000, 1_000):
        plog.append(batch(plog.log_end_offset, 3, ts=ts))
    segs = plog.segments
    assert len(segs) > 5
    now = 30_000
    expected = [s for s in segs if now - s.max_timestamp > 10_000]
    assert 0 < len(expected) < len(segs)
    assert plog.enforce_retention(now) == len(expected)
    first = plog.segments[0]
    assert plog.log_start_offset == first.base_offset == expected[-1].next_offset
    assert now - first.max_timestamp <= 10_000
    for s in expected:
        assert not s.log_path.exists() and not s.index.path.exists()
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(0, 1000)
    assert read_all(plog) == list(range(plog.log_start_offset, 150))
    # everything expired: the active segment goes too, after rolling an empty one
    leo = plog.log_end_offset
    assert plog.enforce_retention(10**9) > 0
    assert plog.log_start_offset == plog.log_end_offset == leo
    assert len(plog.segments) == 1 and plog.active_segment.is_empty
    plog.append(batch(leo, 2))
    assert read_all(plog) == [leo, leo + 1]
    plog.close()


def test_retention_by_size_and_high_watermark(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600, "retention.bytes": 1500,
                                 "retention.ms": -1})
    fill(plog, 40)
    total = plog.size_bytes
    plog.high_watermark = 60
    # only segments wholly below the high watermark may go
    assert plog.enforce_retention(0) > 0
    assert plog.segments[0].base_offset <= 60
    assert plog.segments[0].next_offset > 60
    assert plog.log_start_offset == plog.segments[0].base_offset
    plog.high_watermark = plog.log_end_offset
    plog.enforce_retention(0)
    # Kafka's rule: delete the oldest while what remains is still at least retention.bytes
    assert plog.size_bytes >= 1500
    assert plog.size_bytes - plog.segments[0].size < 1500
    assert plog.size_bytes < total
    assert read_all(plog) == list(range(plog.log_start_offset, 200))
    plog.close()


def test_compact_only_topics_keep_everything(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600, "retention.ms": 1,
                                 "cleanup.policy": "compact"})
    fill(plog, 20)
    assert plog.enforce_retention(10**12) == 0
    assert plog.log_start_offset == 0
    plog.close()


# ---------------------------------------------------------------------- reading


def test_read_bounds_and_high_watermark(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600})
    fill(plog, 20)
    assert plog.read(100, 1000) == b""
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(101, 1000)
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(-1, 1000)
    assert plog.high_watermark == 100  # unset: the log end
    plog.high_watermark = 42
    assert plog.high_watermark == 42
    seen: list[int] = []
    off = 0
    while True:
        data = plog.read_range(off, 300, plog.high_watermark)
        if not data:
            break
        recs = decode_all(data, off)
        seen.extend(r.offset for r in recs)
        off = recs[-1].offset + 1
    # whole batches whose base offset is below the high watermark: 40..44 starts at 40
    assert seen == list(range(45))
    plog.high_watermark = 10**9
    assert plog.high_watermark == 100  # never past the log end
    plog.close()


def test_offset_for_timestamp(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600})
    for i in range(30):
        plog.append(batch(plog.log_end_offset, 2, ts=1_000 + 10 * i))
    assert len(plog.segments) > 3
    assert plog.offset_for_timestamp(0) == (0, 1_000)
    assert plog.offset_for_timestamp(1_000) == (0, 1_000)
    assert plog.offset_for_timestamp(1_001) == (2, 1_010)
    assert plog.offset_for_timestamp(1_150) == (30, 1_150)
    assert plog.offset_for_timestamp(1_290) == (58, 1_290)
    assert plog.offset_for_timestamp(1_291) is None
    assert plog.offset_for_timestamp(EARLIEST_TIMESTAMP) == (0, -1)
    assert plog.offset_for_timestamp(LATEST_TIMESTAMP) == (60, -1)
    plog.close()


# ---------------------------------------------------------------------- truncation, follower


def test_truncate_to_and_start_at(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 600})
    fill(plog, 30)
    plog.high_watermark = 140
    n_segments = len(plog.segments)
    plog.truncate_to(52)  # inside batch 50..54
    assert plog.log_end_offset == 50
    assert plog.high_watermark == 50 and plog.recovery_point <= 50
    assert len(plog.segments) < n_segments
    assert read_all(plog) == list(range(50))
    fill(plog, 2)
    assert read_all(plog) == list(range(60))
    plog.truncate_fully_and_start_at(500)
    assert (plog.log_start_offset, plog.log_end_offset) == (500, 500)
    assert [s.base_offset for s in plog.segments] == [500]
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(0, 100)
    plog.append(batch(500, 3))
    assert read_all(plog) == [500, 501, 502]
    plog.close()
    again = PartitionLog(tmp_path / "t-0", plog.config, "t", 0)
    again.open()
    assert (again.log_start_offset, again.log_end_offset) == (500, 503)
    again.close()


def test_append_as_follower(tmp_path: Path) -> None:
    leader = make_log(tmp_path / "leader", **{"segment.bytes": 600})
    fill(leader, 20)
    follower = make_log(tmp_path / "follower", **{"segment.bytes": 600})
    off = 0
    while off < leader.log_end_offset:
        data = leader.read(off, 400)
        info = follower.append_as_follower(data)
        assert info.base_offset == off
        off = info.last_offset + 1
    assert follower.log_end_offset == 100
    assert read_all(follower) == list(range(100))
    with pytest.raises(UnexpectedAppendOffsetError):
        follower.append_as_follower(leader.read(50, 100))
    follower.close()
    leader.close()


# ---------------------------------------------------------------------- recovery


def _damage(path: Path, how: str, position: int) -> None:
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(position + 25)
    elif how == "flip":
        with open(path, "r+b") as f:
            f.seek(position + 65)
            b = f.read(1)
            f.seek(position + 65)
            f.write(bytes([b[0] ^ 0x01]))
    elif how == "garbage":
        with open(path, "ab") as f:
            f.write(b"\x00\x00\x00\x00\x00\x00\x00\x99" + os.urandom(100))
    elif how == "delete-index":
        os.unlink(path.with_suffix(".index"))
    elif how == "corrupt-index":
        with open(path.with_suffix(".index"), "r+b") as f:
            f.write(b"\xff" * 16)


@pytest.mark.parametrize("checkpointed", [False, True])
@pytest.mark.parametrize("how", ["truncate", "flip", "garbage", "delete-index",
                                 "corrupt-index"])
def test_recovery_of_the_active_segment(tmp_path: Path, how: str, checkpointed: bool) -> None:
    config = {"segment.bytes": 2000, "index.interval.bytes": 200}
    plog = make_log(tmp_path, **config)
    fill(plog, 50)
    active = plog.active_segment
    active_base = active.base_offset
    assert active_base > 0 and active.size > 600
    # damage the active segment's 4th batch (or append garbage after the last one)
    positions = [p for p, _ in active.batch_headers()]
    damaged_at = active_base + 3 * 5
    plog.close()
    _damage(active.log_path, how, positions[3])
    again = PartitionLog(tmp_path / "t-0", plog.config, "t", 0)
    # with a checkpoint, only the active segment (which holds the recovery point) is checked
    again.open(recovery_point=active_base + 1 if checkpointed else None)
    expect_end = damaged_at if how in ("truncate", "flip") else 250
    assert again.log_end_offset == expect_end
    assert again.recovery_point == expect_end
    assert read_all(again) == list(range(expect_end))
    assert again.active_segment.log_path.stat().st_size == again.active_segment.size
    fill(again, 1)
    assert read_all(again) == list(range(expect_end + 5))
    again.close()


def test_damage_in_an_old_segment(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 1000})
    fill(plog, 40)
    segs = plog.segments
    victim = segs[2]
    pos = [p for p, _ in victim.batch_headers()][1]
    plog.close()
    _damage(victim.log_path, "flip", pos)
    # trusted (wholly before the recovery point): loaded from its indexes, not re-read
    trusting = PartitionLog(tmp_path / "t-0", plog.config, "t", 0)
    trusting.open(recovery_point=200)
    assert trusting.log_end_offset == 200
    trusting.close()
    # without a checkpoint every segment is re-validated: the log ends before the damage and
    # the segments after it are deleted (they would leave a gap)
    full = PartitionLog(tmp_path / "t-0", plog.config, "t", 0)
    full.open(recovery_point=None)
    assert full.log_end_offset == victim.base_offset + 5
    assert len(full.segments) == 3
    assert not segs[3].log_path.exists()
    assert read_all(full) == list(range(victim.base_offset + 5))
    full.close()


def test_index_entry_pointing_at_the_wrong_batch_is_an_error(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"segment.bytes": 3000, "index.interval.bytes": 300})
    fill(plog, 40)
    seg = plog.segments[0]
    entries = seg.index.entries()
    starts = {h.base_offset: p for p, h in seg.batch_headers()}
    plog.close()
    # entry 2 moved to the batch just before the one it names: still monotonic, so the
    # sanity check at open passes, but it names the wrong batch
    off2, _ = entries[2]
    wrong = starts[off2 - 5]
    assert wrong > entries[1][1]
    with open(seg.index.path, "r+b") as f:
        f.seek(2 * 8 + 4)
        f.write(wrong.to_bytes(4, "big"))
    again = PartitionLog(tmp_path / "t-0", plog.config, "t", 0)
    again.open(recovery_point=plog.log_end_offset)
    with pytest.raises(StorageError, match="points at the batch"):
        again.read(off2, 1000)
    again.close()


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from moldau.broker.log import LogConfig, PartitionLog
    from moldau.clients.records import BatchBuilder

    async def main():
        plog = PartitionLog(Path(sys.argv[1]), LogConfig.model_validate(
            {"segment.bytes": 200_000}), "t", 0)
        plog.open()
        print("ready", flush=True)
        while True:
            first = plog.log_end_offset
            b = BatchBuilder()
            for i in range(50):
                b.append(1, None, f"r{first + i}".encode().ljust(20, b"."))
            info = plog.append(b.build())
            await plog.flush()
            print(info.last_offset, flush=True)

    asyncio.run(main())
""")


def test_sigkill_during_appends_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked = -1
    for _round in range(3):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "t-0")],
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + rng.uniform(0.2, 0.6)
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line:
                    acked = max(acked, int(line))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None
        for line in proc.stdout.read().split():
            acked = max(acked, int(line))
        proc.stdout.close()
        plog = PartitionLog(tmp_path / "t-0", LogConfig.model_validate(
            {"segment.bytes": 200_000}), "t", 0)
        plog.open()
        assert plog.log_end_offset > acked
        assert read_all(plog, max_bytes=50_000) == list(range(plog.log_end_offset))
        plog.close()
    assert acked > 0


# ---------------------------------------------------------------------- group commit


async def test_group_commit_shares_fdatasyncs(tmp_path: Path) -> None:
    plog = make_log(tmp_path)
    plog.append(batch(0, 1))
    await plog.flush()
    assert plog.fsync_count == 1 and plog.recovery_point == 1
    await plog.flush()  # nothing new: no sync
    assert plog.fsync_count == 1

    async def produce(i: int) -> int:
        info = plog.append(batch(plog.log_end_offset, 2))
        await plog.flush()
        # acknowledged only once an fdatasync covered it
        assert plog.recovery_point > info.last_offset
        return info.last_offset

    before = plog.fsync_count
    results = await asyncio.gather(*(produce(i) for i in range(200)))
    assert sorted(results) == list(range(2, 401, 2))
    rounds = plog.fsync_count - before
    print("sync rounds for 200 concurrent producers:", rounds)
    assert rounds <= 4
    assert plog.recovery_point == plog.log_end_offset == 401
    plog.close()


async def sync_launched(plog: PartitionLog, rounds: int = 1) -> None:
    """Yield until ``rounds`` sync rounds have been handed to the worker thread."""
    for _ in range(100):
        if plog.fsync_count >= rounds:
            return
        await asyncio.sleep(0)
    raise AssertionError("no sync round was launched")


async def test_producers_in_a_loop_share_each_round(tmp_path: Path) -> None:
    plog = make_log(tmp_path)

    async def produce() -> None:
        for _ in range(10):
            plog.append(batch(plog.log_end_offset, 1))
            await plog.flush()

    await asyncio.gather(*(produce() for _ in range(8)))
    # every round covers the batch of each of the 8 producers, not just the first one's
    print("sync rounds for 8 producers x 10 batches:", plog.fsync_count)
    assert plog.fsync_count <= 12
    assert plog.recovery_point == plog.log_end_offset == 80
    plog.close()


async def test_flush_waits_for_appends_made_during_a_sync(tmp_path: Path) -> None:
    plog = make_log(tmp_path)
    plog.append(batch(0, 1))
    first = asyncio.ensure_future(plog.flush())
    await sync_launched(plog)  # the first sync is now in flight
    plog.append(batch(1, 1))
    await plog.flush()  # must not be satisfied by the sync that started before its append
    assert plog.recovery_point == 2
    await first
    assert plog.fsync_count == 2
    plog.close()


async def test_truncation_during_a_sync_does_not_overstate_durability(tmp_path: Path) -> None:
    plog = make_log(tmp_path)
    plog.append(batch(0, 3))
    first = asyncio.ensure_future(plog.flush())
    await sync_launched(plog)  # its sync is in flight
    plog.truncate_to(0)
    plog.append(batch(0, 3))  # new data at the same offsets, not covered by that sync
    await first
    assert plog.recovery_point == 3
    assert plog.fsync_count == 2
    plog.close()


async def test_flush_of_a_deleted_log_fails(tmp_path: Path) -> None:
    plog = make_log(tmp_path)
    plog.append(batch(0, 3))
    plog.delete()
    assert not (tmp_path / "t-0").exists()
    with pytest.raises(StorageError):
        await plog.flush()


async def test_pagecache_policy(tmp_path: Path) -> None:
    plog = make_log(tmp_path, **{"flush.policy": "pagecache", "segment.bytes": 600,
                                 "flush.ms": 50})
    plog.append(batch(0, 2))
    await plog.flush()
    assert plog.fsync_count == 0 and plog.recovery_point == 0
    now = int(time.time() * 1000)
    assert not plog.flush_due(now)
    assert plog.flush_due(now + 60)  # flush.ms passed with unsynced data
    await plog.sync()
    assert plog.recovery_point == 2 and plog.fsync_count == 1
    fill(plog, 10)  # rolls: the rolled segments want a sync
    assert plog.flush_due(int(time.time() * 1000))
    await plog.sync()
    assert not plog.flush_due(int(time.time() * 1000))
    plog.close()

    counted = make_log(tmp_path / "m", **{"flush.policy": "pagecache", "flush.messages": 10})
    counted.append(batch(0, 4))
    await counted.flush()
    assert counted.recovery_point == 0
    counted.append(batch(4, 6))
    await counted.flush()  # 10 unflushed messages: this one waits for the disk
    assert counted.recovery_point == 10
    counted.close()


# ---------------------------------------------------------------------- property test


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 80)), min_size=1,
                      max_size=40),
       segment_bytes=st.integers(200, 3000), interval=st.integers(0, 500),
       reads=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 2000)), max_size=15),
       reopen=st.booleans())
def test_append_read_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                sizes: list[tuple[int, int]], segment_bytes: int,
                                interval: int, reads: list[tuple[int, int]],
                                reopen: bool) -> None:
    d = tmp_path_factory.mktemp("rt")
    config = LogConfig.model_validate({"segment.bytes": segment_bytes,
                                       "index.interval.bytes": interval})
    plog = PartitionLog(d / "t-0", config, "t", 0)
    plog.open()
    values: list[bytes] = []
    for count, vsize in sizes:
        vals = [os.urandom(vsize) for _ in range(count)]
        info = plog.append(encode_values(vals, timestamp=len(values)))
        assert info.base_offset == len(values)
        values.extend(vals)
    if reopen:
        plog.close()
        plog = PartitionLog(d / "t-0", config, "t", 0)
        plog.open()
    assert plog.log_end_offset == len(values)
    for seg in plog.segments:
        for _, pos in seg.index.entries():
            assert pos < seg.size
    for start, max_bytes in reads:
        start %= len(values)
        data = plog.read(start, max_bytes)
        recs = decode_all(data, start)
        assert recs and recs[0].offset == start
        assert [r.value for r in recs] == values[start : start + len(recs)]
        heads = [h for _, h in iter_batches(data)]
        assert sum(h.size for h in heads) == len(data)  # whole batches only
        assert len(heads) == 1 or len(data) <= max_bytes
    plog.close()


# ---------------------------------------------------------------------- disk failures


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill or make read-only needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 64 * 1024)
        plog = make_log(mnt, **{"segment.bytes": 60_000})
        err: StorageError | None = None
        for _ in range(200):
            leo, size = plog.log_end_offset, plog.size_bytes
            try:
                plog.append(batch(leo, 100, size=100))
            except StorageError as e:
                err = e
                break
        assert err is not None, "the tmpfs never filled up"
        assert err.errno == errno.ENOSPC
        assert err.code.name == "KAFKA_STORAGE_ERROR"
        assert (plog.log_end_offset, plog.size_bytes) == (leo, size)
        seg = plog.active_segment
        assert seg.log_path.stat().st_size == seg.size  # the partial write was cut back
        assert read_all(plog, max_bytes=20_000, size=100) == list(range(leo))
        with pytest.raises(StorageError):
            plog.append(batch(leo, 100, size=100))
        filler.unlink()  # space is back
        info = plog.append(batch(leo, 100, size=100))
        assert info.base_offset == leo
        assert read_all(plog, max_bytes=20_000, size=100) == list(range(leo + 100))
        plog.close()
        again = PartitionLog(mnt / "t-0", plog.config, "t", 0)
        again.open()
        assert again.log_end_offset == leo + 100
        again.close()


async def test_full_disk_with_rolls_and_flushes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        plog = make_log(mnt, **{"segment.bytes": 3000})
        total = 0
        failed = False
        for _ in range(500):
            try:
                plog.append(batch(plog.log_end_offset, 10, size=100))
                await plog.flush()
                total = plog.log_end_offset
            except StorageError:
                failed = True
                break
        assert failed
        assert plog.log_end_offset == total
        assert read_all(plog, max_bytes=20_000, size=100) == list(range(total))
        plog.close()


def test_read_only_directory(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        plog = make_log(mnt, **{"segment.bytes": 1000})
        fill(plog, 30)
        plog.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        ro = PartitionLog(mnt / "t-0", plog.config, "t", 0)
        ro.open()  # no checkpoint: every segment re-validated, nothing written
        assert ro.log_end_offset == 150
        assert read_all(ro) == list(range(150))
        with pytest.raises(StorageError) as e:
            ro.append(batch(150, 5))
        assert e.value.errno == errno.EROFS
        assert ro.log_end_offset == 150
        assert read_all(ro) == list(range(150))
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        fill(ro, 3)  # writable again: the files are reopened read-write
        assert read_all(ro) == list(range(165))
        ro.close()
        again = PartitionLog(mnt / "t-0", plog.config, "t", 0)
        again.open()
        assert read_all(again) == list(range(165))
        again.close()
