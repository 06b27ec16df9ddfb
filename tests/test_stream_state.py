"""Keyed state: the heap backend, its snapshot format, and restoring jobs at another
parallelism (key groups re-split) with the same results as an uninterrupted run."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import msgpack
import pytest

from moldau.clients.stream import (
    CollectSink,
    Duration,
    KeyedProcessFunction,
    ReducingStateDescriptor,
    RuntimeContext,
    StreamExecutionEnvironment,
    Time,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from moldau.clients.stream.jobgraph import GraphError, JobGraph
from moldau.clients.stream.keygroups import (
    assign_to_key_group,
    compute_key_group_range_for_operator_index,
)
from moldau.clients.stream.local_executor import LocalJob
from moldau.clients.stream.state import (
    AggregatingStateDescriptor,
    HeapKeyedStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    split_keyed_snapshot,
)


def backend(p: int, i: int, mp: int = 16) -> HeapKeyedStateBackend:
    return HeapKeyedStateBackend(mp, compute_key_group_range_for_operator_index(mp, p, i))


def owner(key: Any, p: int, mp: int = 16) -> int:
    return assign_to_key_group(key, mp) * p // mp


class Avg:
    def create_accumulator(self) -> list[int]:
        return [0, 0]

    def add(self, v: int, acc: list[int]) -> list[int]:
        return [acc[0] + v, acc[1] + 1]

    def get_result(self, acc: list[int]) -> float:
        return acc[0] / acc[1]

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], a[1] + b[1]]


def test_state_views_follow_the_current_key() -> None:
    b = backend(1, 0)
    v = b.get_state(ValueStateDescriptor("v"))
    ls = b.get_state(ListStateDescriptor("l"))
    m = b.get_state(MapStateDescriptor("m"))
    r = b.get_state(ReducingStateDescriptor("r", lambda a, c: a + c))
    a = b.get_state(AggregatingStateDescriptor("a", Avg()))
    for key in ("k1", "k2"):
        b.set_current_key(key)
        assert v.value() is None and ls.get() == [] and m.is_empty() and r.get() is None
        v.update(key.upper())
        ls.add(1)
        ls.add_all([2, 3])
        m.put("x", key)
        r.add(5)
        r.add(6)
        a.add(2)
        a.add(4)
    b.set_current_key("k1")
    assert v.value() == "K1" and ls.get() == [1, 2, 3] and m.get("x") == "k1"
    assert r.get() == 11 and a.get() == 3.0
    v.update(None)  # None clears, as in Flink
    assert v.value() is None
    m.remove("x")
    assert m.is_empty() and list(m.keys()) == []
    b.set_current_key("k2")
    assert v.value() == "K2"
    assert sorted(b.keys("l")) == ["k1", "k2"]


def test_a_key_outside_the_subtask_range_is_an_error() -> None:
    b = backend(4, 0)
    foreign = next(f"k{i}" for i in range(1000) if owner(f"k{i}", 4) != 0)
    with pytest.raises(RuntimeError, match="does not own"):
        b.set_current_key(foreign)


def test_snapshot_is_split_by_key_group_and_restores_at_another_parallelism() -> None:
    keys = [f"user-{i}" for i in range(200)]
    # write with parallelism 2
    olds = [backend(2, i) for i in range(2)]
    timers = [b.create_timer_service("t") for b in olds]
    for k in keys:
        i = owner(k, 2)
        b = olds[i]
        b.set_current_key(k)
        b.get_state(ValueStateDescriptor("count")).update(len(k))
        b.get_state(ListStateDescriptor("hist")).add_all([k, k])
        timers[i].register_event_time_timer(None, 1000 + len(k))
    snaps = [b.snapshot() for b in olds]
    # format: msgpack with per key group blobs
    doc = msgpack.unpackb(snaps[0], strict_map_key=False)
    assert doc["format"] == "moldau-keyed-state/1" and doc["max_parallelism"] == 16
    groups0 = set(split_keyed_snapshot(snaps[0]))
    assert groups0 <= set(compute_key_group_range_for_operator_index(16, 2, 0))
    # restore with parallelism 3: each new subtask takes the groups it owns
    news = [backend(3, i) for i in range(3)]
    for b in news:
        b.restore(snaps)
    fired: list[tuple[int, Any]] = []
    for i, b in enumerate(news):
        svc = b.create_timer_service("t")  # timers restored before the service existed
        fired.extend((ts, key) for ts, key, _ in svc.advance_watermark(10**6))
        for k in keys:
            if owner(k, 3) == i:
                b.set_current_key(k)
                assert b.get_state(ValueStateDescriptor("count")).value() == len(k)
                assert b.get_state(ListStateDescriptor("hist")).get() == [k, k]
    assert sorted(fired) == sorted((1000 + len(k), k) for k in keys)
    with pytest.raises(ValueError, match="max parallelism"):
        HeapKeyedStateBackend(32, compute_key_group_range_for_operator_index(32, 1, 0)).restore(
            snaps)
    with pytest.raises(ValueError, match="not a keyed state snapshot"):
        split_keyed_snapshot(b"\x93\x01\x02\x03")


def test_timers_dedupe_delete_and_fire_in_order() -> None:
    b = backend(1, 0)
    svc = b.create_timer_service("t")
    for key, ts in [("a", 30), ("b", 10), ("a", 10), ("a", 30), ("c", 20)]:
        b.set_current_key(key)
        svc.register_event_time_timer(None, ts)
    b.set_current_key("c")
    svc.delete_event_time_timer(None, 20)
    got = [(ts, key) for ts, key, _ in svc.advance_watermark(25)]
    assert got == [(10, "b"), (10, "a")]
    b.set_current_key("z")
    svc.register_event_time_timer(None, 5)  # already due: fires at the next advance
    assert [(ts, k) for ts, k, _ in svc.advance_watermark(30)] == [(5, "z"), (30, "a")]
    svc.register_processing_time_timer(None, 100)
    assert svc.next_processing_time() == 100


# --- a whole job stopped with a savepoint and resumed at another parallelism ----------------


class CountAndRemember(KeyedProcessFunction):
    """Per key: a running count (value state), the last three values (list state), a
    reducing max; an event-time timer 10 s after the first record emits a summary."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", None))
        self.last = runtime_context.get_list_state(ListStateDescriptor("last"))
        self.top = runtime_context.get_reducing_state(ReducingStateDescriptor("top", max))

    def process_element(self, value: tuple[str, int], ctx: Any) -> Any:
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        self.last.update(([*self.last.get(), value[1]])[-3:])
        self.top.add(value[1])
        if n == 1:
            ctx.timer_service().register_event_time_timer(ctx.timestamp() + 10_000)
        yield ("count", value[0], n)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield ("summary", ctx.get_current_key(), self.count.value(), list(self.last.get()),
               self.top.get())


