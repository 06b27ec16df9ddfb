"""The DataStream API: ``DataStream``, ``KeyedStream``, ``WindowedStream``,
``AllWindowedStream`` and ``DataStreamSink``, with PyFlink's method names.

Calls only describe the dataflow (they append stream nodes to the environment) and check
their arguments, so mistakes surface where they are written, with a message that says what
was expected. Nothing runs before ``env.execute()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moldau.clients.stream import functions as fn_mod
from moldau.clients.stream.connectors import (
    CollectSink,
    FileSink,
    FlinkKafkaProducer,
    KafkaSink,
    PrintSinkFunction,
)
from moldau.clients.stream.functions import (
    ConstantKeySelector,
    FieldAccessor,
    FieldKeySelector,
    OutputTag,
    check_function,
    describe_function,
)
from moldau.clients.stream.jobgraph import GraphError, Partitioning
from moldau.clients.stream.operators import (
    FilterOperator,
    FlatMapOperator,
    KeyedProcessOperator,
    KeyedReduceOperator,
    MapOperator,
    ProcessOperator,
    SinkOperator,
    StreamOperator,
    TimestampsAndWatermarksOperator,
    WindowOperator,
    _WindowFunctionRunner,
)
from moldau.clients.stream.time import TimeCharacteristic, to_millis
from moldau.clients.stream.transformations import InputRef, StreamNode
from moldau.clients.stream.typeinfo import TypeInformation
from moldau.clients.stream.watermark import WatermarkStrategy
from moldau.clients.stream.window import (
    CountEvictor,
    CountSlidingWindowAssigner,
    CountTumblingWindowAssigner,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    Trigger,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WindowAssigner,
)

if TYPE_CHECKING:
    from moldau.clients.stream.environment import StreamExecutionEnvironment

__all__ = ["AllWindowedStream", "DataStream", "DataStreamSink", "KeyedStream",
           "WindowedStream"]


def _check_parallelism(n: Any, what: str = "parallelism") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    from moldau.clients.stream.keygroups import UPPER_BOUND_MAX_PARALLELISM

    if n > UPPER_BOUND_MAX_PARALLELISM:
        raise ValueError(f"{what} must be at most {UPPER_BOUND_MAX_PARALLELISM}, got {n}")
    return n


class DataStream:
    """A stream of records. Produced by a source or an operator (then ``name``, ``uid``,
    ``set_parallelism`` configure that operator), or by ``union`` / a partitioning call."""

    def __init__(self, env: StreamExecutionEnvironment, inputs: tuple[InputRef, ...],
                 node: StreamNode | None, type_info: TypeInformation | None = None) -> None:
        self._env = env
        self._inputs = inputs
        self._node = node
        self._type_info = type_info

    # configuring the operator that made this stream --------------------------------------------

    def _own(self, what: str) -> StreamNode:
        if self._node is None:
            raise TypeError(f"{what}() configures an operator; this stream is the result of "
                            "union() or a partitioning (shuffle/rebalance/...), which are no "
                            "operators")
        return self._node

    def name(self, name: str) -> DataStream:
        """Name the operator (shown in the plan and the dashboard)."""
        node = self._own("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"an operator name must be a non-empty string, got {name!r}")
        kind = node.operator.kind
        node.name = (f"Source: {name}" if kind == "source" else
                     f"Sink: {name}" if kind == "sink" else name)
        return self

    def get_name(self) -> str:
        return self._own("get_name").name

    def uid(self, uid: str) -> DataStream:
        """A stable id of the operator: its state is matched by it on restore."""
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"a uid must be a non-empty string, got {uid!r}")
        self._own("uid").uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> DataStream:
        node = self._own("set_parallelism")
        p = _check_parallelism(parallelism)
        if node.operator.non_parallel and p != 1:
            raise GraphError(f"The parallelism of non parallel operator '{node.name}' must be "
                             f"1, not {p}.")
        if node.max_parallelism is not None and p > node.max_parallelism:
            raise GraphError(f"parallelism {p} of '{node.name}' is larger than its max "
                             f"parallelism {node.max_parallelism}")
        node.parallelism = p
        return self

    def set_max_parallelism(self, max_parallelism: int) -> DataStream:
        node = self._own("set_max_parallelism")
        mp = _check_parallelism(max_parallelism, "max parallelism")
        if node.parallelism is not None and node.parallelism > mp:
            raise GraphError(f"max parallelism {mp} of '{node.name}' is smaller than its "
                             f"parallelism {node.parallelism}")
        node.max_parallelism = mp
        return self

    def get_parallelism(self) -> int:
        node = self._node
        if node is not None and node.parallelism is not None:
            return node.parallelism
        if node is not None and node.operator.non_parallel:
            return 1
        return self._env.get_parallelism()

    def disable_chaining(self) -> DataStream:
        self._own("disable_chaining").chaining = "never"
        return self

    def start_new_chain(self) -> DataStream:
        self._own("start_new_chain").chaining = "head"
        return self

    def slot_sharing_group(self, name: str) -> DataStream:
        self._own("slot_sharing_group").slot_sharing_group = str(name)
        return self

    def get_type(self) -> TypeInformation | None:
        return self._type_info

    def get_execution_environment(self) -> StreamExecutionEnvironment:
        return self._env

    # building blocks ------------------------------------------------------------------------

    def _refs(self, partitioning: Partitioning | None = None, key: Any = None
              ) -> list[InputRef]:
        if partitioning is None:
            return list(self._inputs)
        return [InputRef(r.node, partitioning, key, r.side_tag) for r in self._inputs]

    def _add(self, operator: StreamOperator, name: str, inputs: list[InputRef],
             type_info: TypeInformation | None = None) -> DataStream:
        node = self._env._add_node(operator, name, inputs, type_info)
        return DataStream(self._env, (InputRef(node),), node, type_info)

    # transformations --------------------------------------------------------------------------

    def map(self, func: Any, output_type: TypeInformation | None = None) -> DataStream:
        """One output per record: ``func(value)`` or ``MapFunction.map(value)``."""
        check_function(func, "map", "map()", "MapFunction")
        return self._add(MapOperator("Map", func, self._key_context()), "Map", self._refs(),
                         output_type)

    def flat_map(self, func: Any, output_type: TypeInformation | None = None) -> DataStream:
        """Zero or more outputs per record (yielded, returned as an iterable, or collected
        with an ``out`` argument)."""
        check_function(func, "flat_map", "flat_map()", "FlatMapFunction")
        return self._add(FlatMapOperator("Flat Map", func, self._key_context()), "Flat Map",
                         self._refs(), output_type)

    def filter(self, func: Any) -> DataStream:
        """The records for which ``func(value)`` is true."""
        check_function(func, "filter", "filter()", "FilterFunction")
        return self._add(FilterOperator("Filter", func, self._key_context()), "Filter",
                         self._refs(), self._type_info)

    def process(self, func: Any, output_type: TypeInformation | None = None) -> DataStream:
        """A ``ProcessFunction``: ``process_element(value, ctx)`` yields outputs; side outputs
        with ``yield tag, value`` or ``ctx.output(tag, value)``."""
        check_function(func, "process_element", "process()", "ProcessFunction")
        return self._add(ProcessOperator("Process", func), "Process", self._refs(),
                         output_type)

    def _key_context(self) -> Any:
        return None

    def key_by(self, *keys: Any, key_type: TypeInformation | None = None) -> KeyedStream:
        """Partition by key: a ``KeySelector``, a function of the record, one or more field
        positions (``key_by(0)``, ``key_by(0, 1)``) or field names (``key_by("word")``)."""
        if not keys:
            raise TypeError("key_by() needs a key selector, a field position or a field name")
        if len(keys) == 1 and isinstance(keys[0], list | tuple) and keys[0] and all(
                isinstance(k, int | str) and not isinstance(k, bool) for k in keys[0]):
            keys = tuple(keys[0])
        if len(keys) == 1 and not isinstance(keys[0], int | str):
            ks = keys[0]
            if isinstance(ks, bool) or not (callable(ks) or callable(getattr(ks, "get_key",
                                                                            None))):
                raise TypeError("key_by() expects a KeySelector, a function, a field index or "
                                f"a field name; got {type(ks).__name__} {ks!r:.60}")
            if isinstance(ks, type):
                raise TypeError(f"key_by() got the class {ks.__name__}: pass an instance")
            selector = ks
        else:
            for k in keys:
                if isinstance(k, bool) or not isinstance(k, int | str):
                    raise TypeError("key_by() fields must be positions (int) or names (str); "
                                    f"got {k!r:.60}")
                if isinstance(k, int) and k < 0:
                    raise ValueError(f"key_by(): a field position can't be negative: {k}")
            self._check_fields(keys, "key_by")
            selector = FieldKeySelector(keys)
        return KeyedStream(self._env, tuple(self._refs(Partitioning.HASH, selector)), selector,
                           self._type_info)

    def _check_fields(self, fields: tuple[Any, ...], api: str) -> None:
        """Check field references against the stream's type when it is known."""
        t = self._type_info
        if t is None:
            return
        atomic = t.name in _ATOMIC
        for f in fields:
            if isinstance(f, int):
                if t.arity is not None:
                    if f >= t.arity:
                        raise GraphError(f"{api}({f}): the stream's type {t!r} has {t.arity} "
                                         f"fields (positions 0..{t.arity - 1})")
                elif atomic and f != 0:
                    raise GraphError(f"{api}({f}): field positions only apply to tuples and "
                                     f"rows; this stream's type is {t!r}")
            elif t.field_names is not None:
                if f not in t.field_names:
                    raise GraphError(f"{api}({f!r}): unknown field; the stream's type {t!r} "
                                     f"has the fields {', '.join(t.field_names)}")
            elif t.arity is not None:
                raise GraphError(f"{api}({f!r}): the stream's type {t!r} has no field names; "
                                 "refer to its fields by position")
            elif atomic:
                raise GraphError(f"{api}({f!r}): field names need a composite type (a row, a "
                                 f"named tuple, a dict or an object); this stream's type is "
                                 f"{t!r}")

    def union(self, *streams: DataStream) -> DataStream:
        """The records of this stream and of ``streams``, merged."""
        refs = list(self._inputs)
        for s in streams:
            if not isinstance(s, DataStream):
                raise TypeError(f"union() expects DataStreams, got {s!r:.60}")
            if s._env is not self._env:
                raise GraphError("union() of streams from different execution environments")
            refs.extend(s._inputs)
        return DataStream(self._env, tuple(refs), None, self._type_info)

    def _partitioned(self, p: Partitioning) -> DataStream:
        return DataStream(self._env, tuple(self._refs(p)), None, self._type_info)

    def shuffle(self) -> DataStream:
        return self._partitioned(Partitioning.SHUFFLE)

    def rebalance(self) -> DataStream:
        return self._partitioned(Partitioning.REBALANCE)

    def rescale(self) -> DataStream:
        return self._partitioned(Partitioning.RESCALE)

    def forward(self) -> DataStream:
        return self._partitioned(Partitioning.FORWARD)

    def global_(self) -> DataStream:
        return self._partitioned(Partitioning.GLOBAL)

    def broadcast(self, *descriptors: Any) -> DataStream:
        """Every record to every parallel instance of the next operator."""
        if descriptors:
            raise NotImplementedError("broadcast state (broadcast(MapStateDescriptor)) is not "
                                      "supported; broadcast() without arguments is")
        return self._partitioned(Partitioning.BROADCAST)

    def assign_timestamps_and_watermarks(self, watermark_strategy: WatermarkStrategy
                                         ) -> DataStream:
        """Stamp records with event time and generate watermarks."""
        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError("assign_timestamps_and_watermarks() expects a WatermarkStrategy, "
                            f"got {watermark_strategy!r:.60}")
        return self._add(TimestampsAndWatermarksOperator("Timestamps/Watermarks",
                                                         watermark_strategy),
                         "Timestamps/Watermarks", self._refs(), self._type_info)

    def get_side_output(self, output_tag: OutputTag) -> DataStream:
        """The records the operator of this stream sent to side output ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"get_side_output() expects an OutputTag, got {output_tag!r:.60}")
        node = self._own("get_side_output")
        return DataStream(self._env, (InputRef(node, None, None, output_tag.tag_id),), None,
                          output_tag.type_info)

    # windows without key ------------------------------------------------------------------------

    def window_all(self, window_assigner: WindowAssigner) -> AllWindowedStream:
        """Windows over the whole stream (one non-parallel operator)."""
        _check_assigner(window_assigner, "window_all()")
        return AllWindowedStream(self, window_assigner)

    def count_window_all(self, size: int, slide: int = 0) -> AllWindowedStream:
        return AllWindowedStream(self, *_count_assigner(size, slide))

    def time_window_all(self, size: Any, slide: Any = None) -> AllWindowedStream:
        return AllWindowedStream(self, _time_assigner(self._env, size, slide))

    # sinks --------------------------------------------------------------------------------------

    def print(self, sink_identifier: str | None = None) -> DataStreamSink:
        """Print every record on the stdout of the subtask (a TaskManager's stdout in a
        cluster), prefixed ``<subtask+1>> `` when the sink is parallel."""
        return self._sink(SinkOperator("Sink: Print to Std. Out",
                                       PrintSinkFunction(sink_identifier)),
                          "Sink: Print to Std. Out")

    def print_to_err(self, sink_identifier: str | None = None) -> DataStreamSink:
        return self._sink(SinkOperator("Sink: Print to Std. Err",
                                       PrintSinkFunction(sink_identifier, True)),
                          "Sink: Print to Std. Err")

    def add_sink(self, sink_func: Any) -> DataStreamSink:
        """A ``SinkFunction`` (``invoke(value, context)``), a function of the record, or a
        connector sink (``FlinkKafkaProducer``, ``KafkaSink``, ``FileSink``, ``CollectSink``)."""
        if isinstance(sink_func, type):
            raise TypeError(f"add_sink() got the class {sink_func.__name__}: pass an instance")
        known = (PrintSinkFunction, CollectSink, FileSink, KafkaSink, FlinkKafkaProducer)
        if not isinstance(sink_func, known):
            check_function(sink_func, "invoke", "add_sink()", "SinkFunction")
        if isinstance(sink_func, CollectSink):
            self._env._collect_sinks[sink_func.collect_id] = sink_func
        name = _sink_name(sink_func)
        return self._sink(SinkOperator(name, sink_func), name)

    def sink_to(self, sink: Any) -> DataStreamSink:
        """A unified-API sink (``KafkaSink``, ``FileSink``)."""
        return self.add_sink(sink)

    def _sink(self, op: SinkOperator, name: str) -> DataStreamSink:
        node = self._env._add_node(op, name, self._refs(), None)
        return DataStreamSink(self._env, node)

    def execute_and_collect(self, job_execution_name: str | None = None,
                            limit: int | None = None) -> Any:
        """Run the job and return its records: a list of at most ``limit`` records, or an
        iterator (closeable, usable in ``with``) over all of them."""
        sink = CollectSink()
        self.add_sink(sink).name("Collect Stream Sink")
        self._env.execute(job_execution_name or "Collect Job")
        if not sink.delivered:
            raise RuntimeError("the executor of this job did not deliver collected results: "
                               "execute_and_collect() needs an executor that supports it "
                               "(the local executor does)")
        results = sink.results
        if limit is not None:
            return results[:limit]
        return CloseableIterator(results)


class CloseableIterator:
    """What ``execute_and_collect()`` returns without a limit."""

    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)

    def __iter__(self) -> CloseableIterator:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def close(self) -> None:
        self._it = iter(())

    def __enter__(self) -> CloseableIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ATOMIC = frozenset({"String", "Byte", "Boolean", "Short", "Integer", "Long", "Float",
                     "Double", "Character", "BigInteger", "BigDecimal", "Date", "Time",
                     "Timestamp", "Instant"})


def _sink_name(sink: Any) -> str:
    if isinstance(sink, CollectSink):
        return "Sink: Collect Sink"
    if isinstance(sink, KafkaSink | FlinkKafkaProducer):
        return "Sink: Kafka Sink"
    if isinstance(sink, FileSink):
        return "Sink: File Sink"
    return "Sink: Unnamed"


class DataStreamSink:
    """The end of a stream; configures the sink operator."""

    def __init__(self, env: StreamExecutionEnvironment, node: StreamNode) -> None:
        self._env = env
        self._node = node

    def name(self, name: str) -> DataStreamSink:
        DataStream(self._env, (), self._node).name(name)
        return self

    def uid(self, uid: str) -> DataStreamSink:
        DataStream(self._env, (), self._node).uid(uid)
        return self

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        DataStream(self._env, (), self._node).set_parallelism(parallelism)
        return self

    def disable_chaining(self) -> DataStreamSink:
        self._node.chaining = "never"
        return self

    def slot_sharing_group(self, name: str) -> DataStreamSink:
        self._node.slot_sharing_group = str(name)
        return self


# --- keyed streams -------------------------------------------------------------------------------


class KeyedStream(DataStream):
    """A stream partitioned by key: rolling aggregations, keyed process functions (state
    and timers per key) and windows. ``map``/``flat_map``/``filter`` on it may use keyed
    state."""

    def __init__(self, env: StreamExecutionEnvironment, inputs: tuple[InputRef, ...],
                 key_selector: Any, type_info: TypeInformation | None) -> None:
        super().__init__(env, inputs, None, type_info)
        self._key_selector = key_selector

    def _key_context(self) -> Any:
        return self._key_selector

    def get_key_selector(self) -> Any:
        return self._key_selector

    def process(self, func: Any, output_type: TypeInformation | None = None) -> DataStream:
        """A ``KeyedProcessFunction``: keyed state via ``open(runtime_context)``, per-key
        timers via ``ctx.timer_service()``, ``on_timer(timestamp, ctx)``."""
        check_function(func, "process_element", "process()", "KeyedProcessFunction")
        return self._add(KeyedProcessOperator("KeyedProcess", func, self._key_selector),
                         "KeyedProcess", self._refs(), output_type)

    def reduce(self, func: Any) -> DataStream:
        """The running ``func(accumulated, value)`` per key, emitted for every record."""
        check_function(func, "reduce", "reduce()", "ReduceFunction")
        return self._add(KeyedReduceOperator("Keyed Reduce", func, self._key_selector),
                         "Keyed Reduce", self._refs(), self._type_info)

    def _aggregation(self, reducer: Any) -> DataStream:
        return self._add(KeyedReduceOperator("Keyed Aggregation", reducer, self._key_selector),
                         "Keyed Aggregation", self._refs(), self._type_info)

    def sum(self, position_to_sum: int | str = 0) -> DataStream:
        """The running sum of a field per key (other fields from the key's first record)."""
        self._check_fields((position_to_sum,), "sum")
        return self._aggregation(SumAggregator(position_to_sum))

    def min(self, position_to_min: int | str = 0) -> DataStream:
        self._check_fields((position_to_min,), "min")
        return self._aggregation(MinMaxAggregator(position_to_min, True))

    def max(self, position_to_max: int | str = 0) -> DataStream:
        self._check_fields((position_to_max,), "max")
        return self._aggregation(MinMaxAggregator(position_to_max, False))

    def min_by(self, position_to_min_by: int | str = 0, first: bool = True) -> DataStream:
        """The record with the smallest field value per key (the first one on ties)."""
        self._check_fields((position_to_min_by,), "min_by")
        return self._aggregation(MinMaxByAggregator(position_to_min_by, True, first))

    def max_by(self, position_to_max_by: int | str = 0, first: bool = True) -> DataStream:
        self._check_fields((position_to_max_by,), "max_by")
        return self._aggregation(MinMaxByAggregator(position_to_max_by, False, first))

    def window(self, window_assigner: WindowAssigner) -> WindowedStream:
        """Windows per key: ``window(SlidingProcessingTimeWindows.of(Time.seconds(15),
        Time.seconds(5)))``."""
        _check_assigner(window_assigner, "window()")
        return WindowedStream(self, window_assigner)

    def count_window(self, size: int, slide: int = 0) -> WindowedStream:
        """Windows of ``size`` records per key (every ``slide`` records when sliding)."""
        return WindowedStream(self, *_count_assigner(size, slide))

    def time_window(self, size: Any, slide: Any = None) -> WindowedStream:
        """The older ``timeWindow(size[, slide])``: event-time windows unless the environment
        was set to processing time (``set_stream_time_characteristic``)."""
        return WindowedStream(self, _time_assigner(self._env, size, slide))

    # a KeyedStream isn't an operator
    def set_parallelism(self, parallelism: int) -> DataStream:
        raise TypeError("set_parallelism() configures an operator; key_by() is a partitioning, "
                        "set the parallelism of the operator after it")


def _check_assigner(a: Any, api: str) -> None:
    if isinstance(a, type) and issubclass(a, WindowAssigner):
        raise TypeError(f"{api} got the class {a.__name__}: use {a.__name__}.of(...)")
    if not isinstance(a, WindowAssigner):
        raise TypeError(f"{api} expects a WindowAssigner such as "
                        "TumblingEventTimeWindows.of(Time.seconds(5)); got "
                        f"{type(a).__name__} {a!r:.60}")


def _count_assigner(size: int, slide: int) -> tuple[WindowAssigner, Any]:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"count window size must be a positive int, got {size!r}")
    if slide and (not isinstance(slide, int) or slide <= 0):
        raise ValueError(f"count window slide must be a positive int, got {slide!r}")
    if not slide:
        return CountTumblingWindowAssigner(size), None
    return CountSlidingWindowAssigner(size, slide), CountEvictor(size)


