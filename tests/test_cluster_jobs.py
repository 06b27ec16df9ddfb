"""Jobs on a real cluster: a metadata node and a broker, a JobManager and two TaskManagers,
all OS processes talking over loopback; jobs are submitted through the JobManager's RPC."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import defaultdict
from typing import Any

import pytest
from harness import Processes
from test_cluster_support import (
    JobClient,
    alive,
    rest_address,
    ship_by_value,
    slot_pids,
    start_jobmanager,
    start_taskmanager,
    tm_id,
)

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.protocol.messages import JobQueryRequest
from moldau.clients.stream import StreamExecutionEnvironment, WatermarkStrategy
from moldau.clients.stream.connectors import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    SimpleStringSchema,
    SourceFunction,
)
from moldau.clients.types import NewTopic

ship_by_value(__name__)


def env(p: int) -> StreamExecutionEnvironment:
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(p)
    return e


class Forever(SourceFunction):
    """A generator that runs until canceled, slowly."""

    def __init__(self) -> None:
        self.running = True

    def run(self, ctx: Any) -> None:
        i = 0
        while self.running:
            ctx.collect(i)
            i += 1
            if i % 100 == 0:
                time.sleep(0.01)

    def cancel(self) -> None:
        self.running = False


async def produce_keyed(servers: str, topic: str, n: int, seed: int) -> dict[str, int]:
    """``n`` records ``key,amount`` on ``topic``; returns the sum per key."""
    rng = random.Random(seed)
    expected: dict[str, int] = defaultdict(int)
    async with Producer(servers, acks="all", linger_ms=5) as p:
        futs = []
        for _ in range(n):
            key = f"k{rng.randrange(40)}"
            amount = rng.randrange(1, 100)
            expected[key] += amount
            futs.append(await p.send(topic, f"{key},{amount}".encode(), key=key.encode()))
        await asyncio.gather(*futs)
    return dict(expected)


async def read_all(servers: str, topic: str, partitions: int, expect_keys: int,
                   timeout: float = 20.0) -> list[str]:
    out: list[str] = []
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        ends = await c.end_offsets([(topic, p) for p in range(partitions)])
        total = sum(ends.values())
        while len(out) < total and time.monotonic() < deadline:
            out.extend(r.value.decode() for r in await c.poll(timeout_ms=500))
    assert len({s.split(",")[0] for s in out}) >= expect_keys
    return out


def parse(s: str) -> tuple[str, int]:
    k, v = s.split(",")
    return k, int(v)


@pytest.mark.timeout(120)
async def test_keyed_sum_over_kafka_equals_python(procs: Processes) -> None:
    seed = random.randrange(1 << 30)
    print("seed", seed)
    md = procs.metadata()
    broker = procs.broker(1, md.address)
    servers = broker.address
    jm = start_jobmanager(procs)
    tm1 = start_taskmanager(procs, jm, "tm-1", slots=2)
    tm2 = start_taskmanager(procs, jm, "tm-2", slots=2)
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("amounts", 3, 1), NewTopic("sums-1", 2, 1),
                                   NewTopic("sums-3", 2, 1)])
    expected = await produce_keyed(servers, "amounts", 3000, seed)

    async with JobClient(jm.address) as client:
        for p in (1, 3):
            e = env(p)
            source = (KafkaSource.builder().set_bootstrap_servers(servers)
                      .set_topics("amounts")
                      .set_starting_offsets(KafkaOffsetsInitializer.earliest())
                      .set_bounded(KafkaOffsetsInitializer.latest())
                      .set_value_only_deserializer(SimpleStringSchema()).build())
            sink = (KafkaSink.builder().set_bootstrap_servers(servers)
                    .set_record_serializer(
                        KafkaRecordSerializationSchema.builder().set_topic(f"sums-{p}")
                        .set_value_serialization_schema(SimpleStringSchema())
                        .set_key_serialization_schema(
                            lambda s: s.split(",")[0].encode()).build())
                    .build())
            (e.from_source(source, WatermarkStrategy.no_watermarks(), "amounts")
             .map(parse)
             .key_by(lambda t: t[0])
             .reduce(lambda a, b: (a[0], a[1] + b[1]))
             .map(lambda t: f"{t[0]},{t[1]}")
             .sink_to(sink))
            jid = await client.run(e.get_job_graph(f"keyed sum p={p}").to_bytes())
            d = await client.wait_state(jid, "FINISHED", timeout=40)
            assert all(v["parallelism"] == p for v in d["vertices"])
            subtasks = await client.subtasks(jid)
            tms = {s["taskmanager-id"] for subs in subtasks.values() for s in subs}
            if p == 3:
                assert tms == {tm_id(tm1), tm_id(tm2)}, subtasks
            else:
                assert len(tms) == 1
            source_v = next(v for v in d["vertices"] if v["name"].startswith("Source"))
            assert source_v["metrics"]["write-records"] == 3000

            results = await read_all(servers, f"sums-{p}", 2, len(expected))
            final: dict[str, int] = {}
            for k, v in map(parse, results):
                final[k] = max(final.get(k, 0), v)
            assert final == expected
            # a rolling sum: one output per input record
            assert len(results) == 3000


@pytest.mark.timeout(90)
async def test_failing_job_leaves_others_running(procs: Processes) -> None:
    jm = start_jobmanager(procs)
    start_taskmanager(procs, jm, "tm-1", slots=2)
    async with JobClient(jm.address) as client:
        e = env(1)
        e.add_source(Forever(), "forever").map(lambda x: x * 2).add_sink(lambda v: None)
        steady = await client.run(e.get_job_graph("steady").to_bytes())
        await client.wait_running(steady)

        def explode(x: int) -> int:
            if x == 500:
                raise ValueError(f"boom at {x}")
            return x

        e = env(1)
        e.from_sequence(1, 1000).map(explode).print()
        bad = await client.run(e.get_job_graph("explodes").to_bytes())
        d = await client.wait_state(bad, "FAILED", timeout=30)
        assert d["status-counts"]["FAILED"] >= 1
        exc = await client.query("job_exceptions", bad)
        root = exc["root-exception"]
        assert "Traceback" in root and "ValueError: boom at 500" in root
        assert "explode" in root  # the user's frame is in the traceback
        assert exc["all-exceptions"][0]["task"].startswith("Source: Sequence Source")

        # the other job never noticed
        d = await client.query("job_details", steady)
        assert d["state"] == "RUNNING"
        await asyncio.sleep(1.0)
        assert (await client.query("job_details", steady))["state"] == "RUNNING"

        # the REST API shows the same (the dashboard's view)
        rest = rest_address(jm)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{rest}/jobs/{bad}/exceptions",
                                           timeout=5).read())
        assert "boom at 500" in json.loads(body)["root-exception"]

        assert await client.cancel(steady)
        await client.wait_state(steady, "CANCELED", timeout=30)
        ov = await client.query("overview")
        assert ov["jobs-failed"] == 1 and ov["jobs-cancelled"] == 1
        assert ov["jobs-running"] == 0
        assert ov["slots-available"] == ov["slots-total"] == 2


@pytest.mark.timeout(90)
async def test_print_goes_to_the_taskmanager_stdout_and_job_files_import(
        procs: Processes) -> None:
    jm = start_jobmanager(procs)
    tm = start_taskmanager(procs, jm, "tm-1", slots=2)
    helper = b"def shout(s):\n    return s.upper() + '!'\n"

    def use_helper(s: str) -> str:
        import shouting  # a file beside the job's script

        return str(shouting.shout(s))

    async with JobClient(jm.address) as client:
        e = env(2)
        e.from_collection(["hello", "moldau"]).map(use_helper).print("out")
        jid = await client.run(e.get_job_graph("printer").to_bytes(),
                               {"shouting.py": helper})
        await client.wait_state(jid, "FINISHED", timeout=30)
        text = await client.query("taskmanager_log", tm_id(tm), "stdout")
        lines = sorted(line for line in text.splitlines() if line.startswith("out:"))
        assert len(lines) == 2
        assert {line.split("> ", 1)[1] for line in lines} == {"HELLO!", "MOLDAU!"}
        log = await client.query("taskmanager_log", tm_id(tm), "log")
        assert "registered at the JobManager" in log


@pytest.mark.timeout(90)
async def test_bad_input(procs: Processes) -> None:
    jm = start_jobmanager(procs, conf={"slot.request.timeout": "3000"})
    start_taskmanager(procs, jm, "tm-1", slots=2)
    start_taskmanager(procs, jm, "tm-2", slots=2)
    async with JobClient(jm.address) as client:
        # not a graph at all
        resp = await client.submit(b"\x00garbage")
        assert resp.error_code != 0 and "not a job graph" in (resp.error_message or "")
        resp = await client.submit(b"")
        assert resp.error_code != 0
        # a job file outside the job
        e = env(1)
        e.from_collection([1]).print()
        resp = await client.submit(e.get_job_graph("x").to_bytes(), {"../evil.py": b""})
        assert resp.error_code != 0 and "relative path" in (resp.error_message or "")

        # a graph whose operators don't unpickle: the task fails, the job says why
        e = env(1)
        e.from_collection([1, 2, 3]).map(lambda x: x).print()
        g = e.get_job_graph("broken")
        g.vertices[0].operators[0].payload = b"\x80\x05not a pickle"
        jid = await client.run(g.to_bytes())
        await client.wait_state(jid, "FAILED", timeout=30)
        root = (await client.query("job_exceptions", jid))["root-exception"]
        assert "pickle" in root.lower() or "Unpickling" in root, root

        # more parallelism than slots: waits, saying so, then fails with a clear error
        e = env(5)
        e.from_collection([1, 2, 3]).rebalance().map(lambda x: x).print()
        jid = await client.run(e.get_job_graph("too wide").to_bytes())
        await asyncio.sleep(0.5)
        d = await client.query("job_details", jid)
        assert d["state"] == "CREATED"
        assert "waiting for 5 slots, 4 free" in d["status-message"]
        d = await client.wait_state(jid, "FAILED", timeout=15)
        root = (await client.query("job_exceptions", jid))["root-exception"]
        assert "NoResourceAvailableException" in root and "needs 5 slots" in root
        assert "slot.request.timeout" in root

        # unknown ids
        assert await client.query("job_details", "0" * 32) is None
        assert await client.query("job_exceptions", "0" * 32) is None
        assert await client.query("vertex_details", jid, "nope") is None
        assert await client.query("taskmanager", "nope") is None
        assert await client.query("taskmanager_log", "nope", "stdout") is None
        assert not await client.cancel("0" * 32)
        resp = await client.conn.request(JobQueryRequest(query="drop_everything"))
        assert resp.error_code != 0 and "unknown query" in resp.error_message
        # a savepoint can't be restored yet: said so, not ignored
        resp = await client.submit(e.get_job_graph("sp").to_bytes(), savepoint_path="/x")
        assert resp.error_code != 0 and "savepoint" in (resp.error_message or "")


@pytest.mark.timeout(60)
async def test_sigterm_stops_daemons_and_their_slot_processes(procs: Processes) -> None:
    jm = start_jobmanager(procs)
    tm = start_taskmanager(procs, jm, "tm-1", slots=2)
    async with JobClient(jm.address) as client:
        e = env(2)
        e.add_source(Forever(), "forever").rebalance().map(lambda x: x).add_sink(
            lambda v: None)
        jid = await client.run(e.get_job_graph("endless").to_bytes())
        await client.wait_running(jid)
        pids = await slot_pids(client, tm_id(tm))
        assert len(pids) == 2 and all(alive(p) for p in pids)
    t0 = time.monotonic()
    assert tm.stop(timeout=15) == 0
    assert time.monotonic() - t0 < 10
    await asyncio.sleep(0.2)
    assert not any(alive(p) for p in pids)
    t0 = time.monotonic()
    assert jm.stop(timeout=15) == 0
    assert time.monotonic() - t0 < 10



def window_count(key: str, window: Any, inputs: Any) -> list[str]:
    return [f"{key},{window.start},{sum(1 for _ in inputs)}"]


@pytest.mark.timeout(90)
async def test_event_time_windows_fire_while_the_job_runs(procs: Processes) -> None:
    """Watermarks travel in-band through a shuffle; a source subtask without a partition
    is idle and does not hold event time back."""
    md = procs.metadata()
    servers = procs.broker(1, md.address).address
    jm = start_jobmanager(procs)
    tm = start_taskmanager(procs, jm, "tm-1", slots=2)
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("events", 1, 1)])
    base = 1_700_000_000_000
    async with Producer(servers, acks="all") as p:
        # 3 s of event time, 10 events per second per key; then one event far later
        futs = [await p.send("events", f"k{i % 2}".encode(), timestamp_ms=base + i * 50)
                for i in range(60)]
        futs.append(await p.send("events", b"k0", timestamp_ms=base + 60_000))
        await asyncio.gather(*futs)
    async with JobClient(jm.address) as client:
        e = env(2)  # two source subtasks, one partition: subtask 2 has nothing to read
        source = (KafkaSource.builder().set_bootstrap_servers(servers).set_topics("events")
                  .set_starting_offsets(KafkaOffsetsInitializer.earliest())
                  .set_value_only_deserializer(SimpleStringSchema()).build())
        from moldau.clients.stream import Time, TumblingEventTimeWindows

        (e.from_source(source, WatermarkStrategy.for_monotonous_timestamps(), "events")
         .key_by(lambda k: k)
         .window(TumblingEventTimeWindows.of(Time.seconds(1)))
         .apply(window_count)
         .print("win"))
        jid = await client.run(e.get_job_graph("windows").to_bytes())
        await client.wait_running(jid)
        # the job never ends (unbounded): the windows of the first 3 s must show anyway
        deadline = time.monotonic() + 20
        want = {f"k{k},{base + s * 1000 - (base % 1000)},10"
                for k in (0, 1) for s in range(3)}
        got: set[str] = set()
        while time.monotonic() < deadline and not want <= got:
            text = await client.query("taskmanager_log", tm_id(tm), "stdout")
            got = {line.split("> ", 1)[1] for line in text.splitlines()
                   if line.startswith("win:")}
            await asyncio.sleep(0.3)
        assert want <= got, (sorted(want), sorted(got))
        assert (await client.query("job_details", jid))["state"] == "RUNNING"
        assert await client.cancel(jid)
        await client.wait_state(jid, "CANCELED")
