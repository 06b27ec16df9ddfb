"""User function interfaces, with PyFlink's names and signatures.

A job passes either a plain callable (lambda, function, closure) or an instance of one of
these classes (Flink style: ``class Tokenizer(FlatMapFunction): def flat_map(self, value)``).
Functions that produce several outputs (``flat_map``, ``process_element``, ``on_timer``,
window functions) may ``yield`` them or return an iterable, or, Java style, take one more
argument, a :class:`Collector`, and call ``out.collect(x)``. In process functions, yielding
``(output_tag, value)`` or calling ``ctx.output(output_tag, value)`` sends ``value`` to a
side output, as in PyFlink.

Lifecycle: every parallel subtask works on its own copy of the function (the job graph
carries it pickled); ``open(runtime_context)`` is called before the first record and
``close()`` after the last. The helpers at the bottom (``as_map`` & co.) turn whatever the
user gave into plain callables once, when an operator opens, so the per-record path is a
single call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from moldau.clients.stream.typeinfo import Row

if TYPE_CHECKING:
    from moldau.clients.stream.state import (
        AggregatingState,
        AggregatingStateDescriptor,
        ListState,
        ListStateDescriptor,
        MapState,
        MapStateDescriptor,
        ReducingState,
        ReducingStateDescriptor,
        ValueState,
        ValueStateDescriptor,
    )
    from moldau.clients.stream.typeinfo import TypeInformation

__all__ = [
    "AggregateFunction",
    "AllWindowFunction",
    "Collector",
    "ConstantKeySelector",
    "FieldAccessor",
    "FieldKeySelector",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "KeySelector",
    "KeyedProcessFunction",
    "MapFunction",
    "OutputTag",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "SinkFunction",
    "TimerService",
    "WindowFunction",
]


class RuntimeContext:
    """What a function sees of the subtask running it (``open(runtime_context)``).

    The operator that runs the function provides the implementation; keyed state getters
    raise unless the function runs on a keyed stream (after ``key_by``)."""

    def get_task_name(self) -> str:
        raise NotImplementedError

    def get_task_name_with_subtasks(self) -> str:
        return (f"{self.get_task_name()} ({self.get_index_of_this_subtask() + 1}/"
                f"{self.get_number_of_parallel_subtasks()})")

    def get_number_of_parallel_subtasks(self) -> int:
        raise NotImplementedError

    def get_max_number_of_parallel_subtasks(self) -> int:
        raise NotImplementedError

    def get_index_of_this_subtask(self) -> int:
        raise NotImplementedError

    def get_attempt_number(self) -> int:
        return 0

    def get_job_parameter(self, key: str, default_value: str | None = None) -> str | None:
        return default_value

    def get_state(self, state_descriptor: ValueStateDescriptor) -> ValueState:
        raise NotImplementedError

    def get_list_state(self, state_descriptor: ListStateDescriptor) -> ListState:
        raise NotImplementedError

    def get_map_state(self, state_descriptor: MapStateDescriptor) -> MapState:
        raise NotImplementedError

    def get_reducing_state(self, state_descriptor: ReducingStateDescriptor) -> ReducingState:
        raise NotImplementedError

    def get_aggregating_state(self, state_descriptor: AggregatingStateDescriptor
                              ) -> AggregatingState:
        raise NotImplementedError


class Function:
    """Base of all user functions: ``open`` before the first record, ``close`` at the end."""

    def open(self, runtime_context: RuntimeContext) -> None:
        pass

    def close(self) -> None:
        pass

    def get_runtime_context(self) -> RuntimeContext:
        """Java's ``getRuntimeContext()``, for functions written in that style."""
        ctx = self.__dict__.get("_moldau_runtime_context")
        if ctx is None:
            raise RuntimeError("the runtime context is only available once the function runs")
        return ctx  # type: ignore[no-any-return]


class MapFunction(Function):
    def map(self, value: Any) -> Any:
        raise NotImplementedError