def _time_assigner(env: StreamExecutionEnvironment, size: Any, slide: Any) -> WindowAssigner:
    proc = env.get_stream_time_characteristic() is not TimeCharacteristic.EventTime
    if slide is None:
        return (TumblingProcessingTimeWindows if proc else TumblingEventTimeWindows).of(size)
    return (SlidingProcessingTimeWindows if proc else SlidingEventTimeWindows).of(size, slide)


# --- aggregations (picklable reduce functions) ---------------------------------------------------


class SumAggregator(fn_mod.ReduceFunction):
    def __init__(self, field: int | str) -> None:
        self.field = field
        self._acc = FieldAccessor(field)

    def reduce(self, value1: Any, value2: Any) -> Any:
        f = self.field
        if type(value1) is tuple and type(f) is int:  # the common (word, count) case
            return (*value1[:f], value1[f] + value2[f], *value1[f + 1:])
        a = self._acc
        return a.set(value1, a.get(value1) + a.get(value2))

    def __repr__(self) -> str:
        return f"SumAggregator({self.field!r})"


class MinMaxAggregator(fn_mod.ReduceFunction):
    def __init__(self, field: int | str, is_min: bool) -> None:
        self.field = field
        self.is_min = is_min
        self._acc = FieldAccessor(field)

    def reduce(self, value1: Any, value2: Any) -> Any:
        a = self._acc
        x, y = a.get(value1), a.get(value2)
        better = y < x if self.is_min else y > x
        return a.set(value1, y) if better else value1

    def __repr__(self) -> str:
        return f"{'Min' if self.is_min else 'Max'}Aggregator({self.field!r})"


