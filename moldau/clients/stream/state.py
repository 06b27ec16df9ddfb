"""Keyed state: descriptors, state views bound to the current key, the keyed state backend
and its snapshot format, and the per-key timer service (timers are keyed state too).

Layout of the heap backend: ``state name -> key group -> key -> namespace -> value``. The
namespace is ``None`` for a function's own state and the window for a window's contents.
A state view (``ValueState`` etc.) reads and writes the entry of the backend's *current
key* (set by the operator before each record or timer) and of its own namespace.

Snapshot format (bytes, self-describing, split by key group so that a job restored at
another parallelism lets each new subtask take exactly the key groups it owns)::

    msgpack map {
      "format": "moldau-keyed-state/1",
      "max_parallelism": int,
      "key_groups": { key_group (int): bytes }   # only non-empty groups
    }

and each key group's bytes are a pickle of plain data::

    {"states": {name: {key: {namespace: value}}},
     "timers": {service name: {"event": [(ts, key, namespace)],
                               "processing": [(ts, key, namespace)]}}}

Values are pickled with cloudpickle, so instances of classes defined in a job script
restore on another host; :func:`split_keyed_snapshot` regroups snapshots by key group
without unpickling any value.
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgpack

from moldau.clients.stream.functions import method_of
from moldau.clients.stream.keygroups import (
    KeyGroupRange,
    assign_to_key_group,
)
from moldau.clients.stream.watermark import MIN_WATERMARK

__all__ = [
    "AggregatingState",
    "AggregatingStateDescriptor",
    "HeapKeyedStateBackend",
    "InternalTimerService",
    "KeyedStateBackend",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "ReducingState",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "ValueState",
    "ValueStateDescriptor",
    "split_keyed_snapshot",
]

FORMAT = "moldau-keyed-state/1"
_MISSING: Any = object()


# --- descriptors -------------------------------------------------------------------------


class StateDescriptor:
    """Names a piece of keyed state; the name identifies it across restores."""

    kind = "state"

    def __init__(self, name: str, type_info: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a state needs a non-empty string name, got {name!r}")
        self.name = name
        self.type_info = type_info

    def get_name(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ValueStateDescriptor(StateDescriptor):
    kind = "value"


class ListStateDescriptor(StateDescriptor):
    kind = "list"

    def __init__(self, name: str, elem_type_info: Any = None) -> None:
        super().__init__(name, elem_type_info)


class MapStateDescriptor(StateDescriptor):
    kind = "map"

    def __init__(self, name: str, key_type_info: Any = None, value_type_info: Any = None
                 ) -> None:
        super().__init__(name, (key_type_info, value_type_info))


class ReducingStateDescriptor(StateDescriptor):
    kind = "reducing"

    def __init__(self, name: str, reduce_function: Any, type_info: Any = None) -> None:
        super().__init__(name, type_info)
        self.reduce_function = reduce_function
        method_of(reduce_function, "reduce",
                  "ReducingStateDescriptor expects a ReduceFunction or a function (a, b) -> c")


class AggregatingStateDescriptor(StateDescriptor):
    kind = "aggregating"

    def __init__(self, name: str, agg_function: Any, state_type_info: Any = None) -> None:
        super().__init__(name, state_type_info)
        for m in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(agg_function, m, None)):
                raise TypeError("AggregatingStateDescriptor expects an AggregateFunction "
                                "(with create_accumulator/add/get_result), got "
                                f"{agg_function!r:.60}")
        self.agg_function = agg_function


# --- the backend --------------------------------------------------------------------------


class KeyedStateBackend:
    """Keyed state of one operator subtask: the key groups of ``key_group_range`` out of
    ``max_parallelism``. The operator sets the current key before it touches state."""

    max_parallelism: int
    key_group_range: KeyGroupRange
    current_key: Any
    current_key_group: int

    def set_current_key(self, key: Any) -> None:
        raise NotImplementedError

    def get_current_key(self) -> Any:
        return self.current_key

    def get_state(self, descriptor: StateDescriptor) -> Any:
        raise NotImplementedError

    def create_timer_service(self, name: str) -> InternalTimerService:
        raise NotImplementedError

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def restore(self, snapshots: bytes | Sequence[bytes]) -> None:
        raise NotImplementedError


Table = dict[int, dict[Any, dict[Any, Any]]]


class HeapKeyedStateBackend(KeyedStateBackend):
    """Keyed state in Python dicts (Flink's HashMapStateBackend)."""

    def __init__(self, max_parallelism: int, key_group_range: KeyGroupRange) -> None:
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self._kg_start = key_group_range.start_key_group
        self._kg_end = key_group_range.end_key_group
        self.current_key: Any = None
        self.current_key_group = -1
        self._tables: dict[str, Table] = {}
        self._kinds: dict[str, str] = {}
        self._timer_services: dict[str, InternalTimerService] = {}
        self._pending_timers: dict[str, dict[str, list[tuple[int, Any, Any]]]] = {}

    def set_current_key(self, key: Any) -> None:
        kg = assign_to_key_group(key, self.max_parallelism)
        if not self._kg_start <= kg <= self._kg_end:
            raise RuntimeError(
                f"key {key!r:.60} belongs to key group {kg}, which this subtask "
                f"({self.key_group_range}) does not own: the key selector must return the same "
                "key for the same record every time it is called")
        self.current_key = key
        self.current_key_group = kg

    def table(self, name: str, kind: str) -> Table:
        """The raw table of a state (created empty); one kind per name."""
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = {}
            self._kinds[name] = kind
        elif self._kinds.get(name, kind) != kind:
            raise ValueError(f"state {name!r} is a {self._kinds[name]} state; it can't be "
                             f"used as a {kind} state")
        else:
            self._kinds[name] = kind
        return t

    def get_state(self, descriptor: StateDescriptor) -> Any:
        cls = _VIEWS.get(descriptor.kind)
        if cls is None:
            raise TypeError(f"unknown state descriptor {descriptor!r}")
        return cls(self, descriptor)

    def keys(self, name: str, namespace: Any = None) -> Iterator[Any]:
        """The keys that have state ``name`` in ``namespace`` (all owned key groups)."""
        for by_key in list(self._tables.get(name, {}).values()):
            for key, by_ns in list(by_key.items()):
                if namespace in by_ns:
                    yield key

    def create_timer_service(self, name: str) -> InternalTimerService:
        svc = self._timer_services.get(name)
        if svc is None:
            svc = self._timer_services[name] = InternalTimerService(self)
            pending = self._pending_timers.pop(name, None)
            if pending:
                svc._load(pending)
        return svc

    # snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        groups: dict[int, dict[str, Any]] = {}

        def group(kg: int) -> dict[str, Any]:
            g = groups.get(kg)
            if g is None:
                g = groups[kg] = {"states": {}, "timers": {}}
            return g

        for name, table in self._tables.items():
            for kg, by_key in table.items():
                if by_key:
                    group(kg)["states"][name] = by_key
        for name, svc in self._timer_services.items():
            for kind, timers in (("event", svc.event_timers()),
                                 ("processing", svc.processing_timers())):
                for ts, key, ns in timers:
                    kg = assign_to_key_group(key, self.max_parallelism)
                    t = group(kg)["timers"].setdefault(name, {"event": [], "processing": []})
                    t[kind].append((ts, key, ns))
        for name, pending in self._pending_timers.items():  # restored, service not yet made
            for kind, timers in pending.items():
                for ts, key, ns in timers:
                    kg = assign_to_key_group(key, self.max_parallelism)
                    t = group(kg)["timers"].setdefault(name, {"event": [], "processing": []})
                    t[kind].append((ts, key, ns))
        import cloudpickle

        blobs = {kg: cloudpickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL)
                 for kg, g in sorted(groups.items())}
        return msgpack.packb(  # type: ignore[no-any-return]
            {"format": FORMAT, "max_parallelism": self.max_parallelism, "key_groups": blobs},
            use_bin_type=True)

    def restore(self, snapshots: bytes | Sequence[bytes]) -> None:
        """Take the key groups this subtask owns from one or several snapshots (from the
        subtasks of an earlier run at any parallelism with the same max parallelism)."""
        if isinstance(snapshots, bytes | bytearray | memoryview):
            snapshots = [bytes(snapshots)]
        for data in snapshots:
            for kg, blob in split_keyed_snapshot(data, self.max_parallelism).items():
                if kg not in self.key_group_range:
                    continue
                g = pickle.loads(blob)
                for name, by_key in g["states"].items():
                    t = self._tables.setdefault(name, {})
                    t.setdefault(kg, {}).update(by_key)
                for name, kinds in g["timers"].items():
                    svc = self._timer_services.get(name)
                    if svc is not None:
                        svc._load(kinds)
                    else:
                        p = self._pending_timers.setdefault(name, {"event": [],
                                                                   "processing": []})
                        for kind, timers in kinds.items():
                            p[kind].extend(timers)


