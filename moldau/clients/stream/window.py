"""Windows, window assigners and triggers, as Flink's ``windowing`` package.

A :class:`TimeWindow` is ``[start, end)`` in ms; its ``max_timestamp()`` is ``end - 1``, the
last timestamp it holds, and the time its event-time trigger fires. Tumbling and sliding
assigners align window starts to ``offset`` (``start = ts - (ts - offset) mod size``, with
a floored modulo so negative timestamps land in the right window); an element belongs to
``ceil(size / slide)`` sliding windows. Session windows start as ``[ts, ts + gap)`` per
element and merge while they overlap or touch.

Assigners and triggers are immutable descriptions, pickled into the job graph. A trigger
decides, per (key, window), when the window's function runs (FIRE) and when its contents
are dropped (PURGE); it keeps its own per-window state through the
:class:`TriggerContext` the window operator gives it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from moldau.clients.stream.time import to_millis
from moldau.clients.stream.watermark import MAX_WATERMARK

__all__ = [
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CountEvictor",
    "CountSlidingWindowAssigner",
    "CountTrigger",
    "CountTumblingWindowAssigner",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "GlobalWindow",
    "GlobalWindows",
    "MergingWindowAssigner",
    "NeverTrigger",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeWindow",
    "Trigger",
    "TriggerContext",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "Window",
    "WindowAssigner",
    "get_window_start_with_offset",
    "merge_windows",
]


class Window:
    """A finite group of elements; ``max_timestamp()`` is the last time it covers."""

    __slots__ = ()

    def max_timestamp(self) -> int:
        raise NotImplementedError


class TimeWindow(NamedTuple):
    """The window ``[start, end)`` of event or processing time, in ms. A named tuple, so
    that hashing and comparing windows (state namespaces, timers) runs at C speed."""

    start: int
    end: int

    def max_timestamp(self) -> int:
        return self.end - 1

    def get_start(self) -> int:
        return self.start

    def get_end(self) -> int:
        return self.end

    def intersects(self, other: TimeWindow) -> bool:
        """True when the windows overlap or touch (Flink merges touching sessions)."""
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: TimeWindow) -> TimeWindow:
        """The smallest window containing both."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))

    def __repr__(self) -> str:
        return f"TimeWindow{{start={self.start}, end={self.end}}}"


class GlobalWindow(Window):
    """The one window of ``GlobalWindows``: it never ends."""

    __slots__ = ()
    _instance: GlobalWindow | None = None

    def __new__(cls) -> GlobalWindow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    @classmethod
    def get(cls) -> GlobalWindow:
        return cls()

    def max_timestamp(self) -> int:
        return MAX_WATERMARK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalWindow)

    def __hash__(self) -> int:
        return 0x61

    def __reduce__(self) -> Any:
        return (GlobalWindow, ())

    def __repr__(self) -> str:
        return "GlobalWindow"


AnyWindow = TimeWindow | GlobalWindow | Window
"""What an assigner hands out: a TimeWindow (a named tuple, not a Window subclass), the
GlobalWindow, or a user-defined Window."""


def get_window_start_with_offset(timestamp: int, offset: int, window_size: int) -> int:
    """Flink's ``TimeWindow.getWindowStartWithOffset``: the start of the window of size
    ``window_size`` aligned to ``offset`` that contains ``timestamp``."""
    return timestamp - (timestamp - offset + window_size) % window_size


def merge_windows(windows: Iterable[TimeWindow]) -> list[tuple[TimeWindow, list[TimeWindow]]]:
    """Flink's ``TimeWindow.mergeWindows``: group overlapping or touching windows; each
    result is (the covering window, the windows it replaces), in start order."""
    ordered = sorted(windows)
    merged: list[tuple[TimeWindow, list[TimeWindow]]] = []
    current: TimeWindow | None = None
    members: list[TimeWindow] = []
    for w in ordered:
        if current is None:
            current, members = w, [w]
        elif current.intersects(w):
            current = current.cover(w)
            members.append(w)
        else:
            merged.append((current, members))
            current, members = w, [w]
    if current is not None:
        merged.append((current, members))
    return merged