class MinMaxByAggregator(fn_mod.ReduceFunction):
    def __init__(self, field: int | str, is_min: bool, first: bool) -> None:
        self.field = field
        self.is_min = is_min
        self.first = first
        self._acc = FieldAccessor(field)

    def reduce(self, value1: Any, value2: Any) -> Any:
        a = self._acc
        x, y = a.get(value1), a.get(value2)
        if x == y:
            return value1 if self.first else value2
        better = y < x if self.is_min else y > x
        return value2 if better else value1

    def __repr__(self) -> str:
        return f"{'MinBy' if self.is_min else 'MaxBy'}Aggregator({self.field!r})"


# --- windowed streams ----------------------------------------------------------------------------


class WindowedStream:
    """Records of a keyed stream grouped into windows; a window function makes the output."""

    _all = False

    def __init__(self, stream: DataStream, assigner: WindowAssigner, evictor: Any = None
                 ) -> None:
        self._stream = stream
        self._assigner = assigner
        self._trigger: Trigger | None = None
        self._lateness = 0
        self._late_tag: OutputTag | None = None
        self._evictor = evictor

    def _key(self) -> Any:
        return self._stream._key_selector  # type: ignore[attr-defined]

    def trigger(self, trigger: Trigger) -> WindowedStream:
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger() expects a Trigger, got {trigger!r:.60}")
        if self._assigner.is_merging() and not trigger.can_merge():
            raise GraphError(f"the trigger {trigger!r} can't be used with the merging window "
                             f"assigner {self._assigner!r}")
        self._trigger = trigger
        return self

    def allowed_lateness(self, time_ms: Any) -> WindowedStream:
        """Keep windows (and fire again for late records) this long after the watermark
        passed their end; only event-time windows have lateness."""
        ms = to_millis(time_ms, "the allowed lateness")
        if ms < 0:
            raise ValueError(f"the allowed lateness can't be negative, got {ms} ms")
        self._lateness = ms
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> WindowedStream:
        """Send records that arrive after their windows are gone to ``output_tag``
        (``get_side_output(output_tag)`` on the result)."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data() expects an OutputTag, got "
                            f"{output_tag!r:.60}")
        self._late_tag = output_tag
        return self

    def evictor(self, evictor: Any) -> WindowedStream:
        if not callable(getattr(evictor, "evict", None)):
            raise TypeError("evictor() expects an evictor such as CountEvictor.of(n)")
        self._evictor = evictor
        return self

    def _build(self, contents: str, runner: _WindowFunctionRunner, fn_name: str, *,
               reduce_fn: Any = None, agg_fn: Any = None,
               output_type: TypeInformation | None = None) -> DataStream:
        if self._evictor is not None and contents != "list":
            contents = "list"  # an evictor needs the elements: reduce/aggregate when firing
            runner = _EvictingRunner(runner, reduce_fn, agg_fn)
            reduce_fn = agg_fn = None
        op = WindowOperator("Window", self._key(), self._assigner, self._trigger, contents,
                            reduce_fn=reduce_fn, agg_fn=agg_fn, window_fn=runner,
                            allowed_lateness=self._lateness, late_tag=self._late_tag,
                            evictor=self._evictor, non_parallel=self._all)
        name = op.describe()
        op.name = name
        s = self._stream
        return s._add(op, name, s._refs(), output_type)

    def reduce(self, reduce_function: Any, window_function: Any = None,
               output_type: TypeInformation | None = None) -> DataStream:
        """Incrementally reduce each window; ``window_function`` (a WindowFunction or
        ProcessWindowFunction) gets the single reduced value when the window fires."""
        check_function(reduce_function, "reduce", "reduce()", "ReduceFunction")
        return self._build("reduce", _runner(window_function, self._all),
                           describe_function(reduce_function), reduce_fn=reduce_function,
                           output_type=output_type)

    def aggregate(self, aggregate_function: Any, window_function: Any = None,
                  accumulator_type: Any = None, output_type: TypeInformation | None = None
                  ) -> DataStream:
        """Incrementally aggregate each window with an ``AggregateFunction``."""
        for m in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(aggregate_function, m, None)):
                raise TypeError("aggregate() expects an AggregateFunction (create_accumulator, "
                                f"add, get_result, merge); got {aggregate_function!r:.60}")
        return self._build("aggregate", _runner(window_function, self._all),
                           describe_function(aggregate_function), agg_fn=aggregate_function,
                           output_type=output_type)

    def apply(self, window_function: Any, output_type: TypeInformation | None = None
              ) -> DataStream:
        """``apply(key, window, inputs)`` of a WindowFunction with all records of the window
        (``apply(window, inputs)`` for window_all)."""
        style = "apply_all" if self._all else "apply"
        check_function(window_function, "apply", "apply()",
                       "AllWindowFunction" if self._all else "WindowFunction")
        return self._build("list", _WindowFunctionRunner(window_function, style),
                           describe_function(window_function), output_type=output_type)

    def process(self, process_window_function: Any,
                output_type: TypeInformation | None = None) -> DataStream:
        """``process(key, context, elements)`` of a ProcessWindowFunction."""
        style = "process_all" if self._all else "process"
        check_function(process_window_function, "process", "process()",
                       "ProcessAllWindowFunction" if self._all else "ProcessWindowFunction")
        return self._build("list", _WindowFunctionRunner(process_window_function, style),
                           describe_function(process_window_function),
                           output_type=output_type)

    def _agg(self, reducer: Any, field: int | str, api: str) -> DataStream:
        self._stream._check_fields((field,), api)
        return self._build("reduce", _WindowFunctionRunner(None, "pass"), repr(reducer),
                           reduce_fn=reducer, output_type=self._stream._type_info)

    def sum(self, position_to_sum: int | str = 0) -> DataStream:
        return self._agg(SumAggregator(position_to_sum), position_to_sum, "sum")

    def min(self, position_to_min: int | str = 0) -> DataStream:
        return self._agg(MinMaxAggregator(position_to_min, True), position_to_min, "min")

    def max(self, position_to_max: int | str = 0) -> DataStream:
        return self._agg(MinMaxAggregator(position_to_max, False), position_to_max, "max")

    def min_by(self, position_to_min_by: int | str = 0) -> DataStream:
        return self._agg(MinMaxByAggregator(position_to_min_by, True, True),
                         position_to_min_by, "min_by")

    def max_by(self, position_to_max_by: int | str = 0) -> DataStream:
        return self._agg(MinMaxByAggregator(position_to_max_by, False, True),
                         position_to_max_by, "max_by")


class AllWindowedStream(WindowedStream):
    """Windows over a whole (non-keyed) stream: one non-parallel window operator."""

    _all = True

    def __init__(self, stream: DataStream, assigner: WindowAssigner, evictor: Any = None
                 ) -> None:
        keyed = KeyedStream(stream._env, tuple(stream._refs(Partitioning.GLOBAL,
                                                            ConstantKeySelector())),
                            ConstantKeySelector(), stream._type_info)
        super().__init__(keyed, assigner, evictor)

    def _key(self) -> Any:
        return ConstantKeySelector()


def _runner(window_function: Any, all_: bool) -> _WindowFunctionRunner:
    if window_function is None:
        return _WindowFunctionRunner(None, "pass")
    if isinstance(window_function, fn_mod.ProcessWindowFunction | fn_mod.ProcessAllWindowFunction):
        return _WindowFunctionRunner(window_function, "process_all" if all_ else "process")
    if isinstance(window_function, fn_mod.WindowFunction | fn_mod.AllWindowFunction) or callable(
            getattr(window_function, "apply", None)):
        return _WindowFunctionRunner(window_function, "apply_all" if all_ else "apply")
    if callable(getattr(window_function, "process", None)):
        return _WindowFunctionRunner(window_function, "process_all" if all_ else "process")
    if callable(window_function):
        return _WindowFunctionRunner(window_function, "apply_all" if all_ else "apply")
    raise TypeError("the window function must be a WindowFunction or ProcessWindowFunction, "
                    f"got {window_function!r:.60}")


class _EvictingRunner(_WindowFunctionRunner):
    """With an evictor, windows keep their elements; reduce/aggregate runs at fire time."""

    def __init__(self, inner: _WindowFunctionRunner, reduce_fn: Any, agg_fn: Any) -> None:
        super().__init__(inner.fn, inner.style)
        self.inner = inner
        self.reduce_fn = reduce_fn
        self.agg_fn = agg_fn

    def bind(self) -> Callable[..., list[Any]]:
        inner = self.inner.bind()
        reduce_fn, agg_fn = self.reduce_fn, self.agg_fn

        def run(key: Any, window: Any, ctx: Any, elements: list[Any]) -> list[Any]:
            if reduce_fn is not None:
                r = getattr(reduce_fn, "reduce", reduce_fn)
                acc = elements[0]
                for e in elements[1:]:
                    acc = r(acc, e)
                elements = [acc]
            elif agg_fn is not None:
                acc = agg_fn.create_accumulator()
                for e in elements:
                    acc = agg_fn.add(e, acc)
                elements = [agg_fn.get_result(acc)]
            return inner(key, window, ctx, elements)
        return run
