"""The partitions this broker hosts, and the produce, fetch and list-offsets paths on them.

``ReplicaManager`` owns one ``Partition`` per (topic, partition) whose replica list names
this broker, each with its ``PartitionLog`` from the ``LogManager``. The metadata listener
tells it about topics (``apply_topic`` / ``remove_topic``); leadership comes from the
partition state nodes, never decided here.

The hot paths work per batch, never per record: ``append`` hands the request's bytes to the
log (which validates CRCs and assigns offsets by rewriting headers), ``read`` returns the
log's bytes as they are. ``append`` is synchronous so that pipelined produce requests on one
connection append in arrival order; the waiting (flush, and with replication the ISR)
happens afterwards in ``complete_appends``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from moldau.broker.log import (
    LogConfig,
    LogManager,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
)
from moldau.broker.metadata_cache import MetadataCache, TopicMetadata
from moldau.broker.partition import Partition
from moldau.clients.protocol import ErrorCode
from moldau.clients.records import CorruptRecordError

log = logging.getLogger(__name__)

_NONE = int(ErrorCode.NONE)
_UNKNOWN = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
_NOT_LEADER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_CORRUPT = int(ErrorCode.CORRUPT_MESSAGE)
_TOO_LARGE = int(ErrorCode.MESSAGE_TOO_LARGE)
_STORAGE = int(ErrorCode.KAFKA_STORAGE_ERROR)
_OUT_OF_RANGE = int(ErrorCode.OFFSET_OUT_OF_RANGE)
_FENCED = int(ErrorCode.FENCED_LEADER_EPOCH)
_UNKNOWN_EPOCH = int(ErrorCode.UNKNOWN_LEADER_EPOCH)
_UNKNOWN_SERVER = int(ErrorCode.UNKNOWN_SERVER_ERROR)

EARLIEST = -2
LATEST = -1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ReplicaManager:
    def __init__(self, broker_id: int, log_manager: LogManager, cache: MetadataCache,
                 default_config: LogConfig) -> None:
        self.broker_id = broker_id
        self.log_manager = log_manager
        self.cache = cache
        # the broker's log.* settings; a topic's overrides apply on top
        self.default_config = default_config
        self.partitions: dict[str, dict[int, Partition]] = {}
        self.shutting_down = False

    # ------------------------------------------------------------------ configuration

    def _log_config(self, topic: TopicMetadata) -> LogConfig:
        try:
            return self.default_config.with_overrides(topic.config)
        except ValueError as e:
            # written by a tool that skipped validation: serve the topic with defaults
            # rather than not at all
            log.error("topic %s has an invalid config (%s); using the broker defaults",
                      topic.name, e)
            return self.default_config

    # ------------------------------------------------------------------ metadata changes

    def get_partition(self, topic: str, partition: int) -> Partition | None:
        parts = self.partitions.get(topic)
        return parts.get(partition) if parts is not None else None

    def apply_topic(self, topic: TopicMetadata) -> None:
        """Host the partitions of ``topic`` assigned to this broker (creating their logs),
        take their leadership state, apply config changes; drop partitions no longer
        assigned here."""
        me = self.broker_id
        hosted = self.partitions.get(topic.name)
        mine = {p: r for p, r in topic.assignment.items() if me in r}
        if not mine and hosted is None:
            return
        config = self._log_config(topic)
        if hosted is None:
            hosted = self.partitions[topic.name] = {}
        for p, replicas in mine.items():
            part = hosted.get(p)
            if part is None:
                plog = self.log_manager.get_or_create(topic.name, p, config)
                part = hosted[p] = Partition(me, topic.name, p, plog)
                log.info("hosting %s-%d (log end %d)", topic.name, p, plog.log_end_offset)
            elif part.log.config != config:
                part.log.update_config(config)
            state = topic.states.get(p)
            if state is None:
                changed = part.update_state(replicas, -1, -1, ())
            else:
                changed = part.update_state(replicas, state.leader, state.leader_epoch,
                                            state.isr)
            if changed:
                log.info("%s-%d: leader %d epoch %d%s", topic.name, p, part.leader,
                         part.leader_epoch, " (this broker)" if part.is_leader else "")
                # fetchers waiting on a partition that changed hands must answer now
                part.wake()
        for p in [p for p in hosted if p not in mine]:
            self._drop(hosted.pop(p))
        if not hosted:
            del self.partitions[topic.name]

    def remove_topic(self, name: str) -> None:
        hosted = self.partitions.pop(name, None)
        if hosted:
            for part in hosted.values():
                self._drop(part)

    def _drop(self, part: Partition) -> None:
        part.leader = -1
        part.wake()
        try:
            self.log_manager.delete(part.topic, part.index)
            log.info("deleted the log of %s-%d", part.topic, part.index)
        except Exception:
            log.exception("deleting the log of %s-%d failed", part.topic, part.index)

    def remove_stray_logs(self, topics: Iterable[TopicMetadata]) -> None:
        """Delete local logs of partitions that no topic assigns to this broker (topics
        deleted while the broker was down)."""
        wanted = {(t.name, p) for t in topics for p, r in t.assignment.items()
                  if self.broker_id in r}
        for plog in list(self.log_manager.all_logs()):
            key = (plog.topic, plog.partition)
            if key not in wanted:
                log.warning("deleting the log of %s-%d: no such partition on this broker",
                            *key)
                try:
                    self.log_manager.delete(*key)
                except Exception:
                    log.exception("deleting the stray log %s-%d failed", *key)

    # ------------------------------------------------------------------ produce

    def _missing(self, topic: str, partition: int) -> int:
        t = self.cache.topics.get(topic)
        if t is None or partition not in t.assignment:
            return _UNKNOWN
        return _NOT_LEADER

    def append(self, topic: str, partition: int,
               records: Any) -> tuple[Partition | None, list[Any]]:
        """Append ``records`` (whole batches) to the partition if this broker leads it;
        return the partition (None on error) and the response entry
        ``[partition, error_code, base_offset, log_append_time, log_start_offset, message]``.
        Synchronous on purpose: see the module docstring."""
        parts = self.partitions.get(topic)
        part = parts.get(partition) if parts is not None else None
        if part is None or part.leader != self.broker_id:
            code = self._missing(topic, partition) if part is None else _NOT_LEADER
            return None, [partition, code, -1, -1, -1, None]
        plog = part.log
        try:
            info = plog.append(records, part.leader_epoch)
        except CorruptRecordError as e:
            return None, [partition, _CORRUPT, -1, -1, -1, str(e)]
        except RecordTooLargeError as e:
            return None, [partition, _TOO_LARGE, -1, -1, -1, str(e)]
        except StorageError as e:
            log.error("append to %s-%d failed: %s", topic, partition, e)
            return None, [partition, _STORAGE, -1, -1, -1, str(e)]
        part.maybe_advance_high_watermark()
        part.wake()
        return part, [partition, _NONE, info.base_offset, info.log_append_time,
                      plog.log_start_offset, None]

    async def complete_appends(self, acks: int,
                               appended: list[tuple[Partition, list[Any]]]) -> None:
        """Wait until the appended batches may be acknowledged: on disk (the log's flush
        policy decides what that means) and, for ``acks=-1``, in every in-sync replica
        (with one replica, that is the leader). A failure rewrites the entry's error."""
        if len(appended) == 1:
            part, entry = appended[0]
            await self._complete_one(acks, part, entry)
        else:
            await asyncio.gather(*(self._complete_one(acks, p, e) for p, e in appended))

    async def _complete_one(self, acks: int, part: Partition, entry: list[Any]) -> None:
        try:
            await part.log.flush()
        except StorageError as e:
            log.error("flush of %s-%d failed: %s", part.topic, part.index, e)
            entry[1] = _STORAGE
            entry[5] = str(e)
            return
        if acks == -1:
            # replication: wait here until the ISR has the batch (min.insync.replicas)
            pass

    # ------------------------------------------------------------------ fetch

    def read(self, topic: str, partition: int, offset: int, max_bytes: int,
             current_leader_epoch: int, replica_id: int,
             min_one: bool) -> tuple[Partition | None, list[Any]]:
        """Read from ``offset`` below the high watermark (the log end for a follower);
        return the partition (None on error) and the response entry ``[partition,
        error_code, high_watermark, last_stable_offset, log_start_offset, records]``."""
        parts = self.partitions.get(topic)
        part = parts.get(partition) if parts is not None else None
        if part is None or part.leader != self.broker_id:
            code = self._missing(topic, partition) if part is None else _NOT_LEADER
            return None, [partition, code, -1, -1, -1, b""]
        if current_leader_epoch >= 0 and current_leader_epoch != part.leader_epoch:
            code = _FENCED if current_leader_epoch < part.leader_epoch else _UNKNOWN_EPOCH
            return None, [partition, code, -1, -1, -1, b""]
        plog = part.log
        hw = plog.high_watermark
        start = plog.log_start_offset
        end = plog.log_end_offset
        if offset < start or offset > end:
            return None, [partition, _OUT_OF_RANGE, hw, hw, start, b""]
        limit = end if replica_id >= 0 else hw
        if offset >= limit or (max_bytes <= 0 and not min_one):
            return part, [partition, _NONE, hw, hw, start, b""]
        try:
            # the log always returns at least one whole batch; past the first partition
            # with data, a batch over the remaining budget waits for the next fetch
            data = plog.read_range(offset, max_bytes, limit)
            if not min_one and len(data) > max_bytes:
                data = b""
        except OffsetOutOfRangeError:
            # retention removed the segment between the check and the read
            return None, [partition, _OUT_OF_RANGE, hw, hw, plog.log_start_offset, b""]
        except StorageError as e:
            log.error("read of %s-%d failed: %s", topic, partition, e)
            return None, [partition, _STORAGE, hw, hw, start, b""]
        return part, [partition, _NONE, hw, hw, start, data]

    async def wait_for_data(self, parts: list[Partition], timeout: float) -> None:
        """Park until one of ``parts`` gets an append (or changes hands), at most
        ``timeout`` seconds."""
        if self.shutting_down or not parts:
            if not self.shutting_down:
                await asyncio.sleep(timeout)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for p in parts:
            p.waiters.add(fut)
        timer = loop.call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            for p in parts:
                p.waiters.discard(fut)

    def wake_all(self) -> None:
        """Shutdown: every parked fetch answers with what it has."""
        self.shutting_down = True
        for hosted in self.partitions.values():
            for part in hosted.values():
                part.wake()

    # ------------------------------------------------------------------ list offsets

    def list_offset(self, topic: str, partition: int, timestamp: int) -> list[Any]:
        """``[partition, error_code, timestamp, offset]``: -2 the log start, -1 the high
        watermark, else the first offset whose timestamp is >= ``timestamp`` (-1, -1 if
        there is none)."""
        part = self.get_partition(topic, partition)
        if part is None or part.leader != self.broker_id:
            code = self._missing(topic, partition) if part is None else _NOT_LEADER
            return [partition, code, -1, -1]
        plog = part.log
        if timestamp == EARLIEST:
            return [partition, _NONE, -1, plog.log_start_offset]
        if timestamp == LATEST:
            return [partition, _NONE, -1, plog.high_watermark]
        try:
            found = plog.offset_for_timestamp(timestamp)
        except StorageError as e:
            log.error("timestamp lookup in %s-%d failed: %s", topic, partition, e)
            return [partition, _STORAGE, -1, -1]
        if found is None:
            return [partition, _NONE, -1, -1]
        off, ts = found
        if off >= plog.high_watermark:
            return [partition, _NONE, -1, -1]
        return [partition, _NONE, ts, off]