_NO_TIMESTAMP = (
    "Record has no timestamp (Long.MIN_VALUE). Is the time characteristic set to "
    "'ProcessingTime', or did you forget to call "
    "'DataStream.assign_timestamps_and_watermarks(...)'?")


class WindowAssigner:
    """Puts an element into zero or more windows (``assign_windows``), names the default
    trigger, and says whether windows are in event time."""

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        raise NotImplementedError

    def get_default_trigger(self) -> Trigger:
        raise NotImplementedError

    def is_event_time(self) -> bool:
        raise NotImplementedError

    def is_merging(self) -> bool:
        return False


class MergingWindowAssigner(WindowAssigner):
    """An assigner whose windows merge (sessions)."""

    def is_merging(self) -> bool:
        return True


def _size(value: Any, what: str) -> int:
    ms = to_millis(value, what)
    if ms <= 0:
        raise ValueError(f"{what} must be positive, got {ms} ms")
    return ms


class TumblingEventTimeWindows(WindowAssigner):
    """Fixed-size, non-overlapping event-time windows: ``TumblingEventTimeWindows.of(
    Time.minutes(5))``; an ``offset`` shifts the alignment (e.g. for time zones)."""

    def __init__(self, size: int, offset: int = 0) -> None:
        if abs(offset) >= size:
            raise ValueError(f"{type(self).__name__} parameters must satisfy "
                             f"abs(offset) < size, got size {size} ms and offset {offset} ms")
        self.size = size
        self.offset = offset

    @classmethod
    def of(cls, size: Any, offset: Any = 0) -> TumblingEventTimeWindows:
        return cls(_size(size, "the window size"), to_millis(offset, "the window offset"))

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        if timestamp is None:
            raise ValueError(_NO_TIMESTAMP)
        start = timestamp - (timestamp - self.offset) % self.size
        return [TimeWindow(start, start + self.size)]

    def get_default_trigger(self) -> Trigger:
        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}" + (
            f", {self.offset})" if self.offset else ")")


class TumblingProcessingTimeWindows(TumblingEventTimeWindows):
    """Fixed-size, non-overlapping windows of the wall clock of the subtask."""

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        now = current_processing_time
        start = now - (now - self.offset) % self.size
        return [TimeWindow(start, start + self.size)]

    def get_default_trigger(self) -> Trigger:
        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class SlidingEventTimeWindows(WindowAssigner):
    """Windows of ``size`` starting every ``slide``: ``SlidingEventTimeWindows.of(
    Time.minutes(15), Time.minutes(5))``; each element is in ``ceil(size / slide)`` of
    them."""

    def __init__(self, size: int, slide: int, offset: int = 0) -> None:
        if abs(offset) >= slide:
            raise ValueError(f"{type(self).__name__} parameters must satisfy "
                             f"abs(offset) < slide and size > 0, got size {size} ms, "
                             f"slide {slide} ms, offset {offset} ms")
        self.size = size
        self.slide = slide
        self.offset = offset

    @classmethod
    def of(cls, size: Any, slide: Any, offset: Any = 0) -> SlidingEventTimeWindows:
        return cls(_size(size, "the window size"), _size(slide, "the window slide"),
                   to_millis(offset, "the window offset"))

    def _windows(self, ts: int) -> list[AnyWindow]:
        size, slide = self.size, self.slide
        last_start = ts - (ts - self.offset) % slide
        out: list[AnyWindow] = []
        start = last_start
        while start > ts - size:
            out.append(TimeWindow(start, start + size))
            start -= slide
        return out

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        if timestamp is None:
            raise ValueError(_NO_TIMESTAMP)
        return self._windows(timestamp)

    def get_default_trigger(self) -> Trigger:
        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}, {self.slide}" + (
            f", {self.offset})" if self.offset else ")")


