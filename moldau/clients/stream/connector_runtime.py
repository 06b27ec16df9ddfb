"""Running connectors inside a subtask: source readers and sink writers.

A **source reader** is made per source subtask by :func:`create_reader` and polled by the
runtime; ``poll(max_records)`` returns, in order, any of: a :class:`Batch` of records,
:class:`ReaderWatermark` (a watermark the source itself emits), :class:`ReaderIdle`
(the source has nothing to say for a while / again), and finally :data:`END_OF_INPUT`.
An empty list means "nothing right now": readers backed by a thread (generators,
sockets) set ``blocking = True`` and signal ``ctx.notify`` (a ``threading.Event``) when
they have more. A reader's position is a list of *split states*
(``snapshot_state()``), given back to ``create_reader(..., restored)`` so a restored job
resumes where the checkpoint was; on a rescale the runtime redistributes split states
round-robin over the new subtasks.

A **sink writer** (:func:`create_writer`) gets ``write_batch(batch)``, ``flush()``, and
``snapshot_state()``/``restore_state()``.

Kafka sources and sinks need the log clients, which this layer does not import: the
runtime that has them registers factories with :func:`register_source_reader` and
:func:`register_sink_writer`.
"""

from __future__ import annotations

import gzip
import inspect
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from moldau.clients.stream.connectors import (
    CollectionSource,
    CollectSink,
    FileSink,
    FileSource,
    FlinkKafkaConsumer,
    FlinkKafkaProducer,
    KafkaSink,
    KafkaSource,
    NumberSequenceSource,
    ParallelSourceFunction,
    PrintSinkFunction,
    SocketTextStreamSource,
    SourceFunction,
    iter_paths,
)
from moldau.clients.stream.functions import SinkFunction, _arity
from moldau.clients.stream.operators import Batch, OperatorInfo
from moldau.clients.stream.watermark import Watermark

__all__ = [
    "END_OF_INPUT",
    "ReaderIdle",
    "ReaderWatermark",
    "SinkWriter",
    "SourceReader",
    "SourceReaderContext",
    "create_reader",
    "create_writer",
    "register_sink_writer",
    "register_source_reader",
]


class _EndOfInput:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_INPUT"


END_OF_INPUT: Any = _EndOfInput()


class ReaderWatermark:
    __slots__ = ("timestamp",)

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"ReaderWatermark({self.timestamp})"


class ReaderIdle:
    __slots__ = ("idle",)

    def __init__(self, idle: bool) -> None:
        self.idle = idle


class SourceReaderContext:
    """What a reader knows of its subtask; ``notify`` is set when a blocking reader has
    data (the runtime waits on it)."""

    def __init__(self, info: OperatorInfo, notify: threading.Event | None = None) -> None:
        self.info = info
        self.subtask_index = info.subtask_index
        self.parallelism = info.parallelism
        self.notify = notify if notify is not None else threading.Event()