class FlatMapFunction(Function):
    def flat_map(self, value: Any) -> Iterable[Any] | None:
        raise NotImplementedError


class FilterFunction(Function):
    def filter(self, value: Any) -> bool:
        raise NotImplementedError


class ReduceFunction(Function):
    def reduce(self, value1: Any, value2: Any) -> Any:
        raise NotImplementedError


class AggregateFunction(Function):
    """Incremental aggregation: ``acc = add(value, acc)`` per record, ``get_result(acc)``
    when a window fires, ``merge(a, b)`` when session windows merge."""

    def create_accumulator(self) -> Any:
        raise NotImplementedError

    def add(self, value: Any, accumulator: Any) -> Any:
        raise NotImplementedError

    def get_result(self, accumulator: Any) -> Any:
        raise NotImplementedError

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        raise NotImplementedError


class KeySelector(Function):
    def get_key(self, value: Any) -> Any:
        raise NotImplementedError


class TimerService:
    """Time and timers of a process function (``ctx.timer_service()``)."""

    def current_processing_time(self) -> int:
        raise NotImplementedError

    def current_watermark(self) -> int:
        raise NotImplementedError

    def register_processing_time_timer(self, timestamp: int) -> None:
        raise NotImplementedError

    def register_event_time_timer(self, timestamp: int) -> None:
        raise NotImplementedError

    def delete_processing_time_timer(self, timestamp: int) -> None:
        raise NotImplementedError

    def delete_event_time_timer(self, timestamp: int) -> None:
        raise NotImplementedError


class ProcessFunction(Function):
    """``process_element(value, ctx)`` yields outputs; ``ctx.timestamp()``,
    ``ctx.timer_service()`` (time only: timers need a keyed stream), ``ctx.output(tag, v)``."""

    class Context:
        def timestamp(self) -> int | None:
            raise NotImplementedError

        def timer_service(self) -> TimerService:
            raise NotImplementedError

        def output(self, output_tag: OutputTag, value: Any) -> None:
            raise NotImplementedError

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterable[Any] | None:
        raise NotImplementedError


class KeyedProcessFunction(Function):
    """A process function on a keyed stream: keyed state through the runtime context, and
    timers per key. ``on_timer(timestamp, ctx)`` runs when a timer fires, with the key
    (``ctx.get_current_key()``) and time domain (``ctx.time_domain()``) of that timer."""

    class Context:
        def timestamp(self) -> int | None:
            raise NotImplementedError

        def timer_service(self) -> TimerService:
            raise NotImplementedError

        def get_current_key(self) -> Any:
            raise NotImplementedError

        def output(self, output_tag: OutputTag, value: Any) -> None:
            raise NotImplementedError

    class OnTimerContext(Context):
        def time_domain(self) -> Any:
            raise NotImplementedError

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context
                        ) -> Iterable[Any] | None:
        raise NotImplementedError

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterable[Any] | None:
        return None


class WindowFunction(Function):
    """``apply(key, window, inputs)`` runs when a window fires and yields its outputs."""

    def apply(self, key: Any, window: Any, inputs: Iterable[Any]) -> Iterable[Any] | None:
        raise NotImplementedError


class ProcessWindowFunction(Function):
    """``process(key, context, elements)`` with ``context.window()``,
    ``current_processing_time()``, ``current_watermark()``, ``window_state()`` (state of
    this key and window), ``global_state()`` (state of this key) and ``output(tag, v)``."""

    class Context:
        def window(self) -> Any:
            raise NotImplementedError

        def current_processing_time(self) -> int:
            raise NotImplementedError

        def current_watermark(self) -> int:
            raise NotImplementedError

        def window_state(self) -> Any:
            raise NotImplementedError

        def global_state(self) -> Any:
            raise NotImplementedError

        def output(self, output_tag: OutputTag, value: Any) -> None:
            raise NotImplementedError

    def process(self, key: Any, context: ProcessWindowFunction.Context,
                elements: Iterable[Any]) -> Iterable[Any] | None:
        raise NotImplementedError

    def clear(self, context: ProcessWindowFunction.Context) -> None:
        """Called when the window's state is dropped (its cleanup time passed)."""