class SlidingProcessingTimeWindows(SlidingEventTimeWindows):
    """Sliding windows of the wall clock: ``SlidingProcessingTimeWindows.of(
    Time.seconds(15), Time.seconds(5))``."""

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        return self._windows(current_processing_time)

    def get_default_trigger(self) -> Trigger:
        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class EventTimeSessionWindows(MergingWindowAssigner):
    """Sessions of activity separated by at least ``gap`` of event time:
    ``EventTimeSessionWindows.with_gap(Time.minutes(10))``, or a gap computed per element
    with ``with_dynamic_gap(lambda element: ms)``."""

    def __init__(self, gap: int | None, gap_extractor: Callable[[Any], int] | None = None
                 ) -> None:
        self.gap = gap
        self.gap_extractor = gap_extractor

    @classmethod
    def with_gap(cls, size: Any) -> EventTimeSessionWindows:
        return cls(_size(size, "the session gap"))

    @classmethod
    def with_dynamic_gap(cls, extractor: Any) -> EventTimeSessionWindows:
        fn = getattr(extractor, "extract", extractor)
        if not callable(fn):
            raise TypeError("with_dynamic_gap() expects a SessionWindowTimeGapExtractor or a "
                            "function element -> gap in ms")
        return cls(None, fn)

    def _gap(self, element: Any) -> int:
        if self.gap_extractor is None:
            return self.gap  # type: ignore[return-value]
        gap = to_millis(self.gap_extractor(element), "the session gap")
        if gap <= 0:
            raise ValueError(f"a dynamic session gap must be positive, got {gap} ms")
        return gap

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        if timestamp is None:
            raise ValueError(_NO_TIMESTAMP)
        return [TimeWindow(timestamp, timestamp + self._gap(element))]

    def get_default_trigger(self) -> Trigger:
        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.gap if self.gap is not None else 'dynamic'})"


