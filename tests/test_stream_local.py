"""Jobs run end to end on the local executor, compared with plain Python computations."""

from __future__ import annotations

import gzip
import random
import socket
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from moldau.clients.stream import (
    AggregateFunction,
    CollectSink,
    Duration,
    Encoder,
    FileSink,
    FileSource,
    FlatMapFunction,
    KeyedProcessFunction,
    MapFunction,
    OutputFileConfig,
    OutputTag,
    ParallelSourceFunction,
    ProcessFunction,
    ProcessWindowFunction,
    Row,
    RuntimeContext,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    SourceFunction,
    StreamExecutionEnvironment,
    StreamFormat,
    Time,
    TimeCharacteristic,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    Watermark,
    WatermarkStrategy,
    WindowFunction,
)
from moldau.clients.stream.connectors import BasePathBucketAssigner
from moldau.clients.stream.state import ListStateDescriptor, MapStateDescriptor
from moldau.clients.stream.watermark import MAX_WATERMARK


def env(p: int = 1, batch_size: int | None = None) -> StreamExecutionEnvironment:
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(p)
    if batch_size is not None:
        e.configure({"moldau.local.batch-size": batch_size})
    return e


SENTENCES = ["the quick brown fox", "jumps over the lazy dog", "the dog barks",
             "a fox is quick", "", "the end the end"]


@pytest.mark.parametrize("p", [1, 3])
def test_word_count_equals_counter(p: int) -> None:
    e = env(p, batch_size=2)
    counts = (e.from_collection(SENTENCES)
              .flat_map(lambda s: [(w, 1) for w in s.split()])
              .key_by(0)
              .sum(1))
    out = list(counts.execute_and_collect())
    final: dict[str, int] = {}
    for word, n in out:
        final[word] = max(final.get(word, 0), n)
    assert final == dict(Counter(w for s in SENTENCES for w in s.split()))
    # a rolling sum emits once per occurrence, counting up by one
    assert sorted(n for w, n in out if w == "the") == [1, 2, 3, 4, 5]


