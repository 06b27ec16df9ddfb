"""Building job graphs: chaining, partitioning, serialization, plans and build-time errors."""

from __future__ import annotations

import json

import pytest

from moldau.clients.stream import (
    CollectSink,
    EventTimeSessionWindows,
    GraphError,
    JobGraph,
    MapFunction,
    OutputTag,
    Partitioning,
    SlidingProcessingTimeWindows,
    SourceFunction,
    StreamExecutionEnvironment,
    Time,
    TumblingEventTimeWindows,
    Types,
    WatermarkStrategy,
)
from moldau.clients.stream.local_executor import LocalExecutor


def env(p: int = 1) -> StreamExecutionEnvironment:
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(p)
    return e


def names(g: JobGraph) -> list[str]:
    return [v.name for v in g.vertices]


def test_map_filter_chain_into_the_source_vertex() -> None:
    e = env(1)
    e.from_collection([1, 2, 3]).map(lambda x: x + 1).filter(lambda x: x > 2).print()
    g = e.get_job_graph("chain")
    assert names(g) == ["Source: Collection Source -> Map -> Filter -> Sink: Print to Std. Out"]
    assert [o.kind for o in g.vertices[0].operators] == ["source", "map", "filter", "sink"]
    assert g.edges == []


def test_key_by_breaks_the_chain_with_a_hash_edge() -> None:
    e = env(2)
    (e.from_collection(["a b"]).flat_map(str.split).map(lambda w: (w, 1))
     .key_by(lambda t: t[0]).sum(1).print())
    g = e.get_job_graph()
    # the collection source is non-parallel: REBALANCE to the parallel flat_map
    assert names(g) == ["Source: Collection Source", "Flat Map -> Map",
                        "Keyed Aggregation -> Sink: Print to Std. Out"]
    assert [v.parallelism for v in g.vertices] == [1, 2, 2]
    assert [e.partitioning for e in g.edges] == [Partitioning.REBALANCE, Partitioning.HASH]
    assert g.edges[1].key_selector is not None
    assert g.edges[1].create_key_selector()(("x", 1)) == "x"


def test_parallelism_change_breaks_the_chain() -> None:
    e = env(2)
    e.generate_sequence(1, 10).map(lambda x: x).set_parallelism(3).filter(bool).print()
    g = e.get_job_graph()
    # the filter takes the default parallelism again (2), as in Flink
    assert names(g) == ["Source: Sequence Source", "Map", "Filter -> Sink: Print to Std. Out"]
    assert [v.parallelism for v in g.vertices] == [2, 3, 2]
    assert [x.partitioning for x in g.edges] == [Partitioning.REBALANCE] * 2


def test_explicit_partitionings_and_union() -> None:
    e = env(2)
    a = e.generate_sequence(1, 5)
    b = e.generate_sequence(6, 9)
    a.union(b).rebalance().map(lambda x: x).print()
    a.broadcast().map(lambda x: -x).print()
    a.shuffle().map(lambda x: x).print()
    a.rescale().map(lambda x: x).print()
    g = e.get_job_graph()
    # 'a' has four consumers: nothing chains to it
    src_a = g.vertices[0]
    assert src_a.name == "Source: Sequence Source"
    kinds = sorted(e2.partitioning.value for e2 in g.outputs_of(src_a.id))
    assert kinds == ["BROADCAST", "REBALANCE", "RESCALE", "SHUFFLE"]
    union_map = next(v for v in g.vertices if len(g.inputs_of(v.id)) == 2)
    assert union_map.name == "Map -> Sink: Print to Std. Out"


def test_disable_chaining_and_start_new_chain() -> None:
    e = env(1)
    e.from_collection([1]).map(lambda x: x).start_new_chain().filter(bool).disable_chaining() \
        .print()
    g = e.get_job_graph()
    assert names(g) == ["Source: Collection Source", "Map", "Filter",
                        "Sink: Print to Std. Out"]
    assert all(x.partitioning is Partitioning.FORWARD for x in g.edges)
    e2 = env(1)
    e2.disable_operator_chaining()
    e2.from_collection([1]).map(lambda x: x).print()
    assert len(e2.get_job_graph().vertices) == 3


def test_side_output_edges_and_names() -> None:
    e = env(1)
    late = OutputTag("late")
    w = (e.from_collection([(1, 1)])
         .assign_timestamps_and_watermarks(
             WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                 lambda v, ts: v[1]))
         .key_by(0).window(TumblingEventTimeWindows.of(Time.seconds(5)))
         .side_output_late_data(late).sum(1))
    w.print()
    w.get_side_output(late).print("late")
    g = e.get_job_graph()
    win = next(v for v in g.vertices if v.operators[0].kind == "window")
    assert win.name.startswith("Window(TumblingEventTimeWindows(5000), EventTimeTrigger")
    tags = sorted(str(x.side_output_tag) for x in g.outputs_of(win.id))
    assert tags == ["None", "late"]
    assert win.operators[-1].kind == "window"  # two consumers: the window ends its chain


