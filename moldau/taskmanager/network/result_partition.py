"""The producing side of an edge: one :class:`ResultPartition` per (producing subtask,
out edge), with one :class:`ResultSubpartition` per consuming subtask it is connected to.

Credit-based flow control (Flink's): a subpartition hands a buffer to its consumer only
while it holds credit; the consumer grants one credit per buffer it can hold (initially
``buffers-per-channel``) and one more each time it has processed a buffer. So at most
``credit`` buffers of a channel are ever in flight or queued at the receiver.

Backpressure: a subpartition whose queue of sealed, not yet sent buffers reaches
``capacity`` makes its partition *unavailable*; the producing task checks availability
before it takes its next input (``RecordWriterOutput.wait_available``), so a slow consumer
stops its producers instead of growing their memory. Memory per channel stays below
``capacity`` buffers at the producer plus ``credit`` buffers at the consumer (plus what
one input batch of the producer emits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from moldau.clients.stream.operators import Batch
from moldau.taskmanager.network.codec import END_OF_PARTITION, EOP


class SubpartitionConsumer(Protocol):
    """Where a subpartition's buffers go: a TCP connection or a local input channel."""

    def deliver(self, buffer: list[Any]) -> None: ...


class ResultSubpartition:
    """Sealed buffers for one consuming subtask, sent against credit."""

    __slots__ = ("bytes_per_record", "capacity", "consumer", "credit", "discarding", "eop_sent",
                 "full", "index", "partition", "queue", "released")

    def __init__(self, partition: ResultPartition, index: int, capacity: int) -> None:
        self.partition = partition
        self.index = index
        self.capacity = capacity
        self.queue: deque[list[Any]] = deque()
        self.credit = 0
        self.consumer: SubpartitionConsumer | None = None
        self.full = False
        self.eop_sent = False
        self.released = False
        self.discarding = False
        self.bytes_per_record = 0.0

    def add(self, buffer: list[Any]) -> None:
        if self.discarding:
            return
        self.queue.append(buffer)
        if self.credit and self.consumer is not None:
            self._send()
        if not self.full and len(self.queue) >= self.capacity:
            self.full = True
            self.partition.backlogged += 1

    def _send(self) -> None:
        q = self.queue
        consumer = self.consumer
        assert consumer is not None
        while self.credit > 0 and q:
            buf = q.popleft()
            self.credit -= 1
            if buf and buf[-1] is EOP:
                self.eop_sent = True
            consumer.deliver(buf)
        if self.full and len(q) < self.capacity:
            self.full = False
            self.partition._unblocked()

    def add_credit(self, n: int) -> None:
        self.credit += n
        if self.consumer is not None and self.queue:
            self._send()

    def attach(self, consumer: SubpartitionConsumer, credit: int) -> None:
        if self.consumer is not None or self.released:
            raise RuntimeError(f"subpartition {self.index} of {self.partition} is already "
                               "being consumed")
        self.consumer = consumer
        self.credit = credit
        if self.queue:
            self._send()

    def consumer_finished(self) -> None:
        """The consumer processed the end of the partition."""
        if not self.released:
            self.released = True
            self.partition._released()

    def consumer_lost(self) -> None:
        """The consumer went away early (it failed or was canceled): drop what is queued
        and whatever comes; the JobManager cancels this producer if the job is failing."""
        if self.eop_sent:
            self.consumer_finished()
            return
        self.discarding = True
        self.queue.clear()
        if self.full:
            self.full = False
            self.partition._unblocked()
        self.consumer_finished()


class ResultPartition:
    """The output of one producing subtask on one edge."""

    def __init__(self, job_id: str, execution_id: str, edge_index: int, targets: list[int],
                 capacity: int) -> None:
        self.job_id = job_id
        self.execution_id = execution_id
        self.edge_index = edge_index
        self.subpartitions = {t: ResultSubpartition(self, t, capacity) for t in targets}
        self.backlogged = 0  # subpartitions at capacity
        self.bytes_out = 0  # bytes sent to remote consumers
        self.unreleased = len(self.subpartitions)
        self._available: asyncio.Future[None] | None = None
        self._all_released: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"ResultPartition({self.execution_id[:8]}, edge {self.edge_index})"

    @property
    def available(self) -> bool:
        return self.backlogged == 0

    def _unblocked(self) -> None:
        self.backlogged -= 1
        if self.backlogged == 0 and self._available is not None:
            if not self._available.done():
                self._available.set_result(None)
            self._available = None

    async def wait_available(self) -> None:
        while self.backlogged:
            if self._available is None:
                self._available = asyncio.get_running_loop().create_future()
            await self._available

    def _released(self) -> None:
        self.unreleased -= 1
        w = self._all_released
        if self.unreleased == 0 and w is not None and not w.done():
            w.set_result(None)

    async def wait_released(self) -> None:
        """Until every consumer has processed the end of this partition (or is gone)."""
        if self.unreleased:
            self._all_released = asyncio.get_running_loop().create_future()
            await self._all_released

    def release_all(self) -> None:
        """The producer is gone: drop everything."""
        for sp in self.subpartitions.values():
            sp.discarding = True
            sp.queue.clear()


class ChannelWriter:
    """Collects one subpartition's elements into buffers of about ``limit`` records."""

    __slots__ = ("count", "limit", "max_records", "pending", "sub", "target_bytes")

    def __init__(self, sub: ResultSubpartition, max_records: int, target_bytes: int) -> None:
        self.sub = sub
        self.pending: list[Any] = []
        self.count = 0
        self.max_records = max_records
        self.limit = max_records
        self.target_bytes = target_bytes

    def add_batch(self, batch: Batch) -> None:
        self.pending.append(batch)
        self.count += len(batch.values)
        if self.count >= self.limit:
            self.flush()

    def add_event(self, event: Any) -> None:
        self.pending.append(event)

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.count = 0
        self.sub.add(compact(pending))
        bpr = self.sub.bytes_per_record
        if bpr:
            self.limit = max(1, min(self.max_records, int(self.target_bytes / bpr)))

    def finish(self) -> None:
        self.pending.append(EOP)
        self.flush()


def compact(elements: list[Any]) -> list[Any]:
    """Merge runs of consecutive batches into one batch each (fewer, larger batches for
    the consumer; the batches given are not modified)."""
    if len(elements) == 1:
        return elements
    out: list[Any] = []
    run: list[Batch] = []
    for el in elements:
        if type(el) is Batch:
            run.append(el)
        else:
            if run:
                out.append(_merge(run))
                run = []
            out.append(el)
    if run:
        out.append(_merge(run))
    return out


def _merge(run: list[Batch]) -> Batch:
    if len(run) == 1:
        return run[0]
    values: list[Any] = []
    any_ts = False
    for b in run:
        values += b.values
        if b.timestamps is not None:
            any_ts = True
    if not any_ts:
        return Batch(values)
    tss: list[int | None] = []
    for b in run:
        if b.timestamps is None:
            tss += [None] * len(b.values)
        else:
            tss += b.timestamps
    return Batch(values, tss)


__all__ = ["END_OF_PARTITION", "ChannelWriter", "ResultPartition", "ResultSubpartition",
           "SubpartitionConsumer", "compact"]
