"""LogManager: every partition log of a broker, across its log directories.

On disk, each log directory holds:

    .lock                               flock'ed while a broker uses the directory
    meta.properties                     ``version=0`` and ``broker.id=<id>`` (Kafka's file)
    recovery-point-offset-checkpoint    } OffsetCheckpoint files, one line per partition
    log-start-offset-checkpoint         }
    replication-offset-checkpoint       } (high watermarks)
    <topic>-<partition>/                a PartitionLog
    <topic>-<partition>.<uuid>-delete/  a log being deleted (removed at start)

Invariants: one process at a time uses a log directory (the lock), and only the broker named
in its ``meta.properties``; a partition lives in exactly one of the directories. Checkpoints
only ever record offsets that were true when written (a recovery point is never ahead of
what was synced), so after a crash the logs recover from at most a little further back.

The manager owns one background task (started by ``start()``, cancelled by ``stop()``) that
syncs logs whose flush is due (pagecache policy: every ``flush.ms`` and after a roll),
writes the checkpoints and enforces retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from moldau.broker.log.checkpoint import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_CHECKPOINT,
    CorruptCheckpointError,
    OffsetCheckpoint,
    TopicPartition,
)
from moldau.broker.log.config import LogConfig
from moldau.broker.log.errors import (
    InconsistentBrokerIdError,
    LogDirLockedError,
    LogError,
    StorageError,
)
from moldau.broker.log.partition_log import DELETE_SUFFIX, PartitionLog
from moldau.clients.metadata.layout import validate_topic_name

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
META_PROPERTIES = "meta.properties"
_CHECKPOINTS = (RECOVERY_POINT_CHECKPOINT, LOG_START_OFFSET_CHECKPOINT, REPLICATION_CHECKPOINT)


def parse_partition_dir(name: str) -> TopicPartition | None:
    """``(topic, partition)`` of a directory named ``<topic>-<partition>``, else None."""
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit() or partition != str(int(partition)):
        return None
    try:
        validate_topic_name(topic)
    except ValueError:
        return None
    return topic, int(partition)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogManager:
    """The partition logs of one broker. No I/O until ``await start()``."""

    def __init__(self, log_dirs: Sequence[Path | str], default_config: LogConfig, *,
                 broker_id: int | None = None, tick_ms: int = 1000,
                 checkpoint_interval_ms: int = 5000,
                 retention_check_interval_ms: int = 60_000) -> None:
        if not log_dirs:
            raise ValueError("at least one log directory is needed")
        self.log_dirs = [Path(d) for d in log_dirs]
        self.default_config = default_config
        self.broker_id = broker_id
        self.tick_ms = tick_ms
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.retention_check_interval_ms = retention_check_interval_ms
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._dir_of: dict[TopicPartition, Path] = {}
        self._lock_fds: dict[Path, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._checkpoint_lock = asyncio.Lock()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, topic_configs: Mapping[str, LogConfig] | None = None) -> None:
        """Lock every log directory, check its broker id, load (and recover) every
        partition log found in it, and start the background loop.

        ``topic_configs`` gives the config of topics that have overrides; the others get
        ``default_config``. Raises LogDirLockedError, InconsistentBrokerIdError or
        StorageError, releasing whatever it took.
        """
        if self._started:
            return
        try:
            for d in self.log_dirs:
                await asyncio.to_thread(self._prepare_dir, d)
            for d in self.log_dirs:
                await asyncio.to_thread(self._load_dir, d, dict(topic_configs or {}))
        except BaseException:
            for plog in self._logs.values():
                plog.close()
            self._logs.clear()
            self._dir_of.clear()
            self._release_locks()
            raise
        self._started = True
        self._task = asyncio.create_task(self._run(), name="log-manager")
        log.info("log manager: %d log(s) loaded from %s", len(self._logs),
                 ", ".join(str(d) for d in self.log_dirs))

    async def stop(self) -> None:
        """Clean shutdown: stop the loop, sync every log, write the checkpoints (so the next
        start trusts every segment) and close everything."""
        if not self._started:
            return
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("log manager: background loop had failed")
        for plog in list(self._logs.values()):
            try:
                await plog.sync()
            except StorageError as e:
                log.error("log %s: final sync failed: %s", plog.name, e)
        try:
            await self.write_checkpoints()
        except OSError as e:
            log.error("log manager: writing checkpoints at shutdown failed: %s", e)
        for plog in self._logs.values():
            plog.close()
        self._logs.clear()
        self._dir_of.clear()
        self._release_locks()
        self._started = False

    def _prepare_dir(self, d: Path) -> None:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StorageError.wrap(f"opening log directory {d}", e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LogDirLockedError(
                    f"log directory {d} is in use by another process (its {LOCK_FILE} is"
                    " locked); two brokers cannot share a log directory") from None
            raise StorageError.wrap(f"locking log directory {d}", e) from e
        self._lock_fds[d] = fd
        self._check_meta(d)

    def _check_meta(self, d: Path) -> None:
        path = d / META_PROPERTIES
        props: dict[str, str] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except OSError as e:
            raise StorageError.wrap(f"reading {path}", e) from e
        if text is not None:
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, _, v = line.partition("=")
                    props[k.strip()] = v.strip()
            found = props.get("broker.id")
            if self.broker_id is not None and found is not None and found != str(
                    self.broker_id):
                raise InconsistentBrokerIdError(
                    f"log directory {d} belongs to broker {found} (see {path}), not to"
                    f" broker {self.broker_id}; give each broker its own log directory")
            if found is not None or self.broker_id is None:
                return
        if self.broker_id is None:
            return
        tmp = path.with_name(META_PROPERTIES + ".tmp")
        body = f"#\nversion=0\nbroker.id={self.broker_id}\n"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(d)
        except OSError as e:
            raise StorageError.wrap(f"writing {path}", e) from e

    def _release_locks(self) -> None:
        for fd in self._lock_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops the flock
        self._lock_fds.clear()

    def _read_checkpoint(self, d: Path, name: str) -> dict[TopicPartition, int]:
        try:
            return OffsetCheckpoint(d / name).read()
        except CorruptCheckpointError as e:
            # without it every log in the directory is recovered in full: slower, still safe
            log.warning("log manager: ignoring %s", e)
            return {}
        except OSError as e:
            raise StorageError.wrap(f"reading {d / name}", e) from e

    def _load_dir(self, d: Path, topic_configs: dict[str, LogConfig]) -> None:
        recovery = self._read_checkpoint(d, RECOVERY_POINT_CHECKPOINT)
        starts = self._read_checkpoint(d, LOG_START_OFFSET_CHECKPOINT)
        hws = self._read_checkpoint(d, REPLICATION_CHECKPOINT)
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.endswith(DELETE_SUFFIX):
                log.info("log manager: removing %s (deletion interrupted)", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
                continue
            tp = parse_partition_dir(entry.name)
            if tp is None:
                log.warning("log manager: ignoring %s: not a <topic>-<partition> directory",
                            entry.path)
                continue
            if tp in self._logs:
                raise StorageError(f"partition {tp[0]}-{tp[1]} has a log in both"
                                   f" {self._dir_of[tp]} and {d}", errno.EEXIST)
            config = topic_configs.get(tp[0], self.default_config)
            plog = PartitionLog(Path(entry.path), config, tp[0], tp[1])
            started = time.monotonic()
            plog.open(recovery_point=recovery.get(tp), log_start_offset=starts.get(tp),
                      high_watermark=hws.get(tp))
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                log.info("log %s: loaded in %.1f s", plog.name, elapsed)
            self._logs[tp] = plog
            self._dir_of[tp] = d

    # ------------------------------------------------------------------ logs

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("LogManager is not started")

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def all_logs(self) -> list[PartitionLog]:
        return list(self._logs.values())

    def log_dir_of(self, topic: str, partition: int) -> Path | None:
        return self._dir_of.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig | None = None
                      ) -> PartitionLog:
        """The partition's log, created empty (in the log directory with the fewest logs)
        if it does not exist. A given ``config`` replaces the log's current one."""
        self._require_started()
        tp = (topic, partition)
        existing = self._logs.get(tp)
        if existing is not None:
            if config is not None and config != existing.config:
                existing.update_config(config)
            return existing
        validate_topic_name(topic)
        if partition < 0:
            raise ValueError(f"partition {partition} is negative")
        counts = {d: 0 for d in self.log_dirs}
        for d in self._dir_of.values():
            counts[d] += 1
        d = min(self.log_dirs, key=lambda x: counts[x])
        plog = PartitionLog(d / f"{topic}-{partition}", config or self.default_config, topic,
                            partition)
        plog.open()
        try:
            _fsync_dir(d)
        except OSError as e:
            plog.close()
            raise StorageError.wrap(f"creating log {plog.name}", e) from e
        self._logs[tp] = plog
        self._dir_of[tp] = d
        log.info("log %s: created in %s", plog.name, d)
        return plog

    def delete(self, topic: str, partition: int) -> bool:
        """Remove a partition's log and its directory; False if there was none."""
        tp = (topic, partition)
        plog = self._logs.pop(tp, None)
        self._dir_of.pop(tp, None)
        if plog is None:
            return False
        plog.delete()
        log.info("log %s: deleted", plog.name)
        return True

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_offsets(self) -> dict[Path, dict[str, dict[TopicPartition, int]]]:
        """What the checkpoint files should say now, per log directory and file."""
        out: dict[Path, dict[str, dict[TopicPartition, int]]] = {
            d: {name: {} for name in _CHECKPOINTS} for d in self.log_dirs}
        for tp, plog in self._logs.items():
            if not plog.is_open:
                continue
            files = out[self._dir_of[tp]]
            files[RECOVERY_POINT_CHECKPOINT][tp] = plog.recovery_point
            files[LOG_START_OFFSET_CHECKPOINT][tp] = plog.log_start_offset
            hw = plog.explicit_high_watermark
            if hw is not None:
                files[REPLICATION_CHECKPOINT][tp] = hw
        return out

    async def write_checkpoints(self) -> None:
        """Write the three checkpoint files of every log directory (in a worker thread)."""
        async with self._checkpoint_lock:
            snapshot = self.checkpoint_offsets()
            await asyncio.to_thread(self._write_checkpoints, snapshot)

    @staticmethod
    def _write_checkpoints(snapshot: dict[Path, dict[str, dict[TopicPartition, int]]]
                           ) -> None:
        for d, files in snapshot.items():
            for name, offsets in files.items():
                OffsetCheckpoint(d / name).write(offsets)

    # ------------------------------------------------------------------ maintenance

    async def flush_due_logs(self, now_ms: int | None = None) -> int:
        """Sync every log whose periodic flush is due; return how many were synced."""
        now = _now_ms() if now_ms is None else now_ms
        n = 0
        for plog in list(self._logs.values()):
            if plog.is_open and plog.flush_due(now):
                try:
                    await plog.sync()
                    n += 1
                except StorageError as e:
                    log.error("log %s: periodic flush failed: %s", plog.name, e)
        return n

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply retention to every log; return how many segments were deleted."""
        now = _now_ms() if now_ms is None else now_ms
        return sum(plog.enforce_retention(now) for plog in list(self._logs.values())
                   if plog.is_open)

    async def _run(self) -> None:
        last_checkpoint = last_retention = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            await self.flush_due_logs()
            mono = time.monotonic()
            if (mono - last_retention) * 1000 >= self.retention_check_interval_ms:
                last_retention = mono
                try:
                    self.enforce_retention()
                except LogError as e:
                    log.error("log manager: retention failed: %s", e)
            if (mono - last_checkpoint) * 1000 >= self.checkpoint_interval_ms:
                last_checkpoint = mono
                try:
                    await self.write_checkpoints()
                except OSError as e:
                    log.error("log manager: writing checkpoints failed: %s", e)