def test_name_uid_and_stable_operator_ids() -> None:
    def build() -> JobGraph:
        e = env(2)
        s = e.from_collection([1, 2]).name("numbers").uid("src")
        s.map(lambda x: x * 2).name("double").print()
        return e.get_job_graph()
    g1, g2 = build(), build()
    assert g1.vertices[0].name == "Source: numbers"
    assert g1.vertices[0].operators[0].uid == g1.vertices[0].uid == "src"
    assert g1.vertices[0].kind == "source"
    assert [o.id for v in g1.vertices for o in v.operators] == [
        o.id for v in g2.vertices for o in v.operators]
    assert g1.job_id != g2.job_id
    assert "double" in g1.describe()


def test_round_trip_through_bytes_keeps_lambdas_and_closures() -> None:
    factor = 7
    offsets = {"a": 100}

    def scale(x: int) -> int:
        return x * factor + offsets["a"]

    class AddOne(MapFunction):
        def __init__(self, n: int) -> None:
            self.n = n

        def map(self, value: int) -> int:
            return value + self.n

    e = env(2)
    e.set_max_parallelism(64)
    e.enable_checkpointing(5000)
    (e.generate_sequence(1, 20).map(scale).map(AddOne(1)).key_by(lambda x: x % 3)
     .reduce(lambda a, b: a + b).add_sink(sink := CollectSink()))
    g = e.get_job_graph("rt")
    data = g.to_bytes()
    g2 = JobGraph.from_bytes(data)
    assert g2.to_bytes() == data
    assert g2.name == "rt" and g2.checkpoint_interval == 5000 and g2.max_parallelism == 64
    assert [(v.id, v.name, v.parallelism) for v in g2.vertices] == [
        (v.id, v.name, v.parallelism) for v in g.vertices]
    # the closures still work after the trip
    op = g2.vertices[0].operators[1].create()
    op.open()
    from moldau.clients.stream.operators import Batch

    assert op.process_batch(Batch([1, 2])).values == [107, 114]
    # and the whole job runs from the deserialized graph
    res = LocalExecutor().execute(g2)
    out = res.collected[sink.collect_id]
    assert len(out) == 20  # a rolling reduce emits once per record
    totals = {k: sum(v for v in (x * 7 + 101 for x in range(1, 21)) if v % 3 == k)
              for k in range(3)}
    assert set(totals.values()) <= set(out)
    assert max(out) == max(totals.values())


def test_from_bytes_rejects_garbage() -> None:
    for bad in (b"", b"\x00\x01garbage", b"\x81\xa6format\xa3xyz"):
        with pytest.raises(GraphError):
            JobGraph.from_bytes(bad)


def test_json_plan_has_flink_shape() -> None:
    e = env(2)
    e.from_collection(["a"]).flat_map(str.split).key_by(lambda w: w) \
        .window(SlidingProcessingTimeWindows.of(Time.seconds(15), Time.seconds(5))) \
        .reduce(lambda a, b: a).print()
    plan = e.get_job_graph("wc").to_json_plan()
    assert plan["name"] == "wc" and plan["type"] == "STREAMING"
    nodes = plan["nodes"]
    assert [n["parallelism"] for n in nodes] == [1, 2, 2]
    assert "inputs" not in nodes[0]
    assert nodes[2]["inputs"][0]["ship_strategy"] == "HASH"
    assert nodes[2]["inputs"][0]["id"] == nodes[1]["id"]
    assert "SlidingProcessingTimeWindows(15000, 5000)" in nodes[2]["description"]
    json.loads(e.get_execution_plan())


# --- build-time errors ---------------------------------------------------------------------


def test_bad_parallelism() -> None:
    e = env(1)
    with pytest.raises(ValueError, match="at least 1"):
        e.set_parallelism(0)
    with pytest.raises(TypeError, match="must be an int"):
        e.set_parallelism(1.5)  # type: ignore[arg-type]
    s = e.from_collection([1])
    with pytest.raises(GraphError, match="non parallel operator"):
        s.set_parallelism(2)
    m = s.map(lambda x: x)
    m.set_max_parallelism(4)
    with pytest.raises(GraphError, match="max parallelism 4"):
        m.set_parallelism(8)
    e2 = env(1)
    e2.set_max_parallelism(8)
    e2.from_collection([1]).map(lambda x: x).set_parallelism(16).print()
    with pytest.raises(GraphError, match="larger than its max parallelism 8"):
        e2.get_job_graph()


