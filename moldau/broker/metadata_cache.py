"""This broker's view of the cluster: live brokers, topics with their replica assignment,
partition states (leader, epoch, ISR) and config overrides, the controller and cluster id.

It is a plain in-memory copy of the metadata tree (no I/O): the ``MetadataListener`` writes
it from watches, request handlers read it. Invariant: a topic is present only with its whole
assignment (topics are created by one multi-op), and every change calls ``notify()`` so that
callers of ``wait_until`` re-check their condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from moldau.clients.metadata.layout import BrokerInfo, PartitionState


@dataclass(slots=True)
class TopicMetadata:
    name: str
    # partition -> replica list (the first is the preferred leader)
    assignment: dict[int, tuple[int, ...]]
    # partition -> state; a partition without a state node yet has no leader
    states: dict[int, PartitionState] = field(default_factory=dict)
    # partition -> version of its state node as read (conditional writes start from it)
    state_versions: dict[int, int] = field(default_factory=dict)
    # this topic's overrides only (``/config/topics/<t>``), not the broker defaults
    config: dict[str, str] = field(default_factory=dict)
    # creation zxid of the topic node: tells a re-created topic from the one it replaced
    created: int = 0

    @property
    def num_partitions(self) -> int:
        return len(self.assignment)

    @property
    def replication_factor(self) -> int:
        return max((len(r) for r in self.assignment.values()), default=0)


class MetadataCache:
    """The cluster as this broker last read it; see the module docstring."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, TopicMetadata] = {}
        self.controller_id = -1
        self.cluster_id = ""
        self._changed: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake everyone in ``wait_until``; they re-check their condition."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds (re-checked after each change), at most
        ``timeout`` seconds; return whether it holds."""
        if condition():
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return condition()
            if self._changed is None:
                self._changed = asyncio.Event()
            ev = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await ev.wait()
            except TimeoutError:
                return condition()
            if condition():
                return True

    def leader_of(self, topic: str, partition: int) -> int:
        t = self.topics.get(topic)
        if t is None:
            return -1
        s = t.states.get(partition)
        return s.leader if s is not None else -1

    def live_broker_ids(self) -> list[int]:
        return sorted(self.brokers)
