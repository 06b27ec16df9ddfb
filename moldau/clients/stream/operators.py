"""The runtime-neutral operators: what every parallel subtask of a job runs.

The local executor runs these in one thread; a TaskManager runs the very same objects and
only adds the network around them. An operator is created unpickled from the job graph
(one copy per subtask), then ``setup(info)``, optionally ``restore_state(snapshots)``, then
``open()``; it then gets calls, each of which returns the records it emits as one
:class:`Batch` (or None):

* ``process_batch(batch)``: records from its input (all inputs of a union look alike);
* ``process_watermark(wm)``: event time advanced to ``wm`` (already the minimum over all
  inputs); fires event-time timers and windows;
* ``on_processing_time(now)``: the wall clock reached a timer the operator asked for
  (``next_processing_time()``);
* ``end_input()``: all inputs ended (after the final ``MAX_WATERMARK``).

Besides the returned batch, a call may leave *side outputs* in ``side_outputs``
(tag id -> Batch), a watermark to forward in ``out_watermark`` and an idle/active status
change in ``out_idle``; the caller (see :mod:`moldau.clients.stream.task`) drains them right
after the call, in this order: records, side outputs, status, watermark. So an operator's
watermark never overtakes the records it emitted before it.

Records travel as a :class:`Batch`: parallel lists of values and event-time timestamps
(``timestamps`` is None when no record of the batch has one). The per-batch loops are the
hot path: no logging, no validation objects, one call per record into user code.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgpack

from moldau.clients.stream.functions import (
    Function,
    OutputTag,
    RuntimeContext,
    describe_function,
    emitter,
    method_of,
)
from moldau.clients.stream.keygroups import (
    compute_key_group_range_for_operator_index,
)
from moldau.clients.stream.state import (
    _MISSING,
    AggregatingStateDescriptor,
    HeapKeyedStateBackend,
    InternalTimerService,
    ListStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from moldau.clients.stream.time import TimeDomain
from moldau.clients.stream.watermark import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    WatermarkOutput,
)
from moldau.clients.stream.window import (
    AnyWindow,
    TimeWindow,
    Trigger,
    TriggerContext,
    WindowAssigner,
    merge_windows,
)

__all__ = [
    "Batch",
    "FilterOperator",
    "FlatMapOperator",
    "KeyedProcessOperator",
    "KeyedReduceOperator",
    "MapOperator",
    "OperatorInfo",
    "ProcessOperator",
    "SinkOperator",
    "SourceOperator",
    "StreamOperator",
    "TimestampsAndWatermarksOperator",
    "WindowOperator",
]

OPERATOR_STATE_FORMAT = "moldau-operator-state/1"


class Batch:
    """Records in flight: ``values[i]`` has event time ``timestamps[i]`` (None: no
    timestamp); ``timestamps`` is None when no record has one. ``split`` names the source
    split the records came from, when a source knows it (for per-split watermarks)."""

    __slots__ = ("split", "timestamps", "values")

    def __init__(self, values: list[Any], timestamps: list[int | None] | None = None,
                 split: Any = None) -> None:
        self.values = values
        self.timestamps = timestamps
        self.split = split

    @classmethod
    def of(cls, pairs: Iterable[tuple[Any, int | None]]) -> Batch:
        """A batch from (value, timestamp) pairs."""
        values: list[Any] = []
        tss: list[int | None] = []
        for v, ts in pairs:
            values.append(v)
            tss.append(ts)
        return cls(values, tss if any(t is not None for t in tss) else None)

    def __len__(self) -> int:
        return len(self.values)

    def __bool__(self) -> bool:
        return bool(self.values)

    def pairs(self) -> Iterable[tuple[Any, int | None]]:
        """(value, timestamp) per record."""
        tss = self.timestamps
        return zip(self.values, tss if tss is not None else itertools.repeat(None), strict=False)

    def __repr__(self) -> str:
        return f"Batch({list(self.pairs())!r:.200})"


@dataclass
class OperatorInfo:
    """What the runtime tells an operator about the subtask that runs it."""

    task_name: str = "task"
    subtask_index: int = 0
    parallelism: int = 1
    max_parallelism: int = 128
    attempt: int = 0
    job_parameters: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # processing time in ms; the runtime gives its clock (tests give a manual one)
    clock: Callable[[], int] = field(default=lambda: _wall_clock_ms())
    stdout: TextIO | None = None
    # where a CollectSink delivers (collect id, values); None: not supported here
    collect: Callable[[str, list[Any]], None] | None = None
    # emit periodic watermarks after every batch instead of every auto-watermark
    # interval of wall time (the local executor: deterministic watermarks)
    watermark_per_batch: bool = False
    # at end of input, fire processing-time timers as if time reached +infinity
    fire_processing_timers_at_end: bool = True
    batch_size: int = 1024


def _no_key(value: Any) -> Any:
    raise RuntimeError("not a keyed operator")


def _wall_clock_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


class _RuntimeContext(RuntimeContext):
    """The runtime context functions get from an operator."""

    def __init__(self, op: StreamOperator) -> None:
        self._op = op

    def get_task_name(self) -> str:
        return self._op.info.task_name

    def get_number_of_parallel_subtasks(self) -> int:
        return self._op.info.parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        return self._op.info.max_parallelism

    def get_index_of_this_subtask(self) -> int:
        return self._op.info.subtask_index

    def get_attempt_number(self) -> int:
        return self._op.info.attempt

    def get_job_parameter(self, key: str, default_value: str | None = None) -> str | None:
        return self._op.info.job_parameters.get(key, default_value)

    def _keyed(self, descriptor: Any, cls: type[StateDescriptor]) -> Any:
        if not isinstance(descriptor, cls):
            raise TypeError(f"expected a {cls.__name__}, got {descriptor!r:.60}")
        backend = self._op.backend
        if backend is None:
            raise RuntimeError("Keyed state can only be used on a 'keyed stream', i.e., after "
                               "a 'key_by()' operation.")
        if descriptor.name.startswith("_moldau"):
            raise ValueError(f"state names starting with '_moldau' are reserved: "
                             f"{descriptor.name!r}")
        return backend.get_state(descriptor)

    def get_state(self, state_descriptor: Any) -> Any:
        return self._keyed(state_descriptor, ValueStateDescriptor)

    def get_list_state(self, state_descriptor: Any) -> Any:
        return self._keyed(state_descriptor, ListStateDescriptor)

    def get_map_state(self, state_descriptor: Any) -> Any:
        from moldau.clients.stream.state import MapStateDescriptor

        return self._keyed(state_descriptor, MapStateDescriptor)

    def get_reducing_state(self, state_descriptor: Any) -> Any:
        return self._keyed(state_descriptor, ReducingStateDescriptor)

    def get_aggregating_state(self, state_descriptor: Any) -> Any:
        return self._keyed(state_descriptor, AggregatingStateDescriptor)


def _open_function(fn: Any, ctx: RuntimeContext) -> None:
    if isinstance(fn, Function) or hasattr(fn, "open"):
        try:
            fn.__dict__["_moldau_runtime_context"] = ctx
        except (AttributeError, TypeError):
            pass
        op = getattr(fn, "open", None)
        if callable(op):
            op(ctx)


def _close_function(fn: Any) -> None:
    if isinstance(fn, Function) or hasattr(fn, "close"):
        cl = getattr(fn, "close", None)
        if callable(cl):
            cl()


class StreamOperator:
    """Base of all operators; see the module docstring for the call protocol."""

    kind = "operator"
    #: forced parallelism 1 (non-parallel sources, window_all)
    non_parallel = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.info = OperatorInfo()
        self.backend: HeapKeyedStateBackend | None = None
        self.side_outputs: dict[str, Batch] = {}
        self.out_watermark: int | None = None
        self.out_idle: bool | None = None
        self.current_watermark = MIN_WATERMARK
        self._restored: list[bytes] = []
        self._rt_key: Callable[[Any], Any] = _no_key

    # the pickled template carries no runtime state
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in d:
            if k.startswith("_rt_"):
                d[k] = None
        d["info"] = None
        d["backend"] = None
        d["side_outputs"] = {}
        return d

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.info = OperatorInfo()

    # lifecycle ---------------------------------------------------------------------------

    def setup(self, info: OperatorInfo) -> None:
        self.info = info

    def functions(self) -> list[Any]:
        """The user functions this operator opens and closes."""
        return []

    def open(self) -> None:
        ctx = _RuntimeContext(self)
        for fn in self.functions():
            _open_function(fn, ctx)

    def close(self) -> None:
        for fn in self.functions():
            _close_function(fn)

    def describe(self) -> str:
        """One line for the plan and ``moldau info``."""
        return self.name

    # records and time --------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> Batch | None:
        return batch

    def process_watermark(self, watermark: int) -> Batch | None:
        self.current_watermark = watermark
        self.out_watermark = watermark
        return None

    def process_watermark_status(self, idle: bool) -> None:
        self.out_idle = idle

    def on_processing_time(self, now: int) -> Batch | None:
        return None

    def next_processing_time(self) -> int | None:
        return None

    def end_input(self) -> Batch | None:
        return None

    def _side(self, tag: OutputTag | str, value: Any, ts: int | None) -> None:
        tid = tag.tag_id if isinstance(tag, OutputTag) else tag
        b = self.side_outputs.get(tid)
        if b is None:
            b = self.side_outputs[tid] = Batch([], [])
        b.values.append(value)
        b.timestamps.append(ts)  # type: ignore[union-attr]

    # state -------------------------------------------------------------------------------

    def snapshot_list_state(self) -> list[Any] | None:
        """Non-keyed state as a list of items, redistributed round-robin on a rescale."""
        return None

    def restore_list_state(self, items: list[Any]) -> None:
        pass

    def snapshot_state(self) -> bytes:
        """This subtask's state: keyed state by key group plus a list of operator state
        items (format: msgpack ``{"format", "keyed": bytes|None, "list": [bytes]|None}``,
        list items pickled one by one)."""
        import cloudpickle

        items = self.snapshot_list_state()
        return msgpack.packb({  # type: ignore[no-any-return]
            "format": OPERATOR_STATE_FORMAT,
            "keyed": self.backend.snapshot() if self.backend is not None else None,
            "list": None if items is None else [cloudpickle.dumps(i) for i in items],
        }, use_bin_type=True)

    def restore_state(self, snapshots: Sequence[bytes]) -> None:
        """Restore from the snapshots of *all* subtasks of this operator in an earlier run
        (in subtask order); call after ``setup`` and before ``open``. Keyed state: this
        subtask's key groups; list state: items ``i`` with ``i % parallelism ==
        subtask_index``."""
        import pickle

        keyed: list[bytes] = []
        items: list[Any] = []
        any_list = False
        for data in snapshots:
            doc = msgpack.unpackb(data, raw=False)
            if not isinstance(doc, dict) or doc.get("format") != OPERATOR_STATE_FORMAT:
                raise ValueError(f"{self.name}: not an operator state snapshot")
            if doc["keyed"] is not None:
                keyed.append(doc["keyed"])
            if doc["list"] is not None:
                any_list = True
                items.extend(doc["list"])
        self._restored = keyed
        if any_list:
            p, i = self.info.parallelism, self.info.subtask_index
            self.restore_list_state([pickle.loads(b) for j, b in enumerate(items)
                                     if j % p == i])


def _check_side(out: list[Any], op: StreamOperator, ts: int | None,
                values: list[Any], tss: list[int | None]) -> None:
    """Append a process function's outputs; ``(OutputTag, value)`` pairs go to the side."""
    for o in out:
        if type(o) is tuple and len(o) == 2 and isinstance(o[0], OutputTag):
            op._side(o[0], o[1], ts)
        else:
            values.append(o)
            tss.append(ts)


