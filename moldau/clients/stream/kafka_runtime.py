"""Kafka connectors at run time: the source reader over :class:`Consumer` and the sink
writer over :class:`Producer`, registered with ``connector_runtime`` on import (the slot
processes of a TaskManager import this module).

Both clients are asynchronous, so both connectors implement the task runtime's async
hooks (see ``moldau.taskmanager.task``): the reader ``start_async`` / ``poll_async`` /
``stop_async``, the writer ``start_async`` / ``pending`` / ``drain_async`` /
``stop_async``. The synchronous ``poll`` / ``write_batch`` of the base classes are what
the local executor would call: the reader refuses (it needs the event loop), the writer
only queues.

Source: every partition of the topics (or of the topics matching the pattern) is a split;
splits are dealt round-robin over the source's subtasks (partition ``j`` of the sorted
list goes to subtask ``j % parallelism``). A batch carries ``split = (topic, partition)``,
so a watermark strategy given to ``from_source`` runs per partition, and each record's
timestamp is the Kafka record's. Starting offsets: earliest, latest, a timestamp, explicit
offsets, or committed offsets (there are no consumer groups yet: the reset strategy,
earliest unless it says latest). Bounded mode (``set_bounded``) reads each partition up to
its stopping offset (``latest``: the end when the job started) and then ends the source.
Split state (``snapshot_state``): ``[topic, partition, next offset]`` per split. A subtask
without any split marks itself idle (or ends at once when bounded).

Sink: each element is serialized to (topic, key, value) by the record serializer and sent
with its timestamp; ``flush`` (checkpoint, end of input) waits until every record sent so
far is acknowledged: at-least-once. A failed delivery fails the task.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from itertools import groupby
from operator import itemgetter
from typing import Any

from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.stream.connector_runtime import (
    END_OF_INPUT,
    ReaderIdle,
    SinkWriter,
    SourceReader,
    SourceReaderContext,
    register_sink_writer,
    register_source_reader,
)
from moldau.clients.stream.connectors import (
    FlinkKafkaConsumer,
    FlinkKafkaProducer,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
    SimpleStringSchema,
)
from moldau.clients.stream.operators import Batch

__all__ = ["KafkaSinkWriter", "KafkaSourceReader"]

TP = tuple[str, int]
# Record fields by position (a NamedTuple: indexing beats attribute access per record)
_TOPIC_PARTITION = itemgetter(0, 1)
_OFFSET = 2
_TIMESTAMP = 3
_VALUE = 5
# a keyless run at least this long goes to the producer as one batch
_BULK_MIN = 16
_BULK_MAX_RECORDS = 500
_BULK_MAX_BYTES = 256 << 10


def _prop_int(props: dict[str, str], key: str, default: int) -> int:
    try:
        return int(props.get(key, default))
    except (TypeError, ValueError):
        raise ValueError(f"Kafka property {key}={props.get(key)!r} is not an integer"
                         ) from None


class KafkaSourceReader(SourceReader):
    """Reads this subtask's partitions (see the module docstring)."""

    blocking = True

    def __init__(self, source: KafkaSource, ctx: SourceReaderContext,
                 restored: list[Any] | None) -> None:
        self.source = source
        self.ctx = ctx
        self.restored = ([(str(t), int(p), int(o)) for t, p, o in restored]
                         if restored is not None else None)
        deser = source.deserializer
        self.deserialize = getattr(deser, "deserialize", deser)
        # the common case without a call per record
        self.charset = deser.charset if type(deser) is SimpleStringSchema else None
        self.consumer: Consumer | None = None
        self.splits: list[TP] = []
        self.positions: dict[TP, int] = {}
        self.stops: dict[TP, int] = {}
        self.finished: set[TP] = set()
        self._idle_sent = False

    # the runtime's async hooks ------------------------------------------------------------

    async def start_async(self) -> None:
        src = self.source
        props = src.properties
        prefix = src.client_id_prefix or props.get("client.id") or "moldau-source"
        c = Consumer(
            bootstrap_servers=src.bootstrap_servers, group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_prop_int(props, "fetch.max.wait.ms", 100),
            fetch_min_bytes=_prop_int(props, "fetch.min.bytes", 1),
            max_partition_fetch_bytes=_prop_int(props, "max.partition.fetch.bytes", 1 << 20),
            client_id=f"{prefix}-{self.ctx.subtask_index}")
        await c.start()
        self.consumer = c
        try:
            await self._assign(c)
        except BaseException:
            await c.stop()
            self.consumer = None
            raise

    async def _all_partitions(self, c: Consumer) -> list[TP]:
        src = self.source
        topics = list(src.topics)
        if src.topic_pattern:
            pat = re.compile(src.topic_pattern)
            topics += [t for t in await c.list_topics() if pat.fullmatch(t) and t not in topics]
        out: list[TP] = []
        for t in topics:
            parts = await c.partitions_for(t)
            if not parts:
                raise ValueError(f"KafkaSource: topic {t!r} does not exist")
            out.extend((t, p) for p in sorted(parts))
        return sorted(out)

    async def _assign(self, c: Consumer) -> None:
        if self.restored is not None:
            self.splits = [(t, p) for t, p, _ in self.restored]
            c.assign(self.splits)
            for t, p, o in self.restored:
                c.seek((t, p), o)
                self.positions[(t, p)] = o
        else:
            every = await self._all_partitions(c)
            n, i = self.ctx.parallelism, self.ctx.subtask_index
            self.splits = [tp for j, tp in enumerate(every) if j % n == i]
            c.assign(self.splits)
            if self.splits:
                start = await self._offsets(c, self.source.starting_offsets, "earliest")
                for tp, o in start.items():
                    c.seek(tp, o)
                    self.positions[tp] = o
        stop = self.source.stopping_offsets
        if stop is not None and self.splits:
            self.stops = await self._offsets(c, stop, "latest")
            for tp in self.splits:
                if self.positions[tp] >= self.stops[tp]:
                    self._finish(tp)

    async def _offsets(self, c: Consumer, init: KafkaOffsetsInitializer, default: str
                       ) -> dict[TP, int]:
        tps = list(self.splits)
        begin: dict[Any, int] = dict(await c.beginning_offsets(tps))
        end: dict[Any, int] = dict(await c.end_offsets(tps))
        kind = init.kind
        if kind == "committed":  # no consumer groups yet: the reset strategy decides
            kind = "latest" if init.value == "latest" else "earliest"
        if kind == "earliest":
            return {tp: begin[tp] for tp in tps}
        if kind == "latest":
            return {tp: end[tp] for tp in tps}
        if kind == "timestamp":
            found: dict[Any, Any] = dict(
                await c.offsets_for_times({tp: int(init.value) for tp in tps}))
            return {tp: (found[tp][0] if found.get(tp) else end[tp]) for tp in tps}
        if kind == "offsets":
            given = {(str(k[0]), int(k[1])): int(v) for k, v in dict(init.value).items()}
            fallback = begin if default == "earliest" else end
            return {tp: min(max(given.get(tp, fallback[tp]), begin[tp]), end[tp])
                    if tp in given else fallback[tp] for tp in tps}
        raise ValueError(f"unknown offsets initializer {init!r}")

    def _finish(self, tp: TP) -> None:
        self.finished.add(tp)
        if self.consumer is not None:
            self.consumer.pause(tp)

    async def poll_async(self, max_records: int, timeout: float) -> list[Any]:
        c = self.consumer
        if c is None:
            raise RuntimeError("the Kafka reader was not started")
        bounded = self.source.stopping_offsets is not None
        if not self.splits or (bounded and len(self.finished) == len(self.splits)):
            if bounded:
                return [END_OF_INPUT]
            if not self._idle_sent:
                self._idle_sent = True
                return [ReaderIdle(True)]
            await asyncio.sleep(timeout)
            return []
        records = await c.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
        if not records:
            return []
        out: list[Any] = []
        stops = self.stops
        for tp, group in groupby(records, _TOPIC_PARTITION):
            run: list[Any] = list(group)
            if bounded:
                stop = stops[tp]
                if run[-1][_OFFSET] >= stop - 1:
                    run = [r for r in run if r[_OFFSET] < stop]
                    self._finish(tp)
                if not run:
                    continue
            out.append(Batch(self._values([r[_VALUE] for r in run]),
                             [r[_TIMESTAMP] for r in run], tp))
            self.positions[tp] = run[-1][_OFFSET] + 1
        if bounded and len(self.finished) == len(self.splits):
            out.append(END_OF_INPUT)
        return out

    def _values(self, raw: list[bytes | None]) -> list[Any]:
        cs = self.charset
        if cs is not None:
            try:
                return [v.decode(cs) for v in raw]  # type: ignore[union-attr]
            except AttributeError:  # a tombstone (None value) among them
                pass
        deser = self.deserialize
        return [deser(v) if v is not None else None for v in raw]

    async def stop_async(self) -> None:
        c, self.consumer = self.consumer, None
        if c is not None:
            await c.stop()

    # the base class's interface --------------------------------------------------------------

    def poll(self, max_records: int) -> list[Any]:
        raise RuntimeError("a Kafka source runs on the cluster (submit the job with "
                           "'moldau run'): its reader needs the task runtime's event loop")

    def snapshot_state(self) -> list[Any]:
        return [[t, p, self.positions.get((t, p), 0)] for t, p in self.splits]


