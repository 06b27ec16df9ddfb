"""LogManager: log directories (lock, broker id), loading and recovery, checkpoints,
deletion, and the background loop (periodic flush, retention, checkpoints)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moldau.broker.log import (
    InconsistentBrokerIdError,
    LogConfig,
    LogDirLockedError,
    LogManager,
    OffsetCheckpoint,
)
from moldau.broker.log.checkpoint import CorruptCheckpointError, parse_checkpoint
from moldau.broker.log.log_manager import parse_partition_dir
from moldau.clients.records import BatchBuilder, decode_all

REPO = Path(__file__).resolve().parents[1]


def batch(first: int, count: int, ts: int = 1_000) -> bytes:
    b = BatchBuilder()
    for i in range(count):
        b.append(ts, None, f"r{first + i}".encode())
    return b.build()


def values(data: bytes) -> list[bytes | None]:
    return [r.value for r in decode_all(data)]


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def names(path: Path) -> list[str]:
    return [p.name for p in path.iterdir()]


def test_checkpoint_format_and_atomic_write(tmp_path: Path) -> None:
    cp = OffsetCheckpoint(tmp_path / "recovery-point-offset-checkpoint")
    assert cp.read() == {}
    cp.write({("b", 1): 7, ("a-b.c", 0): 42})
    assert cp.path.read_text() == "0\n2\na-b.c 0 42\nb 1 7\n"
    assert cp.read() == {("a-b.c", 0): 42, ("b", 1): 7}
    assert not (tmp_path / "recovery-point-offset-checkpoint.tmp").exists()
    cp.write({})
    assert cp.read() == {}
    for bad in ("", "1\n0\n", "0\n2\na 0 1\n", "0\nx\n", "0\n1\na zero 1\n"):
        with pytest.raises(CorruptCheckpointError):
            parse_checkpoint(bad)


def test_partition_dir_names() -> None:
    assert parse_partition_dir("orders-3") == ("orders", 3)
    assert parse_partition_dir("my-topic-12") == ("my-topic", 12)
    assert parse_partition_dir("orders-3.abcdef-delete") is None
    assert parse_partition_dir("lost+found") is None
    assert parse_partition_dir("orders-") is None


async def test_restart_keeps_logs_and_trusts_checkpoints(tmp_path: Path) -> None:
    dirs = [tmp_path / "d1", tmp_path / "d2"]
    lm = LogManager(dirs, LogConfig(), broker_id=1)
    await lm.start()
    logs = [lm.get_or_create("orders", p) for p in range(4)]
    assert lm.get_or_create("orders", 0) is logs[0]
    # new partitions go to the least used directory
    assert {lm.log_dir_of("orders", p) for p in range(4)} == set(dirs)
    for p, plog in enumerate(logs):
        for _ in range(p + 1):
            plog.append(batch(plog.log_end_offset, 3))
        await plog.flush()
    logs[2].high_watermark = 4
    await lm.stop()
    for d in dirs:
        assert (d / "meta.properties").read_text().splitlines()[1:] == ["version=0",
                                                                        "broker.id=1"]
        rp = OffsetCheckpoint(d / "recovery-point-offset-checkpoint").read()
        assert all(v == 3 * (p + 1) for (_, p), v in rp.items())
    hw = OffsetCheckpoint(dirs[0] / "replication-offset-checkpoint").read()
    hw.update(OffsetCheckpoint(dirs[1] / "replication-offset-checkpoint").read())
    assert hw[("orders", 2)] == 4

    again = LogManager(dirs, LogConfig(), broker_id=1)
    await again.start()
    assert sorted((x.topic, x.partition) for x in again.all_logs()) == [
        ("orders", p) for p in range(4)]
    for p in range(4):
        plog = again.get("orders", p)
        assert plog is not None
        assert plog.log_end_offset == plog.recovery_point == 3 * (p + 1)
        assert values(plog.read(0, 10_000)) == [f"r{i}".encode() for i in range(3 * (p + 1))]
    assert again.get("orders", 2).high_watermark == 4  # type: ignore[union-attr]
    # a high watermark never set keeps following the log end after a restart
    follows = again.get("orders", 1)
    assert follows is not None and follows.explicit_high_watermark is None
    follows.append(batch(6, 1))
    assert follows.high_watermark == follows.log_end_offset == 7
    assert again.get("orders", 9) is None
    await again.stop()


async def test_recovery_after_a_crash_without_checkpoints(tmp_path: Path) -> None:
    lm = LogManager([tmp_path], LogConfig(), broker_id=1)
    await lm.start()
    plog = lm.get_or_create("t", 0)
    for _ in range(10):
        plog.append(batch(plog.log_end_offset, 2))
    await plog.flush()
    # a crash: no stop(), so no checkpoints; and a torn write at the end of the log
    seg_path = plog.active_segment.log_path
    size = seg_path.stat().st_size
    append_bytes(seg_path, batch(20, 5)[:40])
    lm._release_locks()  # what the kernel does when a crashed process's files close
    for x in lm.all_logs():
        for s in x.segments:
            s.close()
    again = LogManager([tmp_path], LogConfig(), broker_id=1)
    await again.start()
    plog = again.get("t", 0)
    assert plog is not None
    assert plog.log_end_offset == 20
    assert seg_path.stat().st_size == size
    assert values(plog.read(0, 10_000)) == [f"r{i}".encode() for i in range(20)]
    await again.stop()


async def test_corrupt_checkpoint_means_full_recovery(tmp_path: Path) -> None:
    lm = LogManager([tmp_path], LogConfig())
    await lm.start()
    plog = lm.get_or_create("t", 0)
    plog.append(batch(0, 4))
    await lm.stop()
    (tmp_path / "recovery-point-offset-checkpoint").write_text("0\n5\nnonsense")
    again = LogManager([tmp_path], LogConfig())
    await again.start()
    assert again.get("t", 0).log_end_offset == 4  # type: ignore[union-attr]
    await again.stop()


async def test_lock_and_broker_id(tmp_path: Path) -> None:
    lm = LogManager([tmp_path], LogConfig(), broker_id=1)
    await lm.start()
    other = LogManager([tmp_path], LogConfig(), broker_id=1)
    with pytest.raises(LogDirLockedError, match="in use by another process"):
        await other.start()
    # another process is refused too
    code = textwrap.dedent(f"""
        import asyncio
        from moldau.broker.log import LogConfig, LogDirLockedError, LogManager
        async def main():
            try:
                await LogManager([{str(tmp_path)!r}], LogConfig(), broker_id=2).start()
            except LogDirLockedError as e:
                print("locked:", e)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert b"locked:" in out, err.decode()
    await lm.stop()
    wrong = LogManager([tmp_path], LogConfig(), broker_id=2)
    with pytest.raises(InconsistentBrokerIdError, match="belongs to broker 1"):
        await wrong.start()
    # the failed start released its lock: the right broker starts
    right = LogManager([tmp_path], LogConfig(), broker_id=1)
    await right.start()
    await right.stop()


