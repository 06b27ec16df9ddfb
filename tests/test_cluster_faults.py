"""The cluster under stress: a TaskManager killed outright, and a slow sink that must
throttle a fast source instead of filling memory."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import pytest
from harness import Processes, free_port
from test_cluster_support import (
    JobClient,
    alive,
    rss_kb,
    ship_by_value,
    slot_pids,
    start_jobmanager,
    start_taskmanager,
    tm_id,
)

from moldau.clients.stream import StreamExecutionEnvironment
from moldau.clients.stream.connectors import SourceFunction
from moldau.clients.stream.functions import SinkFunction

ship_by_value(__name__)


class Forever(SourceFunction):
    def __init__(self) -> None:
        self.running = True

    def run(self, ctx: Any) -> None:
        i = 0
        while self.running:
            ctx.collect(i)
            i += 1
            if i % 100 == 0:
                time.sleep(0.005)

    def cancel(self) -> None:
        self.running = False


class SlowSink(SinkFunction):
    """Sleeps a little every 100 records: about 2,000 records/s."""

    def __init__(self) -> None:
        self.n = 0

    def invoke(self, value: Any, context: Any) -> None:
        self.n += 1
        if self.n % 100 == 0:
            time.sleep(0.05)


@pytest.mark.timeout(60)
async def test_killed_taskmanager_fails_its_jobs_within_the_heartbeat_timeout(
        procs: Processes) -> None:
    jm = start_jobmanager(procs, heartbeat_timeout_ms=3000)
    tm1 = start_taskmanager(procs, jm, "tm-1", slots=1)
    tm2 = start_taskmanager(procs, jm, "tm-2", slots=1)
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        e.set_parallelism(2)
        e.add_source(Forever(), "forever").rebalance().map(lambda x: x + 1).add_sink(
            lambda v: None)
        jid = await client.run(e.get_job_graph("doomed").to_bytes())
        await client.wait_running(jid)
        victim = tm_id(tm2)
        pids = await slot_pids(client, victim)
        assert pids
        t0 = time.monotonic()
        os.kill(tm2.pid, signal.SIGKILL)
        d = await client.wait_state(jid, "FAILED", timeout=15)
        took = time.monotonic() - t0
        root = (await client.query("job_exceptions", jid))["root-exception"]
        assert root.startswith(f"TaskManager {victim} lost (no heartbeat for "), root
        assert took < 3.0 + 3.0, took  # the timeout, plus a check interval and slack
        assert d["status-counts"]["FAILED"] >= 1
        # the lost TaskManager's slot processes died with it
        await asyncio.sleep(0.5)
        assert not any(alive(p) for p in pids)
        # the survivor's slot is free again, the lost one is forgotten
        ov = await client.query("overview")
        assert ov["taskmanagers"] == 1 and ov["slots-available"] == 1
        assert [t["id"] for t in await client.query("taskmanagers")] == [tm_id(tm1)]


@pytest.mark.timeout(90)
async def test_slow_sink_backpressures_a_fast_source(procs: Processes) -> None:
    # short heartbeats: fresh metrics
    jm = start_jobmanager(procs, heartbeat_timeout_ms=1500)
    tm = start_taskmanager(procs, jm, "tm-1", slots=2)
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        # a source as fast as it gets (a number sequence without end, in practice) feeding
        # two slow sinks: one in its own slot process (a TCP channel), one beside it
        e.from_sequence(0, 10**12).set_parallelism(1).rebalance().add_sink(
            SlowSink()).set_parallelism(2)
        jid = await client.run(e.get_job_graph("backpressure").to_bytes())
        await client.wait_running(jid)
        pids = [jm.pid, tm.pid, *await slot_pids(client, tm_id(tm))]
        assert len(pids) == 4

        async def sample() -> tuple[int, int, list[int]]:
            d = await client.query("job_details", jid)
            src = next(v for v in d["vertices"] if v["name"].startswith("Source"))
            sink = next(v for v in d["vertices"] if "Sink" in v["name"])
            return (src["metrics"]["write-records"], sink["metrics"]["read-records"],
                    [rss_kb(p) for p in pids])

        await asyncio.sleep(4.0)
        out1, in1, rss1 = await sample()
        await asyncio.sleep(4.0)
        out2, in2, rss2 = await sample()
        print("source out", out1, out2, "sink in", in1, in2, "rss kB", rss1, rss2)
        assert in2 > in1 > 0  # the sinks make progress
        # the source is throttled to the sinks' pace: what it sent and they did not take
        # yet stays within the buffers of two channels (credit + queue + a partial
        # buffer, 1000 records each), give or take the metrics' sampling skew
        bound = 2 * (4 + 4 + 2) * 1000 + 4000
        assert out2 - in2 <= bound, (out2, in2)
        assert out2 < 200_000  # an unthrottled sequence source makes millions
        for before, after in zip(rss1, rss2, strict=True):
            assert after < 250_000, rss2  # kB
            assert after - before < 20_000, (rss1, rss2)
        assert await client.cancel(jid)
        await client.wait_state(jid, "CANCELED", timeout=30)


class Stuck(SinkFunction):
    """Ignores cancels: sleeps in user code."""

    def invoke(self, value: Any, context: Any) -> None:
        time.sleep(3600)


@pytest.mark.timeout(60)
async def test_dead_slot_process_fails_its_job_and_comes_back(procs: Processes) -> None:
    jm = start_jobmanager(procs)
    tm = start_taskmanager(procs, jm, "tm-1", slots=1)
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        e.add_source(Forever(), "forever").map(lambda x: x).add_sink(lambda v: None)
        jid = await client.run(e.get_job_graph("victim").to_bytes())
        await client.wait_running(jid)
        [pid] = await slot_pids(client, tm_id(tm))
        os.kill(pid, signal.SIGKILL)
        await client.wait_state(jid, "FAILED", timeout=15)
        root = (await client.query("job_exceptions", jid))["root-exception"]
        assert f"slot process {pid}" in root and "killed by signal 9" in root, root
        # a fresh process takes the slot, and jobs run on it again
        deadline = time.monotonic() + 15
        while True:
            pids = await slot_pids(client, tm_id(tm))
            if pids and pids[0] != pid:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        e = StreamExecutionEnvironment.get_execution_environment()
        e.from_collection([1, 2, 3]).map(lambda x: x).add_sink(lambda v: None)
        ok = await client.run(e.get_job_graph("after").to_bytes())
        await client.wait_state(ok, "FINISHED", timeout=30)


@pytest.mark.timeout(60)
async def test_cancel_kills_a_slot_process_stuck_in_user_code(procs: Processes) -> None:
    jm = start_jobmanager(procs)
    tm = procs.spawn("tm-1", [sys.executable, "-m", "moldau.taskmanager", "--jobmanager",
                              jm.address, "--slots", "1", "--data-dir",
                              str(procs.root / "tm-1"), "--cancel-timeout-s", "2"])
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        e.from_collection([1, 2, 3]).add_sink(Stuck())
        jid = await client.run(e.get_job_graph("stuck").to_bytes())
        await client.wait_running(jid)
        await asyncio.sleep(0.5)  # the sink is asleep in user code now
        [pid] = await slot_pids(client, tm_id(tm))
        t0 = time.monotonic()
        assert await client.cancel(jid)
        await client.wait_state(jid, "CANCELED", timeout=20)
        assert 1.5 < time.monotonic() - t0 < 10
        assert not alive(pid)


@pytest.mark.timeout(60)
async def test_taskmanager_registers_again_with_a_restarted_jobmanager(
        procs: Processes) -> None:
    port = free_port()
    args = [sys.executable, "-m", "moldau.jobmanager", "--rpc", f"127.0.0.1:{port}",
            "--rest", "127.0.0.1:0", "--data-dir", str(procs.root / "jm")]
    jm = procs.spawn("jm", args)
    tm = start_taskmanager(procs, jm, "tm-1", slots=1)
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        e.from_collection([1, 2, 3]).add_sink(lambda v: None)
        done = await client.run(e.get_job_graph("before").to_bytes())
        await client.wait_state(done, "FINISHED", timeout=30)
        e = StreamExecutionEnvironment.get_execution_environment()
        e.add_source(Forever(), "forever").add_sink(lambda v: None)
        orphan = await client.run(e.get_job_graph("orphan").to_bytes())
        await client.wait_running(orphan)
        [old_pid] = await slot_pids(client, tm_id(tm))
    jm.kill()
    jm2 = procs.spawn("jm-2", args)
    async with JobClient(jm2.address) as client:
        deadline = time.monotonic() + 15
        while (await client.query("overview"))["taskmanagers"] != 1:
            assert time.monotonic() < deadline, "the TaskManager did not come back"
            await asyncio.sleep(0.2)
        # the new JobManager never heard of the orphan: its tasks were canceled, the slot
        # is free for new work; finished jobs are still known (the archive)
        assert await client.query("job_details", orphan) is None
        assert (await client.query("job_details", done))["state"] == "FINISHED"
        deadline = time.monotonic() + 15
        while alive(old_pid):
            assert time.monotonic() < deadline, "the orphan's slot process lives on"
            await asyncio.sleep(0.2)
        e = StreamExecutionEnvironment.get_execution_environment()
        e.from_collection([1, 2, 3]).add_sink(lambda v: None)
        after = await client.run(e.get_job_graph("after").to_bytes())
        await client.wait_state(after, "FINISHED", timeout=30)


@pytest.mark.timeout(60)
async def test_a_taskmanager_declared_lost_comes_back_clean(procs: Processes) -> None:
    jm = start_jobmanager(procs, heartbeat_timeout_ms=2000)
    tm = start_taskmanager(procs, jm, "tm-1", slots=1)
    async with JobClient(jm.address) as client:
        e = StreamExecutionEnvironment.get_execution_environment()
        e.add_source(Forever(), "forever").add_sink(lambda v: None)
        jid = await client.run(e.get_job_graph("frozen").to_bytes())
        await client.wait_running(jid)
        [pid] = await slot_pids(client, tm_id(tm))
        tm.signal(signal.SIGSTOP)  # silent, not dead: its slot process keeps running
        try:
            await client.wait_state(jid, "FAILED", timeout=10)
        finally:
            tm.signal(signal.SIGCONT)
        root = (await client.query("job_exceptions", jid))["root-exception"]
        assert "lost (no heartbeat for" in root
        # back: it learns it was forgotten, drops the failed job's tasks, registers again
        deadline = time.monotonic() + 15
        while alive(pid) or (await client.query("overview"))["slots-available"] != 1:
            assert time.monotonic() < deadline, "the TaskManager did not come back clean"
            await asyncio.sleep(0.2)
        e = StreamExecutionEnvironment.get_execution_environment()
        e.from_collection([1, 2, 3]).add_sink(lambda v: None)
        ok = await client.run(e.get_job_graph("after").to_bytes())
        await client.wait_state(ok, "FINISHED", timeout=30)
