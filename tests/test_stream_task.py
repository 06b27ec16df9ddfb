"""The task core: the watermark valve, output partitioners, and the executor hook."""

from __future__ import annotations

from collections import Counter

import pytest

from moldau.clients.stream import (
    JobExecutionResult,
    JobGraph,
    StreamExecutionEnvironment,
    get_executor,
    set_context_configuration,
    set_executor,
)
from moldau.clients.stream.functions import FieldKeySelector
from moldau.clients.stream.jobgraph import JobEdge, Partitioning, connected_sources
from moldau.clients.stream.keygroups import compute_key_group_range_for_operator_index
from moldau.clients.stream.operators import Batch
from moldau.clients.stream.task import OutputPartitioner, WatermarkValve
from moldau.clients.stream.watermark import MAX_WATERMARK, MIN_WATERMARK


def test_valve_takes_the_minimum_and_never_goes_back() -> None:
    v = WatermarkValve(3)
    assert v.input_watermark(0, 10) == (None, None)
    assert v.input_watermark(1, 5) == (None, None)
    assert v.input_watermark(2, 7) == (None, 5)
    assert v.input_watermark(1, 20) == (None, 7)
    assert v.input_watermark(1, 3) == (None, None)  # a channel going back changes nothing
    assert v.input_watermark(2, 30) == (None, 10)


def test_valve_idle_channels_do_not_hold_time_back() -> None:
    v = WatermarkValve(2)
    v.input_watermark(0, 100)
    assert v.input_status(1, True) == (None, 100)  # channel 1 idle: 0 alone decides
    assert v.input_watermark(0, 150) == (None, 150)
    assert v.input_watermark(1, 999) == (None, None)  # ignored while idle
    # back to active, but behind the output: not counted until it catches up
    assert v.input_status(1, False) == (None, None)
    assert v.input_watermark(1, 120) == (None, None)
    assert v.input_watermark(0, 200) == (None, 200)  # 1 is still unaligned
    assert v.input_watermark(1, 160) == (None, None)
    assert v.input_watermark(1, 250) == (None, None)  # aligned now; min(200, 250) = 200
    assert v.input_watermark(0, 300) == (None, 250)
    # all idle: output idle, at the highest channel watermark
    assert v.input_status(0, True) == (None, None)
    assert v.input_status(1, True) == (True, 300)
    assert v.input_status(0, False) == (False, None)


def test_valve_ended_channels_stop_counting() -> None:
    v = WatermarkValve(2)
    v.input_watermark(0, 5)
    assert v.end_channel(1) == (None, 5)
    assert v.end_channel(0) == (None, MAX_WATERMARK)
    assert WatermarkValve(1).last_output == MIN_WATERMARK
    # an idle channel next to an ended one: the output goes idle, it doesn't jump to MAX
    w = WatermarkValve(3)
    for ch, t in ((0, 10), (1, 20), (2, 30)):
        w.input_watermark(ch, t)
    assert w.end_channel(0) == (None, 20)
    assert w.input_status(1, True) == (None, 30)
    assert w.end_channel(2) == (True, None)
    assert w.input_status(1, False) == (False, None)
    assert w.input_watermark(1, 40) == (None, 40)
    assert w.end_channel(1) == (None, MAX_WATERMARK)


def test_hash_partitioner_sends_keys_to_their_key_group_owner() -> None:
    edge = JobEdge("a", "b", Partitioning.HASH)
    ks = FieldKeySelector([0])
    part = OutputPartitioner(edge, 0, 2, 3, 16, key_selector=ks)
    batch = Batch([(f"k{i}", i) for i in range(300)], list(range(300)))
    out = part.partition(batch)
    seen = 0
    from moldau.clients.stream.keygroups import assign_to_key_group

    for target, b in out:
        rng = compute_key_group_range_for_operator_index(16, 3, target)
        for (key, i), ts in b.pairs():
            assert assign_to_key_group(key, 16) in rng and ts == i
            seen += 1
    assert seen == 300


def test_rebalance_rescale_broadcast_global() -> None:
    batch = Batch(list(range(10)))
    reb = OutputPartitioner(JobEdge("a", "b", Partitioning.REBALANCE), 0, 1, 3, 128)
    got = Counter()
    for _ in range(3):
        for t, b in reb.partition(batch):
            got[t] += len(b)
    assert got == {0: 10, 1: 10, 2: 10}
    # rescale: 2 upstream, 4 downstream -> each upstream feeds its own pair
    r0 = OutputPartitioner(JobEdge("a", "b", Partitioning.RESCALE), 0, 2, 4, 128)
    r1 = OutputPartitioner(JobEdge("a", "b", Partitioning.RESCALE), 1, 2, 4, 128)
    assert r0.targets == [0, 1] and r1.targets == [2, 3]
    assert connected_sources(Partitioning.RESCALE, 3, 2, 4) == [1]
    assert connected_sources(Partitioning.RESCALE, 0, 4, 2) == [0, 1]
    br = OutputPartitioner(JobEdge("a", "b", Partitioning.BROADCAST), 0, 1, 3, 128)
    assert [t for t, b in br.partition(batch)] == [0, 1, 2]
    gl = OutputPartitioner(JobEdge("a", "b", Partitioning.GLOBAL), 1, 2, 3, 128)
    assert gl.partition(batch) == [(0, batch)]
    sh = OutputPartitioner(JobEdge("a", "b", Partitioning.SHUFFLE), 0, 1, 4, 128, seed=3)
    assert sorted(v for _, b in sh.partition(batch) for v in b.values) == list(range(10))


def test_execute_hands_the_graph_to_the_installed_executor() -> None:
    got: list[JobGraph] = []

    def remote(graph: JobGraph) -> JobExecutionResult:
        got.append(JobGraph.from_bytes(graph.to_bytes()))
        return JobExecutionResult(graph.job_id, graph.name, 0)

    assert get_executor() is None
    set_executor(remote)
    set_context_configuration({"parallelism.default": 4})
    try:
        e = StreamExecutionEnvironment.get_execution_environment()
        assert e.get_parallelism() == 4
        e.from_collection([1, 2]).map(lambda x: x).print()
        res = e.execute("remote job")
        assert res.get_job_name() == "remote job" and got[0].name == "remote job"
        assert got[0].vertices[-1].parallelism == 4
        e.from_collection([1]).map(lambda x: x)
        with pytest.raises(RuntimeError, match="did not deliver collected results"):
            e.from_collection([1]).execute_and_collect()
        e2 = StreamExecutionEnvironment.get_execution_environment()
        e2.set_parallelism(2)  # the script's own setting wins
        e2.from_collection([1]).map(lambda x: x).print()
        e2.execute()
        assert got[-1].vertices[-1].parallelism == 2
    finally:
        set_executor(None)
        set_context_configuration(None)
    assert StreamExecutionEnvironment.get_execution_environment().get_parallelism() == 1