class ProcessingTimeSessionWindows(EventTimeSessionWindows):
    """Sessions of the wall clock."""

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        now = current_processing_time
        return [TimeWindow(now, now + self._gap(element))]

    def get_default_trigger(self) -> Trigger:
        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class GlobalWindows(WindowAssigner):
    """Every element in the one global window; it fires only through a custom trigger
    (``count_window`` uses a count trigger)."""

    @classmethod
    def create(cls) -> GlobalWindows:
        return cls()

    def assign_windows(self, element: Any, timestamp: int | None,
                       current_processing_time: int) -> list[AnyWindow]:
        return [GlobalWindow()]

    def get_default_trigger(self) -> Trigger:
        return NeverTrigger()

    def is_event_time(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "GlobalWindows()"


class CountTumblingWindowAssigner(GlobalWindows):
    """``count_window(n)``: every ``n`` elements of a key form a window."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"a count window size must be positive, got {size}")
        self.size = size

    @classmethod
    def of(cls, window_size: int) -> CountTumblingWindowAssigner:
        return cls(window_size)

    def get_default_trigger(self) -> Trigger:
        return PurgingTrigger(CountTrigger(self.size))

    def __repr__(self) -> str:
        return f"CountTumblingWindowAssigner({self.size})"


class CountSlidingWindowAssigner(GlobalWindows):
    """``count_window(size, slide)``: every ``slide`` elements, a window of the last
    ``size`` elements of the key."""

    def __init__(self, size: int, slide: int) -> None:
        if size <= 0 or slide <= 0:
            raise ValueError(f"count window size and slide must be positive, got {size}, "
                             f"{slide}")
        self.size = size
        self.slide = slide

    @classmethod
    def of(cls, window_size: int, window_slide: int) -> CountSlidingWindowAssigner:
        return cls(window_size, window_slide)

    def get_default_trigger(self) -> Trigger:
        return CountTrigger(self.slide)

    def __repr__(self) -> str:
        return f"CountSlidingWindowAssigner({self.size}, {self.slide})"


class CountEvictor:
    """Keeps only the last ``max_count`` elements of a window before it fires."""

    def __init__(self, max_count: int) -> None:
        self.max_count = max_count

    @classmethod
    def of(cls, max_count: int) -> CountEvictor:
        return cls(max_count)

    def evict(self, elements: list[Any]) -> list[Any]:
        return elements[-self.max_count:] if len(elements) > self.max_count else elements


# --- triggers ---------------------------------------------------------------------------


class TriggerResult(enum.Enum):
    """What a trigger decides: run the window function (FIRE), drop the contents (PURGE),
    both, or nothing."""

    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def is_fire(self) -> bool:
        return self.value[0]

    @property
    def is_purge(self) -> bool:
        return self.value[1]


class TriggerContext:
    """What a trigger can do for its (key, window); provided by the window operator."""

    def get_current_processing_time(self) -> int:
        raise NotImplementedError

    def get_current_watermark(self) -> int:
        raise NotImplementedError

    def register_processing_time_timer(self, time: int) -> None:
        raise NotImplementedError

    def register_event_time_timer(self, time: int) -> None:
        raise NotImplementedError

    def delete_processing_time_timer(self, time: int) -> None:
        raise NotImplementedError

    def delete_event_time_timer(self, time: int) -> None:
        raise NotImplementedError

    def get_partitioned_state(self, state_descriptor: Any) -> Any:
        raise NotImplementedError

    def merge_partitioned_state(self, state_descriptor: Any) -> None:
        raise NotImplementedError


class Trigger:
    """Decides when a window fires; see :class:`TriggerResult`."""

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        raise NotImplementedError

    def on_processing_time(self, time: int, window: AnyWindow, ctx: TriggerContext
                           ) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: AnyWindow, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return False

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support merging windows")

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        pass

    def __repr__(self) -> str:
        return type(self).__name__


class EventTimeTrigger(Trigger):
    """Fires when the watermark passes the window's end (and again for each late element
    that arrives within the allowed lateness)."""

    @classmethod
    def create(cls) -> EventTimeTrigger:
        return cls()

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        if window.max_timestamp() <= ctx.get_current_watermark():
            return TriggerResult.FIRE  # the watermark is already past the window
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: AnyWindow, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        if window.max_timestamp() > ctx.get_current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.delete_event_time_timer(window.max_timestamp())


class ProcessingTimeTrigger(Trigger):
    """Fires when the wall clock passes the window's end."""

    @classmethod
    def create(cls) -> ProcessingTimeTrigger:
        return cls()

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: AnyWindow, ctx: TriggerContext
                           ) -> TriggerResult:
        return TriggerResult.FIRE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.register_processing_time_timer(window.max_timestamp())

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.delete_processing_time_timer(window.max_timestamp())


class NeverTrigger(Trigger):
    """The default of ``GlobalWindows``: never fires."""

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        pass


class CountTrigger(Trigger):
    """Fires every ``count`` elements of a (key, window)."""

    def __init__(self, count: int) -> None:
        if count <= 0:
            raise ValueError(f"CountTrigger needs a positive count, got {count}")
        self.count = count
        from moldau.clients.stream.state import ReducingStateDescriptor

        self._descriptor = ReducingStateDescriptor("count", _add, None)

    @classmethod
    def of(cls, count: int) -> CountTrigger:
        return cls(count)

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        st = ctx.get_partitioned_state(self._descriptor)
        st.add(1)
        if st.get() >= self.count:
            st.clear()
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.merge_partitioned_state(self._descriptor)

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.get_partitioned_state(self._descriptor).clear()

    def __repr__(self) -> str:
        return f"CountTrigger({self.count})"


def _add(a: int, b: int) -> int:
    return a + b


