"""One replica of a topic partition hosted on this broker: its log, its leadership state as
last read from ``/brokers/topics/<t>/partitions/<p>/state``, and, while it leads, what it
knows of its followers.

Invariants:
- only the leader (``leader == broker_id``) appends client data, stamping ``leader_epoch``
  on every batch; a follower appends only what it copied from the leader;
- ``leader_epochs`` holds the start offset of every epoch found in the log, persisted before
  the first batch of a new epoch is written (``leader-epoch-checkpoint``);
- the leader's high watermark is the smallest log end offset over ``maximal_isr`` (the
  committed ISR plus members whose addition is being written: Kafka's maximal ISR, so that
  a member the metadata tree already lists never misses a record counted as committed); it
  never moves back while this broker leads, and never passes the log end;
- ``maximal_isr`` only shrinks when a committed state is read or written; a write whose
  outcome is unknown keeps it as large as it was;
- long-polling fetchers park a future in ``waiters`` (woken by appends, high watermark
  moves and leadership changes); acks=all produces park in ``hw_waiters`` (woken by high
  watermark, ISR and leadership changes), so nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from moldau.broker.leader_epoch_cache import LeaderEpochCache
from moldau.broker.producer_state import ProducerStateManager
from moldau.clients.protocol import ErrorCode
from moldau.clients.records import BatchHeader, iter_batches

if TYPE_CHECKING:
    from moldau.broker.log import PartitionLog

log = logging.getLogger(__name__)

_NONE = int(ErrorCode.NONE)
_NOT_LEADER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_AFTER_APPEND = int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)
_TIMED_OUT = int(ErrorCode.REQUEST_TIMED_OUT)

# follower fetch states
TRUNCATING = "truncating"
FETCHING = "fetching"

SCAN_CHUNK = 1024 * 1024


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FollowerState:
    """What the leader knows of one follower, from its fetches (Kafka's Replica)."""

    __slots__ = ("last_caught_up", "last_fetch_leader_leo", "last_fetch_time", "leo")

    def __init__(self, caught_up_at: float) -> None:
        self.leo = -1  # unknown until it fetches in this leader epoch
        self.last_fetch_time = 0.0
        self.last_fetch_leader_leo = -1
        self.last_caught_up = caught_up_at


class Partition:
    __slots__ = ("broker_id", "fetch_state", "followers", "hw_waiters", "index", "isr",
                 "isr_pending", "leader", "leader_epoch", "leader_epoch_start_offset",
                 "leader_epochs", "log", "maximal_isr", "producers", "replicas",
                 "state_version", "topic", "waiters")

    def __init__(self, broker_id: int, topic: str, index: int, log: PartitionLog) -> None:
        self.broker_id = broker_id
        self.topic = topic
        self.index = index
        self.log = log
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.maximal_isr: tuple[int, ...] = ()
        self.leader = -1
        self.leader_epoch = -1
        self.state_version = -1  # version of the state node last applied
        self.waiters: set[asyncio.Future[None]] = set()
        self.hw_waiters: set[asyncio.Future[None]] = set()
        self.followers: dict[int, FollowerState] = {}
        self.leader_epochs = LeaderEpochCache(log.directory)
        self.producers = ProducerStateManager()
        self.leader_epoch_start_offset = 0
        self.isr_pending = False
        self.fetch_state: str | None = None

    def __repr__(self) -> str:
        return (f"Partition({self.topic}-{self.index}, leader {self.leader} epoch "
                f"{self.leader_epoch}, isr {list(self.isr)})")

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    @property
    def min_isr(self) -> int:
        return self.log.config.min_insync_replicas

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Read the leader epoch checkpoint (rebuilding it from the log if missing) and
        make the high watermark explicit (blocking I/O, once per partition)."""
        plog = self.log
        cache = self.leader_epochs
        if cache.load():
            cache.truncate_from_end(plog.log_end_offset)
            cache.truncate_from_start(plog.log_start_offset)
        elif plog.log_end_offset > plog.log_start_offset:
            cache.rebuild((h.partition_leader_epoch, h.base_offset)
                          for h in self.scan_headers(plog.log_start_offset))
            log.info("%s: rebuilt the leader epoch cache from the log: %s", self.name,
                     cache.entries())
        if plog.explicit_high_watermark is None:
            # unknown: nothing is known to be committed yet; the leader moves it up
            plog.high_watermark = plog.log_start_offset

    def scan_headers(self, start: int) -> Iterator[BatchHeader]:
        """Yield the header of every batch from ``start`` to the log end (reads the data
        in chunks; used to rebuild state, never on the hot path)."""
        plog = self.log
        offset = max(start, plog.log_start_offset)
        end = plog.log_end_offset
        while offset < end:
            data = plog.read_range(offset, SCAN_CHUNK, None)
            if not data:
                return
            last = offset
            for _, h in iter_batches(data, validate=False):
                last = h.next_offset
                yield h
            if last <= offset:
                return
            offset = last

    def ensure_producer_state(self, scan_bytes: int) -> None:
        """Rebuild the producer state from the log's recent tail if it is not loaded."""
        if not self.producers.loaded:
            start = self.log.tail_start_offset(scan_bytes)
            self.producers.rebuild(self.scan_headers(start))

    # ------------------------------------------------------------------ state changes

    def become_leader(self, epoch: int, replicas: tuple[int, ...], isr: tuple[int, ...],
                      version: int, now: float) -> None:
        plog = self.log
        self.replicas = replicas
        self.isr = isr
        self.maximal_isr = isr
        self.leader = self.broker_id
        self.leader_epoch = epoch
        self.state_version = version
        self.fetch_state = None
        # every batch this leader appends carries ``epoch``: record where it starts first
        self.leader_epochs.assign(epoch, plog.log_end_offset)
        self.leader_epoch_start_offset = plog.log_end_offset
        # in-sync members get a full lag period to show up before they can be dropped
        self.followers = {r: FollowerState(now if r in isr else 0.0)
                          for r in replicas if r != self.broker_id}
        self.maybe_advance_high_watermark()
        self.wake()
        self.wake_hw()

    def become_follower(self, leader: int, epoch: int, replicas: tuple[int, ...],
                        isr: tuple[int, ...], version: int) -> None:
        self.replicas = replicas
        self.isr = isr
        self.maximal_isr = isr
        self.leader = leader
        self.leader_epoch = epoch
        self.state_version = version
        self.followers = {}
        self.fetch_state = TRUNCATING if leader >= 0 and leader != self.broker_id else None
        self.wake()
        self.wake_hw()  # pending acks=all fail: this broker no longer leads

    def update_isr(self, replicas: tuple[int, ...], isr: tuple[int, ...], version: int,
                   now: float) -> None:
        """A new committed ISR (same leader and epoch): the controller dropped a dead
        broker, or this leader's own change came back through the watch."""
        dropped = [r for r in self.isr if r not in isr and r != self.broker_id]
        self.replicas = replicas
        self.isr = isr
        self.state_version = version
        for r in dropped:
            # what it fetched before it left (it may be dead) must not bring it back: only
            # a fetch from now on counts
            if r in self.followers:
                self.followers[r] = FollowerState(0.0)
        if self.isr_pending:
            self.maximal_isr = tuple(r for r in replicas
                                     if r in isr or r in self.maximal_isr)
        else:
            self.maximal_isr = isr
        if self.is_leader:
            for r in replicas:
                if r != self.broker_id and r not in self.followers:
                    self.followers[r] = FollowerState(now)
            self.maybe_advance_high_watermark()
            self.wake_hw()

    # ------------------------------------------------------------------ the leader side

    def update_follower(self, replica: int, offset: int, now: float) -> bool:
        """A follower fetched from ``offset`` (its log end). Returns whether it now
        qualifies to join the ISR (caught up to the high watermark in this epoch)."""
        f = self.followers.get(replica)
        if f is None:
            if replica not in self.replicas:
                return False
            f = self.followers[replica] = FollowerState(0.0)
        leo = self.log.log_end_offset
        if offset >= leo:
            f.last_caught_up = now
        elif offset >= f.last_fetch_leader_leo:
            f.last_caught_up = max(f.last_caught_up, f.last_fetch_time)
        f.leo = offset
        f.last_fetch_leader_leo = leo
        f.last_fetch_time = now
        self.maybe_advance_high_watermark()
        return replica not in self.maximal_isr and self.qualifies(f)

    def qualifies(self, f: FollowerState) -> bool:
        return f.leo >= self.log.high_watermark and f.leo >= self.leader_epoch_start_offset

    def joining(self, now: float, lag: float) -> list[int]:
        """Followers outside the ISR that have caught up, fetching within ``lag``."""
        return [r for r, f in self.followers.items()
                if r not in self.isr and self.qualifies(f) and now - f.last_fetch_time <= lag]

    def out_of_sync(self, now: float, lag: float) -> list[int]:
        """ISR members that have not caught up with the log end for ``lag`` seconds."""
        out = []
        for r in self.isr:
            if r == self.broker_id:
                continue
            f = self.followers.get(r)
            if f is None or now - f.last_caught_up > lag:
                out.append(r)
        return out

    def maybe_advance_high_watermark(self) -> bool:
        """Move the high watermark up to the smallest log end over the maximal ISR;
        return whether it moved."""
        if self.leader != self.broker_id:
            return False
        plog = self.log
        new = plog.log_end_offset
        for r in self.maximal_isr:
            if r == self.broker_id:
                continue
            f = self.followers.get(r)
            if f is None or f.leo < 0:
                return False
            if f.leo < new:
                new = f.leo
        if new > plog.high_watermark:
            plog.high_watermark = new
            self.wake()
            self.wake_hw()
            return True
        return False

    async def wait_for_commit(self, required: int, epoch: int,
                              deadline: float) -> tuple[int, str | None]:
        """Wait until the high watermark reaches ``required`` (acks=all), then check the
        ISR is at least ``min.insync.replicas``. Fails if leadership moves or ``deadline``
        (loop time) passes first."""
        loop = asyncio.get_running_loop()
        while True:
            if self.leader != self.broker_id or self.leader_epoch != epoch:
                return _NOT_LEADER, (f"this broker is no longer the leader of {self.name} "
                                     f"(epoch {epoch})")
            if self.log.high_watermark >= required:
                if len(self.isr) < self.min_isr:
                    return _AFTER_APPEND, (
                        f"the in-sync replicas of {self.name} ({len(self.isr)}) fell below "
                        f"min.insync.replicas ({self.min_isr}) after the append")
                return _NONE, None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _TIMED_OUT, (f"not all in-sync replicas of {self.name} have the "
                                    "records yet")
            fut: asyncio.Future[None] = loop.create_future()
            self.hw_waiters.add(fut)
            timer = loop.call_later(remaining, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self.hw_waiters.discard(fut)

    # ------------------------------------------------------------------ the follower side

    def truncate_to(self, offset: int) -> None:
        """Cut the log at ``offset`` (records the leader does not have)."""
        plog = self.log
        if offset < plog.log_end_offset:
            plog.truncate_to(offset)
            self.producers.clear()
        self.leader_epochs.truncate_from_end(plog.log_end_offset)

    def truncate_fully(self, offset: int) -> None:
        """Start over, empty, at ``offset`` (behind the leader's log start)."""
        self.log.truncate_fully_and_start_at(offset)
        self.leader_epochs.clear()
        self.producers.clear()

    # ------------------------------------------------------------------ waking

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            waiters.clear()

    def wake_hw(self) -> None:
        waiters = self.hw_waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            waiters.clear()
