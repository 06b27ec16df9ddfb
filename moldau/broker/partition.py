"""One replica of a topic partition hosted on this broker: its log, its leadership state as
last read from ``/brokers/topics/<t>/partitions/<p>/state``, and the fetchers waiting for
data.

Invariants: only the leader (``leader == broker_id``) appends client data, and it stamps
``leader_epoch`` on every batch it appends; the high watermark never passes the log end and
never moves back while this broker leads. Long-polling fetchers park a future in
``waiters``; ``wake()`` (after an append, a leadership change or at shutdown) completes them
all, so no fetcher polls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moldau.broker.log import PartitionLog


class Partition:
    __slots__ = ("broker_id", "index", "isr", "leader", "leader_epoch", "log", "replicas",
                 "topic", "waiters")

    def __init__(self, broker_id: int, topic: str, index: int, log: PartitionLog) -> None:
        self.broker_id = broker_id
        self.topic = topic
        self.index = index
        self.log = log
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.leader = -1
        self.leader_epoch = -1
        self.waiters: set[asyncio.Future[None]] = set()

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    def update_state(self, replicas: tuple[int, ...], leader: int, leader_epoch: int,
                     isr: tuple[int, ...]) -> bool:
        """Take the state read from the metadata tree; return whether leadership changed."""
        changed = leader != self.leader or leader_epoch != self.leader_epoch
        self.replicas = replicas
        self.leader = leader
        self.leader_epoch = leader_epoch
        self.isr = isr
        if changed and leader == self.broker_id:
            self.maybe_advance_high_watermark()
        return changed

    def maybe_advance_high_watermark(self) -> None:
        """With a single in-sync replica the high watermark is the log end. (Replication
        will take the minimum log end over the ISR here.)"""
        log = self.log
        leo = log.log_end_offset
        if log.high_watermark < leo:
            log.high_watermark = leo

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            waiters.clear()