class KafkaSinkWriter(SinkWriter):
    """Sends elements as records (see the module docstring).

    Runs of at least 16 keyless records of one topic with one timestamp go to the
    producer as one batch (``enqueue_batch``: one call and one future per batch); the
    rest record by record. Delivery results are checked as they complete, oldest first,
    and all at a flush."""

    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        rs = sink.record_serializer
        self.topic = rs.topic if rs.topic_selector is None else None
        self.topic_selector = rs.topic_selector
        vs = rs.value_schema
        self.value_ser = getattr(vs, "serialize", vs)
        self.value_charset = vs.charset if type(vs) is SimpleStringSchema else None
        ks = rs.key_schema
        self.key_ser = getattr(ks, "serialize", ks) if ks is not None else None
        self.producer: Producer | None = None
        # per written batch: (topic or None, topics or None, keys or None, values, stamps)
        self.queue: list[tuple[str | None, list[str] | None, list[Any] | None, list[bytes],
                               list[int | None] | None]] = []
        self.flush_requested = False
        self.inflight: deque[asyncio.Future[Any]] = deque()

    @property
    def pending(self) -> bool:
        return bool(self.queue) or self.flush_requested

    def write_batch(self, batch: Batch) -> None:
        values = batch.values
        cs = self.value_charset
        if cs is not None:
            data = [str(v).encode(cs) for v in values]
        else:
            ser = self.value_ser
            data = [ser(v) for v in values]
        ks = self.key_ser
        keys = [ks(v) for v in values] if ks is not None else None
        sel = self.topic_selector
        topics = [sel(v) for v in values] if sel is not None else None
        self.queue.append((self.topic, topics, keys, data, batch.timestamps))

    def flush(self, end_of_input: bool) -> None:
        self.flush_requested = True

    async def start_async(self) -> None:
        props = self.sink.properties
        p = Producer(
            self.sink.bootstrap_servers, acks=props.get("acks", "all"),
            linger_ms=_prop_int(props, "linger.ms", 5),
            batch_size=_prop_int(props, "batch.size", 64 << 10),
            compression_type=props.get("compression.type", "none"),
            client_id=props.get("client.id", "moldau-sink"))
        await p.start()
        self.producer = p

    async def drain_async(self) -> None:
        p = self.producer
        if p is None:
            raise RuntimeError("the Kafka writer was not started")
        q, self.queue = self.queue, []
        inflight = self.inflight
        send = p.send
        for topic, topics, keys, data, tss in q:
            n = len(data)
            if topic is not None and keys is None:
                # keyless records of one topic: runs of one timestamp go as batches
                i = 0
                while i < n:
                    ts = tss[i] if tss is not None else None
                    j = i + 1
                    if tss is None:
                        j = n
                    else:
                        while j < n and tss[j] == ts:
                            j += 1
                    if j - i < _BULK_MIN:
                        for k in range(i, j):
                            inflight.append(await send(topic, data[k], None, timestamp_ms=ts))
                        i = j
                        continue
                    while i < j:
                        end, size = i, 0
                        while (end < j and end - i < _BULK_MAX_RECORDS
                               and size < _BULK_MAX_BYTES):
                            size += len(data[end])
                            end += 1
                        inflight.append(await p.enqueue_batch(topic, data[i:end],
                                                              timestamp_ms=ts))
                        i = end
                continue
            for k in range(n):
                inflight.append(await send(
                    topics[k] if topics is not None else topic or "", data[k],
                    None if keys is None else keys[k],
                    timestamp_ms=None if tss is None else tss[k]))
        if self.flush_requested:
            self.flush_requested = False
            await p.flush()
        # results, oldest first; at a flush every one is done
        while inflight and inflight[0].done():
            fut = inflight.popleft()
            err = fut.exception()
            if err is not None:
                raise RuntimeError(f"the Kafka sink could not deliver records: {err}"
                                   ) from err

    async def stop_async(self) -> None:
        p, self.producer = self.producer, None
        if p is not None:
            await p.stop(timeout=10.0)


def _reader(source: Any, ctx: SourceReaderContext, restored: list[Any] | None) -> SourceReader:
    if isinstance(source, FlinkKafkaConsumer):
        source = source.to_source()
    return KafkaSourceReader(source, ctx, restored)


def _writer(sink: Any, op: Any) -> SinkWriter:
    if isinstance(sink, FlinkKafkaProducer):
        sink = sink.to_sink()
    return KafkaSinkWriter(sink)


register_source_reader(KafkaSource, _reader)
register_source_reader(FlinkKafkaConsumer, _reader)
register_sink_writer(KafkaSink, _writer)
register_sink_writer(FlinkKafkaProducer, _writer)