def split_keyed_snapshot(data: bytes, max_parallelism: int | None = None) -> dict[int, bytes]:
    """The per-key-group blobs of a keyed snapshot (values stay pickled). Raises if the
    snapshot is not one, or was taken with another max parallelism."""
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:
        raise ValueError(f"not a keyed state snapshot: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a keyed state snapshot (unknown format)")
    if max_parallelism is not None and doc["max_parallelism"] != max_parallelism:
        raise ValueError(
            f"the state was written with max parallelism {doc['max_parallelism']} and this "
            f"job has {max_parallelism}: the max parallelism of a keyed operator can't change "
            "across a restore")
    return {int(k): v for k, v in doc["key_groups"].items()}


# --- state views --------------------------------------------------------------------------


class _State:
    """A state view: the entry of ``name`` for the backend's current key and ``namespace``."""

    __slots__ = ("_backend", "_table", "descriptor", "namespace")

    kind = "state"

    def __init__(self, backend: HeapKeyedStateBackend, descriptor: StateDescriptor) -> None:
        self._backend = backend
        self.descriptor = descriptor
        self._table = backend.table(descriptor.name, self.kind)
        self.namespace: Any = None

    def set_current_namespace(self, namespace: Any) -> None:
        self.namespace = namespace

    def _get(self) -> Any:
        b = self._backend
        by_key = self._table.get(b.current_key_group)
        if by_key is None:
            return _MISSING
        by_ns = by_key.get(b.current_key)
        if by_ns is None:
            return _MISSING
        return by_ns.get(self.namespace, _MISSING)

    def _put(self, value: Any) -> None:
        b = self._backend
        by_key = self._table.get(b.current_key_group)
        if by_key is None:
            by_key = self._table[b.current_key_group] = {}
        by_ns = by_key.get(b.current_key)
        if by_ns is None:
            by_ns = by_key[b.current_key] = {}
        by_ns[self.namespace] = value

    def _get_ns(self, namespace: Any) -> Any:
        b = self._backend
        by_key = self._table.get(b.current_key_group)
        if by_key is None:
            return _MISSING
        by_ns = by_key.get(b.current_key)
        if by_ns is None:
            return _MISSING
        return by_ns.get(namespace, _MISSING)

    def _clear_ns(self, namespace: Any) -> None:
        b = self._backend
        by_key = self._table.get(b.current_key_group)
        if by_key is None:
            return
        by_ns = by_key.get(b.current_key)
        if by_ns is None:
            return
        by_ns.pop(namespace, None)
        if not by_ns:
            del by_key[b.current_key]
            if not by_key:
                del self._table[b.current_key_group]

    def clear(self) -> None:
        self._clear_ns(self.namespace)

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        raise TypeError(f"a {self.kind} state can't be merged")


