"""The cluster runtime's pure parts: state tables, slot spreading, the data-plane codec,
credit-based flow control between in-process channels, configuration."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldau.clients.stream.operators import Batch
from moldau.jobmanager.config import ConfigError, build_config, parse_flink_conf
from moldau.jobmanager.execution_state import (
    EXECUTION_TRANSITIONS,
    JOB_TRANSITIONS,
    TERMINAL_EXECUTION_STATES,
    TERMINAL_JOB_STATES,
    ExecutionState,
    IllegalStateTransition,
    JobStatus,
    aggregate_state,
    check_job_transition,
    check_transition,
)
from moldau.jobmanager.execution_vertex import ExecutionVertex
from moldau.jobmanager.heartbeat_manager import HeartbeatManager
from moldau.jobmanager.slot_pool import SlotPool, SlotRef, spread
from moldau.taskmanager.network.codec import (
    BUFFER,
    EOP,
    STATUS,
    WATERMARK,
    CodecError,
    FrameReader,
    credit_frame,
    decode_buffer,
    encode_buffer,
    frame,
    parse_credit,
    parse_request,
    request_frame,
)
from moldau.taskmanager.network.input_gate import InputGate, LocalInputChannel
from moldau.taskmanager.network.partition_manager import PartitionManager, PartitionNotFound
from moldau.taskmanager.network.result_partition import ChannelWriter, ResultPartition, compact

# --- state tables ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(ExecutionState))
@pytest.mark.parametrize("target", list(ExecutionState))
def test_every_execution_transition_follows_the_table(state: ExecutionState,
                                                      target: ExecutionState) -> None:
    ev = ExecutionVertex("v", 0)
    ev.state = state
    if target in EXECUTION_TRANSITIONS[state]:
        assert ev.transition(target)
        assert ev.state is target and target.value in ev.timestamps
    elif target is state:
        assert not ev.transition(target)
    else:
        with pytest.raises(IllegalStateTransition):
            ev.transition(target)
        assert ev.state is state


def test_state_tables_shape() -> None:
    assert set(EXECUTION_TRANSITIONS) == set(ExecutionState)
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    for s in TERMINAL_EXECUTION_STATES:
        assert EXECUTION_TRANSITIONS[s] == frozenset()
    for j in TERMINAL_JOB_STATES:
        assert JOB_TRANSITIONS[j] == frozenset()
    # every state is reachable from CREATED, and every non-terminal one can end
    for table, start, terminal in ((EXECUTION_TRANSITIONS, ExecutionState.CREATED,
                                    TERMINAL_EXECUTION_STATES),
                                   (JOB_TRANSITIONS, JobStatus.CREATED, TERMINAL_JOB_STATES)):
        seen = {start}
        todo: list[Any] = [start]
        while todo:
            for nxt in table[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(table)
        for s in table:
            if s not in terminal:
                assert table[s] & terminal or any(table[n] & terminal for n in table[s])


@given(st.lists(st.sampled_from(list(ExecutionState)), max_size=30))
def test_random_execution_walks_never_leave_terminal(targets: list[ExecutionState]) -> None:
    s = ExecutionState.CREATED
    for t in targets:
        try:
            s2 = check_transition(s, t)
        except IllegalStateTransition:
            continue
        assert not s.is_terminal
        s = s2


@given(st.lists(st.sampled_from(list(JobStatus)), max_size=30))
def test_random_job_walks_never_leave_terminal(targets: list[JobStatus]) -> None:
    s = JobStatus.CREATED
    for t in targets:
        try:
            s2 = check_job_transition(s, t)
        except IllegalStateTransition:
            continue
        assert not s.is_terminal
        s = s2


def test_vertex_aggregate_state() -> None:
    E = ExecutionState
    assert aggregate_state({E.RUNNING: 2, E.FINISHED: 1}, 3) is E.RUNNING
    assert aggregate_state({E.FINISHED: 3}, 3) is E.FINISHED
    assert aggregate_state({E.FINISHED: 1, E.DEPLOYING: 2}, 3) is E.RUNNING
    assert aggregate_state({E.FAILED: 1, E.RUNNING: 2}, 3) is E.FAILED
    assert aggregate_state({E.CANCELED: 1, E.CANCELING: 1}, 2) is E.CANCELING
    assert aggregate_state({E.CREATED: 2}, 2) is E.CREATED


# --- slots ------------------------------------------------------------------------------------


def test_spread_goes_round_robin_over_taskmanagers() -> None:
    assert spread({"a": [0, 1], "b": [0, 1]}, 3) == [("a", 0), ("b", 0), ("a", 1)]
    assert spread({"a": [0], "b": [0, 1, 2]}, 3) == [("b", 0), ("a", 0), ("b", 1)]
    assert spread({"a": [0]}, 2) is None
    assert spread({}, 0) == []


@given(st.dictionaries(st.text(min_size=1, max_size=3),
                       st.lists(st.integers(0, 15), unique=True, max_size=6), max_size=5),
       st.integers(0, 20))
def test_spread_properties(free: dict[str, list[int]], n: int) -> None:
    got = spread(free, n)
    total = sum(len(v) for v in free.values())
    if n > total:
        assert got is None
        return
    assert got is not None and len(got) == n and len(set(got)) == n
    assert all(i in free[tm] for tm, i in got)
    used = {tm: sum(1 for t, _ in got if t == tm) for tm in free}
    # balanced: no TaskManager gets two more than another that still had free slots
    for a in free:
        for b in free:
            if used[a] > used[b] + 1:
                assert used[b] == len(free[b])


def test_slot_pool_allocates_all_or_nothing() -> None:
    pool = SlotPool()
    pool.add_taskmanager("a", [SlotRef("a", i, "h", 10 + i) for i in range(2)])
    pool.add_taskmanager("b", [SlotRef("b", 0, "h", 20)])
    assert pool.allocate("j1", 4) is None and pool.free_count() == 3
    got = pool.allocate("j1", 2)
    assert got is not None and {r.tm_id for r in got} == {"a", "b"}
    assert pool.free_count() == 1 and pool.allocate("j2", 2) is None
    assert pool.release("j1") == 2 and pool.free_count() == 3
    pool.remove_taskmanager("a")
    assert pool.total() == 1


def test_heartbeat_manager_declares_silent_taskmanagers_lost() -> None:
    now = [0.0]
    lost: list[tuple[str, int]] = []
    hb = HeartbeatManager(3000, lambda tm, ms: lost.append((tm, ms)), clock=lambda: now[0])
    assert hb.interval_ms == 600
    hb.monitor("a")
    hb.monitor("b")
    now[0] = 2.0
    assert hb.heard("a") and not hb.heard("zzz")
    now[0] = 3.5
    hb.check()
    assert lost == [("b", 3500)]
    now[0] = 5.25
    hb.check()
    assert lost == [("b", 3500), ("a", 3250)]
    assert not hb.heard("a")  # forgotten until it registers again


# --- data plane codec ---------------------------------------------------------------------------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


values_st = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=200)
@given(st.lists(st.one_of(
    st.lists(values_st, max_size=6).map(lambda vs: Batch(vs)),
    st.lists(st.tuples(values_st, st.none() | st.integers(0, 2**62)), max_size=6).map(
        lambda ps: Batch([v for v, _ in ps], [t for _, t in ps])),
    st.integers(-(2**63), 2**63 - 1).map(lambda t: (WATERMARK, t)),
    st.booleans().map(lambda b: (STATUS, b))), max_size=5))
def test_buffers_round_trip_exactly(elements: list[Any]) -> None:
    elements = [*elements, EOP]
    got = decode_buffer(encode_buffer(elements))
    assert len(got) == len(elements)
    for a, b in zip(elements, got, strict=True):
        if type(a) is Batch:
            assert type(b) is Batch
            assert b.values == a.values
            assert [type(x) for x in b.values] == [type(x) for x in a.values]
            assert b.timestamps == a.timestamps
        else:
            assert tuple(b) == tuple(a)


def test_user_objects_travel_pickled() -> None:
    got = decode_buffer(encode_buffer([Batch([Point(1), Point(2)], [5, None])]))
    assert got[0].values == [Point(1), Point(2)] and got[0].timestamps == [5, None]


@given(st.binary(max_size=64))
def test_garbage_buffers_raise_codec_error(data: bytes) -> None:
    try:
        decode_buffer(data)
    except CodecError:
        pass


def test_frames_split_anywhere() -> None:
    stream = (request_frame("job", "exec", 2, 1, 4) + frame(BUFFER, b"payload")
              + credit_frame(7))
    for cut in range(len(stream) + 1):
        r = FrameReader()
        frames = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [t for t, _ in frames] == [1, BUFFER, 2]
        assert parse_request(frames[0][1]) == ("job", "exec", 2, 1, 4)
        assert frames[1][1] == b"payload" and parse_credit(frames[2][1]) == 7
    with pytest.raises(CodecError):
        FrameReader(max_frame=10).feed(frame(BUFFER, b"x" * 100))


def test_compact_merges_batches_between_events() -> None:
    a, b = Batch([1, 2]), Batch([3], [7])
    out = compact([a, b, (WATERMARK, 5), Batch([4]), EOP])
    assert out[0].values == [1, 2, 3] and out[0].timestamps == [None, None, 7]
    assert out[1] == (WATERMARK, 5) and out[2].values == [4] and out[3] is EOP
    assert a.values == [1, 2]  # the inputs are not modified


# --- credit-based flow control, in process -------------------------------------------------------


async def test_credits_bound_what_is_in_flight_and_backpressure_the_producer() -> None:
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    pm = PartitionManager()
    part = ResultPartition("job", "exec", 0, [0], capacity=2)
    pm.register(part)
    writer = ChannelWriter(part.subpartitions[0], max_records=10, target_bytes=1 << 20)
    gate = InputGate()
    ch = LocalInputChannel(gate, 0, pm, "job", "exec", 0, 0, credit=3, timeout=1.0)
    gate.channels.append(ch)
    await gate.start()
    await asyncio.sleep(0)  # the channel attaches
    sent = 0
    # nothing consumes: the producer may fill credit (3) plus its queue (2), then waits
    while part.available:
        writer.add_batch(Batch(list(range(sent, sent + 10))))
        sent += 10
        assert sent <= 50
    assert len(gate.ready) == 3 and len(part.subpartitions[0].queue) == 2
    waiter = asyncio.ensure_future(part.wait_available())
    await asyncio.sleep(0)
    assert not waiter.done()
    # consuming a buffer gives a credit back: the next queued buffer moves, room appears
    received: list[int] = []
    item = gate.poll()
    assert item is not None
    received += item[1][0].values
    gate.release(0)
    await asyncio.sleep(0)
    assert waiter.done()
    # the rest, in random chunks, then the end of the partition
    for _ in range(rng.randrange(1, 5)):
        writer.add_batch(Batch(list(range(sent, sent + 3))))
        sent += 3
    writer.finish()
    ended = False
    while not ended:
        item = gate.poll()
        if item is None:
            await gate.wait(1.0)
            continue
        for el in item[1]:
            if type(el) is Batch:
                received += el.values
            elif el is EOP:
                ended = True
                gate.channel_finished(0)
        if not ended:
            gate.release(0)
        await asyncio.sleep(0)
    assert received == list(range(sent))
    await asyncio.wait_for(part.wait_released(), 1.0)


async def test_partition_lookup_waits_for_registration_then_times_out() -> None:
    pm = PartitionManager()
    part = ResultPartition("job", "exec", 1, [0, 1], capacity=2)
    lookup = asyncio.ensure_future(pm.lookup(("job", "exec", 1), 1.0))
    await asyncio.sleep(0.01)
    pm.register(part)
    assert await lookup is part
    pm.unregister(part)
    with pytest.raises(PartitionNotFound, match="no longer available"):
        await pm.lookup(("job", "exec", 1), 1.0)
    with pytest.raises(PartitionNotFound, match="not deployed"):
        await pm.lookup(("job", "other", 1), 0.05)


# --- configuration --------------------------------------------------------------------------------


def test_flink_conf_parsing_and_validation(tmp_path: Any) -> None:
    text = ("# a comment\njobmanager.rpc.port: 6124\nrest.port: '8082'\n"
            "heartbeat.timeout: 3000  # short\nexecution.buffer-timeout: 10\n"
            "unknown.key: kept\n")
    values = parse_flink_conf(text)
    cfg = build_config(values, str(tmp_path))
    assert (cfg.rpc_port, cfg.rest_port, cfg.heartbeat_timeout_ms) == (6124, 8082, 3000)
    assert cfg.task_defaults() == {"execution.buffer-timeout": 10}
    assert cfg.raw["unknown.key"] == "kept"
    with pytest.raises(ConfigError, match=r"heartbeat\.timeout"):
        build_config({"heartbeat.timeout": "soon"}, str(tmp_path))
    with pytest.raises(ConfigError, match="line 1"):
        parse_flink_conf("no colon here")
