"""The consumer: fetches assigned partitions from their leaders and hands out records in
offset order per partition.

A fetcher task keeps one long-poll FetchRequest in flight per leader broker, covering that
broker's assigned partitions, and fetches ahead: a partition is fetched again while less
than ``max_partition_fetch_bytes`` of it waits undelivered, so the next records are usually
there when ``poll`` is called. Answers are kept as raw batches and decoded when ``poll``
takes them.

Positions: ``position(tp)`` is the offset of the next record ``poll`` returns for ``tp``;
``seek`` and resets start a new *generation* of the partition, and every fetched answer
or offset lookup from an older generation is dropped, so nothing fetched before a seek is
ever returned after it.

Without a ``group_id`` there is no group coordination: ``subscribe`` assigns every partition
of the topics (following new partitions on metadata refresh), and the starting position
comes from ``auto_offset_reset``. Offset commits need the group coordinator, which a later
version adds; until then they raise ``MoldauError`` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from moldau.clients.cluster import ClusterClient, group_by_leader
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    FetchRequest,
    FetchResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
)
from moldau.clients.records import CorruptRecordError, Record, decode_records, iter_batches
from moldau.clients.records.batch import ATTR_CONTROL, BatchHeader
from moldau.clients.types import TopicPartition

log = logging.getLogger(__name__)

_now = time.monotonic
RESET_STRATEGIES = ("earliest", "latest", "none")


class NoOffsetForPartitionError(MoldauError):
    """A partition has no position and ``auto_offset_reset`` is "none"."""

    def __init__(self, partitions: Iterable[TopicPartition]) -> None:
        self.partitions = sorted(partitions)
        super().__init__(ErrorCode.OFFSET_OUT_OF_RANGE,
                         "no position for " + ", ".join(f"{t}-{p}" for t, p in self.partitions)
                         + " and auto_offset_reset is 'none': seek first")


class OffsetOutOfRangeError(MoldauError):
    """The position of a partition is outside its log and ``auto_offset_reset`` is "none"."""

    def __init__(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.offsets = dict(offsets)
        super().__init__(ErrorCode.OFFSET_OUT_OF_RANGE, "offsets out of range: " + ", ".join(
            f"{t}-{p} at {o}" for (t, p), o in sorted(self.offsets.items())))


def _tp_args(args: tuple[Any, ...]) -> list[TopicPartition]:
    """Accept ``f(tp1, tp2)`` as well as ``f([tp1, tp2])``."""
    out: list[TopicPartition] = []
    for a in args:
        if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) \
                and isinstance(a[1], int):
            out.append(TopicPartition(a[0], a[1]))
        else:
            out.extend(TopicPartition(t, p) for t, p in a)
    return out


class _PartitionState:
    __slots__ = ("buffered", "fetch_offset", "fetch_size", "fetching", "generation",
                 "high_watermark", "paused", "position", "reset", "resetting", "retry_at")

    def __init__(self, reset: str) -> None:
        self.position: int | None = None  # next offset poll returns; None: needs a reset
        self.fetch_offset = 0  # next offset to fetch (ahead of position when prefetched)
        self.generation = 0
        self.buffered = 0  # bytes fetched and not yet delivered
        self.fetching = False
        self.resetting = False
        self.reset = reset  # strategy applied when position is None
        self.retry_at = 0.0
        self.paused = False
        self.high_watermark = -1
        self.fetch_size = 0  # 0: max_partition_fetch_bytes; more after an oversized batch


class _Fetched:
    """One partition's part of a fetch answer: whole batches, decoded as poll takes them."""

    __slots__ = ("batches", "bi", "buf", "generation", "min_offset", "next_offset", "records",
                 "ri", "size", "tp")

    def __init__(self, tp: TopicPartition, generation: int, buf: bytes,
                 batches: list[tuple[int, BatchHeader]], min_offset: int) -> None:
        self.tp = tp
        self.generation = generation
        self.buf = buf
        self.batches = batches
        self.bi = 0
        self.records: list[Record] = []
        self.ri = 0
        self.min_offset = min_offset
        self.next_offset = batches[-1][1].next_offset
        self.size = batches[-1][0] + batches[-1][1].size

    def take(self, n: int) -> list[Record]:
        """Up to ``n`` next records (fewer at the end of the answer)."""
        out: list[Record] = []
        while True:
            recs = self.records
            ri = self.ri
            if ri < len(recs):
                want = n - len(out)
                if ri == 0 and len(recs) <= want and not out:
                    out = recs
                    self.ri = len(recs)
                else:
                    chunk = recs[ri:ri + want]
                    out.extend(chunk)
                    self.ri = ri + len(chunk)
                if len(out) >= n:
                    return out
                continue
            if self.bi >= len(self.batches):
                return out
            pos, h = self.batches[self.bi]
            self.bi += 1
            if h.attributes & ATTR_CONTROL or h.last_offset < self.min_offset:
                self.records, self.ri = [], 0
                continue
            recs = decode_records(self.buf, pos, h, self.tp[0], self.tp[1])
            if h.base_offset < self.min_offset:
                recs = [r for r in recs if r.offset >= self.min_offset]
            self.records, self.ri = recs, 0

    @property
    def exhausted(self) -> bool:
        return self.ri >= len(self.records) and self.bi >= len(self.batches)


