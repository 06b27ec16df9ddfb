"""The producer: buffers records per partition into batches and ships them to the leaders.

``send`` appends a record to its partition's open batch in the ``RecordAccumulator`` and
returns a future at once; a sender task drains batches that are full, have lingered
``linger_ms``, or are being flushed, groups them by the partition leader into one
ProduceRequest per broker, and resolves each record's future from the answer.

Ordering invariant: a partition has at most one ProduceRequest in flight (it may carry
several batches of that partition, in order). A batch that fails with a retriable error goes
back to the front of its partition's queue before anything newer of that partition is sent,
so retries never reorder the records of one partition. Different partitions, on the same or
other brokers, proceed independently, up to ``max_in_flight_requests_per_connection``
requests per broker.

Memory invariant: the bytes of records buffered or in flight stay under ``buffer_memory``;
``send`` waits up to ``max_block_ms`` for room, then raises ``BufferFullError``.

Idempotence (``enable_idempotence``, on by default with ``acks="all"`` as in Kafka 3): the
producer gets a producer id (InitProducerId) and stamps each batch, the first time it is
sent, with the id and the sequence number of its first record (consecutive per partition);
a retry resends the same bytes, so a leader that already appended the batch answers with
the original offsets instead of appending it twice, and after a failover the new leader,
which copied the producer state with the log, does the same. A batch that fails for good
after a sequence was given to it leaves a gap: if the broker surely did not append it, the
partition's sequence is wound back; if it may have (a timeout), the producer takes a new
producer id before it sends anything else (records retried across that switch could then
be written twice: Kafka bumps an epoch there instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import add, itemgetter
from typing import Any

from moldau.clients.cluster import ClusterClient
from moldau.clients.partitioner import DefaultPartitioner, Partitioner, key_partition
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from moldau.clients.records import Compression, build_batch, encode_values
from moldau.clients.records.batch import HEADER_SIZE, compute_crc
from moldau.clients.types import RecordMetadata

log = logging.getLogger(__name__)

_now = time.monotonic
_wall_ns = time.time_ns
_tuple_new = tuple.__new__
_delta = itemgetter(1)
RECORD_OVERHEAD = 8  # what a record costs in a batch beyond its key, value and headers
SEQ_MAX = 2**31 - 1
_PRODUCER_FIELDS = struct.Struct(">qhi")  # producer id, epoch, base sequence at byte 43
_CRC = struct.Struct(">I")
# errors after which the broker may or may not have appended the batch
_AMBIGUOUS = frozenset({ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NETWORK_EXCEPTION,
                        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.UNKNOWN_SERVER_ERROR})


def stamp_producer(data: bytes, producer_id: int, epoch: int, sequence: int) -> bytes:
    """The batch with its producer id, epoch and base sequence set (they are inside the
    CRC, so it is recomputed)."""
    buf = bytearray(data)
    _PRODUCER_FIELDS.pack_into(buf, 43, producer_id, epoch, sequence)
    _CRC.pack_into(buf, 17, compute_crc(buf, 0, len(buf)))
    return bytes(buf)


def add_seq(seq: int, n: int) -> int:
    """``seq + n`` wrapping after 2**31 - 1, as the broker counts."""
    if seq > SEQ_MAX - n:
        return n - (SEQ_MAX - seq) - 1
    return seq + n


class BufferFullError(MoldauError):
    """``send`` waited ``max_block_ms`` for buffer space that never freed up."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.REQUEST_TIMED_OUT, message)


def parse_acks(acks: int | str) -> int:
    """0, 1, -1 or "all" (same as -1)."""
    if isinstance(acks, str):
        a = acks.strip().lower()
        if a == "all":
            return -1
        try:
            acks = int(a)
        except ValueError:
            raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}") from None
    if acks not in (0, 1, -1):
        raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}")
    return acks