class AllWindowFunction(Function):
    """``apply(window, inputs)`` for ``window_all``."""

    def apply(self, window: Any, inputs: Iterable[Any]) -> Iterable[Any] | None:
        raise NotImplementedError


class ProcessAllWindowFunction(Function):
    """``process(context, elements)`` for ``window_all``."""

    def process(self, context: ProcessWindowFunction.Context,
                elements: Iterable[Any]) -> Iterable[Any] | None:
        raise NotImplementedError

    def clear(self, context: ProcessWindowFunction.Context) -> None:
        pass


class SinkFunction(Function):
    """``invoke(value, context)`` per record; ``context.timestamp()`` is the record's
    event-time timestamp, ``context.current_watermark()`` the sink's watermark."""

    def invoke(self, value: Any, context: Any) -> None:
        raise NotImplementedError


class OutputTag:
    """Names a side output (``OutputTag("late-data")``); the tag id identifies it."""

    __slots__ = ("tag_id", "type_info")

    def __init__(self, tag_id: str, type_info: TypeInformation | None = None) -> None:
        if not isinstance(tag_id, str) or not tag_id:
            raise ValueError(f"an OutputTag needs a non-empty string id, got {tag_id!r}")
        self.tag_id = tag_id
        self.type_info = type_info

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.tag_id == self.tag_id

    def __hash__(self) -> int:
        return hash(self.tag_id)

    def __repr__(self) -> str:
        return f"OutputTag({self.tag_id!r})"

    def __reduce__(self) -> Any:
        return (OutputTag, (self.tag_id, self.type_info))


class Collector:
    """Java-style output: ``out.collect(value)``; used when a function takes one."""

    __slots__ = ("append",)

    def __init__(self, sink: list[Any]) -> None:
        self.append = sink.append

    def collect(self, value: Any) -> None:
        self.append(value)


# --- turning user functions into plain callables (done once per operator, at open) ----------


def describe_function(fn: Any) -> str:
    """A short name for a user function, for operator names and error messages."""
    if isinstance(fn, Function) or not callable(fn) or inspect.isclass(fn):
        return type(fn).__name__
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