class ValueState(_State):
    """One value per key: ``value()`` (None if unset), ``update(v)``, ``clear()``."""

    __slots__ = ()
    kind = "value"

    def value(self) -> Any:
        v = self._get()
        return None if v is _MISSING else v

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
        else:
            self._put(value)


class ListState(_State):
    """A list per key: ``get()``, ``add(v)``, ``add_all(vs)``, ``update(vs)``, ``clear()``."""

    __slots__ = ()
    kind = "list"

    def get(self) -> list[Any]:
        v = self._get()
        return [] if v is _MISSING else v

    def add(self, value: Any) -> None:
        v = self._get()
        if v is _MISSING:
            self._put([value])
        else:
            v.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        v = self._get()
        if v is _MISSING:
            vals = list(values)
            if vals:
                self._put(vals)
        else:
            v.extend(values)

    def update(self, values: Iterable[Any]) -> None:
        vals = list(values) if values is not None else []
        if vals:
            self._put(vals)
        else:
            self.clear()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.get())

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        merged: list[Any] = []
        for ns in sources:
            v = self._get_ns(ns)
            if v is not _MISSING:
                merged.extend(v)
                self._clear_ns(ns)
        if merged:
            saved, self.namespace = self.namespace, target
            self.add_all(merged)
            self.namespace = saved


