"""ProducerStateManager: what a partition knows of the idempotent producers writing to it.

An idempotent producer stamps each batch with its producer id, epoch and the sequence
number of its first record; sequences of one producer on one partition are consecutive.
The partition remembers, per producer, the epoch and the last ``BATCH_CACHE`` batches it
appended (their sequence ranges and offsets). A leader uses it to drop a batch it already
has (a retry whose first attempt was appended but not acknowledged: the answer carries the
original offset) and to refuse a gap (OUT_OF_ORDER_SEQUENCE_NUMBER); followers keep it up
to date from what they copy, so a new leader knows the producers at once.

The state is not persisted: it is rebuilt from the batch headers of the log's recent tail
when first needed (``loaded`` False after a start, a truncation or a rebuild window that
fell short). A producer whose state was lost (idle longer than the tail covers) is accepted
at whatever sequence it sends next, so it keeps working; duplicates of batches older than
the window would then not be caught, and producers retry only for the delivery timeout.

Everything here is pure (no I/O); the caller hands in batch headers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from moldau.clients.protocol import ErrorCode
from moldau.clients.records.batch import BatchHeader

SEQ_MAX = 2**31 - 1
BATCH_CACHE = 5  # what Kafka keeps; a producer has at most 5 requests in flight
MAX_PRODUCERS = 10_000  # per partition; the least recently seen go first


def add_seq(seq: int, n: int) -> int:
    """``seq + n`` with Kafka's wrap-around after 2**31 - 1."""
    if seq > SEQ_MAX - n:
        return n - (SEQ_MAX - seq) - 1
    return seq + n


class BatchMeta(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


class ProducerEntry:
    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchMeta] = deque(maxlen=BATCH_CACHE)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find(self, first_seq: int, last_seq: int) -> BatchMeta | None:
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None


class RunCheck(NamedTuple):
    """The verdict on a run of batches: the first ``len(duplicates)`` are already in the
    log (at these base offsets) and are dropped; the rest are to be appended. A non-zero
    ``error`` refuses the whole run."""

    duplicates: list[int]
    error: int
    message: str | None


_OK = RunCheck([], 0, None)


def _last_seq(h: BatchHeader) -> int:
    return add_seq(h.base_sequence, h.record_count - 1)


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.loaded = False

    def clear(self) -> None:
        self.producers.clear()
        self.loaded = False

    def check_run(self, headers: Sequence[BatchHeader]) -> RunCheck:
        """Judge a producer's run of batches before it is appended (see RunCheck).

        Allowed: duplicates of cached batches first, then new batches, each continuing its
        producer's sequence (a producer this partition does not know starts anywhere; a new
        epoch starts at 0)."""
        if all(h.producer_id < 0 for h in headers):
            return _OK
        duplicates: list[int] = []
        # what the earlier new batches of this run will have made of each producer
        pending: dict[int, tuple[int, int]] = {}
        new_seen = False
        for h in headers:
            pid = h.producer_id
            if pid < 0:
                new_seen = True
                continue
            first, last = h.base_sequence, _last_seq(h)
            entry = self.producers.get(pid)
            if pid in pending:
                epoch, prev_last = pending[pid]
            elif entry is not None:
                epoch, prev_last = entry.epoch, entry.last_seq
            else:
                pending[pid] = (h.producer_epoch, last)
                new_seen = True
                continue
            if h.producer_epoch < epoch:
                return RunCheck([], int(ErrorCode.INVALID_PRODUCER_EPOCH),
                                f"producer {pid}: epoch {h.producer_epoch} is older than "
                                f"{epoch}")
            if h.producer_epoch > epoch:
                if first != 0:
                    return RunCheck([], int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER),
                                    f"producer {pid}: a new epoch {h.producer_epoch} must "
                                    f"start at sequence 0, not {first}")
                pending[pid] = (h.producer_epoch, last)
                new_seen = True
                continue
            if pid not in pending and entry is not None:
                dup = entry.find(first, last)
                if dup is not None:
                    if new_seen:
                        return RunCheck([], int(ErrorCode.DUPLICATE_SEQUENCE_NUMBER),
                                        f"producer {pid}: batch {first}..{last} repeats an "
                                        "appended one after new batches in the same request")
                    duplicates.append(dup.base_offset)
                    continue
            if first != add_seq(prev_last, 1):
                return RunCheck([], int(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER),
                                f"producer {pid}: expected sequence {add_seq(prev_last, 1)}, "
                                f"got {first}")
            pending[pid] = (epoch, last)
            new_seen = True
        return RunCheck(duplicates, 0, None)

    def on_append(self, headers: Iterable[tuple[BatchHeader, int]]) -> None:
        """Record appended batches: ``(header, base_offset)`` pairs (the header's own base
        offset may predate offset assignment)."""
        producers = self.producers
        for h, base in headers:
            pid = h.producer_id
            if pid < 0:
                continue
            entry = producers.pop(pid, None)  # re-inserted last: dict order is recency
            if entry is None or h.producer_epoch > entry.epoch:
                entry = ProducerEntry(h.producer_epoch)
            producers[pid] = entry
            entry.batches.append(BatchMeta(h.base_sequence, _last_seq(h), base,
                                           base + h.last_offset_delta))
        while len(producers) > MAX_PRODUCERS:
            del producers[next(iter(producers))]

    def rebuild(self, headers: Iterable[BatchHeader]) -> None:
        """Replace the state by replaying the headers of the log's recent batches."""
        self.producers.clear()
        self.on_append((h, h.base_offset) for h in headers)
        self.loaded = True
