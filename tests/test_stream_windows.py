"""Window assignment, session merging and the window operator's firing rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from moldau.clients.stream import (
    CountTrigger,
    EventTimeSessionWindows,
    OutputTag,
    ProcessWindowFunction,
    PurgingTrigger,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    Time,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from moldau.clients.stream.operators import (
    Batch,
    OperatorInfo,
    WindowOperator,
    _WindowFunctionRunner,
)
from moldau.clients.stream.watermark import MAX_WATERMARK
from moldau.clients.stream.window import (
    GlobalWindows,
    TimeWindow,
    get_window_start_with_offset,
    merge_windows,
)


def test_time_window_basics() -> None:
    w = TimeWindow(0, 5000)
    assert w.max_timestamp() == 4999
    assert w.intersects(TimeWindow(5000, 6000))  # touching windows merge, as in Flink
    assert not w.intersects(TimeWindow(5001, 6000))
    assert w.cover(TimeWindow(3000, 9000)) == TimeWindow(0, 9000)


def test_tumbling_assignment_with_offset_and_negative_timestamps() -> None:
    t = TumblingEventTimeWindows.of(Time.seconds(10))
    assert t.assign_windows(None, 0, 0) == [TimeWindow(0, 10000)]
    assert t.assign_windows(None, 9999, 0) == [TimeWindow(0, 10000)]
    assert t.assign_windows(None, 10000, 0) == [TimeWindow(10000, 20000)]
    assert t.assign_windows(None, -1, 0) == [TimeWindow(-10000, 0)]
    assert t.assign_windows(None, -10001, 0) == [TimeWindow(-20000, -10000)]
    shifted = TumblingEventTimeWindows.of(Time.hours(1), Time.minutes(15))
    assert shifted.assign_windows(None, 3_600_000, 0) == [TimeWindow(900_000, 4_500_000)]
    assert get_window_start_with_offset(7, 2, 5) == 7
    assert get_window_start_with_offset(6, 2, 5) == 2
    p = TumblingProcessingTimeWindows.of(Time.seconds(5))
    assert p.assign_windows("x", None, 12_345) == [TimeWindow(10_000, 15_000)]
    assert not p.is_event_time() and t.is_event_time()


def test_sliding_assignment() -> None:
    s = SlidingEventTimeWindows.of(Time.minutes(15), Time.minutes(5))
    m = 60_000
    ws = s.assign_windows(None, 7 * m, 0)
    assert ws == [TimeWindow(5 * m, 20 * m), TimeWindow(0, 15 * m), TimeWindow(-5 * m, 10 * m)]
    p = SlidingProcessingTimeWindows.of(Time.seconds(15), Time.seconds(5))
    assert len(p.assign_windows("w", None, 1_000_000)) == 3


@given(ts=st.integers(-10**12, 10**12), slide=st.integers(1, 10**6), k=st.integers(1, 12),
       offset_frac=st.floats(-0.99, 0.99))
def test_every_timestamp_is_in_exactly_size_over_slide_windows(ts: int, slide: int, k: int,
                                                               offset_frac: float) -> None:
    size = slide * k
    offset = int(offset_frac * slide)
    ws = SlidingEventTimeWindows(size, slide, offset).assign_windows(None, ts, 0)
    assert len(ws) == size // slide
    assert len(set(ws)) == len(ws)
    for w in ws:
        assert w.start <= ts < w.end and w.end - w.start == size
        assert (w.start - offset) % slide == 0


@given(ts=st.integers(-10**9, 10**9), size=st.integers(1, 5000), slide=st.integers(1, 5000))
def test_sliding_windows_are_exactly_the_aligned_windows_holding_ts(ts: int, size: int,
                                                                    slide: int) -> None:
    ws = set(SlidingEventTimeWindows(size, slide).assign_windows(None, ts, 0))
    # brute force: every aligned start s with s <= ts < s + size
    first = ts - size + 1
    start = first + (-first) % slide
    expected = {TimeWindow(s, s + size) for s in range(start, ts + 1, slide)}
    assert ws == expected


@given(ts=st.integers(-10**12, 10**12), size=st.integers(1, 10**7))
def test_tumbling_window_holds_its_timestamp(ts: int, size: int) -> None:
    (w,) = TumblingEventTimeWindows(size).assign_windows(None, ts, 0)
    assert w.start <= ts < w.end and w.start % size == 0


def test_merge_windows_groups_overlapping_and_touching() -> None:
    ws = [TimeWindow(10, 13), TimeWindow(1, 5), TimeWindow(4, 7), TimeWindow(20, 23),
          TimeWindow(7, 10)]
    assert merge_windows(ws) == [
        (TimeWindow(1, 13), [TimeWindow(1, 5), TimeWindow(4, 7), TimeWindow(7, 10),
                             TimeWindow(10, 13)]),
        (TimeWindow(20, 23), [TimeWindow(20, 23)])]


# --- the window operator, driven by hand ------------------------------------------------------


class Collect(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        w = context.window()
        yield (key, getattr(w, "start", None), getattr(w, "end", None),
               sorted(e[1] for e in elements))


def window_op(assigner: Any, *, trigger: Any = None, lateness: int = 0,
              late: OutputTag | None = None, clock: list[int] | None = None
              ) -> WindowOperator:
    op = WindowOperator("w", lambda v: v[0], assigner, trigger, "list",
                        window_fn=_WindowFunctionRunner(Collect(), "process"),
                        allowed_lateness=lateness, late_tag=late)
    now = clock if clock is not None else [0]
    op.setup(OperatorInfo(clock=lambda: now[0]))
    op.open()
    return op


def feed(op: WindowOperator, *events: tuple[str, int]) -> list[Any]:
    out = op.process_batch(Batch([e for e in events], [e[1] for e in events]))
    return list(out.values) if out else []


def wm(op: WindowOperator, t: int) -> list[Any]:
    out = op.process_watermark(t)
    return list(out.values) if out else []


def test_session_windows_merge_as_flink_documents() -> None:
    # gap 3: a session ends after 3 ms without an element of the key
    op = window_op(EventTimeSessionWindows.with_gap(Time.milliseconds(3)))
    assert feed(op, ("k", 1), ("k", 10), ("k", 5)) == []  # [1,4) [10,13) [5,8): apart
    assert feed(op, ("o", 2)) == []
    assert feed(op, ("k", 4)) == []  # [4,7) joins [1,4) (touching) and [5,8) -> [1,8)
    # timers fire in time order: o's session ends (at 4) before k's (at 7)
    assert wm(op, 7) == [("o", 2, 5, [2]), ("k", 1, 8, [1, 4, 5])]
    assert wm(op, 20) == [("k", 10, 13, [10])]
    # a bridging element merges two sessions into one before either fires
    op2 = window_op(EventTimeSessionWindows.with_gap(Time.milliseconds(3)))
    feed(op2, ("k", 1), ("k", 7))
    feed(op2, ("k", 4))  # [4,7) touches [1,4) and [7,10)
    assert wm(op2, 100) == [("k", 1, 10, [1, 4, 7])]


def test_session_merging_keeps_counts_of_a_count_trigger() -> None:
    op = window_op(EventTimeSessionWindows.with_gap(Time.milliseconds(10)),
                   trigger=PurgingTrigger.of(CountTrigger.of(3)))
    assert feed(op, ("k", 0), ("k", 50)) == []  # two sessions, one element each
    assert feed(op, ("k", 35)) == []  # [35,45): a third session
    # [42,52) bridges [35,45) and [50,60): their counts (1 + 1) merge, plus this one = 3
    assert feed(op, ("k", 42)) == [("k", 35, 60, [35, 42, 50])]
    # a count trigger never fires on time: at the end the lone session is just dropped
    assert wm(op, MAX_WATERMARK) == []
    assert op.backend is not None and not list(op.backend.keys("_moldau_window_contents",
                                                              TimeWindow(0, 10)))


def test_event_time_firing_lateness_and_late_side_output() -> None:
    late = OutputTag("late")
    op = window_op(TumblingEventTimeWindows.of(Time.milliseconds(10)), lateness=5, late=late)
    feed(op, ("a", 1), ("a", 2), ("a", 12))
    assert wm(op, 9) == [("a", 0, 10, [1, 2])]
    # within the allowed lateness: added, and the window fires again at once
    assert feed(op, ("a", 3)) == [("a", 0, 10, [1, 2, 3])]
    assert wm(op, 14) == []  # cleanup of [0,10) at 9 + 5
    assert feed(op, ("a", 4)) == []  # now late
    assert op.side_outputs["late"].values == [("a", 4)]
    assert wm(op, MAX_WATERMARK) == [("a", 10, 20, [12])]


def test_processing_time_windows_fire_on_the_clock() -> None:
    clock = [1000]
    op = window_op(TumblingProcessingTimeWindows.of(Time.seconds(1)), clock=clock)
    feed(op, ("a", 0), ("b", 0))
    assert op.next_processing_time() == 1999
    assert op.on_processing_time(1500) is None
    clock[0] = 2000
    feed(op, ("a", 0))
    out = op.on_processing_time(1999)
    assert out is not None and sorted(out.values) == [("a", 1000, 2000, [0]),
                                                      ("b", 1000, 2000, [0])]
    out = op.end_input()  # end of input fires what is pending
    assert out is not None and out.values == [("a", 2000, 3000, [0])]


def test_count_window_via_global_windows() -> None:
    op = window_op(GlobalWindows.create(), trigger=PurgingTrigger.of(CountTrigger.of(2)))
    assert feed(op, ("a", 1), ("b", 2), ("a", 3)) == [("a", None, None, [1, 3])]
    assert feed(op, ("a", 5)) == []  # purged: counting starts again
    assert feed(op, ("b", 4)) == [("b", None, None, [2, 4])]
    assert wm(op, MAX_WATERMARK) == []  # the global window never fires on time