class Consumer:
    """Asynchronous consumer. ``await start()`` (or ``async with``), then ``poll``."""

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str],
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        max_poll_records: int | None = None,
        client_id: str = "moldau-consumer",
        check_crcs: bool = True,
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300000,
        ssl: Any = None,
    ) -> None:
        if auto_offset_reset not in RESET_STRATEGIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_STRATEGIES}, "
                             f"not {auto_offset_reset!r}")
        self.group_id = group_id
        self.auto_offset_reset = auto_offset_reset
        self._initial_topics = list(topics)
        self._max_wait_ms = fetch_max_wait_ms
        self._min_bytes = fetch_min_bytes
        self._max_bytes = fetch_max_bytes
        self._partition_bytes = max_partition_fetch_bytes
        self._max_poll_records = max_poll_records
        self._check_crcs = check_crcs
        self._request_timeout = request_timeout_ms / 1000
        self._retry_backoff = retry_backoff_ms / 1000
        self._cluster = ClusterClient(
            bootstrap_servers, client_id=client_id, request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=metadata_max_age_ms, retry_backoff_ms=retry_backoff_ms,
            ssl=ssl)
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._subscription: set[str] | None = None
        self._completed: deque[_Fetched] = deque()
        self._errors: deque[MoldauError] = deque()
        self._fetch_wakeup: asyncio.Event | None = None
        self._data_ready: asyncio.Event | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching_nodes: dict[int, int] = {}  # node id -> fetches in flight
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def cluster(self) -> ClusterClient:
        return self._cluster

    async def start(self) -> None:
        self._fetch_wakeup = asyncio.Event()
        self._data_ready = asyncio.Event()
        await self._cluster.start()
        self._cluster.add_listener(self._on_metadata)
        self._started = True
        self._fetcher = asyncio.get_running_loop().create_task(
            self._run_fetcher(), name="moldau-consumer-fetcher")
        if self._initial_topics:
            try:
                await self.subscribe(self._initial_topics)
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cluster.remove_listener(self._on_metadata)
        tasks = [t for t in (self._fetcher, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._completed.clear()
        await self._cluster.stop()

    close = stop

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _check_open(self) -> None:
        if self._closed or not self._started:
            raise RuntimeError("consumer is closed" if self._closed else
                               "consumer not started: await start() first")

    def _wake_fetcher(self) -> None:
        if self._fetch_wakeup is not None:
            self._fetch_wakeup.set()

    # ------------------------------------------------------------------ assignment

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions (replacing any subscription or earlier assignment).
        Partitions kept from the previous assignment keep their positions."""
        self._subscription = None
        self._set_assignment({TopicPartition(t, p) for t, p in partitions})
        self._cluster.track({tp.topic for tp in self._states})

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Read every partition of ``topics``, following partitions added later (no group:
        this consumer reads them all)."""
        self._check_open()
        self._subscription = set(topics)
        self._cluster.track(self._subscription)
        with contextlib.suppress(MoldauError):
            await self._cluster.refresh(sorted(self._subscription))
        self._update_subscription()

    def unsubscribe(self) -> None:
        self._subscription = None
        self._set_assignment(set())

    def subscription(self) -> set[str]:
        return set(self._subscription or ())

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    def _set_assignment(self, tps: set[TopicPartition]) -> None:
        for tp in list(self._states):
            if tp not in tps:
                del self._states[tp]
        for tp in tps:
            if tp not in self._states:
                self._states[tp] = _PartitionState(self.auto_offset_reset)
        self._completed = deque(c for c in self._completed if c.tp in self._states)
        self._wake_fetcher()

    def _update_subscription(self) -> None:
        if self._subscription is None:
            return
        wanted: set[TopicPartition] = set()
        for topic in self._subscription:
            t = self._cluster.topic(topic)
            if t is not None:
                wanted.update(TopicPartition(topic, p) for p in t.partitions)
        if wanted != set(self._states):
            self._set_assignment(wanted)

    def _on_metadata(self, cluster: ClusterClient) -> None:
        self._update_subscription()
        self._wake_fetcher()

    def pause(self, *partitions: Any) -> None:
        """Stop fetching and returning records of these partitions until ``resume``."""
        for tp in _tp_args(partitions):
            self._state(tp).paused = True

    def resume(self, *partitions: Any) -> None:
        for tp in _tp_args(partitions):
            self._state(tp).paused = False
        self._wake_fetcher()

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, st in self._states.items() if st.paused}

    def _state(self, tp: tuple[str, int]) -> _PartitionState:
        st = self._states.get(TopicPartition(tp[0], tp[1]))
        if st is None:
            raise ValueError(f"partition {tp[0]}-{tp[1]} is not assigned to this consumer")
        return st

    # ------------------------------------------------------------------ positions

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        """The next ``poll`` returns records of ``tp`` from ``offset`` on."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._set_position(TopicPartition(*tp), self._state(tp), offset)

    def _set_position(self, tp: TopicPartition, st: _PartitionState, offset: int | None,
                      reset: str | None = None) -> None:
        st.generation += 1
        st.position = offset
        st.fetch_offset = offset if offset is not None else 0
        st.buffered = 0
        st.retry_at = 0.0
        st.fetch_size = 0
        # a found position makes later out-of-range answers follow auto_offset_reset again
        st.reset = reset if reset is not None else self.auto_offset_reset
        self._completed = deque(c for c in self._completed if c.tp != tp)
        self._wake_fetcher()

    async def seek_to_beginning(self, *partitions: Any) -> None:
        """Move to the first offset of these partitions (all assigned ones if none given)."""
        await self._seek_to(partitions, EARLIEST_TIMESTAMP)

    async def seek_to_end(self, *partitions: Any) -> None:
        """Move past the last record of these partitions (all assigned ones if none given)."""
        await self._seek_to(partitions, LATEST_TIMESTAMP)

    async def _seek_to(self, partitions: tuple[Any, ...], ts: int) -> None:
        self._check_open()
        tps = _tp_args(partitions) or list(self._states)
        for tp in tps:
            self._state(tp)
        gens = {}
        for tp in tps:
            st = self._states[tp]
            self._set_position(tp, st, None, "earliest" if ts == EARLIEST_TIMESTAMP
                               else "latest")
            st.resetting = True
            gens[tp] = st.generation
        try:
            found = await self._list_offsets({tp: ts for tp in tps})
        finally:
            for tp in tps:
                st2 = self._states.get(tp)
                if st2 is not None and st2.generation == gens[tp]:
                    st2.resetting = False
        for tp, (offset, _) in found.items():
            st3 = self._states.get(tp)
            if st3 is not None and st3.generation == gens[tp]:
                self._set_position(tp, st3, offset)

    async def position(self, tp: tuple[str, int]) -> int:
        """The offset of the next record ``poll`` returns for ``tp`` (looking it up per
        ``auto_offset_reset`` if this partition has no position yet)."""
        self._check_open()
        tp = TopicPartition(*tp)
        st = self._state(tp)
        deadline = _now() + self._request_timeout
        while st.position is None:
            if st.reset == "none":
                raise NoOffsetForPartitionError([tp])
            query, gens = self._claim_resets([tp])
            if query:
                await self._do_resets(query, gens)
            else:
                await asyncio.sleep(0.005)
            if _now() > deadline:
                raise MoldauError(ErrorCode.REQUEST_TIMED_OUT,
                                  f"no position found for {tp.topic}-{tp.partition}")
            st = self._state(tp)
        return st.position

    def highwater(self, tp: tuple[str, int]) -> int:
        """The partition's high watermark from the last fetch answer (-1 before one)."""
        return self._state(tp).high_watermark

    async def beginning_offsets(self, partitions: Iterable[tuple[str, int]]
                                ) -> dict[TopicPartition, int]:
        found = await self._list_offsets({TopicPartition(*tp): EARLIEST_TIMESTAMP
                                          for tp in partitions})
        return {tp: o for tp, (o, _) in found.items()}

    async def end_offsets(self, partitions: Iterable[tuple[str, int]]
                          ) -> dict[TopicPartition, int]:
        found = await self._list_offsets({TopicPartition(*tp): LATEST_TIMESTAMP
                                          for tp in partitions})
        return {tp: o for tp, (o, _) in found.items()}

    async def offsets_for_times(self, timestamps: Mapping[tuple[str, int], int]
                                ) -> dict[TopicPartition, tuple[int, int] | None]:
        """For each partition, the first offset whose timestamp is >= the one given, with
        that record's timestamp; None where no such record exists."""
        for ts in timestamps.values():
            if ts < 0:
                raise ValueError(f"timestamps must be >= 0, got {ts}")
        found = await self._list_offsets({TopicPartition(*tp): ts
                                          for tp, ts in timestamps.items()})
        return {tp: (None if found[tp][0] < 0 else found[tp]) for tp in found}

    async def _list_offsets(self, query: Mapping[TopicPartition, int]
                            ) -> dict[TopicPartition, tuple[int, int]]:
        """ListOffsets to each leader; retries retriable errors until the request
        timeout."""
        self._check_open()
        cluster = self._cluster
        cluster.track({tp.topic for tp in query})
        pending = dict(query)
        out: dict[TopicPartition, tuple[int, int]] = {}
        deadline = _now() + self._request_timeout
        last: MoldauError | None = None
        while pending:
            missing = [tp.topic for tp in pending if cluster.topic(tp.topic) is None]
            if missing:
                with contextlib.suppress(MoldauError):
                    await cluster.refresh(missing)
            by_node, leaderless = group_by_leader(cluster, pending)
            for tp in leaderless:
                if cluster.topic(tp.topic) is None or \
                        cluster.partition_info(tp) is None:
                    last = MoldauError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                       f"{tp.topic}-{tp.partition}")
                else:
                    last = MoldauError(ErrorCode.LEADER_NOT_AVAILABLE,
                                       f"{tp.topic}-{tp.partition}")
            results = await asyncio.gather(*(
                self._list_offsets_from(node, {tp: pending[tp] for tp in tps})
                for node, tps in by_node.items()), return_exceptions=True)
            for r in results:
                if isinstance(r, MoldauError):
                    if not r.retriable:
                        raise r
                    last = r
                    continue
                if isinstance(r, BaseException):
                    raise r
                for tp, (err, ts, offset) in r.items():
                    if err is ErrorCode.NONE:
                        out[tp] = (offset, ts)
                        pending.pop(tp, None)
                    elif err.retriable:
                        last = MoldauError(err, f"{tp.topic}-{tp.partition}")
                    else:
                        raise MoldauError(err, f"listing offsets of {tp.topic}-{tp.partition}")
            if pending:
                if _now() >= deadline:
                    raise last or MoldauError(ErrorCode.REQUEST_TIMED_OUT, "listing offsets")
                cluster.request_update()
                await asyncio.sleep(self._retry_backoff)
                with contextlib.suppress(MoldauError):
                    await cluster.refresh([tp.topic for tp in pending])
        return out

    async def _list_offsets_from(self, node: int, query: Mapping[TopicPartition, int]
                                 ) -> dict[TopicPartition, tuple[ErrorCode, int, int]]:
        topics: dict[str, list[list[int]]] = {}
        for tp, ts in query.items():
            topics.setdefault(tp.topic, []).append([tp.partition, ts])
        resp = await self._cluster.request_to(
            node, ListOffsetsRequest(topics=[[t, ps] for t, ps in topics.items()]))
        assert isinstance(resp, ListOffsetsResponse)
        out: dict[TopicPartition, tuple[ErrorCode, int, int]] = {}
        for topic, parts in resp.topics:
            for partition, err, ts, offset in parts:
                tp = TopicPartition(topic, partition)
                if tp in query:
                    out[tp] = (ErrorCode.of(err), ts, offset)
        for tp in query:
            if tp not in out:
                out[tp] = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
        return out

    def _claim_resets(self, tps: Iterable[TopicPartition]
                      ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Mark partitions without a position as being looked up; return the ListOffsets
        query for them and their generations. Partitions with reset "none" get an error
        for ``poll`` instead and wait for a seek."""
        gens: dict[TopicPartition, int] = {}
        query: dict[TopicPartition, int] = {}
        for tp in tps:
            st = self._states.get(tp)
            if st is None or st.position is not None or st.resetting:
                continue
            if st.reset == "none":
                self._errors.append(NoOffsetForPartitionError([tp]))
                self._wake_poller()
                st.retry_at = float("inf")  # until a seek
                continue
            st.resetting = True
            gens[tp] = st.generation
            query[tp] = EARLIEST_TIMESTAMP if st.reset == "earliest" else LATEST_TIMESTAMP
        return query, gens

    async def _do_resets(self, query: dict[TopicPartition, int],
                         gens: dict[TopicPartition, int]) -> None:
        try:
            found = await self._list_offsets(query)
        except MoldauError as e:
            if not e.retriable:
                self._errors.append(e)
                self._wake_poller()
            found = {}
            for tp in query:
                st = self._states.get(tp)
                if st is not None and st.generation == gens[tp]:
                    st.retry_at = _now() + self._retry_backoff
        finally:
            for tp in query:
                st = self._states.get(tp)
                if st is not None and st.generation == gens[tp]:
                    st.resetting = False
            self._wake_fetcher()
        for tp, (offset, _) in found.items():
            st = self._states.get(tp)
            if st is not None and st.generation == gens[tp] and st.position is None:
                self._set_position(tp, st, offset)

    # ------------------------------------------------------------------ groups (later)

    def _no_groups(self, what: str) -> MoldauError:
        if self.group_id is None:
            return MoldauError(ErrorCode.INVALID_GROUP_ID,
                               f"{what} needs a group_id; this consumer has none")
        return MoldauError(ErrorCode.UNSUPPORTED_VERSION,
                           f"{what} for group {self.group_id!r} needs the group coordinator, "
                           "which this client version does not support yet; track "
                           "positions with position() and seek()")

    async def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        raise self._no_groups("committing offsets")

    async def committed(self, tp: tuple[str, int]) -> int | None:
        raise self._no_groups("reading committed offsets")

    # ------------------------------------------------------------------ metadata

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (UNKNOWN_TOPIC_OR_PARTITION if it has none)."""
        self._check_open()
        self._cluster.track([topic])
        await self._cluster.refresh([topic])
        parts = self._cluster.partitions_for(topic)
        if parts is None:
            raise MoldauError(self._cluster.topic_errors.get(
                topic, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), f"topic {topic!r}")
        return set(parts)

    partitions_for_topic = partitions_for

    async def list_topics(self) -> list[str]:
        """Every topic in the cluster, sorted."""
        self._check_open()
        resp = await self._cluster.refresh(None)
        return sorted(t["name"] for t in resp.topics if not t.get("error_code"))

    # ------------------------------------------------------------------ poll

    def _wake_poller(self) -> None:
        if self._data_ready is not None:
            self._data_ready.set()

    async def poll(self, timeout_ms: int = 1000, max_records: int | None = None
                   ) -> list[Record]:
        """Records fetched since the last poll (in offset order per partition), waiting up
        to ``timeout_ms`` for some to arrive; [] on timeout."""
        self._check_open()
        limit = max_records or self._max_poll_records or (1 << 62)
        if self._errors:
            raise self._errors.popleft()
        out = self._drain(limit)
        if out or timeout_ms <= 0:
            return out
        ready = self._data_ready
        assert ready is not None
        deadline = _now() + timeout_ms / 1000
        while True:
            ready.clear()
            remaining = deadline - _now()
            if remaining <= 0:
                return out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await ready.wait()
            if self._errors:
                raise self._errors.popleft()
            out = self._drain(limit)
            if out:
                return out

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None
                      ) -> dict[TopicPartition, list[Record]]:
        """Like ``poll``, grouped by partition."""
        out: dict[TopicPartition, list[Record]] = {}
        for r in await self.poll(timeout_ms, max_records):
            tp = TopicPartition(r.topic, r.partition)
            lst = out.get(tp)
            if lst is None:
                out[tp] = [r]
            else:
                lst.append(r)
        return out

    async def __aiter__(self) -> AsyncIterator[Record]:
        while not self._closed:
            for r in await self.poll(1000):
                yield r

    def _drain(self, limit: int) -> list[Record]:
        out: list[Record] = []
        completed = self._completed
        skipped: list[_Fetched] = []
        wake = False
        while completed and len(out) < limit:
            c = completed[0]
            st = self._states.get(c.tp)
            if st is None or st.generation != c.generation:
                completed.popleft()
                continue
            if st.paused:
                skipped.append(completed.popleft())
                continue
            recs = c.take(limit - len(out))
            if recs:
                st.position = recs[-1].offset + 1
                if out:
                    out.extend(recs)
                else:
                    out = recs
            if c.exhausted:
                completed.popleft()
                assert st.position is not None
                if c.next_offset > st.position:
                    st.position = c.next_offset
                st.buffered -= c.size
                wake = True
        if skipped:
            completed.extendleft(reversed(skipped))
        if wake:
            self._wake_fetcher()
        return out

    # ------------------------------------------------------------------ fetcher

    async def _run_fetcher(self) -> None:
        wakeup = self._fetch_wakeup
        assert wakeup is not None
        while True:
            wakeup.clear()
            try:
                wait = self._fetch_once(_now())
            except Exception:
                log.exception("consumer fetcher failed")
                wait = self._retry_backoff
            if wait is None:
                await wakeup.wait()
            elif wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await wakeup.wait()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fetch_once(self, now: float) -> float | None:
        """Start the lookups and fetches that can start; return seconds until something
        may change without a wakeup (None: only a wakeup)."""
        cluster = self._cluster
        limit = self._partition_bytes
        next_at: float | None = None
        to_reset: list[TopicPartition] = []
        by_node: dict[int, list[TopicPartition]] = {}
        busy = self._fetching_nodes
        need_metadata = False
        for tp, st in self._states.items():
            if st.paused or st.fetching or st.resetting:
                continue
            if st.retry_at > now:
                if next_at is None or st.retry_at < next_at:
                    next_at = st.retry_at
                continue
            if st.position is None:
                to_reset.append(tp)
                continue
            if st.buffered > limit:
                continue
            leader = cluster.leader_for(tp)
            if leader is None:
                need_metadata = True
                st.retry_at = now + self._retry_backoff
                if next_at is None or st.retry_at < next_at:
                    next_at = st.retry_at
                continue
            if leader in busy:
                continue
            lst = by_node.get(leader)
            if lst is None:
                by_node[leader] = [tp]
            else:
                lst.append(tp)
        if need_metadata:
            cluster.request_update()
        if to_reset:
            query, gens = self._claim_resets(to_reset)
            if query:
                self._spawn(self._do_resets(query, gens))
        for node, tps in by_node.items():
            self._start_fetch(node, tps)
        if next_at is None:
            return None
        return max(0.0, next_at - now) + 0.0005

    def _start_fetch(self, node: int, tps: list[TopicPartition]) -> None:
        topics: dict[str, list[list[int]]] = {}
        sent: dict[TopicPartition, tuple[int, int]] = {}
        cluster = self._cluster
        budget = self._max_bytes
        for tp in tps:
            st = self._states[tp]
            size = st.fetch_size or self._partition_bytes
            if sent and budget < size:
                break
            budget -= size
            topics.setdefault(tp.topic, []).append(
                [tp.partition, st.fetch_offset, size, cluster.leader_epoch(tp)])
            sent[tp] = (st.generation, st.fetch_offset)
            st.fetching = True
        req = FetchRequest(max_wait_ms=self._max_wait_ms, min_bytes=self._min_bytes,
                           max_bytes=self._max_bytes,
                           topics=[[t, ps] for t, ps in topics.items()])
        self._fetching_nodes[node] = self._fetching_nodes.get(node, 0) + 1
        self._spawn(self._fetch(node, req, sent))

    async def _fetch(self, node: int, req: FetchRequest,
                     sent: dict[TopicPartition, tuple[int, int]]) -> None:
        try:
            resp = await self._cluster.request_to(
                node, req, timeout=self._request_timeout + self._max_wait_ms / 1000)
            assert isinstance(resp, FetchResponse)
            self._handle_fetch(resp, sent)
        except MoldauError as e:
            retry_at = _now() + self._retry_backoff
            for tp, (gen, _) in sent.items():
                st = self._states.get(tp)
                if st is not None and st.generation == gen:
                    st.retry_at = retry_at
            if not e.retriable:
                self._errors.append(e)
                self._wake_poller()
        except Exception:
            log.exception("handling a fetch answer from broker %s failed", node)
            retry_at = _now() + self._retry_backoff
            for tp in sent:
                st = self._states.get(tp)
                if st is not None:
                    st.retry_at = retry_at
        finally:
            for tp in sent:
                st = self._states.get(tp)
                if st is not None:
                    st.fetching = False
            n = self._fetching_nodes.get(node, 1) - 1
            if n:
                self._fetching_nodes[node] = n
            else:
                self._fetching_nodes.pop(node, None)
            self._wake_fetcher()

    def _handle_fetch(self, resp: FetchResponse,
                      sent: dict[TopicPartition, tuple[int, int]]) -> None:
        now = _now()
        got_data = False
        out_of_range: dict[TopicPartition, int] = {}
        for topic, parts in resp.topics:
            for part in parts:
                tp = TopicPartition(topic, part[0])
                info = sent.get(tp)
                st = self._states.get(tp)
                if info is None or st is None or st.generation != info[0]:
                    continue  # unasked, unassigned meanwhile, or from before a seek
                gen, offset = info
                err = ErrorCode.of(part[1])
                if err is ErrorCode.NONE:
                    st.high_watermark = part[2]
                    data = part[5]
                    if not data:
                        continue
                    try:
                        batches = list(iter_batches(data, validate=self._check_crcs))
                    except CorruptRecordError as e:
                        self._errors.append(MoldauError(
                            ErrorCode.CORRUPT_MESSAGE,
                            f"{tp.topic}-{tp.partition} at offset {offset}: {e}"))
                        st.retry_at = now + self._retry_backoff
                        continue
                    if not batches:
                        # only part of a batch fit: ask for more next time
                        size = st.fetch_size or self._partition_bytes
                        if size >= self._max_bytes:
                            self._errors.append(MoldauError(
                                ErrorCode.MESSAGE_TOO_LARGE,
                                f"a batch of {tp.topic}-{tp.partition} at offset {offset} "
                                f"is larger than fetch_max_bytes ({self._max_bytes})"))
                            st.retry_at = float("inf")
                        else:
                            st.fetch_size = min(size * 2, self._max_bytes)
                        continue
                    st.fetch_size = 0
                    c = _Fetched(tp, gen, data, batches, offset)
                    st.fetch_offset = c.next_offset
                    st.buffered += c.size
                    self._completed.append(c)
                    got_data = True
                elif err is ErrorCode.OFFSET_OUT_OF_RANGE:
                    out_of_range[tp] = offset
                elif err.retriable:
                    self._cluster.request_update()
                    st.retry_at = now + self._retry_backoff
                else:
                    self._errors.append(MoldauError(
                        err, f"fetching {tp.topic}-{tp.partition}: "
                        f"{part[6] if len(part) > 6 else ''}".rstrip(": ")))
                    st.retry_at = now + self._retry_backoff
                    got_data = True
        if out_of_range:
            raise_for: dict[TopicPartition, int] = {}
            for tp, offset in out_of_range.items():
                st = self._states[tp]
                if self.auto_offset_reset == "none":
                    raise_for[tp] = offset
                    st.retry_at = float("inf")  # until a seek
                else:
                    self._set_position(tp, st, None)
            if raise_for:
                self._errors.append(OffsetOutOfRangeError(raise_for))
                got_data = True
        if got_data:
            self._wake_poller()