class ProducerBatch:
    """Records for one partition, sent and acknowledged together.

    Either built record by record (``records``, one future each) or, for the bulk path,
    encoded up front (``encoded``, a single future for the whole batch).
    """

    __slots__ = ("attempts", "base_ts", "bulk_future", "closed", "count", "created",
                 "encoded", "futures", "last_error", "max_ts", "maybe_appended", "records",
                 "retry_at", "sequence", "size", "tp", "waiter")

    def __init__(self, tp: tuple[str, int], created: float) -> None:
        self.tp = tp
        self.created = created
        self.records: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[RecordMetadata]] = []
        self.base_ts = 0
        self.max_ts = 0
        self.size = HEADER_SIZE
        self.count = 0
        self.closed = False
        self.encoded: bytes | None = None
        self.bulk_future: asyncio.Future[RecordMetadata] | None = None
        self.attempts = 0
        self.retry_at = 0.0
        self.last_error: MoldauError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sequence = -1  # idempotence: the base sequence once stamped
        self.maybe_appended = False  # an attempt ended without knowing whether it landed

    def append(self, timestamp: int, key: bytes | None, value: bytes | None,
               headers: Sequence[tuple[str, bytes]] | None, size: int,
               future: asyncio.Future[RecordMetadata]) -> None:
        n = self.count
        if n == 0:
            self.base_ts = self.max_ts = timestamp
        elif timestamp > self.max_ts:
            self.max_ts = timestamp
        self.records.append((n, timestamp - self.base_ts, key, value, headers or None))
        self.futures.append(future)
        self.count = n + 1
        self.size += size

    def encode(self, compression: Compression) -> bytes:
        if self.encoded is None:
            self.encoded = build_batch(self.records, base_timestamp=self.base_ts,
                                       max_timestamp=self.max_ts, compression=compression)
        return self.encoded

    def complete(self, base_offset: int, log_append_time: int) -> None:
        """Resolve every future: record i of the batch got offset ``base_offset + i``
        (-1 for all when acks=0) and its own timestamp, or ``log_append_time`` if >= 0."""
        topic, partition = self.tp
        if self.bulk_future is not None:
            if not self.bulk_future.done():
                self.bulk_future.set_result(RecordMetadata(
                    topic, partition, base_offset,
                    log_append_time if log_append_time >= 0 else self.base_ts))
            self._finish()
            return
        n = self.count
        offsets: Iterable[int] = (repeat(-1, n) if base_offset < 0
                                  else range(base_offset, base_offset + n))
        timestamps: Iterable[int] = (
            repeat(log_append_time, n) if log_append_time >= 0
            else map(add, repeat(self.base_ts, n), map(_delta, self.records)))
        # built in C (map/zip) rather than by calling the NamedTuple per record: this runs
        # once per produced record
        metas = map(_tuple_new, repeat(RecordMetadata, n),
                    zip(repeat(topic, n), repeat(partition, n), offsets, timestamps,
                        strict=True))
        for fut, meta in zip(self.futures, metas, strict=True):
            try:
                fut.set_result(meta)
            except asyncio.InvalidStateError:
                pass  # the caller cancelled it
        self._finish()

    def fail(self, exc: BaseException) -> None:
        if self.bulk_future is not None:
            if not self.bulk_future.done():
                self.bulk_future.set_exception(exc)
        else:
            for fut in self.futures:
                if not fut.done():
                    fut.set_exception(exc)
        self._finish()

    def _finish(self) -> None:
        self.records = []  # the payload is no longer needed; free it early
        self.encoded = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class RecordAccumulator:
    """Per-partition queues of batches (pure: no I/O, no tasks; the clock is passed in).

    The last batch of a queue may be open (still growing, listed in ``open``); every other
    batch is closed. A partition is ready to send when its first batch is closed, has
    lingered ``linger`` seconds, or a flush is in progress, and its retry backoff is over.
    """

    def __init__(self, batch_size: int = 16384, linger_ms: float = 5,
                 compression: Compression = Compression.NONE) -> None:
        self.batch_size = batch_size
        self.linger = linger_ms / 1000
        self.compression = compression
        self.queues: dict[tuple[str, int], deque[ProducerBatch]] = {}
        self.open: dict[tuple[str, int], ProducerBatch] = {}
        self.incomplete: set[ProducerBatch] = set()
        self.flushing = 0

    def fits(self, batch: ProducerBatch, size: int) -> bool:
        return batch.count == 0 or batch.size + size <= self.batch_size

    def close(self, tp: tuple[str, int]) -> None:
        """Close ``tp``'s open batch: it is sent as soon as the partition may send."""
        b = self.open.pop(tp, None)
        if b is not None:
            b.closed = True

    def new_batch(self, tp: tuple[str, int], now: float) -> ProducerBatch:
        """Close ``tp``'s open batch (if any) and open a new one at the end of its queue."""
        old = self.open.get(tp)
        if old is not None:
            old.closed = True
        b = ProducerBatch(tp, now)
        self.open[tp] = b
        q = self.queues.get(tp)
        if q is None:
            q = self.queues[tp] = deque()
        q.append(b)
        self.incomplete.add(b)
        return b

    def append(self, tp: tuple[str, int], timestamp: int, key: bytes | None,
               value: bytes | None, headers: Sequence[tuple[str, bytes]] | None, size: int,
               future: asyncio.Future[RecordMetadata], now: float) -> tuple[ProducerBatch, bool]:
        """Add a record; return its batch and whether a new batch had to be opened."""
        b = self.open.get(tp)
        created = False
        if b is None or (b.count and b.size + size > self.batch_size):
            b = self.new_batch(tp, now)
            created = True
        b.append(timestamp, key, value, headers, size, future)
        return b, created

    def append_encoded(self, tp: tuple[str, int], encoded: bytes, count: int, timestamp: int,
                       future: asyncio.Future[RecordMetadata], now: float) -> ProducerBatch:
        """Queue an already encoded batch after everything buffered for ``tp``."""
        old = self.open.pop(tp, None)
        if old is not None:
            old.closed = True
        b = ProducerBatch(tp, now)
        b.encoded = encoded
        b.count = count
        b.size = len(encoded)
        b.base_ts = b.max_ts = timestamp
        b.bulk_future = future
        b.closed = True
        q = self.queues.get(tp)
        if q is None:
            q = self.queues[tp] = deque()
        q.append(b)
        self.incomplete.add(b)
        return b

    def is_ready(self, q: deque[ProducerBatch], now: float, force: bool = False) -> bool:
        """Whether the partition of queue ``q`` may send now; ``force`` skips the linger
        (buffer pressure) but never a retry backoff."""
        first = q[0]
        return first.retry_at <= now and (
            force or first.closed or self.flushing > 0 or len(q) > 1
            or now - first.created >= self.linger)

    def next_ready_time(self, q: deque[ProducerBatch], now: float) -> float:
        """When a queue that is not ready now may become ready without a wakeup."""
        first = q[0]
        if first.retry_at > now:
            return first.retry_at
        return first.created + self.linger

    def drain(self, tp: tuple[str, int], max_bytes: int,
              must_take_one: bool) -> list[ProducerBatch]:
        """Take batches from the front of ``tp``'s queue, in order, while their encoded
        sizes stay within ``max_bytes`` (at least one if ``must_take_one``)."""
        q = self.queues.get(tp)
        out: list[ProducerBatch] = []
        if not q:
            return out
        total = 0
        while q:
            b = q[0]
            size = len(b.encode(self.compression))
            if total + size > max_bytes and (out or not must_take_one):
                break
            q.popleft()
            if self.open.get(tp) is b:
                del self.open[tp]
                b.closed = True
            out.append(b)
            total += size
        if not q:
            del self.queues[tp]
        return out

    def reenqueue(self, tp: tuple[str, int], batches: list[ProducerBatch],
                  retry_at: float) -> None:
        """Put failed batches back at the front of their queue, in their original order."""
        q = self.queues.get(tp)
        if q is None:
            q = self.queues[tp] = deque()
        for b in reversed(batches):
            b.retry_at = retry_at
            b.closed = True
            q.appendleft(b)

    def expire(self, tp: tuple[str, int], deadline: float) -> list[ProducerBatch]:
        """Remove and return the front batches of ``tp`` created before ``deadline``."""
        q = self.queues.get(tp)
        out: list[ProducerBatch] = []
        while q and q[0].created < deadline:
            b = q.popleft()
            if self.open.get(tp) is b:
                del self.open[tp]
            out.append(b)
        if q is not None and not q:
            del self.queues[tp]
        return out

    def done(self, b: ProducerBatch) -> None:
        self.incomplete.discard(b)