class PurgingTrigger(Trigger):
    """Turns every FIRE of the wrapped trigger into FIRE_AND_PURGE."""

    def __init__(self, nested: Trigger) -> None:
        if not isinstance(nested, Trigger):
            raise TypeError(f"PurgingTrigger.of() expects a Trigger, got {nested!r:.60}")
        self.nested = nested

    @classmethod
    def of(cls, nested: Trigger) -> PurgingTrigger:
        return cls(nested)

    @staticmethod
    def _purging(r: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if r.is_fire else r

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested.on_element(element, timestamp, window, ctx))

    def on_processing_time(self, time: int, window: AnyWindow, ctx: TriggerContext
                           ) -> TriggerResult:
        return self._purging(self.nested.on_processing_time(time, window, ctx))

    def on_event_time(self, time: int, window: AnyWindow, ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested.on_event_time(time, window, ctx))

    def can_merge(self) -> bool:
        return self.nested.can_merge()

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        self.nested.on_merge(window, ctx)

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        self.nested.clear(window, ctx)

    def __repr__(self) -> str:
        return f"PurgingTrigger({self.nested!r})"


class ContinuousEventTimeTrigger(Trigger):
    """Fires every ``interval`` of event time while the window is open, and at its end."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        from moldau.clients.stream.state import ReducingStateDescriptor

        self._descriptor = ReducingStateDescriptor("fire-time", min, None)

    @classmethod
    def of(cls, interval: Any) -> ContinuousEventTimeTrigger:
        return cls(_size(interval, "the trigger interval"))

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        if window.max_timestamp() <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        ctx.register_event_time_timer(window.max_timestamp())
        st = ctx.get_partitioned_state(self._descriptor)
        if st.get() is None and timestamp is not None:
            start = timestamp - (timestamp % self.interval)
            nxt = start + self.interval
            ctx.register_event_time_timer(nxt)
            st.add(nxt)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: AnyWindow, ctx: TriggerContext) -> TriggerResult:
        if time == window.max_timestamp():
            return TriggerResult.FIRE
        st = ctx.get_partitioned_state(self._descriptor)
        if st.get() == time:
            st.clear()
            st.add(time + self.interval)
            ctx.register_event_time_timer(time + self.interval)
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.merge_partitioned_state(self._descriptor)
        nxt = ctx.get_partitioned_state(self._descriptor).get()
        if nxt is not None:
            ctx.register_event_time_timer(nxt)

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        st = ctx.get_partitioned_state(self._descriptor)
        t = st.get()
        if t is not None:
            ctx.delete_event_time_timer(t)
        st.clear()

    def __repr__(self) -> str:
        return f"ContinuousEventTimeTrigger({self.interval})"


class ContinuousProcessingTimeTrigger(Trigger):
    """Fires every ``interval`` of processing time while the window is open."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        from moldau.clients.stream.state import ReducingStateDescriptor

        self._descriptor = ReducingStateDescriptor("fire-time", min, None)

    @classmethod
    def of(cls, interval: Any) -> ContinuousProcessingTimeTrigger:
        return cls(_size(interval, "the trigger interval"))

    def on_element(self, element: Any, timestamp: int | None, window: AnyWindow,
                   ctx: TriggerContext) -> TriggerResult:
        st = ctx.get_partitioned_state(self._descriptor)
        if st.get() is None:
            now = ctx.get_current_processing_time()
            nxt = now - (now % self.interval) + self.interval
            ctx.register_processing_time_timer(nxt)
            st.add(nxt)
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: AnyWindow, ctx: TriggerContext
                           ) -> TriggerResult:
        st = ctx.get_partitioned_state(self._descriptor)
        if st.get() == time:
            st.clear()
            st.add(time + self.interval)
            ctx.register_processing_time_timer(time + self.interval)
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: AnyWindow, ctx: TriggerContext) -> None:
        ctx.merge_partitioned_state(self._descriptor)
        nxt = ctx.get_partitioned_state(self._descriptor).get()
        if nxt is not None:
            ctx.register_processing_time_timer(nxt)

    def clear(self, window: AnyWindow, ctx: TriggerContext) -> None:
        st = ctx.get_partitioned_state(self._descriptor)
        t = st.get()
        if t is not None:
            ctx.delete_processing_time_timer(t)
        st.clear()

    def __repr__(self) -> str:
        return f"ContinuousProcessingTimeTrigger({self.interval})"
