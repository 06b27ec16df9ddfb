"""The partitions this broker hosts: the produce, fetch and list-offsets paths on them, the
leader and follower transitions, and the leader's ISR maintenance.

``ReplicaManager`` owns one ``Partition`` per (topic, partition) whose replica list names
this broker, each with its ``PartitionLog`` from the ``LogManager``. The metadata listener
tells it about topics (``apply_topic`` / ``remove_topic``); leadership comes from the
partition state nodes (written by the controller), never decided here:

- becoming leader: stop fetching, record the new epoch's start offset, track followers;
- becoming follower: fail the acks=all produces waiting here, hand the partition to the
  ``ReplicaFetcherManager``, which truncates it to the leader's epoch boundary
  (OffsetForLeaderEpoch) and then copies the leader's log.

As leader it changes the ISR itself, only by a conditional write of the state node (Kafka's
AlterPartition): a follower that has not caught up for ``replica.lag.time.max.ms`` leaves,
one that caught up joins. A leader cut off from the metadata service cannot shrink the ISR,
so acks=all cannot complete without its followers; a write that meets a newer state
(BAD_VERSION) makes it re-read the state and step down if it was replaced.

The hot paths work per batch, never per record: ``append`` hands the request's bytes to the
log (which validates CRCs and assigns offsets by rewriting headers), ``read`` returns the
log's bytes as they are. ``append`` is synchronous so that pipelined produce requests on one
connection append in arrival order; the waiting (flush, and for acks=all the ISR) happens
afterwards in ``complete_appends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from moldau.broker.log import (
    LogConfig,
    LogManager,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    UnexpectedAppendOffsetError,
)
from moldau.broker.metadata_cache import MetadataCache, TopicMetadata
from moldau.broker.partition import FETCHING, TRUNCATING, Partition
from moldau.clients.metadata.layout import PartitionState, partition_state_path
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.records import BatchHeader, CorruptRecordError, iter_batches, parse_header
from moldau.clients.records.batch import HEADER_SIZE, LOG_OVERHEAD

if TYPE_CHECKING:
    from moldau.broker.metadata_listener import MetadataListener
    from moldau.broker.replica_fetcher import ReplicaFetcherManager

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
_NOT_ENOUGH = int(ErrorCode.NOT_ENOUGH_REPLICAS)

EARLIEST = -2
LATEST = -1
# how much of a log's tail is replayed to rebuild its producer state (dedupe window after
# a restart or leadership change)
PRODUCER_SCAN_BYTES = 32 * 1024 * 1024
_PID_OFFSET = 43  # producer_id in the batch header
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Appended:
    """A produce entry waiting to be acknowledged."""

    __slots__ = ("entry", "epoch", "part", "required")

    def __init__(self, part: Partition, entry: list[Any], required: int, epoch: int) -> None:
        self.part = part
        self.entry = entry
        self.required = required  # acks=all completes once the high watermark reaches it
        self.epoch = epoch


class ReplicaManager:
    def __init__(self, broker_id: int, log_manager: LogManager, cache: MetadataCache,
                 default_config: LogConfig, *, replica_lag_time_max_ms: int = 30000) -> None:
        self.broker_id = broker_id
        self.log_manager = log_manager
        self.cache = cache
        # the broker's log.* settings; a topic's overrides apply on top
        self.default_config = default_config
        self.lag = replica_lag_time_max_ms / 1000
        self.partitions: dict[str, dict[int, Partition]] = {}
        self.shutting_down = False
        # wired by the server after construction (they depend on this object)
        self.metadata: MetadataListener | None = None
        self.fetchers: ReplicaFetcherManager | None = None
        self._isr_task: asyncio.Task[None] | None = None
        self._isr_updates: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._isr_task = asyncio.get_running_loop().create_task(self._isr_loop(),
                                                                name="isr-expiration")

    async def stop(self) -> None:
        tasks = [t for t in (self._isr_task, *self._isr_updates) if t is not None]
        self._isr_task = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.fetchers is not None:
            await self.fetchers.stop()
        for hosted in self.partitions.values():
            for part in hosted.values():
                part.wake_hw()

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

    def all_partitions(self) -> list[Partition]:
        return [p for hosted in self.partitions.values() for p in hosted.values()]

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
                part = Partition(me, topic.name, p, plog)
                part.load()
                hosted[p] = part
                log.info("hosting %s-%d (log end %d, high watermark %d)", topic.name, p,
                         plog.log_end_offset, plog.high_watermark)
            elif part.log.config != config:
                part.log.update_config(config)
            self._apply_state(part, replicas, topic.states.get(p),
                              topic.state_versions.get(p, -1))
        for p in [p for p in hosted if p not in mine]:
            self._drop(hosted.pop(p))
        if not hosted:
            del self.partitions[topic.name]

    def _apply_state(self, part: Partition, replicas: tuple[int, ...],
                     state: PartitionState | None, version: int) -> None:
        isr: tuple[int, ...] = ()
        if state is None:
            leader, epoch = -1, -1
        else:
            leader, epoch, isr = state.leader, state.leader_epoch, state.isr
        if 0 <= version < part.state_version or epoch < part.leader_epoch:
            return  # an older read than what was applied (reads race with own writes)
        now = time.monotonic()
        if leader == part.leader and epoch == part.leader_epoch:
            if isr != part.isr or replicas != part.replicas:
                part.update_isr(replicas, isr, version, now)
            else:
                part.state_version = max(part.state_version, version)
            return
        if leader == self.broker_id:
            if self.fetchers is not None:
                self.fetchers.remove(part)
            part.become_leader(epoch, replicas, isr, version, now)
            log.info("%s: leader now (epoch %d, isr %s, log end %d, high watermark %d)",
                     part.name, epoch, list(isr), part.log.log_end_offset,
                     part.log.high_watermark)
        else:
            part.become_follower(leader, epoch, replicas, isr, version)
            log.info("%s: follower of %d (epoch %d)", part.name, leader, epoch)
            if self.fetchers is not None:
                if part.fetch_state is not None:
                    self.fetchers.add(part)
                else:
                    self.fetchers.remove(part)

    def remove_topic(self, name: str) -> None:
        hosted = self.partitions.pop(name, None)
        if hosted:
            for part in hosted.values():
                self._drop(part)

    def _drop(self, part: Partition) -> None:
        if self.fetchers is not None:
            self.fetchers.remove(part)
        part.leader = -1
        part.fetch_state = None
        part.wake()
        part.wake_hw()
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

    def append(self, topic: str, partition: int, records: Any,
               acks: int = 1) -> tuple[Appended | None, list[Any]]:
        """Append ``records`` (whole batches) to the partition if this broker leads it;
        return what to wait for (None on error) and the response entry ``[partition,
        error_code, base_offset, log_append_time, log_start_offset, message]`` (plus, when
        an idempotent retry repeated batches already in the log, ``batch_offsets``: the base
        offset of every batch). Synchronous on purpose: see the module docstring."""
        parts = self.partitions.get(topic)
        part = parts.get(partition) if parts is not None else None
        if part is None or part.leader != self.broker_id:
            code = self._missing(topic, partition) if part is None else _NOT_LEADER
            return None, [partition, code, -1, -1, -1, None]
        plog = part.log
        if acks == -1 and len(part.isr) < part.min_isr:
            return None, [partition, _NOT_ENOUGH, -1, -1, -1,
                          f"the in-sync replicas of {part.name} ({len(part.isr)}) are fewer "
                          f"than min.insync.replicas ({part.min_isr})"]
        duplicates: list[int] = []
        try:
            headers = _idempotent_headers(records)
        except CorruptRecordError:
            headers = None  # the log's own validation reports it
        if headers:
            try:
                part.ensure_producer_state(PRODUCER_SCAN_BYTES)
            except (StorageError, CorruptRecordError) as e:
                log.error("%s: cannot rebuild the producer state: %s", part.name, e)
                return None, [partition, _STORAGE, -1, -1, -1, str(e)]
            check = part.producers.check_run(headers)
            if check.error:
                return None, [partition, check.error, -1, -1, -1, check.message]
            duplicates = check.duplicates
        epoch = part.leader_epoch
        if duplicates and headers is not None and len(duplicates) == len(headers):
            # a retry of batches this leader already has: answer with where they are
            last = headers[-1]
            required = duplicates[-1] + last.last_offset_delta + 1
            entry: list[Any] = [partition, _NONE, duplicates[0], -1, plog.log_start_offset,
                                None]
            if len(duplicates) > 1:
                entry.append(duplicates)
            return Appended(part, entry, required, epoch), entry
        data = records
        if duplicates:
            assert headers is not None
            skip = sum(h.size for h in headers[:len(duplicates)])
            data = records[skip:]
        try:
            info = plog.append(data, epoch)
        except CorruptRecordError as e:
            return None, [partition, _CORRUPT, -1, -1, -1, str(e)]
        except RecordTooLargeError as e:
            return None, [partition, _TOO_LARGE, -1, -1, -1, str(e)]
        except StorageError as e:
            log.error("append to %s-%d failed: %s", topic, partition, e)
            return None, [partition, _STORAGE, -1, -1, -1, str(e)]
        if headers is not None:
            offsets = list(duplicates)
            base = info.base_offset
            appended = []
            for h in headers[len(duplicates):]:
                appended.append((h, base))
                offsets.append(base)
                base += h.last_offset_delta + 1
            part.producers.on_append(appended)
        else:
            offsets = []
        part.maybe_advance_high_watermark()
        part.wake()
        first = offsets[0] if offsets else info.base_offset
        entry = [partition, _NONE, first, info.log_append_time, plog.log_start_offset,
                 None]
        if duplicates:
            entry.append(offsets)
        return Appended(part, entry, info.last_offset + 1, epoch), entry

    async def complete_appends(self, acks: int, appended: list[Appended],
                               timeout_ms: int) -> None:
        """Wait until the appended batches may be acknowledged: on disk (the log's flush
        policy decides what that means) and, for ``acks=-1``, in every in-sync replica with
        at least ``min.insync.replicas`` of them, at most ``timeout_ms``. A failure rewrites
        the entry's error."""
        deadline = asyncio.get_running_loop().time() + max(timeout_ms, 0) / 1000
        if len(appended) == 1:
            await self._complete_one(acks, appended[0], deadline)
        else:
            await asyncio.gather(*(self._complete_one(acks, a, deadline) for a in appended))

    async def _complete_one(self, acks: int, a: Appended, deadline: float) -> None:
        part, entry = a.part, a.entry
        try:
            await part.log.flush()
        except StorageError as e:
            log.error("flush of %s-%d failed: %s", part.topic, part.index, e)
            entry[1] = _STORAGE
            entry[5] = str(e)
            return
        if acks == -1:
            code, message = await part.wait_for_commit(a.required, a.epoch, deadline)
            if code:
                entry[1] = code
                entry[5] = message

    # ------------------------------------------------------------------ fetch

    def read(self, topic: str, partition: int, offset: int, max_bytes: int,
             current_leader_epoch: int, replica_id: int,
             min_one: bool) -> tuple[Partition | None, list[Any]]:
        """Read from ``offset``: below the high watermark for consumers, up to the log end
        for a follower (``replica_id`` >= 0), whose fetch also tells the leader how far it
        got. Returns the partition (None on error) and the response entry ``[partition,
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
        start = plog.log_start_offset
        end = plog.log_end_offset
        if offset < start or offset > end:
            hw = plog.high_watermark
            return None, [partition, _OUT_OF_RANGE, hw, hw, start, b""]
        if replica_id >= 0:
            if replica_id not in part.replicas:
                return None, [partition, _NOT_LEADER, -1, -1, -1, b""]
            if part.update_follower(replica_id, offset, time.monotonic()):
                self._request_isr_update(part)
            limit = end
        else:
            limit = plog.high_watermark
        hw = plog.high_watermark
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
        """Park until one of ``parts`` gets an append, a high watermark move or changes
        hands, at most ``timeout`` seconds."""
        if not parts:
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
        """Shutdown: every parked consumer fetch answers with what it has."""
        self.shutting_down = True
        for hosted in self.partitions.values():
            for part in hosted.values():
                part.wake()

    def offset_for_leader_epoch(self, topic: str, partition: int, current_epoch: int,
                                epoch: int) -> list[Any]:
        """``[partition, error_code, leader_epoch, end_offset]``: where ``epoch`` ends in
        this leader's log (see ``LeaderEpochCache.end_offset_for``)."""
        part = self.get_partition(topic, partition)
        if part is None or part.leader != self.broker_id:
            code = self._missing(topic, partition) if part is None else _NOT_LEADER
            return [partition, code, -1, -1]
        if current_epoch >= 0 and current_epoch != part.leader_epoch:
            code = _FENCED if current_epoch < part.leader_epoch else _UNKNOWN_EPOCH
            return [partition, code, -1, -1]
        e, end = part.leader_epochs.end_offset_for(epoch, part.log.log_end_offset)
        return [partition, _NONE, e, end]

    # ------------------------------------------------------------------ the follower side

    def append_as_follower(self, part: Partition, data: bytes) -> bool:
        """Append batches fetched from the leader (whole ones; a partial one at the end
        waits for the next fetch). False, and the partition goes back to truncation, if
        they do not continue the log."""
        try:
            found = list(iter_batches(data, validate=False))
        except CorruptRecordError as e:
            log.warning("%s: corrupt data from leader %d: %s", part.name, part.leader, e)
            return False
        if not found:
            return False
        last_pos, last_h = found[-1]
        cut = last_pos + last_h.size
        cache = part.leader_epochs
        for _, h in found:
            if h.partition_leader_epoch > cache.latest_epoch:
                # persisted before the batches it describes are written
                cache.assign(h.partition_leader_epoch, h.base_offset)
        try:
            part.log.append_as_follower(data if cut == len(data) else data[:cut])
        except (UnexpectedAppendOffsetError, CorruptRecordError, StorageError) as e:
            log.warning("%s: cannot append what leader %d sent: %s; truncating again",
                        part.name, part.leader, e)
            cache.truncate_from_end(part.log.log_end_offset)
            part.fetch_state = TRUNCATING
            return False
        if part.producers.loaded:
            part.producers.on_append((h, h.base_offset) for _, h in found)
        return True

    def update_follower_high_watermark(self, part: Partition, leader_hw: int) -> None:
        plog = part.log
        hw = min(leader_hw, plog.log_end_offset)
        if hw > plog.high_watermark:
            plog.high_watermark = hw

    def truncate(self, part: Partition, offset: int, done: bool) -> None:
        if offset < part.log.log_end_offset:
            log.info("%s: truncating from %d to %d (leader %d, epoch %d)", part.name,
                     part.log.log_end_offset, offset, part.leader, part.leader_epoch)
        part.truncate_to(offset)
        if done:
            part.fetch_state = FETCHING

    def truncate_fully(self, part: Partition, offset: int) -> None:
        log.info("%s: behind the leader's log start: starting over at %d", part.name, offset)
        part.truncate_fully(offset)

    # ------------------------------------------------------------------ the ISR

    def _request_isr_update(self, part: Partition) -> None:
        if part.isr_pending or self.metadata is None:
            return
        part.isr_pending = True
        task = asyncio.get_running_loop().create_task(self._update_isr(part))
        self._isr_updates.add(task)
        task.add_done_callback(self._isr_updates.discard)

    async def _isr_loop(self) -> None:
        """Drop followers that stopped keeping up (Kafka's isr-expiration task)."""
        interval = max(self.lag / 2, 0.05)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for part in self.all_partitions():
                if part.is_leader and not part.isr_pending and (
                        part.out_of_sync(now, self.lag) or part.joining(now, self.lag)):
                    self._request_isr_update(part)

    async def _update_isr(self, part: Partition) -> None:
        """Write the ISR this leader wants, relative to the state node as it is now, with a
        conditional version; give up if the node shows another leader or epoch."""
        me = self.broker_id
        epoch = part.leader_epoch
        path = partition_state_path(part.topic, part.index)
        committed = False
        try:
            for _attempt in range(5):
                if not part.is_leader or part.leader_epoch != epoch:
                    return
                now = time.monotonic()
                remove = set(part.out_of_sync(now, self.lag))
                add = set(part.joining(now, self.lag))
                if not add and not remove:
                    return
                # members being added count for the high watermark from now on
                part.maximal_isr = tuple(r for r in part.replicas
                                         if r in part.maximal_isr or r in add)
                assert self.metadata is not None
                client = self.metadata.client
                data, stat = await client.get(path)
                current = PartitionState.decode(data)
                if current.leader != me or current.leader_epoch != epoch:
                    log.info("%s: the state node names leader %d epoch %d: stepping down",
                             part.name, current.leader, current.leader_epoch)
                    self.metadata.request_reload(("state", part.topic, part.index))
                    return
                new_isr = tuple(r for r in part.replicas
                                if (r in current.isr or r in add) and r not in remove)
                if me not in new_isr:
                    new_isr = (me, *new_isr)
                if set(new_isr) == set(current.isr):
                    self._committed_isr(part, current, stat.version)
                    committed = True
                    return
                new = PartitionState(me, epoch, new_isr, current.controller_epoch)
                try:
                    st = await client.set(path, new.encode(), version=stat.version)
                except MoldauError as e:
                    if e.code == ErrorCode.BAD_VERSION:
                        continue
                    raise
                log.info("%s: ISR %s -> %s", part.name, list(current.isr), list(new_isr))
                self._committed_isr(part, new, st.version)
                committed = True
                return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # unknown outcome: keep the maximal ISR as large as it is until a read shows
            # the committed state
            log.warning("%s: changing the ISR failed: %s", part.name, e)
            if self.metadata is not None:
                self.metadata.request_reload(("state", part.topic, part.index))
        finally:
            part.isr_pending = False
            if committed:
                part.maximal_isr = part.isr

    def _committed_isr(self, part: Partition, state: PartitionState, version: int) -> None:
        if not part.is_leader or part.leader_epoch != state.leader_epoch:
            return
        part.isr_pending = False
        part.update_isr(part.replicas, state.isr, version, time.monotonic())
        topic = self.cache.topics.get(part.topic)
        if topic is not None and topic.state_versions.get(part.index, -1) < version:
            topic.states[part.index] = state
            topic.state_versions[part.index] = version
            self.cache.notify()

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


def _idempotent_headers(records: bytes | bytearray) -> list[BatchHeader] | None:
    """The headers of the run's batches if any of them carries a producer id, else None
    (plain batches cost two field reads each). CorruptRecordError on a malformed run."""
    end = len(records)
    pos = 0
    idempotent = False
    while pos + HEADER_SIZE <= end:
        length, = _I32.unpack_from(records, pos + 8)
        pid, = _I64.unpack_from(records, pos + _PID_OFFSET)
        if pid >= 0:
            idempotent = True
            break
        pos += length + LOG_OVERHEAD
    if not idempotent:
        return None
    out = []
    pos = 0
    while pos < end:
        h = parse_header(records, pos)
        if h.size > end - pos:
            raise CorruptRecordError(f"truncated batch at byte {pos}")
        out.append(h)
        pos += h.size
    return out