# --- keyed base ----------------------------------------------------------------------------


class KeyedOperator(StreamOperator):
    """An operator on a keyed stream: keyed state of its key groups and a timer service."""

    def __init__(self, name: str, key_selector: Any) -> None:
        super().__init__(name)
        self.key_selector = key_selector

    def open(self) -> None:
        info = self.info
        rng = compute_key_group_range_for_operator_index(info.max_parallelism,
                                                         info.parallelism, info.subtask_index)
        self.backend = HeapKeyedStateBackend(info.max_parallelism, rng)
        if self._restored:
            self.backend.restore(self._restored)
            self._restored = []
        self._rt_key = method_of(self.key_selector, "get_key", "not a key selector")
        self._rt_timers: InternalTimerService = self.backend.create_timer_service("timers")
        super().open()

    def next_processing_time(self) -> int | None:
        return self._rt_timers.next_processing_time()

    def end_input(self) -> Batch | None:
        if self.info.fire_processing_timers_at_end and self._rt_timers.has_processing_timers():
            return self.on_processing_time(MAX_WATERMARK)
        return None


# --- the source head -----------------------------------------------------------------------


class SourceOperator(StreamOperator):
    """The head of a source vertex: holds the source description; the runtime asks it for
    a reader (``create_reader``) and feeds what the reader returns through the chain.
    Its list state is the reader's split state (positions), so restores resume reading."""

    kind = "source"

    def __init__(self, name: str, source: Any, non_parallel: bool) -> None:
        super().__init__(name)
        self.source = source
        self.non_parallel = non_parallel
        self._rt_reader: Any = None
        self._rt_restored_splits: list[Any] | None = None

    def functions(self) -> list[Any]:
        return [self.source] if isinstance(self.source, Function) else []

    def create_reader(self, notify: Any = None) -> Any:
        """The reader of this subtask (see ``connector_runtime.SourceReader``)."""
        from moldau.clients.stream.connector_runtime import SourceReaderContext, create_reader

        ctx = SourceReaderContext(self.info, notify)
        self._rt_reader = create_reader(self.source, ctx, self._rt_restored_splits)
        return self._rt_reader

    def snapshot_list_state(self) -> list[Any] | None:
        if self._rt_reader is None:
            return self._rt_restored_splits
        return self._rt_reader.snapshot_state()  # type: ignore[no-any-return]

    def restore_list_state(self, items: list[Any]) -> None:
        self._rt_restored_splits = items

    def close(self) -> None:
        if self._rt_reader is not None:
            self._rt_reader.close()
        super().close()

    def describe(self) -> str:
        return f"{self.name} ({type(self.source).__name__})"


