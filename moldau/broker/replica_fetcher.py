"""Followers pull from leaders: one ``ReplicaFetcher`` per source broker (Kafka's
ReplicaFetcherThread), owned by the ``ReplicaFetcherManager``.

A partition handed to a fetcher starts in TRUNCATING: the fetcher asks the leader where the
follower's latest leader epoch ends (OffsetForLeaderEpoch, KIP-101/279) and truncates the
local log there, repeating with an older epoch while the leader does not know the
follower's one; then the partition is FETCHING: every round sends one FetchRequest with
``replica_id`` = this broker's id for all its partitions at their log ends, appends what
comes back with ``append_as_follower`` (batches keep the leader's offsets and epochs),
waits for the log's flush (under the durable policy a follower's fetch offset, which the
leader counts as replicated, is on disk), and takes the leader's high watermark.

Every answer is applied only if the partition still follows the same leader in the same
epoch at the same log end as when the request left; anything else is dropped (the metadata
listener moved the partition meanwhile). Errors that mean "the leader changed" park the
partition for ``replica.fetch.backoff.ms``; the metadata listener re-homes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from moldau.broker.partition import FETCHING, TRUNCATING, Partition
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import (
    FetchRequest,
    FetchResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
)
from moldau.clients.rpc import Connection

if TYPE_CHECKING:
    from moldau.broker.config import BrokerConfig
    from moldau.broker.metadata_cache import MetadataCache
    from moldau.broker.replica_manager import ReplicaManager

log = logging.getLogger(__name__)

Key = tuple[str, int]

_NONE = int(ErrorCode.NONE)
_OUT_OF_RANGE = int(ErrorCode.OFFSET_OUT_OF_RANGE)
_MOVING = frozenset({ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                     ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                     ErrorCode.LEADER_NOT_AVAILABLE})
_MOVING_RETRY = 0.1


class ReplicaFetcherManager:
    """Which fetcher copies which partition. No I/O until a partition is added."""

    def __init__(self, broker_id: int, config: BrokerConfig, cache: MetadataCache,
                 replicas: ReplicaManager) -> None:
        self.broker_id = broker_id
        self.config = config
        self.cache = cache
        self.replicas = replicas
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._of: dict[Key, int] = {}
        self._stopped = False

    def add(self, part: Partition) -> None:
        """(Re)start copying ``part`` from its current leader, truncating first."""
        if self._stopped:
            return
        key = (part.topic, part.index)
        self.remove(part)
        part.fetch_state = TRUNCATING
        f = self.fetchers.get(part.leader)
        if f is None:
            f = self.fetchers[part.leader] = ReplicaFetcher(self, part.leader)
            f.start()
        f.add(key, part)
        self._of[key] = part.leader

    def remove(self, part: Partition) -> None:
        key = (part.topic, part.index)
        source = self._of.pop(key, None)
        if source is not None:
            f = self.fetchers.get(source)
            if f is not None:
                f.remove(key)

    def partitions_of(self, source: int) -> list[Partition]:
        f = self.fetchers.get(source)
        return list(f.parts.values()) if f is not None else []

    async def stop(self) -> None:
        self._stopped = True
        fetchers, self.fetchers = list(self.fetchers.values()), {}
        self._of.clear()
        await asyncio.gather(*(f.stop() for f in fetchers), return_exceptions=True)


class ReplicaFetcher:
    """Copies the partitions led by broker ``source``."""

    def __init__(self, manager: ReplicaFetcherManager, source: int) -> None:
        self.manager = manager
        self.source = source
        self.parts: dict[Key, Partition] = {}
        self.delayed: dict[Key, float] = {}
        self._wakeup = asyncio.Event()
        self._conn: Connection | None = None
        self._conn_address = ""
        self._task: asyncio.Task[None] | None = None
        self._round = 0
        cfg = manager.config
        self.backoff = cfg.replica_fetch_backoff_ms / 1000
        self.max_wait_ms = cfg.replica_fetch_wait_max_ms
        self.timeout = cfg.replica_socket_timeout_ms / 1000

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"replica-fetcher-{self.source}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close()

    def add(self, key: Key, part: Partition) -> None:
        self.parts[key] = part
        self.delayed.pop(key, None)
        self._wakeup.set()

    def remove(self, key: Key) -> None:
        self.parts.pop(key, None)
        self.delayed.pop(key, None)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> Connection:
        broker = self.manager.cache.brokers.get(self.source)
        if broker is None:
            raise ConnectionError(f"broker {self.source} is not registered")
        address = f"{broker.host}:{broker.port}"
        conn = self._conn
        if conn is not None and conn.is_open and address == self._conn_address:
            return conn
        await self._close()
        conn = Connection(broker.host, broker.port,
                          client_id=f"replica-fetcher-{self.manager.broker_id}")
        await conn.connect(timeout=min(self.timeout, 10.0))
        self._conn = conn
        self._conn_address = address
        return conn

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until a partition is added."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wakeup.wait()

    def _delay(self, key: Key, seconds: float | None = None) -> None:
        self.delayed[key] = asyncio.get_running_loop().time() + (
            self.backoff if seconds is None else seconds)

    def _current(self, key: Key, part: Partition, epoch: int) -> bool:
        """Whether ``part`` still follows this source in ``epoch``."""
        return (self.parts.get(key) is part and part.leader == self.source
                and part.leader_epoch == epoch)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not self.parts:
                await self._close()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = loop.time()
            ready = {k: p for k, p in self.parts.items() if self.delayed.get(k, 0.0) <= now}
            if not ready:
                await self._pause(min(self.delayed.values()) - now)
                continue
            try:
                conn = await self._connection()
                truncating = {k: p for k, p in ready.items() if p.fetch_state == TRUNCATING}
                if truncating:
                    await self._truncate(conn, truncating)
                    failures = 0
                    continue
                fetching = {k: p for k, p in ready.items() if p.fetch_state == FETCHING}
                if not fetching:
                    await self._pause(self.backoff)
                    continue
                await self._fetch(conn, fetching)
                failures = 0
            except asyncio.CancelledError:
                raise
            except (ConnectionError, OSError, TimeoutError, MoldauError) as e:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("replica fetcher for broker %d: %s", self.source, e)
                await self._close()
                await self._pause(self.backoff)
            except Exception:
                log.exception("replica fetcher for broker %d failed", self.source)
                await self._close()
                await self._pause(self.backoff)

    # ------------------------------------------------------------------ truncation

    async def _truncate(self, conn: Connection, parts: dict[Key, Partition]) -> None:
        replicas = self.manager.replicas
        asked: dict[Key, tuple[Partition, int]] = {}
        topics: dict[str, list[list[int]]] = {}
        for key, part in parts.items():
            latest = part.leader_epochs.latest_epoch
            plog = part.log
            if latest < 0:
                # nothing in the log carries an epoch: an empty log has nothing to lose;
                # otherwise only what was committed is known to be safe
                if plog.log_end_offset > plog.log_start_offset:
                    replicas.truncate(part, plog.high_watermark, True)
                else:
                    part.fetch_state = FETCHING
                continue
            asked[key] = (part, part.leader_epoch)
            topics.setdefault(key[0], []).append([key[1], part.leader_epoch, latest])
        if not topics:
            return
        req = OffsetForLeaderEpochRequest(topics=[[t, ps] for t, ps in topics.items()],
                                          replica_id=self.manager.broker_id)
        resp = await conn.request(req, timeout=self.timeout)
        assert isinstance(resp, OffsetForLeaderEpochResponse)
        for topic, entries in resp.topics:
            for e in entries:
                key = (topic, e[0])
                found = asked.pop(key, None)
                if found is None:
                    continue
                part, epoch = found
                if not self._current(key, part, epoch) or part.fetch_state != TRUNCATING:
                    continue
                if e[1] != _NONE:
                    self._leader_error(key, part, e[1], "asking where an epoch ends")
                    continue
                self._truncate_one(part, int(e[2]), int(e[3]))
        for key in asked:
            self._delay(key)  # not answered: ask again later

    def _truncate_one(self, part: Partition, leader_epoch: int, leader_end: int) -> None:
        """Kafka's follower rule (AbstractFetcherThread.getOffsetTruncationState)."""
        replicas = self.manager.replicas
        leo = part.log.log_end_offset
        if leader_end < 0:
            # the leader knows no epoch this old or new: keep only what was committed
            replicas.truncate(part, min(part.log.high_watermark, leo), True)
            return
        mine, my_end = part.leader_epochs.end_offset_for(leader_epoch, leo)
        if my_end < 0:
            replicas.truncate(part, min(leader_end, leo), True)
        elif mine != leader_epoch:
            # this log has no batch of the leader's epoch: cut back to where the older
            # epoch it does have ends, then ask again about that one
            replicas.truncate(part, min(my_end, leo), False)
        else:
            replicas.truncate(part, min(my_end, leader_end, leo), True)

    # ------------------------------------------------------------------ fetching

    async def _fetch(self, conn: Connection, parts: dict[Key, Partition]) -> None:
        manager = self.manager
        cfg = manager.config
        replicas = manager.replicas
        topics: dict[str, list[list[int]]] = {}
        sent: dict[Key, tuple[Partition, int, int]] = {}
        # a different partition first each round: only the first one is sure to get a
        # batch larger than what is left of the response budget
        order = list(parts.items())
        self._round += 1
        k = self._round % len(order)
        for key, part in order[k:] + order[:k]:
            offset = part.log.log_end_offset
            topics.setdefault(key[0], []).append(
                [key[1], offset, cfg.replica_fetch_max_bytes, part.leader_epoch])
            sent[key] = (part, offset, part.leader_epoch)
        req = FetchRequest(max_wait_ms=self.max_wait_ms, min_bytes=cfg.replica_fetch_min_bytes,
                           max_bytes=cfg.replica_fetch_response_max_bytes,
                           topics=[[t, ps] for t, ps in topics.items()],
                           replica_id=manager.broker_id)
        resp = await conn.request(req, timeout=self.timeout + self.max_wait_ms / 1000)
        assert isinstance(resp, FetchResponse)
        appended: list[Partition] = []
        for topic, entries in resp.topics:
            for e in entries:
                key = (topic, e[0])
                found = sent.get(key)
                if found is None:
                    continue
                part, offset, epoch = found
                if (not self._current(key, part, epoch) or part.fetch_state != FETCHING
                        or part.log.log_end_offset != offset):
                    continue
                code = e[1]
                if code == _NONE:
                    data = e[5]
                    if data and replicas.append_as_follower(part, data):
                        appended.append(part)
                    replicas.update_follower_high_watermark(part, int(e[2]))
                elif code == _OUT_OF_RANGE:
                    self._out_of_range(part, offset, int(e[4]))
                else:
                    self._leader_error(key, part, code, "fetching")
        if appended:
            results = await asyncio.gather(*(p.log.flush() for p in appended),
                                           return_exceptions=True)
            for p, r in zip(appended, results, strict=True):
                if isinstance(r, Exception):
                    log.error("%s: flushing replicated data failed: %s", p.name, r)

    def _out_of_range(self, part: Partition, offset: int, leader_start: int) -> None:
        if leader_start >= 0 and offset < leader_start:
            # the leader's retention passed this log's end: start over from its log start
            self.manager.replicas.truncate_fully(part, leader_start)
        else:
            # past the leader's log end: the leader lost records (it restarted, or an
            # unclean election); find the epoch boundary again
            part.fetch_state = TRUNCATING

    def _leader_error(self, key: Key, part: Partition, code: int, what: str) -> None:
        err = ErrorCode.of(code)
        if err in _MOVING:
            # leadership is changing hands: the metadata update is on its way, so ask
            # again soon rather than after the full backoff
            log.debug("%s: %s from leader %d: %s", part.name, what, self.source, err.name)
            self._delay(key, min(self.backoff, _MOVING_RETRY))
        else:
            log.warning("%s: %s from leader %d: %s", part.name, what, self.source, err.name)
            self._delay(key)