def test_word_count_with_flink_style_classes_and_collector() -> None:
    class Tokenizer(FlatMapFunction):
        def flat_map(self, value: str, out: Any) -> None:  # Java style: a collector
            for w in value.lower().split():
                out.collect((w, 1))

    class Upper(MapFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.subtask = runtime_context.get_index_of_this_subtask()

        def map(self, value: tuple[str, int]) -> tuple[str, int]:
            return (value[0].upper(), value[1])

    e = env(2)
    sink = CollectSink()
    (e.from_collection(SENTENCES).flat_map(Tokenizer()).map(Upper()).key_by(lambda t: t[0])
     .reduce(lambda a, b: (a[0], a[1] + b[1])).add_sink(sink))
    e.execute("wc")
    final = {}
    for w, n in sink.results:
        final[w] = max(final.get(w, 0), n)
    assert final == {w.upper(): n for w, n in Counter(
        w for s in SENTENCES for w in s.split()).items()}


def test_print_prefixes_subtasks(capsys: pytest.CaptureFixture[str]) -> None:
    e = env(2)
    e.from_collection(["a", "b", "c", "d"]).map(str.upper).print()
    e.execute()
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(["1> A", "2> B", "1> C", "2> D"])
    e1 = env(1)
    e1.from_collection([("w", 1)]).print()
    e1.from_collection([3]).print("tag")
    e1.execute()
    assert sorted(capsys.readouterr().out.splitlines()) == ["('w', 1)", "tag> 3"]


def rides(seed: int, n: int = 400, max_delay: int = 4000) -> list[tuple[str, int]]:
    """(key, event time) in arrival order: event times out of order by up to max_delay."""
    rng = random.Random(seed)
    evs = [(rng.choice("abcde"), 1000 * i + rng.randrange(1000)) for i in range(n)]
    arrival = sorted(evs, key=lambda e: e[1] + rng.randrange(max_delay))
    return arrival


class CountWithWindow(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        w = context.window()
        yield (key, w.start, w.end, len(list(elements)))


@pytest.mark.parametrize("seed", [1, 2])
def test_event_time_sliding_count_on_out_of_order_data_equals_batch(seed: int) -> None:
    print("seed", seed)
    data = rides(seed)
    e = env(2, batch_size=7)
    late = OutputTag("late")
    counted = (e.from_collection(data)
               .assign_timestamps_and_watermarks(
                   WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(5))
                   .with_timestamp_assigner(lambda ev, ts: ev[1]))
               .key_by(lambda ev: ev[0])
               .window(SlidingEventTimeWindows.of(Time.seconds(15), Time.seconds(5)))
               .side_output_late_data(late)
               .process(CountWithWindow()))
    late_sink = CollectSink()
    counted.get_side_output(late).add_sink(late_sink)
    out = counted.execute_and_collect()
    expected: Counter[tuple[str, int, int]] = Counter()
    for key, ts in data:
        for w in SlidingEventTimeWindows.of(Time.seconds(15), Time.seconds(5)).assign_windows(
                None, ts, 0):
            expected[(key, w.start, w.end)] += 1
    out = list(out)
    got = {(k, s, en): c for k, s, en, c in out}
    assert len(got) == len(out)  # each window of each key fires once
    assert got == dict(expected)
    assert late_sink.results == []


def test_late_records_go_to_the_side_output() -> None:
    e = env(1, batch_size=1)  # a watermark after every record
    late = OutputTag("late-data")
    events = [("a", 1000), ("a", 2000), ("b", 2500), ("a", 12000), ("a", 3000), ("b", 9999),
              ("a", 15000)]
    w = (e.from_collection(events)
         .assign_timestamps_and_watermarks(
             WatermarkStrategy.for_monotonous_timestamps()
             .with_timestamp_assigner(lambda ev, ts: ev[1]))
         .key_by(lambda ev: ev[0])
         .window(TumblingEventTimeWindows.of(Time.seconds(10)))
         .allowed_lateness(0)
         .side_output_late_data(late)
         .process(CountWithWindow()))
    late_sink = CollectSink()
    w.get_side_output(late).add_sink(late_sink)
    out = list(w.execute_and_collect())
    # 12000 moves the watermark to 11999: [0, 10000) fires; 3000 and 9999 come too late
    assert sorted(out) == [("a", 0, 10000, 2), ("a", 10000, 20000, 2), ("b", 0, 10000, 1)]
    assert late_sink.results == [("a", 3000), ("b", 9999)]


class CountWithTimeout(KeyedProcessFunction):
    """Flink's documented example: emit (key, count) when a key had no update for 60 s of
    event time."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("my-state", None))

    def process_element(self, value: tuple[str, int], ctx: Any) -> Any:
        current = self.state.value() or {"key": value[0], "count": 0, "last": 0}
        current["count"] += 1
        current["last"] = ctx.timestamp()
        self.state.update(current)
        ctx.timer_service().register_event_time_timer(current["last"] + 60000)
        return None

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        result = self.state.value()
        assert ctx.get_current_key() == result["key"]
        if timestamp == result["last"] + 60000:
            yield (result["key"], result["count"], timestamp)


def reference_timeouts(events: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """The same logic with a watermark of ts - 1 after every record, timers in time order."""
    state: dict[str, dict[str, int]] = {}
    timers: set[tuple[int, str]] = set()
    out = []

    def advance(wm: int) -> None:
        while True:
            due = sorted(t for t in timers if t[0] <= wm)
            if not due:
                return
            ts, key = due[0]
            timers.discard(due[0])
            if ts == state[key]["last"] + 60000:
                out.append((key, state[key]["count"], ts))

    for key, ts in events:
        s = state.setdefault(key, {"count": 0, "last": 0})
        s["count"] += 1
        s["last"] = ts
        timers.add((ts + 60000, key))
        advance(ts - 1)
    advance(MAX_WATERMARK)
    return out


def test_keyed_process_function_with_state_and_event_time_timers() -> None:
    rng = random.Random(7)
    print("seed 7")
    t = 0
    events = []
    for _ in range(300):
        t += rng.choice([100, 2000, 30000, 70000])
        events.append((rng.choice(["x", "y", "z"]), t))
    e = env(3, batch_size=1)
    out = (e.from_collection(events)
           .assign_timestamps_and_watermarks(
               WatermarkStrategy.for_monotonous_timestamps()
               .with_timestamp_assigner(lambda ev, ts: ev[1]))
           # one generator sees every record, as the reference does (at parallelism 3 each
           # generator would see a third, and the slowest would hold time back)
           .set_parallelism(1)
           .key_by(lambda ev: ev[0])
           .process(CountWithTimeout())
           .execute_and_collect())
    expected = reference_timeouts(events)
    assert sorted(out) == sorted(expected)
    assert len(expected) > 20


def test_processing_time_timers_and_side_outputs_of_process_functions() -> None:
    evens = OutputTag("evens")

    class Split(ProcessFunction):
        def process_element(self, value: int, ctx: Any) -> Any:
            if value % 2 == 0:
                yield evens, value
            else:
                ctx.output(evens, -1) if value == 1 else None
                yield value

    class Remind(KeyedProcessFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.seen = runtime_context.get_list_state(ListStateDescriptor("seen"))

        def process_element(self, value: int, ctx: Any) -> Any:
            self.seen.add(value)
            # one timer per key, far in the future (it fires at the end of input)
            assert ctx.timer_service().current_processing_time() < 10**15
            ctx.timer_service().register_processing_time_timer(10**15)
            return []

        def on_timer(self, timestamp: int, ctx: Any) -> Any:
            yield (ctx.get_current_key(), sorted(self.seen.get()), ctx.time_domain().name)

    e = env(2)
    odd = e.from_collection(list(range(10))).process(Split())
    side = CollectSink()
    odd.get_side_output(evens).add_sink(side)
    reminded = odd.key_by(lambda v: v % 3).process(Remind())
    out = reminded.execute_and_collect()
    assert sorted(side.results) == [-1, 0, 2, 4, 6, 8]
    # the far-future timers fire at the end of input
    assert sorted(out) == [(0, [3, 9], "PROCESSING_TIME"), (1, [1, 7], "PROCESSING_TIME"),
                           (2, [5], "PROCESSING_TIME")]


def test_timers_are_keyed_state_not_allowed_without_key() -> None:
    class Bad(ProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            ctx.timer_service().register_event_time_timer(5)
            return []

    e = env(1)
    e.from_collection([1]).process(Bad()).print()
    with pytest.raises(RuntimeError, match="only supported on a keyed streams"):
        e.execute()

    class NoState(MapFunction):
        def open(self, ctx: RuntimeContext) -> None:
            ctx.get_state(ValueStateDescriptor("s", None))

        def map(self, v: Any) -> Any:
            return v

    e.from_collection([1]).map(NoState()).print()
    with pytest.raises(RuntimeError, match="Keyed state can only be used on a 'keyed stream'"):
        e.execute()


def test_map_after_key_by_uses_keyed_state_and_map_state() -> None:
    class Numbering(MapFunction):
        def open(self, ctx: RuntimeContext) -> None:
            self.n = ctx.get_state(ValueStateDescriptor("n", None))
            self.firsts = ctx.get_map_state(MapStateDescriptor("firsts", None, None))

        def map(self, v: str) -> tuple[str, int, str]:
            n = (self.n.value() or 0) + 1
            self.n.update(n)
            if not self.firsts.contains("first"):
                self.firsts.put("first", v)
            return (v[0], n, self.firsts.get("first"))

    e = env(2)
    words = ["apple", "avocado", "banana", "blueberry", "apricot", "cherry"]
    out = sorted(e.from_collection(words).key_by(lambda w: w[0]).map(Numbering())
                 .execute_and_collect())
    assert out == [("a", 1, "apple"), ("a", 2, "apple"), ("a", 3, "apple"),
                   ("b", 1, "banana"), ("b", 2, "banana"), ("c", 1, "cherry")]


def test_aggregate_function_and_window_function_on_tumbling_windows() -> None:
    class Avg(AggregateFunction):
        def create_accumulator(self) -> tuple[int, int]:
            return (0, 0)

        def add(self, value: tuple[str, int, int], acc: tuple[int, int]) -> tuple[int, int]:
            return (acc[0] + value[2], acc[1] + 1)

        def get_result(self, acc: tuple[int, int]) -> float:
            return acc[0] / acc[1]

        def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
            return (a[0] + b[0], a[1] + b[1])

    class WithKey(WindowFunction):
        def apply(self, key: str, window: Any, inputs: Any) -> Any:
            for avg in inputs:
                yield (key, window.start, avg)

    data = [("s1", 100, 10), ("s1", 900, 20), ("s2", 500, 5), ("s1", 1500, 7)]
    e = env(2)
    out = (e.from_collection(data)
           .assign_timestamps_and_watermarks(
               WatermarkStrategy.for_monotonous_timestamps()
               .with_timestamp_assigner(lambda v, ts: v[1]))
           .key_by(lambda v: v[0])
           .window(TumblingEventTimeWindows.of(Time.seconds(1)))
           .aggregate(Avg(), WithKey())
           .execute_and_collect())
    assert sorted(out) == [("s1", 0, 15.0), ("s1", 1000, 7.0), ("s2", 0, 5.0)]


def test_course_style_time_window_sum_on_tuples_with_two_key_fields() -> None:
    e = env(2)
    e.set_stream_time_characteristic(TimeCharacteristic.EventTime)
    cells = [(5, True, 1, 60_000), (5, True, 1, 120_000), (5, False, 1, 130_000),
             (6, True, 1, 200_000), (5, True, 1, 400_000)]
    out = (e.from_collection(cells)
           .assign_timestamps_and_watermarks(
               WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_minutes(1))
               .with_timestamp_assigner(lambda v, ts: v[3]))
           .key_by(0, 1)
           .time_window(Time.minutes(15), Time.minutes(5))
           .sum(2)
           .execute_and_collect())
    got = Counter((c, s, n) for c, s, n, _ in out)
    expected: Counter[tuple[int, bool, int]] = Counter()
    per_window: Counter[tuple[int, bool, int]] = Counter()
    for c, st, _, ts in cells:
        for w in SlidingEventTimeWindows.of(Time.minutes(15), Time.minutes(5)).assign_windows(
                None, ts, 0):
            per_window[(c, st, w.start)] += 1
    for (c, st, _), n in per_window.items():
        expected[(c, st, n)] += 1
    assert got == expected
    assert got[(5, True, 3)] == 2  # 60 s, 120 s and 400 s share two 15-minute windows


def test_processing_time_sliding_word_count_fires_at_end_of_bounded_input() -> None:
    e = env(2)
    out = (e.from_collection(["to be or not to be"])
           .flat_map(lambda s: [(w, 1) for w in s.split()])
           .key_by(lambda t: t[0])
           .window(SlidingProcessingTimeWindows.of(Time.seconds(15), Time.seconds(5)))
           .sum(1)
           .execute_and_collect())
    # every word lands in 3 sliding windows, each of which fires once
    assert Counter(out) == Counter({("to", 2): 3, ("be", 2): 3, ("or", 1): 3, ("not", 1): 3})


def test_union_broadcast_rebalance_and_sequences() -> None:
    e = env(3)
    a = e.generate_sequence(1, 50)
    b = e.from_collection([100, 200])
    out = a.union(b).rebalance().map(lambda x: x).execute_and_collect()
    assert sorted(out) == [*list(range(1, 51)), 100, 200]

    class Tag(MapFunction):
        def open(self, ctx: RuntimeContext) -> None:
            self.i = ctx.get_index_of_this_subtask()

        def map(self, v: int) -> tuple[int, int]:
            return (self.i, v)

    e2 = env(3)
    out2 = e2.from_collection([1, 2]).broadcast().map(Tag()).execute_and_collect()
    assert sorted(out2) == [(i, v) for i in range(3) for v in (1, 2)]


def test_rows_and_field_names() -> None:
    e = env(2)
    rows = [Row(word="a", n=1), Row(word="b", n=2), Row(word="a", n=5)]
    out = e.from_collection(rows).key_by("word").max("n").execute_and_collect()
    assert sorted(out, key=lambda r: (r.word, r.n)) == [
        Row(word="a", n=1), Row(word="a", n=5), Row(word="b", n=2)]
    out2 = e.from_collection([{"k": 1, "v": 3}, {"k": 1, "v": 1}]).key_by("k").min_by("v") \
        .execute_and_collect()
    assert list(out2) == [{"k": 1, "v": 3}, {"k": 1, "v": 1}]


def test_source_function_generator_with_timestamps_and_watermarks() -> None:
    class Clicks(SourceFunction):
        def __init__(self) -> None:
            self.running = True

        def run(self, ctx: Any) -> None:
            for i in range(20):
                if not self.running:
                    return
                ctx.collect_with_timestamp(("user", i), i * 1000)
                if i % 5 == 4:
                    ctx.emit_watermark(Watermark(i * 1000))

        def cancel(self) -> None:
            self.running = False

    e = env(2)
    out = (e.add_source(Clicks(), "clicks")
           .key_by(lambda v: v[0])
           .window(TumblingEventTimeWindows.of(Time.seconds(5)))
           .process(CountWithWindow())
           .execute_and_collect())
    assert sorted(out) == [("user", s, s + 5000, 5) for s in range(0, 20000, 5000)]


def test_parallel_source_function_runs_per_subtask() -> None:
    class Numbers(ParallelSourceFunction):
        def run(self, ctx: Any) -> None:
            rc = self.get_runtime_context()
            i, n = rc.get_index_of_this_subtask(), rc.get_number_of_parallel_subtasks()
            for v in range(i, 30, n):
                ctx.collect(v)

    e = env(3)
    assert sorted(e.add_source(Numbers()).execute_and_collect()) == list(range(30))


def test_failing_user_code_fails_the_job() -> None:
    class Boom(SourceFunction):
        def run(self, ctx: Any) -> None:
            ctx.collect(1)
            raise ValueError("generator broke")

    e = env(1)
    e.add_source(Boom()).print()
    with pytest.raises(ValueError, match="generator broke"):
        e.execute()
    e.from_collection([1, 0]).map(lambda x: 1 // x).print()
    with pytest.raises(ZeroDivisionError):
        e.execute()


def test_text_files_gz_and_file_sink(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("one two\nthree\r\n\nfour")
    with gzip.open(d / "b.txt.gz", "wt") as f:
        f.write("five\nsix\n")
    e = env(2)
    lines = e.read_text_file(str(d)).execute_and_collect()
    assert sorted(lines) == sorted(["one two", "three", "", "four", "five", "six"])
    src = FileSource.for_record_stream_format(StreamFormat.text_line_format(),
                                              str(d / "a.txt")).build()
    out_dir = tmp_path / "out"
    sink = (FileSink.for_row_format(str(out_dir), Encoder.simple_string_encoder())
            .with_bucket_assigner(BasePathBucketAssigner())
            .with_output_file_config(OutputFileConfig("words", ".txt")).build())
    e.from_source(src, WatermarkStrategy.no_watermarks(), "file").flat_map(str.split) \
        .sink_to(sink)
    e.execute()
    files = sorted(p.name for p in out_dir.iterdir())
    assert files and all(f.startswith("words-") and f.endswith(".txt") for f in files)
    words = sorted(w for p in out_dir.iterdir() for w in p.read_text().split())
    assert words == ["four", "one", "three", "two"]


def test_large_file_splits_cover_every_line_once(tmp_path: Path, monkeypatch: Any) -> None:
    import moldau.clients.stream.connector_runtime as rt

    monkeypatch.setattr(rt, "_SPLIT_BYTES", 97)  # many small byte-range splits
    lines = [f"line {i} " + "x" * (i % 13) for i in range(500)]
    p = tmp_path / "big.txt"
    p.write_text("\n".join(lines) + "\n")
    out = env(3, batch_size=5).read_text_file(str(p)).execute_and_collect()
    assert sorted(out) == sorted(lines)


def test_socket_text_stream(tmp_path: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"hello world\nsecond line\r\nlast")
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    e = env(1)
    out = e.socket_text_stream("127.0.0.1", port).execute_and_collect()
    assert list(out) == ["hello world", "second line", "last"]
    t.join(5)


def test_count_windows_and_window_all() -> None:
    e = env(2)
    out = (e.from_collection([("a", i) for i in range(7)] + [("b", 1), ("b", 2)])
           .key_by(lambda v: v[0]).count_window(3).sum(1).execute_and_collect())
    assert sorted(out) == [("a", 3), ("a", 12)]
    out2 = (e.from_collection(list(range(10))).count_window_all(4, 2)
            .reduce(lambda a, b: a + b).execute_and_collect())
    # every 2 elements, the sum of the last 4
    assert sorted(out2) == [0 + 1, 0 + 1 + 2 + 3, 2 + 3 + 4 + 5, 4 + 5 + 6 + 7, 6 + 7 + 8 + 9]
    g = e.from_collection([1]).count_window_all(2).sum(0)
    g.print()
    g_ = e.get_job_graph()
    win = next(v for v in g_.vertices if v.operators[0].kind == "window")
    assert win.parallelism == 1 and g_.inputs_of(win.id)[0].partitioning.value == "GLOBAL"


def test_keyed_streams_work_by_key_group_at_any_parallelism() -> None:
    data = [(f"k{i % 37}", i) for i in range(1000)]
    results = []
    for p in (1, 2, 5):
        e = env(p, batch_size=16)
        out = e.from_collection(data).key_by(lambda v: v[0]).sum(1).execute_and_collect()
        last: dict[str, int] = defaultdict(int)
        for k, v in out:
            last[k] = max(last[k], v)
        results.append(dict(last))
    assert results[0] == results[1] == results[2]