class MapState(_State):
    """A dict per key: ``get(k)``, ``put(k, v)``, ``put_all(d)``, ``remove(k)``,
    ``contains(k)``, ``keys()``, ``values()``, ``items()``, ``is_empty()``, ``clear()``."""

    __slots__ = ()
    kind = "map"

    def _map(self) -> dict[Any, Any] | None:
        v = self._get()
        return None if v is _MISSING else v

    def get(self, key: Any) -> Any:
        m = self._map()
        return None if m is None else m.get(key)

    def put(self, key: Any, value: Any) -> None:
        m = self._map()
        if m is None:
            self._put({key: value})
        else:
            m[key] = value

    def put_all(self, d: dict[Any, Any]) -> None:
        for k, v in d.items():
            self.put(k, v)

    def remove(self, key: Any) -> None:
        m = self._map()
        if m is not None:
            m.pop(key, None)
            if not m:
                self.clear()

    def contains(self, key: Any) -> bool:
        m = self._map()
        return m is not None and key in m

    def keys(self) -> list[Any]:
        m = self._map()
        return [] if m is None else list(m.keys())

    def values(self) -> list[Any]:
        m = self._map()
        return [] if m is None else list(m.values())

    def items(self) -> list[tuple[Any, Any]]:
        m = self._map()
        return [] if m is None else list(m.items())

    def is_empty(self) -> bool:
        return self._map() is None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)


class ReducingState(_State):
    """One value per key combined with a reduce function: ``add(v)``, ``get()``."""

    __slots__ = ("_reduce",)
    kind = "reducing"

    def __init__(self, backend: HeapKeyedStateBackend, descriptor: StateDescriptor) -> None:
        super().__init__(backend, descriptor)
        self._reduce = method_of(descriptor.reduce_function, "reduce",  # type: ignore[attr-defined]
                                 "not a reduce function")

    def get(self) -> Any:
        v = self._get()
        return None if v is _MISSING else v

    def add(self, value: Any) -> None:
        v = self._get()
        self._put(value if v is _MISSING else self._reduce(v, value))

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        acc: Any = _MISSING
        for ns in sources:
            v = self._get_ns(ns)
            if v is not _MISSING:
                acc = v if acc is _MISSING else self._reduce(acc, v)
                self._clear_ns(ns)
        if acc is not _MISSING:
            saved, self.namespace = self.namespace, target
            self.add(acc)
            self.namespace = saved


class AggregatingState(_State):
    """An accumulator per key: ``add(v)`` folds with ``AggregateFunction.add``, ``get()``
    returns ``get_result(acc)`` (None if nothing was added)."""

    __slots__ = ("_agg",)
    kind = "aggregating"

    def __init__(self, backend: HeapKeyedStateBackend, descriptor: StateDescriptor) -> None:
        super().__init__(backend, descriptor)
        self._agg = descriptor.agg_function  # type: ignore[attr-defined]

    def get(self) -> Any:
        v = self._get()
        return None if v is _MISSING else self._agg.get_result(v)

    def get_accumulator(self) -> Any:
        v = self._get()
        return None if v is _MISSING else v

    def add(self, value: Any) -> None:
        v = self._get()
        acc = self._agg.create_accumulator() if v is _MISSING else v
        self._put(self._agg.add(value, acc))

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        acc: Any = _MISSING
        for ns in sources:
            v = self._get_ns(ns)
            if v is not _MISSING:
                acc = v if acc is _MISSING else self._agg.merge(acc, v)
                self._clear_ns(ns)
        if acc is not _MISSING:
            cur = self._get_ns(target)
            if cur is not _MISSING:
                acc = self._agg.merge(cur, acc)
            saved, self.namespace = self.namespace, target
            self._put(acc)
            self.namespace = saved


_VIEWS: dict[str, type[_State]] = {
    "value": ValueState,
    "list": ListState,
    "map": MapState,
    "reducing": ReducingState,
    "aggregating": AggregatingState,
}


# --- timers -------------------------------------------------------------------------------