def test_key_by_on_non_keyable_things() -> None:
    e = env(1)
    s = e.from_collection([("a", 1)])
    with pytest.raises(TypeError, match="key_by\\(\\) expects a KeySelector"):
        s.key_by(3.5)
    with pytest.raises(TypeError, match="key_by\\(\\) needs"):
        s.key_by()
    with pytest.raises(GraphError, match="has 2 fields"):
        s.key_by(5)
    with pytest.raises(GraphError, match="refer to its fields by position"):
        s.key_by("word")
    words = e.from_collection(["a", "b"])
    with pytest.raises(GraphError, match="field positions only apply"):
        words.key_by(1)
    rows = e.from_collection(["x"]).map(lambda w: None,
                                        Types.ROW_NAMED(["word", "n"],
                                                        [Types.STRING(), Types.INT()]))
    rows.key_by("word")
    with pytest.raises(GraphError, match=r"unknown field; .* has the fields word, n"):
        rows.key_by("count")
    with pytest.raises(GraphError, match="unknown field"):
        rows.key_by("word").sum("count")


def test_wrong_argument_kinds() -> None:
    e = env(1)
    s = e.from_collection([("a", 1)])
    k = s.key_by(0)
    with pytest.raises(TypeError, match="window\\(\\) expects a WindowAssigner"):
        k.window(Time.seconds(5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"use TumblingEventTimeWindows\.of"):
        k.window(TumblingEventTimeWindows)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map\\(\\) expects a MapFunction"):
        s.map(42)
    with pytest.raises(TypeError, match="forget the parentheses"):
        s.map(MapFunction)
    with pytest.raises(TypeError, match="aggregate\\(\\) expects an AggregateFunction"):
        k.window(TumblingEventTimeWindows.of(Time.seconds(1))).aggregate(lambda x: x)
    with pytest.raises(TypeError, match="OutputTag"):
        k.window(TumblingEventTimeWindows.of(Time.seconds(1))).side_output_late_data("late")
    with pytest.raises(ValueError, match="abs\\(offset\\) < size"):
        TumblingEventTimeWindows.of(Time.seconds(1), Time.seconds(2))
    with pytest.raises(ValueError, match="must be positive"):
        TumblingEventTimeWindows.of(Time.seconds(0))
    with pytest.raises(TypeError, match="add_source\\(\\) expects a SourceFunction"):
        e.add_source(object())
    with pytest.raises(TypeError, match="assign_timestamps_and_watermarks"):
        s.assign_timestamps_and_watermarks(Time.seconds(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="union\\(\\) expects DataStreams"):
        s.union([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="configures an operator"):
        s.union(s).name("x")
    with pytest.raises(ValueError, match="non-empty string id"):
        OutputTag("")
    with pytest.raises(GraphError, match="merging window"):
        from moldau.clients.stream import CountTrigger, ProcessingTimeTrigger

        class NoMerge(ProcessingTimeTrigger):
            def can_merge(self) -> bool:
                return False
        k.window(EventTimeSessionWindows.with_gap(Time.seconds(1))).trigger(NoMerge())
    assert CountTrigger.of(2).can_merge()


def test_forward_needs_equal_parallelism() -> None:
    e = env(2)
    e.from_collection([1]).forward().map(lambda x: x).print()
    with pytest.raises(GraphError, match="Forward partitioning does not allow change of "
                                         "parallelism"):
        e.get_job_graph()


def test_unserializable_function_is_reported_at_build_time() -> None:
    import threading

    lock = threading.Lock()
    e = env(1)
    e.from_collection([1]).map(lambda x: (lock, x)[1]).print()
    with pytest.raises(GraphError, match="operator 'Map' can't be serialized"):
        e.get_job_graph()


def test_configuration_must_be_plain_data() -> None:
    e = env(1)
    e.configure({"my.option": object()})
    e.from_collection([1]).print()
    with pytest.raises(GraphError, match=r"'my\.option' .* is not plain data"):
        e.get_job_graph()


def test_empty_topology_and_uid_collisions() -> None:
    e = env(1)
    with pytest.raises(GraphError, match="No operators defined"):
        e.get_job_graph()
    e.from_collection([1]).uid("x").map(lambda v: v).uid("x").print()
    with pytest.raises(GraphError, match='Hash collision on user-specified ID "x"'):
        e.get_job_graph()


def test_execute_clears_the_topology() -> None:
    e = env(1)
    e.from_collection([1]).print()
    e.execute()
    with pytest.raises(GraphError, match="No operators defined"):
        e.execute()


def test_non_parallel_source_function_and_max_parallelism_default() -> None:
    class Gen(SourceFunction):
        def run(self, ctx: object) -> None:
            pass

    e = env(4)
    e.add_source(Gen()).map(lambda x: x).print()
    g = e.get_job_graph()
    assert [v.parallelism for v in g.vertices] == [1, 4]
    assert g.max_parallelism == 128
    e2 = env(100)
    e2.generate_sequence(0, 1).print()
    assert e2.get_job_graph().max_parallelism == 256