def _arity(fn: Callable[..., Any]) -> int | None:
    """The number of positional parameters ``fn`` takes (None if *args or unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


def method_of(fn: Any, method: str, what: str) -> Callable[..., Any]:
    """``fn.<method>`` for a Flink-style function object, ``fn`` itself for a callable
    (functions, lambdas, and classes used as functions such as ``str`` or ``int``)."""
    if inspect.isclass(fn):
        if issubclass(fn, Function):
            raise TypeError(f"{what}: got the class {fn.__name__}, pass an instance")
        return fn
    bound = getattr(fn, method, None)
    if bound is not None and callable(bound):
        return bound  # type: ignore[no-any-return]
    if callable(fn):
        return fn  # type: ignore[no-any-return]
    raise TypeError(what)


def check_function(fn: Any, method: str, api: str, kind: str) -> None:
    """Build-time check that ``fn`` is a callable or has ``method``; a clear message if not."""
    if inspect.isclass(fn):
        if issubclass(fn, Function) or callable(getattr(fn, method, None)):
            raise TypeError(f"{api} expects an instance of a {kind} (or a function), got the "
                            f"class {fn.__name__}: did you forget the parentheses?")
        return  # a class used as a function: map(str), filter(bool)
    bound = getattr(fn, method, None)
    if (bound is None or not callable(bound)) and not callable(fn):
        raise TypeError(f"{api} expects a {kind} (an object with a {method}() method) or a "
                        f"function, got {type(fn).__name__} {fn!r:.60}")


def emitter(fn: Callable[..., Any], n_args: int) -> Callable[..., list[Any]]:
    """Wrap a function that yields, returns an iterable (or None), or — taking one extra
    Collector argument — collects, into one that returns a list of outputs."""
    arity = _arity(fn)
    if arity is not None and arity == n_args + 1:
        def collecting(*args: Any) -> list[Any]:
            out: list[Any] = []
            fn(*args, Collector(out))
            return out
        return collecting

    def gathering(*args: Any) -> list[Any]:
        res = fn(*args)
        if res is None:
            return []
        if isinstance(res, list):
            return res
        if isinstance(res, str | bytes) or not isinstance(res, Iterable):
            raise TypeError(
                f"{describe_function(fn)} must yield its outputs or return an iterable of "
                f"them; it returned {type(res).__name__} {res!r:.60}")
        return list(res)
    return gathering


# --- field access, for key_by(field), sum(field), min/max(field) -----------------------------


class FieldAccessor:
    """Reads and replaces one field of a record: a position in a tuple/list/Row, a name
    in a dict, a Row, a namedtuple, a dataclass or any object. Field 0 of a non-composite
    value is the value itself (Flink's rule for aggregations on atomic types)."""

    __slots__ = ("field",)

    def __init__(self, field: int | str) -> None:
        self.field = field

    def get(self, value: Any) -> Any:
        f = self.field
        try:
            if isinstance(f, int):
                if isinstance(value, tuple | list):
                    return value[f]
                if f == 0 and not isinstance(value, dict):
                    return value
                raise TypeError
            if isinstance(value, dict | Row):
                return value[f]
            return getattr(value, f)
        except (IndexError, KeyError, AttributeError, TypeError):
            raise TypeError(self._missing(value)) from None

    def set(self, value: Any, new: Any) -> Any:
        f = self.field
        if isinstance(f, int):
            if isinstance(value, Row):
                return value.replace(f, new)
            if isinstance(value, tuple):
                if hasattr(value, "_replace"):  # namedtuple
                    return value._replace(**{value._fields[f]: new})  # type: ignore[attr-defined]
                return (*value[:f], new, *value[f + 1:])
            if isinstance(value, list):
                out = list(value)
                out[f] = new
                return out
            return new
        if isinstance(value, Row):
            names = value.get_field_names() or []
            return value.replace(names.index(f), new)
        if isinstance(value, dict):
            out_d = dict(value)
            out_d[f] = new
            return out_d
        if hasattr(value, "_replace"):
            return value._replace(**{f: new})
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.replace(value, **{f: new})
        import copy

        obj = copy.copy(value)
        setattr(obj, f, new)
        return obj

    def _missing(self, value: Any) -> str:
        f = self.field
        if isinstance(f, int):
            if isinstance(value, tuple | list):
                return (f"field {f} doesn't exist: the record {value!r:.80} has "
                        f"{len(value)} fields")
            return (f"field position {f} only applies to tuples, lists and rows; the record "
                    f"is a {type(value).__name__} ({value!r:.80})")
        return f"the record {value!r:.80} ({type(value).__name__}) has no field {f!r}"


class FieldKeySelector(KeySelector):
    """``key_by(0)``, ``key_by("word")``, ``key_by(0, 1)``: the key is the field, or the
    tuple of the fields when several are named."""

    def __init__(self, fields: Sequence[int | str]) -> None:
        self.fields = tuple(fields)
        self._accessors = tuple(FieldAccessor(f) for f in self.fields)

    def get_key(self, value: Any) -> Any:
        acc = self._accessors
        if len(acc) == 1:
            return acc[0].get(value)
        return tuple(a.get(value) for a in acc)

    def __call__(self, value: Any) -> Any:
        return self.get_key(value)

    def __repr__(self) -> str:
        return f"FieldKeySelector({', '.join(repr(f) for f in self.fields)})"

    def __getstate__(self) -> Any:
        return self.fields

    def __setstate__(self, state: Any) -> None:
        self.__init__(state)  # type: ignore[misc]


class ConstantKeySelector(KeySelector):
    """The single key of ``window_all``: every record has key ``None``."""

    def get_key(self, value: Any) -> Any:
        return None

    def __call__(self, value: Any) -> Any:
        return None