class InternalTimerService:
    """Event-time and processing-time timers of one operator, per (key, namespace).

    A timer is (timestamp, key, namespace); registering one twice keeps one. Timers fire
    in timestamp order (ties in registration order) with the backend's current key set to
    the timer's key; a timer registered while firing, for a time already reached, fires in
    the same pass."""

    __slots__ = ("_backend", "_event", "_event_heap", "_proc", "_proc_heap", "_seq",
                 "current_watermark")

    def __init__(self, backend: HeapKeyedStateBackend) -> None:
        self._backend = backend
        self._event: dict[tuple[int, Any, Any], int] = {}
        self._event_heap: list[tuple[int, int, Any, Any]] = []
        self._proc: dict[tuple[int, Any, Any], int] = {}
        self._proc_heap: list[tuple[int, int, Any, Any]] = []
        self._seq = 0
        self.current_watermark = MIN_WATERMARK

    def _register(self, index: dict[tuple[int, Any, Any], int],
                  heap: list[tuple[int, int, Any, Any]], key: Any, ns: Any, ts: int) -> None:
        t = (ts, key, ns)
        if t in index:
            return
        self._seq += 1
        index[t] = self._seq
        heapq.heappush(heap, (ts, self._seq, key, ns))

    def register_event_time_timer(self, namespace: Any, timestamp: int) -> None:
        self._register(self._event, self._event_heap, self._backend.current_key, namespace,
                       int(timestamp))

    def register_processing_time_timer(self, namespace: Any, timestamp: int) -> None:
        self._register(self._proc, self._proc_heap, self._backend.current_key, namespace,
                       int(timestamp))

    def delete_event_time_timer(self, namespace: Any, timestamp: int) -> None:
        self._event.pop((int(timestamp), self._backend.current_key, namespace), None)

    def delete_processing_time_timer(self, namespace: Any, timestamp: int) -> None:
        self._proc.pop((int(timestamp), self._backend.current_key, namespace), None)

    @staticmethod
    def _due(index: dict[tuple[int, Any, Any], int], heap: list[tuple[int, int, Any, Any]],
             time: int) -> Iterator[tuple[int, Any, Any]]:
        while heap and heap[0][0] <= time:
            ts, seq, key, ns = heapq.heappop(heap)
            if index.get((ts, key, ns)) == seq:  # else deleted (or re-registered later)
                del index[(ts, key, ns)]
                yield ts, key, ns

    def advance_watermark(self, watermark: int) -> Iterator[tuple[int, Any, Any]]:
        """The event-time timers due at ``watermark``, as (ts, key, namespace); the
        backend's current key is set to each timer's key before it is yielded."""
        self.current_watermark = watermark
        backend = self._backend
        for ts, key, ns in self._due(self._event, self._event_heap, watermark):
            backend.set_current_key(key)
            yield ts, key, ns

    def advance_processing_time(self, now: int) -> Iterator[tuple[int, Any, Any]]:
        backend = self._backend
        for ts, key, ns in self._due(self._proc, self._proc_heap, now):
            backend.set_current_key(key)
            yield ts, key, ns

    def next_processing_time(self) -> int | None:
        """The earliest pending processing-time timer, if any."""
        heap, index = self._proc_heap, self._proc
        while heap:
            ts, seq, key, ns = heap[0]
            if index.get((ts, key, ns)) == seq:
                return ts
            heapq.heappop(heap)
        return None

    def has_processing_timers(self) -> bool:
        return bool(self._proc)

    def event_timers(self) -> list[tuple[int, Any, Any]]:
        return sorted(self._event, key=self._event.__getitem__)

    def processing_timers(self) -> list[tuple[int, Any, Any]]:
        return sorted(self._proc, key=self._proc.__getitem__)

    def num_event_timers(self) -> int:
        return len(self._event)

    def _load(self, kinds: dict[str, list[tuple[int, Any, Any]]]) -> None:
        for ts, key, ns in kinds.get("event", ()):
            self._register(self._event, self._event_heap, key, ns, ts)
        for ts, key, ns in kinds.get("processing", ()):
            self._register(self._proc, self._proc_heap, key, ns, ts)


def make_reduce(fn: Any) -> Callable[[Any, Any], Any]:
    """A ReduceFunction or callable as a plain ``(a, b) -> c``."""
    return method_of(fn, "reduce", "expected a ReduceFunction or a function (a, b) -> c")