def build(p: int, data: list[tuple[str, int]]) -> tuple[JobGraph, CollectSink]:
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(p)
    e.set_max_parallelism(32)
    e.configure({"moldau.local.batch-size": 4})
    sink = CollectSink()
    stamped = (e.from_collection(data).uid("source")
               .assign_timestamps_and_watermarks(
                   WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2))
                   .with_timestamp_assigner(lambda v, ts: v[1]))
               .set_parallelism(1).uid("stamps"))
    keyed = stamped.key_by(lambda v: v[0])
    keyed.process(CountAndRemember()).uid("counter").add_sink(sink).uid("sink")
    (keyed.window(TumblingEventTimeWindows.of(Time.seconds(5))).reduce(
        lambda a, b: (a[0], max(a[1], b[1]))).uid("window")
     .map(lambda v: ("window-max", v[0], v[1])).uid("tag").add_sink(sink).uid("sink2"))
    keyed.sum(1).uid("rolling").map(lambda v: ("sum", v[0], v[1])).uid("tag2") \
        .add_sink(sink).uid("sink3")
    return e.get_job_graph("rescale"), sink


@pytest.mark.parametrize("p_before,p_after", [(2, 3), (3, 1), (1, 4)])
def test_savepoint_and_restore_at_another_parallelism_gives_the_same_results(
        p_before: int, p_after: int) -> None:
    seed = 11 * p_before + p_after
    print("seed", seed)
    rng = random.Random(seed)
    data = []
    for i in range(240):
        data.append((f"key-{rng.randrange(15)}", i * 300 + rng.randrange(1500)))

    def collected(job: LocalJob, sink: CollectSink) -> list[Any]:
        return job.collected.get(sink.collect_id, [])

    g_full, sink_full = build(2, data)
    full = LocalJob(g_full)
    full.run()
    expected = Counter(map(repr, collected(full, sink_full)))

    g1, sink1 = build(p_before, data)
    job1 = LocalJob(g1)
    assert job1.run(max_steps=25) is False  # stopped midway
    savepoint = job1.snapshot()
    first = collected(job1, sink1)
    job1.close()
    assert 0 < len(first) < sum(expected.values())

    g2, sink2 = build(p_after, data)
    assert sorted(savepoint) == sorted(o.id for v in g2.vertices for o in v.operators)
    job2 = LocalJob(g2, restore=savepoint)
    assert job2.run()
    job2.close()
    second = collected(job2, sink2)
    assert Counter(map(repr, first + second)) == expected


def test_restore_refuses_unknown_operators_unless_allowed() -> None:
    data = [("a", 1), ("b", 2)]
    g1, _ = build(1, data)
    job = LocalJob(g1)
    job.run(max_steps=1)
    sp = job.snapshot()
    job.close()
    sp["0" * 32] = [b""]
    with pytest.raises(GraphError, match="cannot map the state"):
        LocalJob(build(2, data)[0], restore=sp)
    LocalJob(build(2, data)[0], restore=sp, allow_non_restored_state=True).close()