# --- one-record-in transformations --------------------------------------------------------


class _KeyContextMixin:
    """Map, flat_map and filter after ``key_by`` run with the record's key set, so their
    functions may use keyed state (as in Flink)."""


class MapOperator(StreamOperator):
    kind = "map"

    def __init__(self, name: str, fn: Any, key_selector: Any = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.key_selector = key_selector

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        _keyed_open(self)
        self._rt_fn = method_of(self.fn, "map", "map() needs a MapFunction or a function")
        super().open()

    def process_batch(self, batch: Batch) -> Batch | None:
        f = self._rt_fn
        if self.backend is None:
            return Batch([f(v) for v in batch.values], batch.timestamps)
        set_key, key = self.backend.set_current_key, self._rt_key
        out = []
        for v in batch.values:
            set_key(key(v))
            out.append(f(v))
        return Batch(out, batch.timestamps)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


def _keyed_open(op: StreamOperator) -> None:
    ks = getattr(op, "key_selector", None)
    if ks is None:
        return
    info = op.info
    rng = compute_key_group_range_for_operator_index(info.max_parallelism, info.parallelism,
                                                     info.subtask_index)
    op.backend = HeapKeyedStateBackend(info.max_parallelism, rng)
    if op._restored:
        op.backend.restore(op._restored)
        op._restored = []
    op._rt_key = method_of(ks, "get_key", "not a key selector")


class FlatMapOperator(StreamOperator):
    kind = "flat_map"

    def __init__(self, name: str, fn: Any, key_selector: Any = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.key_selector = key_selector

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        _keyed_open(self)
        self._rt_fn = emitter(method_of(self.fn, "flat_map",
                                        "flat_map() needs a FlatMapFunction or a function"), 1)
        super().open()

    def process_batch(self, batch: Batch) -> Batch | None:
        f = self._rt_fn
        values = batch.values
        tss = batch.timestamps
        backend = self.backend
        out: list[Any] = []
        if tss is None and backend is None:
            extend = out.extend
            for v in values:
                extend(f(v))
            return Batch(out)
        out_ts: list[int | None] = []
        set_key = backend.set_current_key if backend is not None else None
        key = self._rt_key if backend is not None else None
        for v, ts in zip(values, tss if tss is not None else itertools.repeat(None), strict=False):
            if set_key is not None:
                set_key(key(v))  # type: ignore[misc]
            res = f(v)
            if res:
                out.extend(res)
                out_ts.extend([ts] * len(res))
        return Batch(out, out_ts if tss is not None else None)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


class FilterOperator(StreamOperator):
    kind = "filter"

    def __init__(self, name: str, fn: Any, key_selector: Any = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.key_selector = key_selector

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        _keyed_open(self)
        self._rt_fn = method_of(self.fn, "filter", "filter() needs a FilterFunction or a "
                                "function")
        super().open()

    def process_batch(self, batch: Batch) -> Batch | None:
        f = self._rt_fn
        values = batch.values
        tss = batch.timestamps
        if self.backend is None:
            if tss is None:
                return Batch([v for v in values if f(v)])
            keep = [i for i, v in enumerate(values) if f(v)]
        else:
            set_key, key = self.backend.set_current_key, self._rt_key
            keep = []
            for i, v in enumerate(values):
                set_key(key(v))
                if f(v):
                    keep.append(i)
        if len(keep) == len(values):
            return batch
        return Batch([values[i] for i in keep],
                     [tss[i] for i in keep] if tss is not None else None)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


# --- process functions ----------------------------------------------------------------------


class _TimerServiceView:
    """``ctx.timer_service()`` of a process function."""

    __slots__ = ("_op",)

    def __init__(self, op: StreamOperator) -> None:
        self._op = op

    def current_processing_time(self) -> int:
        return self._op.info.clock()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def _timers(self) -> InternalTimerService:
        t = getattr(self._op, "_rt_timers", None)
        if t is None:
            raise RuntimeError("Setting timers is only supported on a keyed streams.")
        return t  # type: ignore[no-any-return]

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._timers().register_processing_time_timer(None, timestamp)

    def register_event_time_timer(self, timestamp: int) -> None:
        self._timers().register_event_time_timer(None, timestamp)

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._timers().delete_processing_time_timer(None, timestamp)

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._timers().delete_event_time_timer(None, timestamp)


class _ProcessContext:
    """The ``ctx`` of ``process_element`` / ``on_timer`` (one object, reused per record)."""

    __slots__ = ("_domain", "_op", "_timer_service", "_ts")

    def __init__(self, op: StreamOperator) -> None:
        self._op = op
        self._ts: int | None = None
        self._domain: TimeDomain | None = None
        self._timer_service = _TimerServiceView(op)

    def timestamp(self) -> int | None:
        return self._ts

    def timer_service(self) -> _TimerServiceView:
        return self._timer_service

    def get_current_key(self) -> Any:
        b = self._op.backend
        if b is None:
            raise RuntimeError("get_current_key() is only available on a keyed stream")
        return b.current_key

    def time_domain(self) -> TimeDomain | None:
        return self._domain

    def output(self, output_tag: OutputTag, value: Any) -> None:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"ctx.output() expects an OutputTag, got {output_tag!r:.60}")
        self._op._side(output_tag, value, self._ts)


class ProcessOperator(StreamOperator):
    """``DataStream.process(ProcessFunction)``: outputs carry the input's timestamp."""

    kind = "process"

    def __init__(self, name: str, fn: Any) -> None:
        super().__init__(name)
        self.fn = fn

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        self._rt_fn = emitter(method_of(self.fn, "process_element",
                                        "process() needs a ProcessFunction"), 2)
        self._rt_ctx = _ProcessContext(self)
        super().open()

    def process_batch(self, batch: Batch) -> Batch | None:
        f, ctx = self._rt_fn, self._rt_ctx
        values: list[Any] = []
        tss: list[int | None] = []
        for v, ts in batch.pairs():
            ctx._ts = ts
            _check_side(f(v, ctx), self, ts, values, tss)
        return Batch(values, tss)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


class KeyedProcessOperator(KeyedOperator):
    """``KeyedStream.process(KeyedProcessFunction)``: keyed state and per-key timers.
    Outputs of ``process_element`` carry the input's timestamp; outputs of an event-time
    ``on_timer`` carry the timer's time, those of a processing-time one none."""

    kind = "keyed_process"

    def __init__(self, name: str, fn: Any, key_selector: Any) -> None:
        super().__init__(name, key_selector)
        self.fn = fn

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        super().open()
        self._rt_fn = emitter(method_of(self.fn, "process_element",
                                        "process() needs a KeyedProcessFunction"), 2)
        on_timer = getattr(self.fn, "on_timer", None)
        self._rt_on_timer = emitter(on_timer, 2) if callable(on_timer) else None
        self._rt_ctx = _ProcessContext(self)

    def process_batch(self, batch: Batch) -> Batch | None:
        f, ctx, key = self._rt_fn, self._rt_ctx, self._rt_key
        set_key = self.backend.set_current_key  # type: ignore[union-attr]
        values: list[Any] = []
        tss: list[int | None] = []
        ctx._domain = None
        for v, ts in batch.pairs():
            set_key(key(v))
            ctx._ts = ts
            _check_side(f(v, ctx), self, ts, values, tss)
        return Batch(values, tss)

    def _fire(self, timers: Iterable[tuple[int, Any, Any]], domain: TimeDomain) -> Batch | None:
        values: list[Any] = []
        tss: list[int | None] = []
        ctx = self._rt_ctx
        ctx._domain = domain
        on_timer = self._rt_on_timer
        for ts, _key, _ns in timers:
            if on_timer is None:
                continue
            ctx._ts = ts
            out_ts = ts if domain is TimeDomain.EVENT_TIME else None
            _check_side(on_timer(ts, ctx), self, out_ts, values, tss)
        return Batch(values, tss) if values else None

    def process_watermark(self, watermark: int) -> Batch | None:
        self.current_watermark = watermark
        out = self._fire(self._rt_timers.advance_watermark(watermark), TimeDomain.EVENT_TIME)
        self.out_watermark = watermark
        return out

    def on_processing_time(self, now: int) -> Batch | None:
        return self._fire(self._rt_timers.advance_processing_time(now),
                          TimeDomain.PROCESSING_TIME)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


# --- rolling keyed aggregation ---------------------------------------------------------------


class KeyedReduceOperator(KeyedOperator):
    """``KeyedStream.reduce`` / ``sum`` / ``min`` / ``max`` / ``min_by`` / ``max_by``: emits
    the running aggregate of the key for every record."""

    kind = "keyed_reduce"

    def __init__(self, name: str, fn: Any, key_selector: Any) -> None:
        super().__init__(name, key_selector)
        self.fn = fn

    def functions(self) -> list[Any]:
        return [self.fn]

    def open(self) -> None:
        super().open()
        self._rt_reduce = method_of(self.fn, "reduce", "reduce() needs a ReduceFunction")
        self._rt_state = self.backend.get_state(  # type: ignore[union-attr]
            ValueStateDescriptor("_moldau_reduce"))

    def process_batch(self, batch: Batch) -> Batch | None:
        reduce, key, st = self._rt_reduce, self._rt_key, self._rt_state
        set_key = self.backend.set_current_key  # type: ignore[union-attr]
        get, put = st._get, st._put
        out = []
        for v in batch.values:
            set_key(key(v))
            cur = get()
            if cur is not _MISSING:
                v = reduce(cur, v)
            put(v)
            out.append(v)
        return Batch(out, batch.timestamps)

    def describe(self) -> str:
        return f"{self.name} ({describe_function(self.fn)})"


# --- event time ------------------------------------------------------------------------------


_NO_SPLIT = object()


class _GeneratorOutput(WatermarkOutput):
    __slots__ = ("idle", "watermark")

    def __init__(self) -> None:
        self.watermark = MIN_WATERMARK
        self.idle = False

    def emit_watermark(self, watermark: Any) -> None:
        ts = watermark if isinstance(watermark, int) else watermark.timestamp
        if ts > self.watermark:
            self.watermark = ts
        self.idle = False

    def mark_idle(self) -> None:
        self.idle = True

    def mark_active(self) -> None:
        self.idle = False


class TimestampsAndWatermarksOperator(StreamOperator):
    """Stamps records with their event time and generates watermarks from a
    ``WatermarkStrategy``: one generator per source split (when ``per_split``, as
    ``from_source`` does) or one per subtask (``assign_timestamps_and_watermarks``). The
    operator's watermark is the minimum over its non-idle splits; watermarks from upstream
    are replaced by its own, except the final ``MAX_WATERMARK``."""

    kind = "timestamps_watermarks"

    def __init__(self, name: str, strategy: Any, per_split: bool = False) -> None:
        super().__init__(name)
        self.strategy = strategy
        self.per_split = per_split

    def functions(self) -> list[Any]:
        return [a for a in (self.strategy._timestamp_assigner,) if a is not None]

    def open(self) -> None:
        self._rt_assign = self.strategy.create_timestamp_assigner()
        self._rt_gens: dict[Any, tuple[Any, _GeneratorOutput]] = {}
        self._rt_emitted = MIN_WATERMARK
        self._rt_idle = False
        self._rt_splitless_idle = False
        interval = int(self.info.config.get("pipeline.auto-watermark-interval", 200))
        self._rt_interval = interval
        self._rt_next_emit = self.info.clock() + interval if interval > 0 else None
        super().open()
        # A generator from the start, before any record: with idleness, a subtask that
        # never gets a record (an empty partition, no split at all) goes idle in time
        # instead of holding the watermark of the job back forever.
        self._gen(_NO_SPLIT if self.per_split else None)

    def _gen(self, split: Any) -> tuple[Any, _GeneratorOutput]:
        g = self._rt_gens.get(split)
        if g is None:
            if self.per_split:
                self._rt_gens.pop(_NO_SPLIT, None)  # a real split replaces the placeholder
            g = self._rt_gens[split] = (
                self.strategy.create_watermark_generator(self.info.clock), _GeneratorOutput())
        return g

    def process_batch(self, batch: Batch) -> Batch | None:
        gen, out = self._gen(batch.split if self.per_split else None)
        on_event = gen.on_event
        assign = self._rt_assign
        values = batch.values
        if assign is not None:
            tss = [assign(v, ts) for v, ts in batch.pairs()]
            batch = Batch(values, tss)
        else:
            tss = batch.timestamps  # type: ignore[assignment]
            if tss is None:
                if not self.strategy.is_no_watermarks:
                    raise ValueError(
                        f"{self.name}: records have no timestamps and the watermark strategy "
                        "has no timestamp assigner: use .with_timestamp_assigner(...)")
                return batch
        for v, ts in zip(values, tss, strict=False):
            if ts is not None:
                on_event(v, ts, out)
        if self.info.watermark_per_batch:
            self._periodic()
        else:
            self._update()
        return batch

    def _periodic(self) -> None:
        for gen, out in self._rt_gens.values():
            gen.on_periodic_emit(out)
        self._update()

    def _update(self) -> None:
        active = [out.watermark for s, (_, out) in self._rt_gens.items()
                  if not out.idle and not (s is _NO_SPLIT and self._rt_splitless_idle)]
        if not active:
            if self._rt_gens and not self._rt_idle:
                self._rt_idle = True
                self.out_idle = True
            return
        if self._rt_idle:
            self._rt_idle = False
            self.out_idle = False
        wm = min(active)
        if wm > self._rt_emitted:
            self._rt_emitted = wm
            self.current_watermark = wm
            self.out_watermark = wm

    def next_processing_time(self) -> int | None:
        return self._rt_next_emit

    def on_processing_time(self, now: int) -> Batch | None:
        if self._rt_next_emit is not None and now >= self._rt_next_emit:
            self._rt_next_emit = now + self._rt_interval
            self._periodic()
        return None

    def process_watermark(self, watermark: int) -> Batch | None:
        if watermark == MAX_WATERMARK:  # end of input passes through
            self._rt_emitted = watermark
            self.current_watermark = watermark
            self.out_watermark = watermark
        return None

    def process_watermark_status(self, idle: bool) -> None:
        # this operator decides idleness from its own generators, except for a source
        # subtask without any split (more subtasks than Kafka partitions): its reader's
        # "idle" counts, or it would hold event time back forever (as in Flink)
        if self.per_split:
            self._rt_splitless_idle = idle
            self._update()

    def end_input(self) -> Batch | None:
        self._rt_next_emit = None
        return None

    def describe(self) -> str:
        return f"{self.name} ({self.strategy!r})"


# --- windows ---------------------------------------------------------------------------------


class _WindowFunctionRunner:
    """Normalizes window functions to ``run(key, window, ctx, elements) -> outputs``."""

    def __init__(self, fn: Any, style: str) -> None:
        self.fn = fn
        self.style = style  # pass | apply | process | apply_all | process_all

    def bind(self) -> Callable[[Any, AnyWindow, Any, list[Any]], list[Any]]:
        fn, style = self.fn, self.style
        if style == "pass":
            return lambda key, window, ctx, elements: elements
        if style == "apply":
            f = emitter(method_of(fn, "apply", "not a WindowFunction"), 3)
            return lambda key, window, ctx, elements: f(key, window, elements)
        if style == "process":
            f = emitter(method_of(fn, "process", "not a ProcessWindowFunction"), 3)
            return lambda key, window, ctx, elements: f(key, ctx, elements)
        if style == "apply_all":
            f = emitter(method_of(fn, "apply", "not an AllWindowFunction"), 2)
            return lambda key, window, ctx, elements: f(window, elements)
        if style == "process_all":
            f = emitter(method_of(fn, "process", "not a ProcessAllWindowFunction"), 2)
            return lambda key, window, ctx, elements: f(ctx, elements)
        raise ValueError(style)

    def describe(self) -> str:
        return "PassThroughWindowFunction" if self.style == "pass" else describe_function(
            self.fn)


class _PerWindowStateStore:
    """``context.window_state()`` / ``global_state()`` of a process window function."""

    def __init__(self, op: WindowOperator, per_window: bool) -> None:
        self._op = op
        self._per_window = per_window

    def _get(self, descriptor: StateDescriptor) -> Any:
        backend = self._op.backend
        if descriptor.name.startswith("_moldau"):
            raise ValueError(f"state names starting with '_moldau' are reserved: "
                             f"{descriptor.name!r}")
        st = backend.get_state(descriptor)  # type: ignore[union-attr]
        st.set_current_namespace(self._op._rt_ctx._window if self._per_window else None)
        return st

    get_state = _get
    get_list_state = _get
    get_map_state = _get
    get_reducing_state = _get
    get_aggregating_state = _get


class _WindowContext(TriggerContext):
    """The trigger context and process-window-function context of the current
    (key, window); one object per operator, re-pointed before each use."""

    def __init__(self, op: WindowOperator) -> None:
        self._op = op
        self._window: Any = None
        self.merged_windows: list[Any] = []
        self._states: dict[str, Any] = {}
        self._window_state = _PerWindowStateStore(op, True)
        self._global_state = _PerWindowStateStore(op, False)

    # trigger context
    def get_current_processing_time(self) -> int:
        return self._op._rt_now if self._op._rt_now is not None else self._op.info.clock()

    def get_current_watermark(self) -> int:
        return self._op.current_watermark

    def register_processing_time_timer(self, time: int) -> None:
        self._op._rt_timers.register_processing_time_timer(self._window, time)

    def register_event_time_timer(self, time: int) -> None:
        self._op._rt_timers.register_event_time_timer(self._window, time)

    def delete_processing_time_timer(self, time: int) -> None:
        self._op._rt_timers.delete_processing_time_timer(self._window, time)

    def delete_event_time_timer(self, time: int) -> None:
        self._op._rt_timers.delete_event_time_timer(self._window, time)

    def get_partitioned_state(self, state_descriptor: Any) -> Any:
        st = self._states.get(state_descriptor.name)
        if st is None:
            d = state_descriptor
            internal = type(d)(f"_moldau_trigger_{d.name}",
                               *([d.reduce_function] if hasattr(d, "reduce_function") else
                                 [d.agg_function] if hasattr(d, "agg_function") else []))
            st = self._states[d.name] = self._op.backend.get_state(internal)  # type: ignore[union-attr]
        st.set_current_namespace(self._window)
        return st

    def merge_partitioned_state(self, state_descriptor: Any) -> None:
        st = self.get_partitioned_state(state_descriptor)
        st.merge_namespaces(self._window, self.merged_windows)

    # process window function context
    def window(self) -> Any:
        return self._window

    def current_processing_time(self) -> int:
        return self.get_current_processing_time()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def window_state(self) -> _PerWindowStateStore:
        return self._window_state

    def global_state(self) -> _PerWindowStateStore:
        return self._global_state

    def output(self, output_tag: OutputTag, value: Any) -> None:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"context.output() expects an OutputTag, got {output_tag!r:.60}")
        self._op._side(output_tag, value, self._window.max_timestamp())


class WindowOperator(KeyedOperator):
    """Keyed windows (Flink's ``WindowOperator``): assigns each record to windows, keeps
    their contents as keyed state in the window's namespace (a list of elements, a reduced
    value, or an aggregate accumulator), asks the trigger when to fire, runs the window
    function on fire (outputs stamped ``window.max_timestamp()``), and drops a window's
    state at its cleanup time (``max_timestamp + allowed_lateness`` in event time).
    Records for windows that are all past cleanup are *late*: they go to the late-data
    side output if one is set, else are dropped (counted in ``num_late_records_dropped``).
    """

    kind = "window"

    def __init__(self, name: str, key_selector: Any, assigner: WindowAssigner,
                 trigger: Trigger | None, contents: str, *, reduce_fn: Any = None,
                 agg_fn: Any = None, window_fn: _WindowFunctionRunner,
                 allowed_lateness: int = 0, late_tag: OutputTag | None = None,
                 evictor: Any = None, non_parallel: bool = False) -> None:
        super().__init__(name, key_selector)
        if contents not in ("list", "reduce", "aggregate"):
            raise ValueError(contents)
        self.assigner = assigner
        self.trigger = trigger if trigger is not None else assigner.get_default_trigger()
        self.contents = contents
        self.reduce_fn = reduce_fn
        self.agg_fn = agg_fn
        self.window_fn = window_fn
        self.allowed_lateness = allowed_lateness
        self.late_tag = late_tag
        self.evictor = evictor
        self.non_parallel = non_parallel
        self.num_late_records_dropped = 0

    def functions(self) -> list[Any]:
        fns = [f for f in (self.reduce_fn, self.agg_fn) if f is not None]
        if self.window_fn.style != "pass":
            fns.append(self.window_fn.fn)
        return fns

    def open(self) -> None:
        super().open()
        backend = self.backend
        assert backend is not None
        if self.contents == "list":
            d: StateDescriptor = ListStateDescriptor("_moldau_window_contents")
        elif self.contents == "reduce":
            d = ReducingStateDescriptor("_moldau_window_contents", self.reduce_fn)
        else:
            d = AggregatingStateDescriptor("_moldau_window_contents", self.agg_fn)
        self._rt_contents = backend.get_state(d)
        self._rt_merging = (backend.get_state(ValueStateDescriptor("_moldau_merging_windows"))
                            if self.assigner.is_merging() else None)
        if self._rt_merging is not None and not self.trigger.can_merge():
            raise ValueError(f"the trigger {self.trigger!r} can't be used with the merging "
                             f"window assigner {self.assigner!r}")
        self._rt_event_time = self.assigner.is_event_time()
        self._rt_ctx = _WindowContext(self)
        self._rt_wfn = self.window_fn.bind()
        self._rt_now: int | None = None
        self._rt_pwf_clear = (getattr(self.window_fn.fn, "clear", None)
                              if self.window_fn.style in ("process", "process_all") else None)
        from moldau.clients.stream.window import EventTimeTrigger, ProcessingTimeTrigger

        default = EventTimeTrigger if self._rt_event_time else ProcessingTimeTrigger
        from moldau.clients.stream.window import (
            SlidingEventTimeWindows,
            TumblingEventTimeWindows,
        )

        # the processing-time assigners subclass these two
        self._rt_fast = (isinstance(self.assigner, TumblingEventTimeWindows
                                    | SlidingEventTimeWindows)
                         and self.evictor is None and type(self.trigger) is default)
        self._rt_reduce = (method_of(self.reduce_fn, "reduce", "not a ReduceFunction")
                           if self.reduce_fn is not None else None)

    # times
    def _cleanup_time(self, window: AnyWindow) -> int:
        if self._rt_event_time:
            t: int = window.max_timestamp() + self.allowed_lateness
            return t if t >= window.max_timestamp() else MAX_WATERMARK
        return int(window.max_timestamp())

    def _is_window_late(self, window: AnyWindow) -> bool:
        return self._rt_event_time and self._cleanup_time(window) <= self.current_watermark

    def _register_cleanup_timer(self, window: AnyWindow) -> None:
        t = self._cleanup_time(window)
        if t >= MAX_WATERMARK:
            return  # the global window never gets cleaned up
        if self._rt_event_time:
            self._rt_timers.register_event_time_timer(window, t)
        else:
            self._rt_timers.register_processing_time_timer(window, t)

    def _delete_cleanup_timer(self, window: AnyWindow) -> None:
        t = self._cleanup_time(window)
        if t >= MAX_WATERMARK:
            return
        if self._rt_event_time:
            self._rt_timers.delete_event_time_timer(window, t)
        else:
            self._rt_timers.delete_processing_time_timer(window, t)

    # records
    def process_batch(self, batch: Batch) -> Batch | None:
        if self._rt_fast:
            return self._process_batch_fast(batch)
        key_of = self._rt_key
        set_key = self.backend.set_current_key  # type: ignore[union-attr]
        assign = self.assigner.assign_windows
        trigger = self.trigger
        contents = self._rt_contents
        ctx = self._rt_ctx
        now = self._rt_now = self.info.clock()
        merging = self._rt_merging is not None
        event_time = self._rt_event_time
        out_v: list[Any] = []
        out_t: list[int | None] = []
        for v, ts in batch.pairs():
            key = key_of(v)
            set_key(key)
            skipped = True
            for w in assign(v, ts, now):
                if merging:
                    merged = self._add_merging_window(w)  # type: ignore[arg-type]
                    if merged is None:
                        continue
                    w = merged
                elif event_time and self._is_window_late(w):
                    continue
                skipped = False
                contents.set_current_namespace(w)
                contents.add(v)
                ctx._window = w
                r = trigger.on_element(v, ts, w, ctx)
                if r.value[0]:
                    self._fire(key, w, out_v, out_t)
                if r.value[1]:
                    contents.set_current_namespace(w)
                    contents.clear()
                self._register_cleanup_timer(w)
            if skipped and event_time and ts is not None and (
                    ts + self.allowed_lateness <= self.current_watermark):
                if self.late_tag is not None:
                    self._side(self.late_tag, v, ts)
                else:
                    self.num_late_records_dropped += 1
        self._rt_now = None
        return Batch(out_v, out_t) if out_v else None

    def _process_batch_fast(self, batch: Batch) -> Batch | None:
        """``process_batch`` for the common case (time windows that don't merge, the
        assigner's own trigger, no evictor) with the trigger, the contents state and the
        timer registration inlined: the same rules as the general path, several times
        faster. Contents live where the state views keep them (key group -> key ->
        window), so firing, snapshots and restores see no difference."""
        key_of = self._rt_key
        backend = self.backend
        assert backend is not None
        set_key = backend.set_current_key
        table = self._rt_contents._table
        kind = self.contents
        reduce = self._rt_reduce
        agg = self.agg_fn
        timers = self._rt_timers
        event_time = self._rt_event_time
        index = timers._event if event_time else timers._proc
        heap = timers._event_heap if event_time else timers._proc_heap
        lateness = self.allowed_lateness
        wm = self.current_watermark
        assign = self.assigner.assign_windows
        now = self._rt_now = self.info.clock()
        push = heapq.heappush
        out_v: list[Any] = []
        out_t: list[int | None] = []
        for v, ts in batch.pairs():
            key = key_of(v)
            set_key(key)
            by_ns: dict[Any, Any] | None = None
            skipped = True
            for w in assign(v, ts, now):
                mt = w.end - 1  # type: ignore[union-attr]  # time windows only here
                if event_time and mt + lateness <= wm:
                    continue  # the window is gone
                skipped = False
                if by_ns is None:
                    kg = backend.current_key_group
                    by_key = table.get(kg)
                    if by_key is None:
                        by_key = table[kg] = {}
                    by_ns = by_key.get(key)
                    if by_ns is None:
                        by_ns = by_key[key] = {}
                cur = by_ns.get(w, _MISSING)
                if kind == "reduce":
                    by_ns[w] = v if cur is _MISSING else reduce(cur, v)  # type: ignore[misc]
                elif kind == "aggregate":
                    by_ns[w] = agg.add(v, agg.create_accumulator() if cur is _MISSING else cur)
                elif cur is _MISSING:
                    by_ns[w] = [v]
                else:
                    cur.append(v)
                if event_time and mt <= wm:
                    # EventTimeTrigger: a late (but allowed) element fires the window again
                    self._fire(key, w, out_v, out_t)
                else:
                    # the trigger's timer; without lateness it is also the cleanup timer
                    t = (mt, key, w)
                    if t not in index:
                        timers._seq += 1
                        index[t] = timers._seq
                        push(heap, (mt, timers._seq, key, w))
                if event_time and lateness:
                    t = (mt + lateness, key, w)
                    if t not in index:
                        timers._seq += 1
                        index[t] = timers._seq
                        push(heap, (mt + lateness, timers._seq, key, w))
            if skipped and event_time and ts is not None and ts + lateness <= wm:
                if self.late_tag is not None:
                    self._side(self.late_tag, v, ts)
                else:
                    self.num_late_records_dropped += 1
        self._rt_now = None
        return Batch(out_v, out_t) if out_v else None

    def _add_merging_window(self, new: TimeWindow) -> TimeWindow | None:
        """Flink's ``MergingWindowSet.addWindow`` with the window operator's merge
        callback: the key's session windows never overlap; a new window that overlaps or
        touches some of them replaces them by their cover, into which their contents,
        trigger state and timers move. Returns the window the record goes to, or None
        when that window is already late."""
        mstate = self._rt_merging
        assert mstate is not None
        current: list[TimeWindow] = list(mstate.value() or [])
        result = new
        merged_new = False
        groups = [(m, list(ws)) for m, ws in merge_windows([*current, new]) if len(ws) > 1]
        for merged, members in groups:
            if new in members:
                members.remove(new)
                merged_new = True
                result = merged
            for m in members:
                current.remove(m)
            current.append(merged)
            if not (len(members) == 1 and members[0] == merged):
                self._merge(merged, members)
        if not groups or (result == new and not merged_new):
            current.append(result)
        if self._is_window_late(result):
            current.remove(result)
            mstate.update(sorted(current) if current else None)
            return None
        mstate.update(sorted(current))
        return result

    def _merge(self, merged: TimeWindow, old: list[TimeWindow]) -> None:
        if self._rt_event_time and merged.max_timestamp() + self.allowed_lateness <= (
                self.current_watermark):
            raise RuntimeError("The end timestamp of an event-time window cannot become "
                               "earlier than the current watermark by merging. Current "
                               f"watermark: {self.current_watermark} window: {merged}")
        ctx = self._rt_ctx
        ctx._window = merged
        ctx.merged_windows = old
        self.trigger.on_merge(merged, ctx)
        for m in old:
            if m == merged:
                continue
            ctx._window = m
            self.trigger.clear(m, ctx)
            self._delete_cleanup_timer(m)
        ctx.merged_windows = []
        self._rt_contents.merge_namespaces(merged, old)

    def _fire(self, key: Any, window: AnyWindow, out_v: list[Any], out_t: list[int | None]
              ) -> None:
        contents = self._rt_contents
        contents.set_current_namespace(window)
        if self.contents == "list":
            elements = contents.get()
            if not elements:
                return
            if self.evictor is not None:
                kept = self.evictor.evict(elements)
                if len(kept) != len(elements):
                    contents.update(kept)
                elements = list(kept)
            else:
                elements = list(elements)
        else:
            value = contents.get()
            if value is None:
                return
            elements = [value]
        ctx = self._rt_ctx
        ctx._window = window
        ts = window.max_timestamp()
        for o in self._rt_wfn(key, window, ctx, elements):
            if type(o) is tuple and len(o) == 2 and isinstance(o[0], OutputTag):
                self._side(o[0], o[1], ts)
            else:
                out_v.append(o)
                out_t.append(ts)

    def _on_timer(self, ts: int, key: Any, window: AnyWindow, event: bool,
                  out_v: list[Any], out_t: list[int | None]) -> None:
        if self._rt_merging is not None:
            current = self._rt_merging.value() or []
            if window not in current:
                return  # merged away meanwhile
        ctx = self._rt_ctx
        ctx._window = window
        contents = self._rt_contents
        if event:
            r = self.trigger.on_event_time(ts, window, ctx)
        else:
            r = self.trigger.on_processing_time(ts, window, ctx)
        if r.value[0]:
            self._fire(key, window, out_v, out_t)
        if r.value[1]:
            contents.set_current_namespace(window)
            contents.clear()
        if event == self._rt_event_time and ts == self._cleanup_time(window):
            self._clear_all_state(window)

    def _clear_all_state(self, window: AnyWindow) -> None:
        contents = self._rt_contents
        contents.set_current_namespace(window)
        contents.clear()
        ctx = self._rt_ctx
        ctx._window = window
        self.trigger.clear(window, ctx)
        if self._rt_pwf_clear is not None:
            self._rt_pwf_clear(ctx)
        if self._rt_merging is not None:
            current = [w for w in (self._rt_merging.value() or []) if w != window]
            self._rt_merging.update(current or None)

    def process_watermark(self, watermark: int) -> Batch | None:
        self.current_watermark = watermark
        out_v: list[Any] = []
        out_t: list[int | None] = []
        for ts, key, window in self._rt_timers.advance_watermark(watermark):
            self._on_timer(ts, key, window, True, out_v, out_t)
        self.out_watermark = watermark
        return Batch(out_v, out_t) if out_v else None

    def on_processing_time(self, now: int) -> Batch | None:
        out_v: list[Any] = []
        out_t: list[int | None] = []
        self._rt_now = now
        for ts, key, window in self._rt_timers.advance_processing_time(now):
            self._on_timer(ts, key, window, False, out_v, out_t)
        self._rt_now = None
        return Batch(out_v, out_t) if out_v else None

    def describe(self) -> str:
        fn = (describe_function(self.reduce_fn) if self.reduce_fn is not None else
              describe_function(self.agg_fn) if self.agg_fn is not None else None)
        parts = [repr(self.assigner), repr(self.trigger)]
        if fn:
            parts.append(fn)
        parts.append(self.window_fn.describe())
        return f"Window({', '.join(parts)})"


# --- sinks -----------------------------------------------------------------------------------


class SinkOperator(StreamOperator):
    """Hands batches to the sink's writer (see ``connector_runtime.create_writer``)."""

    kind = "sink"

    def __init__(self, name: str, sink: Any) -> None:
        super().__init__(name)
        self.sink = sink
        self._rt_writer: Any = None
        self._rt_restored_items: list[Any] | None = None

    def functions(self) -> list[Any]:
        return [self.sink] if isinstance(self.sink, Function) else []

    def open(self) -> None:
        from moldau.clients.stream.connector_runtime import create_writer

        super().open()
        self._rt_writer = create_writer(self.sink, self)
        if self._rt_restored_items is not None:
            self._rt_writer.restore_state(self._rt_restored_items)
        self._rt_writer.open()

    def process_batch(self, batch: Batch) -> Batch | None:
        self._rt_writer.write_batch(batch)
        return None

    def process_watermark(self, watermark: int) -> Batch | None:
        self.current_watermark = watermark
        return None

    def end_input(self) -> Batch | None:
        self._rt_writer.flush(end_of_input=True)
        return None

    def snapshot_list_state(self) -> list[Any] | None:
        if self._rt_writer is None:
            return self._rt_restored_items
        self._rt_writer.flush(end_of_input=False)
        return self._rt_writer.snapshot_state()  # type: ignore[no-any-return]

    def restore_list_state(self, items: list[Any]) -> None:
        self._rt_restored_items = items

    def close(self) -> None:
        if self._rt_writer is not None:
            self._rt_writer.close()
        super().close()

    def describe(self) -> str:
        return f"{self.name} ({type(self.sink).__name__})"