async def test_delete_and_leftover_deletions(tmp_path: Path) -> None:
    lm = LogManager([tmp_path], LogConfig())
    await lm.start()
    plog = lm.get_or_create("t", 0)
    plog.append(batch(0, 3))
    keep = lm.get_or_create("t", 1)
    keep.append(batch(0, 1))
    assert lm.delete("t", 0)
    assert not lm.delete("t", 0)
    assert lm.get("t", 0) is None
    assert not (tmp_path / "t-0").exists()
    assert not any(n.endswith("-delete") for n in names(tmp_path))
    await lm.stop()
    assert OffsetCheckpoint(tmp_path / "recovery-point-offset-checkpoint").read() == {
        ("t", 1): 1}
    # a deletion interrupted by a crash: the renamed directory goes at the next start
    doomed = tmp_path / "t-1.0123456789abcdef-delete"
    (tmp_path / "t-1").rename(doomed)
    (tmp_path / "lost+found").mkdir()
    again = LogManager([tmp_path], LogConfig())
    await again.start()
    assert not doomed.exists()
    assert again.all_logs() == []
    await again.stop()


@pytest.mark.timeout(30)
async def test_background_loop_flushes_checkpoints_and_retains(tmp_path: Path) -> None:
    lm = LogManager([tmp_path], LogConfig(), tick_ms=20, checkpoint_interval_ms=50,
                    retention_check_interval_ms=50)
    await lm.start()
    lazy = lm.get_or_create("lazy", 0, LogConfig.from_mapping(
        {"flush.policy": "pagecache", "flush.ms": "30"}))
    lazy.append(batch(0, 5))
    await lazy.flush()
    assert lazy.recovery_point == 0  # pagecache: the ack did not wait for the disk
    old = lm.get_or_create("old", 0, LogConfig.from_mapping(
        {"segment.bytes": "200", "retention.ms": "60000"}))
    long_ago = int(time.time() * 1000) - 3_600_000
    for _ in range(10):
        old.append(batch(old.log_end_offset, 2, ts=long_ago))
    old.append(batch(old.log_end_offset, 2, ts=int(time.time() * 1000)))
    await old.flush()
    points = OffsetCheckpoint(tmp_path / "recovery-point-offset-checkpoint")
    starts = OffsetCheckpoint(tmp_path / "log-start-offset-checkpoint")
    for _ in range(500):  # the loop runs every 20 ms: this waits at most 10 s
        if (lazy.recovery_point == 5 and old.log_start_offset == 20
                and points.read().get(("lazy", 0)) == 5
                and starts.read().get(("old", 0)) == 20):
            break
        await asyncio.sleep(0.02)
    assert lazy.recovery_point == 5, "the periodic flush did not run"
    assert old.log_start_offset == 20, "retention did not run"
    assert points.read()[("lazy", 0)] == 5, "no recovery point checkpoint"
    assert starts.read()[("old", 0)] == 20, "no log start offset checkpoint"
    assert values(old.read(old.log_start_offset, 10_000)) == [b"r20", b"r21"]
    await lm.stop()