class SourceReader:
    """Base class; see the module docstring."""

    blocking = False

    def open(self) -> None:
        pass

    def poll(self, max_records: int) -> list[Any]:
        raise NotImplementedError

    def snapshot_state(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class SinkWriter:
    def open(self) -> None:
        pass

    def write_batch(self, batch: Batch) -> None:
        raise NotImplementedError

    def flush(self, end_of_input: bool) -> None:
        pass

    def snapshot_state(self) -> list[Any] | None:
        return None

    def restore_state(self, items: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


ReaderFactory = Callable[[Any, SourceReaderContext, "list[Any] | None"], SourceReader]
WriterFactory = Callable[[Any, Any], SinkWriter]
_READERS: dict[type, ReaderFactory] = {}
_WRITERS: dict[type, WriterFactory] = {}


def register_source_reader(source_type: type, factory: ReaderFactory) -> None:
    """Make ``factory(source, ctx, restored_splits)`` the reader of ``source_type``."""
    _READERS[source_type] = factory


def register_sink_writer(sink_type: type, factory: WriterFactory) -> None:
    """Make ``factory(sink, operator)`` the writer of ``sink_type``."""
    _WRITERS[sink_type] = factory


def _registered(table: dict[type, Any], obj: Any) -> Any:
    for cls in type(obj).__mro__:
        f = table.get(cls)
        if f is not None:
            return f
    return None


def create_reader(source: Any, ctx: SourceReaderContext, restored: list[Any] | None
                  ) -> SourceReader:
    """The reader of ``source`` for this subtask (``restored``: its split states)."""
    factory = _registered(_READERS, source)
    if factory is not None:
        return factory(source, ctx, restored)  # type: ignore[no-any-return]
    if isinstance(source, CollectionSource):
        return CollectionReader(source, ctx, restored)
    if isinstance(source, NumberSequenceSource):
        return SequenceReader(source, ctx, restored)
    if isinstance(source, FileSource):
        return FileReader(source, ctx, restored)
    if isinstance(source, SocketTextStreamSource):
        return SocketReader(source, ctx)
    if isinstance(source, SourceFunction):
        return SourceFunctionReader(source, ctx)
    if isinstance(source, KafkaSource | FlinkKafkaConsumer):
        raise RuntimeError(
            "a Kafka source runs on the cluster: submit the job with 'moldau run' (this "
            "process has no Kafka reader registered)")
    raise TypeError(f"don't know how to read from {source!r:.80}")


# --- bounded pull readers ---------------------------------------------------------------------


class CollectionReader(SourceReader):
    """Elements of a collection; split state: the index of the next element."""

    def __init__(self, source: CollectionSource, ctx: SourceReaderContext,
                 restored: list[Any] | None) -> None:
        self.items = source.items
        self.pos = int(restored[0]) if restored else 0
        if restored is not None and not restored:
            self.pos = len(self.items)  # the split went to another subtask

    def poll(self, max_records: int) -> list[Any]:
        if self.pos >= len(self.items):
            return [END_OF_INPUT]
        end = min(len(self.items), self.pos + max_records)
        batch = Batch(self.items[self.pos:end])
        self.pos = end
        return [batch, END_OF_INPUT] if end >= len(self.items) else [batch]

    def snapshot_state(self) -> list[Any]:
        return [self.pos]


class SequenceReader(SourceReader):
    """Numbers of a sequence; split states: ``[next, end]`` of each range still open.
    The sequence is cut into one range per subtask, as Flink's ``NumberSequenceSource``."""

    def __init__(self, source: NumberSequenceSource, ctx: SourceReaderContext,
                 restored: list[Any] | None) -> None:
        if restored is not None:
            self.splits = [list(s) for s in restored]
        else:
            n = source.end - source.start + 1
            p, i = ctx.parallelism, ctx.subtask_index
            lo = source.start + n * i // p
            hi = source.start + n * (i + 1) // p - 1
            self.splits = [[lo, hi]] if hi >= lo else []

    def poll(self, max_records: int) -> list[Any]:
        while self.splits and self.splits[0][0] > self.splits[0][1]:
            self.splits.pop(0)
        if not self.splits:
            return [END_OF_INPUT]
        s = self.splits[0]
        hi = min(s[1], s[0] + max_records - 1)
        batch = Batch(list(range(s[0], hi + 1)))
        s[0] = hi + 1
        return [batch]

    def snapshot_state(self) -> list[Any]:
        return [list(s) for s in self.splits if s[0] <= s[1]]


_SPLIT_BYTES = 32 << 20


class FileReader(SourceReader):
    """Lines of files. Plain files are cut into byte ranges of up to 32 MiB, a line
    belonging to the range its first byte is in; ``.gz`` files are one split each. Splits
    are dealt round-robin to the subtasks. Split state: ``[path, position, end, gz]``
    (position: next byte, or lines read for gz)."""

    def __init__(self, source: FileSource, ctx: SourceReaderContext,
                 restored: list[Any] | None) -> None:
        self.source = source
        self.ctx = ctx
        self.charset = source.format.charset
        self.seen: set[str] = set()
        if restored is not None:
            self.splits = [list(s) for s in restored]
            self.seen.update(s[0] for s in self.splits)
        else:
            self.splits = self._discover()
        self._fh: Any = None
        self._fh_split: list[Any] | None = None
        self._next_scan = (time.monotonic() + source.monitor_interval_ms / 1000
                           if source.monitor_interval_ms else None)
        self.blocking = source.monitor_interval_ms is not None

    def _discover(self) -> list[list[Any]]:
        all_splits: list[list[Any]] = []
        for path in iter_paths(self.source.paths):
            if path in self.seen:
                continue
            if not os.path.exists(path):
                raise FileNotFoundError(f"the file source path {path!r} does not exist")
            self.seen.add(path)
            if path.endswith(".gz"):
                all_splits.append([path, 0, -1, True])
                continue
            size = os.path.getsize(path)
            start = 0
            while True:
                end = min(size, start + _SPLIT_BYTES)
                all_splits.append([path, start, end, False])
                if end >= size:
                    break
                start = end
        p, i = self.ctx.parallelism, self.ctx.subtask_index
        return [s for j, s in enumerate(all_splits) if j % p == i]

    def _open(self, split: list[Any]) -> None:
        path, pos, _end, gz = split
        if gz:
            fh = gzip.open(path, "rb")  # noqa: SIM115 - kept open across polls
            for _ in range(pos):  # pos counts lines for gz
                if not fh.readline():
                    break
        else:
            fh = open(path, "rb")  # noqa: SIM115 - kept open across polls
            if pos > 0:
                fh.seek(pos - 1)
                skipped = fh.readline()  # the line that started in the previous range
                split[1] = pos - 1 + len(skipped)
        self._fh, self._fh_split = fh, split

    def poll(self, max_records: int) -> list[Any]:
        out: list[str] = []
        charset = self.charset
        while len(out) < max_records:
            if not self.splits:
                break
            split = self.splits[0]
            if self._fh_split is not split:
                if self._fh is not None:
                    self._fh.close()
                self._open(split)
            fh = self._fh
            gz = split[3]
            done = False
            while len(out) < max_records:
                if not gz and split[1] >= split[2]:
                    done = True
                    break
                line = fh.readline()
                if not line:
                    done = True
                    break
                split[1] += 1 if gz else len(line)
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                out.append(line.decode(charset))
            if done:
                fh.close()
                self._fh = self._fh_split = None
                self.splits.pop(0)
        if out:
            return [Batch(out)]
        if self._next_scan is not None:
            now = time.monotonic()
            if now >= self._next_scan:
                self._next_scan = now + self.source.monitor_interval_ms / 1000  # type: ignore[operator]
                self.splits.extend(self._discover())
            else:
                # wake the runtime at the next scan
                t = threading.Timer(self._next_scan - now, self.ctx.notify.set)
                t.daemon = True
                t.start()
            return []
        return [END_OF_INPUT]

    def snapshot_state(self) -> list[Any]:
        return [list(s) for s in self.splits]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# --- thread-backed readers ----------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _ThreadedReader(SourceReader):
    """Events produced by a thread, handed over under a lock; the producer blocks when
    ``capacity`` records wait (backpressure)."""

    blocking = True

    def __init__(self, ctx: SourceReaderContext, capacity: int = 16384) -> None:
        self.ctx = ctx
        self._cond = threading.Condition()
        self._events: list[Any] = []
        self._pending = 0
        self._capacity = capacity
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _emit(self, value: Any, ts: int | None) -> None:
        with self._cond:
            while self._pending >= self._capacity and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                raise _Cancelled
            ev = self._events
            last = ev[-1] if ev else None
            if type(last) is not Batch:
                last = Batch([], [])
                ev.append(last)
            last.values.append(value)
            last.timestamps.append(ts)  # type: ignore[union-attr]
            self._pending += 1
            if self._pending == 1 or self._pending >= self.ctx.info.batch_size:
                self.ctx.notify.set()

    def _emit_event(self, event: Any) -> None:
        with self._cond:
            if self._closed:
                raise _Cancelled
            self._events.append(event)
            self.ctx.notify.set()

    def _run(self) -> None:
        raise NotImplementedError

    def _thread_main(self) -> None:
        try:
            self._run()
        except _Cancelled:
            pass
        except BaseException as e:
            self._error = e
        with self._cond:
            self._events.append(END_OF_INPUT)
        self.ctx.notify.set()

    def open(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, daemon=True,
                                        name=f"source-{type(self).__name__}")
        self._thread.start()

    def poll(self, max_records: int) -> list[Any]:
        with self._cond:
            events, self._events = self._events, []
            self._pending = 0
            self._cond.notify_all()
        if self._error is not None and events and events[-1] is END_OF_INPUT:
            err, self._error = self._error, None
            raise err
        out: list[Any] = []
        for e in events:
            if type(e) is Batch and e.timestamps is not None and all(
                    t is None for t in e.timestamps):
                e.timestamps = None
            out.append(e)
        return out

    def _stop(self) -> None:
        pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


class _SourceContext:
    """The ``ctx`` a SourceFunction's ``run`` gets."""

    def __init__(self, reader: SourceFunctionReader) -> None:
        self._reader = reader
        self._lock = threading.RLock()

    def collect(self, element: Any) -> None:
        self._reader._emit(element, None)

    def collect_with_timestamp(self, element: Any, timestamp: int) -> None:
        self._reader._emit(element, int(timestamp))

    def emit_watermark(self, mark: Watermark | int) -> None:
        ts = mark if isinstance(mark, int) else mark.timestamp
        self._reader._emit_event(ReaderWatermark(ts))

    def mark_as_temporarily_idle(self) -> None:
        self._reader._emit_event(ReaderIdle(True))

    def get_checkpoint_lock(self) -> threading.RLock:
        return self._lock


class SourceFunctionReader(_ThreadedReader):
    """Runs ``SourceFunction.run(ctx)`` on its own thread."""

    def __init__(self, fn: SourceFunction, ctx: SourceReaderContext) -> None:
        super().__init__(ctx)
        self.fn = fn
        if ctx.parallelism > 1 and not isinstance(fn, ParallelSourceFunction):
            raise RuntimeError("a SourceFunction is non-parallel: use ParallelSourceFunction")

    def _run(self) -> None:
        self.fn.run(_SourceContext(self))

    def _stop(self) -> None:
        try:
            self.fn.cancel()
        except Exception:
            pass


class SocketReader(_ThreadedReader):
    """Lines from a TCP server, split at the delimiter."""

    def __init__(self, source: SocketTextStreamSource, ctx: SourceReaderContext) -> None:
        super().__init__(ctx)
        self.source = source
        self._sock: socket.socket | None = None

    def _run(self) -> None:
        src = self.source
        delim = src.delimiter.encode()
        attempts = 0
        while True:
            try:
                sock = socket.create_connection((src.host, src.port), timeout=10)
            except OSError:
                if src.max_retry != -1 and attempts >= src.max_retry:
                    raise
                attempts += 1
                time.sleep(0.5)
                continue
            sock.settimeout(None)
            self._sock = sock
            buf = b""
            with sock:
                while True:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    buf += data
                    *lines, buf = buf.split(delim)
                    for line in lines:
                        if delim == b"\n" and line.endswith(b"\r"):
                            line = line[:-1]
                        self._emit(line.decode("utf-8", "replace"), None)
            if buf:
                self._emit(buf.decode("utf-8", "replace"), None)
            if self._closed or (src.max_retry != -1 and attempts >= src.max_retry):
                return
            attempts += 1
            time.sleep(0.5)

    def _stop(self) -> None:
        s = self._sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- writers ----------------------------------------------------------------------------------


def create_writer(sink: Any, op: Any) -> SinkWriter:
    """The writer of ``sink`` for the subtask of sink operator ``op``."""
    factory = _registered(_WRITERS, sink)
    if factory is not None:
        return factory(sink, op)  # type: ignore[no-any-return]
    if isinstance(sink, PrintSinkFunction):
        return PrintWriter(sink, op.info)
    if isinstance(sink, CollectSink):
        return CollectWriter(sink, op.info)
    if isinstance(sink, FileSink):
        return FileSinkWriter(sink, op.info)
    if isinstance(sink, KafkaSink | FlinkKafkaProducer):
        raise RuntimeError(
            "a Kafka sink runs on the cluster: submit the job with 'moldau run' (this "
            "process has no Kafka writer registered)")
    return SinkFunctionWriter(sink, op)


class PrintWriter(SinkWriter):
    def __init__(self, sink: PrintSinkFunction, info: OperatorInfo) -> None:
        ident = sink.sink_identifier
        if info.parallelism > 1:
            prefix = f"{ident}:{info.subtask_index + 1}" if ident else str(info.subtask_index
                                                                             + 1)
        else:
            prefix = ident or ""
        self.prefix = prefix + "> " if prefix else ""
        self.to_error = sink.to_error
        self.info = info

    def write_batch(self, batch: Batch) -> None:
        out = self.info.stdout or (sys.stderr if self.to_error else sys.stdout)
        p = self.prefix
        out.write("".join([f"{p}{v}\n" for v in batch.values]))
        out.flush()


class CollectWriter(SinkWriter):
    def __init__(self, sink: CollectSink, info: OperatorInfo) -> None:
        if info.collect is None:
            raise RuntimeError("this runtime can't deliver collected results (CollectSink / "
                               "execute_and_collect work with the local executor)")
        self.collect = info.collect
        self.collect_id = sink.collect_id
        self.collect(self.collect_id, [])  # delivered, even if nothing arrives

    def write_batch(self, batch: Batch) -> None:
        self.collect(self.collect_id, batch.values)


class _SinkContext:
    __slots__ = ("_op", "_ts")

    def __init__(self, op: Any) -> None:
        self._op = op
        self._ts: int | None = None

    def timestamp(self) -> int | None:
        return self._ts

    def current_watermark(self) -> int:
        return self._op.current_watermark  # type: ignore[no-any-return]

    def current_processing_time(self) -> int:
        return self._op.info.clock()  # type: ignore[no-any-return]


class SinkFunctionWriter(SinkWriter):
    """A user ``SinkFunction`` (``invoke(value, context)`` or ``invoke(value)``) or a plain
    function of the value."""

    def __init__(self, sink: Any, op: Any) -> None:
        inv = getattr(sink, "invoke", None)
        if inv is None or not callable(inv):
            if not callable(sink) or inspect.isclass(sink):
                raise TypeError(f"add_sink() expects a SinkFunction or a function, got "
                                f"{sink!r:.60}")
            inv = sink
        self._two = _arity(inv) == 2
        self._invoke = inv
        self._ctx = _SinkContext(op)
        self._is_function = isinstance(sink, SinkFunction)

    def write_batch(self, batch: Batch) -> None:
        inv = self._invoke
        if self._two:
            ctx = self._ctx
            for v, ts in batch.pairs():
                ctx._ts = ts
                inv(v, ctx)
        else:
            for v in batch.values:
                inv(v)


class FileSinkWriter(SinkWriter):
    """Row-format part files; see :class:`FileSink`. Part files roll at the configured
    size or age, at every checkpoint and at the end of input."""

    def __init__(self, sink: FileSink, info: OperatorInfo) -> None:
        self.sink = sink
        self.info = info
        self.uid = uuid.uuid4().hex
        self.counter = 0
        self._open: dict[str, tuple[Any, str, str, int, float]] = {}

    def _path(self, bucket: str) -> tuple[str, str]:
        cfg = self.sink.output_file_config
        name = (f"{cfg.part_prefix}-{self.uid}-{self.info.subtask_index}-{self.counter}"
                f"{cfg.part_suffix}")
        self.counter += 1
        d = os.path.join(self.sink.base_path, bucket) if bucket else self.sink.base_path
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, f".{name}.inprogress"), os.path.join(d, name)

    def write_batch(self, batch: Batch) -> None:
        now = self.info.clock()
        enc = self.sink.encoder.encode
        assigner = self.sink.bucket_assigner
        policy = self.sink.rolling_policy
        for v in batch.values:
            bucket = assigner.bucket_id(v, now)
            cur = self._open.get(bucket)
            if cur is None:
                tmp, final = self._path(bucket)
                cur = (open(tmp, "wb"), tmp, final, 0, time.monotonic())  # noqa: SIM115
            fh, tmp, final, size, started = cur
            data = enc(v)
            fh.write(data)
            size += len(data)
            self._open[bucket] = (fh, tmp, final, size, started)
            if size >= policy.part_size or (
                    time.monotonic() - started) * 1000 >= policy.rollover_interval:
                self._roll(bucket)

    def _roll(self, bucket: str) -> None:
        fh, tmp, final, _size, _started = self._open.pop(bucket)
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, final)

    def flush(self, end_of_input: bool) -> None:
        for bucket in list(self._open):
            self._roll(bucket)

    def snapshot_state(self) -> list[Any] | None:
        return None

    def close(self) -> None:
        self.flush(True)