class Producer:
    """Asynchronous producer. ``await start()`` (or ``async with``) before sending."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        acks: int | str = 1,
        linger_ms: int = 5,
        batch_size: int = 16384,
        compression_type: str = "none",
        max_in_flight_requests_per_connection: int = 5,
        retries: int = 2**31 - 1,
        enable_idempotence: bool | str | None = None,
        delivery_timeout_ms: int = 120000,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60000,
        max_request_size: int = 1048576,
        metadata_max_age_ms: int = 300000,
        client_id: str = "moldau-producer",
        partitioner: Partitioner | None = None,
        ssl: Any = None,
    ) -> None:
        self.acks = parse_acks(acks)
        if batch_size < 1 or buffer_memory < 1 or max_request_size < 1:
            raise ValueError("batch_size, buffer_memory and max_request_size must be positive")
        self.idempotent = _idempotence(enable_idempotence, self.acks)
        if self.idempotent:
            if self.acks != -1:
                raise ValueError("enable_idempotence needs acks='all'")
            if retries < 1:
                raise ValueError("enable_idempotence needs retries > 0")
            if max_in_flight_requests_per_connection > 5:
                raise ValueError("enable_idempotence needs "
                                 "max_in_flight_requests_per_connection <= 5")
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}
        self._reset_needed = False
        self._resetting: asyncio.Task[None] | None = None
        self._compression = Compression.parse(compression_type)
        self._acc = RecordAccumulator(batch_size, linger_ms, self._compression)
        self._max_in_flight = max(1, max_in_flight_requests_per_connection)
        self._retries = retries
        self._delivery_timeout = delivery_timeout_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self._retry_backoff = retry_backoff_ms / 1000
        self._buffer_memory = buffer_memory
        self._max_block = max_block_ms / 1000
        self._max_request_size = max_request_size
        self._partitioner: Partitioner = partitioner or DefaultPartitioner()
        # the default partitioner's sticky table, read directly on the hot path
        self._sticky: dict[str, int] | None = (
            self._partitioner.sticky if isinstance(self._partitioner, DefaultPartitioner)
            else None)
        self._open = self._acc.open
        self._batch_size = batch_size
        self._max_record_size = min(max_request_size - HEADER_SIZE, buffer_memory)
        self._yield_soon = False
        self._accepting = False
        self._create_future: Any = None
        self._cluster = ClusterClient(
            bootstrap_servers, client_id=client_id, request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=metadata_max_age_ms, retry_backoff_ms=retry_backoff_ms,
            ssl=ssl)
        self._topic_info: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._topic_waits: dict[str, asyncio.Task[tuple[int, tuple[int, ...]]]] = {}
        self._buffered = 0
        self._buffer_waiters: deque[asyncio.Future[None]] = deque()
        self._muted: set[tuple[str, int]] = set()
        self._in_flight: dict[int, int] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def cluster(self) -> ClusterClient:
        return self._cluster

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        await self._cluster.start()
        if self.idempotent:
            try:
                await self._init_producer_id()
            except BaseException:
                await self._cluster.stop()
                raise
        self._cluster.add_listener(self._on_metadata)
        self._on_metadata(self._cluster)
        self._create_future = self._loop.create_future
        self._sender = self._loop.create_task(self._run_sender(), name="moldau-producer-sender")
        self._started = True
        self._accepting = True

    async def stop(self, timeout: float | None = None) -> None:
        """Send everything buffered (waiting up to ``timeout`` seconds), then close."""
        if self._closed:
            return
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.flush()
        self._closed = True
        self._accepting = False
        while self._buffer_waiters:  # senders blocked on a full buffer give up
            w = self._buffer_waiters.popleft()
            if not w.done():
                w.set_result(None)
        self._cluster.remove_listener(self._on_metadata)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for t in list(self._requests):
            t.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._resetting is not None:
            self._resetting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resetting
        for topic_wait in self._topic_waits.values():
            topic_wait.cancel()
        err = MoldauError(ErrorCode.NETWORK_EXCEPTION, "producer closed before delivery")
        for b in list(self._acc.incomplete):
            b.fail(err)
        self._acc.incomplete.clear()
        await self._cluster.stop()

    close = stop

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_metadata(self, cluster: ClusterClient) -> None:
        self._topic_info = {name: (len(t.partitions), t.available)
                            for name, t in cluster.topics.items() if t.partitions}

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Buffer a record; the returned future resolves to its metadata once acknowledged
        (or fails with MoldauError). Waits only for metadata of a new topic or for buffer
        space."""
        # the hot path: plain attribute and dict work only, no per-record calls that can
        # be avoided (the accumulator's append is inlined here)
        if not self._accepting:
            self._not_accepting()
        info = self._topic_info.get(topic)
        if info is None or (partition is not None and partition >= info[0]):
            info = await self._wait_on_metadata(topic, partition)
        size = RECORD_OVERHEAD
        if value is not None:
            size += len(value)
        if key is not None:
            size += len(key)
        if headers:
            for h in headers:
                size += len(h[0]) + len(h[1]) + 4
        else:
            headers = None
        if size > self._max_record_size:
            self._too_large(size)
        buffered = self._buffered + size
        if buffered > self._buffer_memory:
            await self._reserve(size)
        else:
            self._buffered = buffered
        if timestamp_ms is None:
            timestamp_ms = _wall_ns() // 1_000_000
        open_batches = self._open
        b = None
        if partition is None:
            if key is None:
                sticky = self._sticky
                partition = sticky.get(topic) if sticky is not None else None
                if partition is None or partition >= info[0]:
                    partition = self._partitioner.partition(topic, None, info[0], info[1])
                b = open_batches.get((topic, partition))
                if b is None or (b.count and b.size + size > self._batch_size):
                    partition = self._next_sticky(topic, partition, b is not None, info)
                    b = None
            elif self._sticky is not None:  # the default partitioner: murmur2 of the key
                partition = key_partition(key, info[0])
            else:
                partition = self._partitioner.partition(topic, key, info[0], info[1])
        if b is None:
            b = open_batches.get((topic, partition))
            if b is None or (b.count and b.size + size > self._batch_size):
                b = self._open_batch((topic, partition), timestamp_ms)
        fut: asyncio.Future[RecordMetadata] = self._create_future()
        n = b.count
        # a tuple of untracked objects drops out of the garbage collector's view
        b.records.append((n, timestamp_ms - b.base_ts, key, value, headers))
        b.futures.append(fut)
        b.count = n + 1
        b.size += size
        if timestamp_ms > b.max_ts:
            b.max_ts = timestamp_ms
        if self._yield_soon:
            # a batch filled up: let the sender ship it before the caller goes on
            self._yield_soon = False
            await asyncio.sleep(0)
        return fut

    def _not_accepting(self) -> None:
        raise RuntimeError("producer is closed" if self._closed else
                           "producer not started: await start() first")

    def _too_large(self, size: int) -> None:
        raise MoldauError(ErrorCode.MESSAGE_TOO_LARGE,
                          f"record of {size} bytes exceeds max_request_size "
                          f"{self._max_request_size} or buffer_memory {self._buffer_memory}")

    def _next_sticky(self, topic: str, partition: int, close_full: bool,
                     info: tuple[int, tuple[int, ...]]) -> int:
        """A keyless record needs a new batch on its sticky partition: ship the full one and
        let the partitioner move on (Kafka's onNewBatch)."""
        if close_full:
            self._acc.close((topic, partition))
            self._yield_soon = True
        self._partitioner.on_new_batch(topic, partition, info[0], info[1])
        return self._partitioner.partition(topic, None, info[0], info[1])

    def _open_batch(self, tp: tuple[str, int], timestamp: int) -> ProducerBatch:
        acc = self._acc
        b = acc.new_batch(tp, _now())
        b.base_ts = b.max_ts = timestamp
        assert self._wakeup is not None
        self._wakeup.set()
        if len(acc.queues[tp]) > 1:
            self._yield_soon = True  # the previous batch of tp is full
        return b

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> RecordMetadata:
        fut = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await fut

    async def enqueue_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        partition: int | None = None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """``send_batch`` without waiting for the answer: returns once the batch is queued,
        with a future for the first record's metadata. Lets one coroutine keep several
        bulk batches in flight."""
        if self._closed or not self._started:
            raise RuntimeError("producer is closed" if self._closed else
                               "producer not started: await start() first")
        if not values:
            raise ValueError("send_batch needs at least one value")
        info = self._topic_info.get(topic)
        if info is None or (partition is not None and partition >= info[0]):
            info = await self._wait_on_metadata(topic, partition)
        if timestamp_ms is None:
            timestamp_ms = _wall_ns() // 1_000_000
        encoded = encode_values(values, timestamp=timestamp_ms, key=key,
                                compression=self._compression)
        size = len(encoded)
        if size > self._max_request_size or size > self._buffer_memory:
            raise MoldauError(ErrorCode.MESSAGE_TOO_LARGE,
                              f"batch of {size} bytes exceeds max_request_size "
                              f"{self._max_request_size} or buffer_memory {self._buffer_memory}")
        if self._buffered + size > self._buffer_memory:
            await self._reserve(size)
        else:
            self._buffered += size
        if partition is None:
            if key is not None:
                partition = key_partition(key, info[0])
            else:
                partition = self._partitioner.partition(topic, None, info[0], info[1])
                self._partitioner.on_new_batch(topic, partition, info[0], info[1])
        assert self._loop is not None and self._wakeup is not None
        fut: asyncio.Future[RecordMetadata] = self._loop.create_future()
        self._acc.append_encoded((topic, partition), encoded, len(values), timestamp_ms, fut,
                                 _now())
        self._wakeup.set()
        return fut

    async def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        partition: int | None = None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """The bulk path: encode ``values`` as one batch now (all with ``key`` and one
        timestamp, no headers), send it after what is buffered for its partition, and return
        the first record's metadata once acknowledged (the others follow consecutively)."""
        fut = await self.enqueue_batch(topic, values, partition=partition, key=key,
                                       timestamp_ms=timestamp_ms)
        return await fut

    async def flush(self) -> None:
        """Send everything buffered now and wait until each record is acknowledged or
        failed."""
        acc = self._acc
        if not acc.incomplete:
            return
        loop = asyncio.get_running_loop()
        waiters = []
        for b in acc.incomplete:
            if b.waiter is None:
                b.waiter = loop.create_future()
            waiters.append(b.waiter)
        acc.flushing += 1
        try:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.gather(*waiters)
        finally:
            acc.flushing -= 1

    async def partitions_for(self, topic: str) -> list[int]:
        info = self._topic_info.get(topic)
        if info is None:
            info = await self._wait_on_metadata(topic, None)
        return list(range(info[0]))

    # ------------------------------------------------------------------ waiting

    async def _wait_on_metadata(self, topic: str,
                                partition: int | None) -> tuple[int, tuple[int, ...]]:
        task = self._topic_waits.get(topic)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch_topic(topic))
            self._topic_waits[topic] = task
            task.add_done_callback(lambda _t: self._topic_waits.pop(topic, None))
        info = await asyncio.shield(task)
        if partition is not None and not 0 <= partition < info[0]:
            raise MoldauError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                              f"partition {partition} of topic {topic!r} does not exist "
                              f"(it has {info[0]})")
        return info

    async def _fetch_topic(self, topic: str) -> tuple[int, tuple[int, ...]]:
        cluster = self._cluster
        cluster.track([topic])
        limit = min(self._max_block, self._delivery_timeout)
        deadline = _now() + limit
        backoff = self._retry_backoff
        last: str = ""
        while True:
            try:
                await cluster.refresh([topic], allow_auto_topic_creation=True)
            except MoldauError as e:
                if not e.retriable:
                    raise
                last = f": {e}"
            info = self._topic_info.get(topic)
            if info is not None:
                return info
            err = cluster.topic_errors.get(topic)
            if err is not None and not err.retriable:
                raise MoldauError(err, f"topic {topic!r}")
            remaining = deadline - _now()
            if remaining <= 0:
                raise MoldauError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                  f"topic {topic!r} not present in metadata after "
                                  f"{int(limit * 1000)} ms{last}")
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 1.0)

    async def _reserve(self, size: int) -> None:
        """Wait for ``size`` bytes of buffer space, up to ``max_block_ms``."""
        deadline = _now() + self._max_block
        loop = asyncio.get_running_loop()
        while self._buffered + size > self._buffer_memory and self._buffered > 0:
            if self._closed:
                self._not_accepting()
            remaining = deadline - _now()
            if remaining <= 0:
                raise BufferFullError(
                    f"no room for {size} bytes in buffer_memory ({self._buffer_memory}, "
                    f"{self._buffered} in use) within max_block_ms "
                    f"({int(self._max_block * 1000)})")
            fut: asyncio.Future[None] = loop.create_future()
            self._buffer_waiters.append(fut)
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._buffer_waiters.remove(fut)
        self._buffered += size

    def _release(self, b: ProducerBatch) -> None:
        self._acc.done(b)
        self._buffered -= b.size
        while self._buffer_waiters:
            fut = self._buffer_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------ sender

    async def _run_sender(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            try:
                wait = self._run_once(_now())
            except Exception:
                # a bug here must not leave futures hanging forever
                log.exception("producer sender failed")
                err = MoldauError(ErrorCode.UNKNOWN_SERVER_ERROR, "producer sender failed")
                for b in list(self._acc.incomplete):
                    if b.tp not in self._muted:
                        self._acc.queues.pop(b.tp, None)
                        self._acc.open.pop(b.tp, None)
                        b.fail(err)
                        self._release(b)
                wait = self._retry_backoff
            wakeup.clear()
            if wait is None:
                await wakeup.wait()
            elif wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await wakeup.wait()

    def _run_once(self, now: float) -> float | None:
        """Send what is ready; return seconds until something may become ready (None: only
        a wakeup can change anything)."""
        acc = self._acc
        cluster = self._cluster
        muted = self._muted
        next_at: float | None = None
        by_node: dict[int, list[tuple[str, int]]] = {}
        need_metadata = False
        expired_before = now - self._delivery_timeout
        force = bool(self._buffer_waiters)
        for tp, q in list(acc.queues.items()):
            if tp in muted:
                continue
            if q[0].created < expired_before:
                expired = acc.expire(tp, expired_before)
                for b in expired:
                    self._fail_batch(b, self._expiry_error(b, now))
                self._sequence_lost(tp, expired)
                if tp not in acc.queues:
                    continue
            if not acc.is_ready(q, now, force):
                t = acc.next_ready_time(q, now)
                if next_at is None or t < next_at:
                    next_at = t
                continue
            leader = cluster.leader_for(tp)
            if leader is None:
                need_metadata = True
                if q[0].last_error is None:
                    q[0].last_error = MoldauError(
                        ErrorCode.LEADER_NOT_AVAILABLE if tp[0] in cluster.topics
                        else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"no leader known for {tp[0]}-{tp[1]}")
                t = now + self._retry_backoff
                if next_at is None or t < next_at:
                    next_at = t
                continue
            nodes = by_node.get(leader)
            if nodes is None:
                by_node[leader] = [tp]
            else:
                nodes.append(tp)
        if need_metadata:
            cluster.request_update()
        if self._reset_needed:
            # a new producer id first; sending resumes once it is there
            if self._resetting is None and not any(self._in_flight.values()):
                assert self._loop is not None
                self._resetting = self._loop.create_task(self._reset_producer_id())
            return next_at if next_at is None else max(0.0, next_at - now) + 0.0005
        for node, tps in by_node.items():
            if self._in_flight.get(node, 0) >= self._max_in_flight:
                continue  # a finishing request wakes the sender
            self._send_to(node, tps)
        if next_at is None:
            return None
        return max(0.0, next_at - now) + 0.0005

    def _send_to(self, node: int, tps: list[tuple[str, int]]) -> None:
        """Drain the ready partitions ``tps`` led by ``node`` into as many ProduceRequests
        as ``max_request_size`` needs and the in-flight limit allows."""
        acc = self._acc
        i = 0
        while i < len(tps) and self._in_flight.get(node, 0) < self._max_in_flight:
            budget = self._max_request_size
            topics: dict[str, list[list[Any]]] = {}
            sent: dict[tuple[str, int], list[ProducerBatch]] = {}
            while i < len(tps):
                tp = tps[i]
                batches = acc.drain(tp, budget, must_take_one=not sent)
                if not batches:
                    break  # does not fit: the next request takes it
                i += 1
                if self.idempotent:
                    self._stamp(tp, batches)
                data = batches[0].encoded if len(batches) == 1 else b"".join(
                    b.encoded for b in batches)  # type: ignore[misc]
                assert data is not None
                budget -= len(data)
                parts = topics.get(tp[0])
                if parts is None:
                    parts = topics[tp[0]] = []
                parts.append([tp[1], data])
                sent[tp] = batches
            if not sent:
                return
            req = ProduceRequest(acks=self.acks, timeout_ms=self._request_timeout_ms,
                                 topics=[[t, p] for t, p in topics.items()])
            self._in_flight[node] = self._in_flight.get(node, 0) + 1
            if self.acks != 0:
                self._muted.update(sent)
            assert self._loop is not None
            task = self._loop.create_task(self._produce(node, req, sent))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _produce(self, node: int, req: ProduceRequest,
                       sent: dict[tuple[str, int], list[ProducerBatch]]) -> None:
        try:
            if self.acks == 0:
                await self._cluster.send_only_to(node, req)
                for batches in sent.values():
                    for b in batches:
                        b.complete(-1, -1)
                        self._release(b)
                return
            resp = await self._cluster.request_to(
                node, req, timeout=self._request_timeout_ms / 1000 + 5)
            assert isinstance(resp, ProduceResponse)
            self._handle_response(resp, sent)
        except MoldauError as e:
            now = _now()
            for tp, batches in sent.items():
                self._partition_failed(tp, batches, e, now)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("produce request to broker %s failed", node)
            err = MoldauError(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(e).__name__}: {e}")
            for batches in sent.values():
                for b in batches:
                    self._fail_batch(b, err)
        finally:
            self._in_flight[node] -= 1
            self._muted.difference_update(sent)
            if self._wakeup is not None:
                self._wakeup.set()

    def _handle_response(self, resp: ProduceResponse,
                         sent: dict[tuple[str, int], list[ProducerBatch]]) -> None:
        now = _now()
        answered = set()
        for topic, parts in resp.topics:
            for part in parts:
                partition, err = part[0], part[1]
                tp = (topic, partition)
                batches = sent.get(tp)
                if batches is None or tp in answered:
                    continue
                answered.add(tp)
                if err:
                    msg = part[5] if len(part) > 5 and part[5] else ""
                    self._partition_failed(tp, batches, MoldauError(err, msg), now)
                    continue
                offset = part[2]
                log_append_time = part[3] if part[3] is not None else -1
                # a retry the leader partly had already: each batch's own base offset
                per_batch = part[6] if len(part) > 6 and part[6] else None
                for i, b in enumerate(batches):
                    if per_batch is not None and i < len(per_batch):
                        offset = per_batch[i]
                    b.complete(offset, log_append_time)
                    offset += b.count
                    self._release(b)
        for tp, batches in sent.items():
            if tp not in answered:
                self._partition_failed(tp, batches, MoldauError(
                    ErrorCode.NETWORK_EXCEPTION, "partition missing from the produce answer"),
                    now)

    def _partition_failed(self, tp: tuple[str, int], batches: list[ProducerBatch],
                          err: MoldauError, now: float) -> None:
        if err.code in _AMBIGUOUS:
            for b in batches:
                b.maybe_appended = True
        if (self.idempotent and err.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
                and not self._closed):
            # the leader lost this producer's earlier batches (an unclean election): start
            # over under a new producer id and send these again
            log.warning("producer %d: %s on %s-%d; taking a new producer id",
                        self.producer_id, err.message, tp[0], tp[1])
            self._reset_needed = True
            for b in batches:
                b.attempts += 1
                b.last_error = err
            self._acc.reenqueue(tp, batches, now + self._retry_backoff)
            return
        if not err.retriable or self._closed:
            for b in batches:
                self._fail_batch(b, err)
            self._sequence_lost(tp, batches)
            return
        if err.code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NETWORK_EXCEPTION,
                        ErrorCode.REQUEST_TIMED_OUT, ErrorCode.FENCED_LEADER_EPOCH,
                        ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.KAFKA_STORAGE_ERROR):
            self._cluster.request_update()
        retry: list[ProducerBatch] = []
        failed: list[ProducerBatch] = []
        for b in batches:
            b.attempts += 1
            b.last_error = err
            if b.attempts > self._retries:
                self._fail_batch(b, err)
                failed.append(b)
            elif now - b.created >= self._delivery_timeout:
                self._fail_batch(b, self._expiry_error(b, now))
                failed.append(b)
            else:
                retry.append(b)
        if failed:
            # what follows a failed batch would leave a gap: send it again from scratch
            for b in retry:
                b.sequence = -1
            self._sequence_lost(tp, failed + retry)
        if retry:
            self._acc.reenqueue(tp, retry, now + self._retry_backoff)

    def _expiry_error(self, b: ProducerBatch, now: float) -> MoldauError:
        msg = (f"expiring {b.count} record(s) for {b.tp[0]}-{b.tp[1]}: "
               f"{int((now - b.created) * 1000)} ms has passed since batch creation")
        if b.last_error is not None:
            return MoldauError(b.last_error.code, f"{msg}; last error: {b.last_error.message}")
        return MoldauError(ErrorCode.REQUEST_TIMED_OUT, msg)

    def _fail_batch(self, b: ProducerBatch, err: MoldauError) -> None:
        b.fail(err)
        self._release(b)

    # ------------------------------------------------------------------ idempotence

    def _stamp(self, tp: tuple[str, int], batches: list[ProducerBatch]) -> None:
        """Give never-sent batches the partition's next sequence numbers."""
        seqs = self._sequences
        for b in batches:
            if b.sequence >= 0:
                continue
            seq = seqs.get(tp, 0)
            assert b.encoded is not None
            b.encoded = stamp_producer(b.encoded, self.producer_id, self.producer_epoch, seq)
            b.sequence = seq
            seqs[tp] = add_seq(seq, b.count)

    def _sequence_lost(self, tp: tuple[str, int], batches: list[ProducerBatch]) -> None:
        """``batches`` of ``tp`` failed for good (or go back unsent): keep the partition's
        sequence without a gap."""
        if not self.idempotent:
            return
        stamped = [b for b in batches if b.sequence >= 0]
        if not stamped:
            return
        if any(b.maybe_appended for b in stamped):
            self._reset_needed = True
            return
        # the broker surely has none of them: the queued batches after them (never sent,
        # or sent in the same failed request) take their sequences
        self._sequences[tp] = min(b.sequence for b in stamped)
        for b in self._acc.queues.get(tp, ()):
            b.sequence = -1
        for b in batches:
            b.sequence = -1

    async def _init_producer_id(self) -> None:
        deadline = _now() + self._max_block
        backoff = self._retry_backoff
        while True:
            try:
                resp = await self._cluster.request_any(InitProducerIdRequest())
                assert isinstance(resp, InitProducerIdResponse)
                if resp.error_code == 0:
                    self.producer_id = resp.producer_id
                    self.producer_epoch = resp.producer_epoch
                    log.debug("producer id %d", self.producer_id)
                    return
                err = MoldauError(resp.error_code, resp.error_message or "InitProducerId")
            except MoldauError as e:
                err = e
            if not err.retriable or _now() >= deadline:
                raise MoldauError(err.code, f"cannot get a producer id: {err.message}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _reset_producer_id(self) -> None:
        """Take a new producer id and restart every partition's sequence at 0."""
        try:
            while not self._closed:
                try:
                    await self._init_producer_id()
                    break
                except MoldauError as e:
                    log.warning("producer: %s; retrying", e)
                    await asyncio.sleep(self._retry_backoff)
            self._sequences.clear()
            for q in self._acc.queues.values():
                for b in q:
                    b.sequence = -1
                    b.maybe_appended = False
            self._reset_needed = False
        finally:
            self._resetting = None
            if self._wakeup is not None:
                self._wakeup.set()


def _idempotence(value: bool | str | None, acks: int) -> bool:
    """Kafka 3's default: idempotent when acks=all unless turned off."""
    if value is None:
        return acks == -1
    if isinstance(value, str):
        v = value.strip().lower()
        if v not in ("true", "false"):
            raise ValueError(f"enable_idempotence must be true or false, not {value!r}")
        return v == "true"
    return bool(value)
