"""Helpers of the cluster tests (no tests here): start a JobManager and TaskManagers as
processes, talk to the JobManager over its RPC (the gateway's queries), read process
facts from /proc."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
from harness import DaemonProcess, Processes

from moldau.clients.protocol.messages import (
    CancelJobRequest,
    CancelJobResponse,
    JobQueryRequest,
    JobQueryResponse,
    SubmitJobRequest,
    SubmitJobResponse,
)
from moldau.clients.rpc import Connection, parse_hostport

TERMINAL = ("FINISHED", "FAILED", "CANCELED")


def ship_by_value(module_name: str) -> None:
    """Functions and classes of a test module travel inside the job graph (the slot
    processes can't import the test modules)."""
    cloudpickle.register_pickle_by_value(sys.modules[module_name])


def start_jobmanager(procs: Processes, name: str = "jobmanager", *,
                     heartbeat_timeout_ms: int | None = None,
                     conf: dict[str, str] | None = None) -> DaemonProcess:
    data = procs.root / name
    data.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "moldau.jobmanager", "--rpc", "127.0.0.1:0",
            "--rest", "127.0.0.1:0", "--data-dir", str(data)]
    if heartbeat_timeout_ms is not None:
        args += ["--heartbeat-timeout-ms", str(heartbeat_timeout_ms)]
    if conf:
        path = data / "flink-conf.yaml"
        path.write_text("".join(f"{k}: {v}\n" for k, v in conf.items()))
        args += ["--config", str(path)]
    return procs.spawn(name, args)


def rest_address(jm: DaemonProcess) -> str:
    m = re.search(r"rest on (\S+:\d+)", jm.tail(20000))
    assert m, jm.tail()
    return m.group(1)


def start_taskmanager(procs: Processes, jm: DaemonProcess, name: str, slots: int = 2,
                      ) -> DaemonProcess:
    return procs.spawn(name, [sys.executable, "-m", "moldau.taskmanager", "--jobmanager",
                              jm.address, "--slots", str(slots), "--data-dir",
                              str(procs.root / name), "--host", "127.0.0.1"])


def tm_id(tm: DaemonProcess) -> str:
    m = re.search(r"moldau taskmanager (\S+) ready on", tm.tail(20000))
    assert m, tm.tail()
    return m.group(1)


class JobClient:
    """The JobManager's RPC, as a client uses it."""

    def __init__(self, address: str) -> None:
        host, port = parse_hostport(address, 6123)
        self.conn = Connection(host, port, client_id="test")

    async def __aenter__(self) -> JobClient:
        await self.conn.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def submit(self, graph: bytes, artifacts: dict[str, bytes] | None = None,
                     **kw: Any) -> SubmitJobResponse:
        resp: SubmitJobResponse = await self.conn.request(
            SubmitJobRequest(job_graph=graph, artifacts=artifacts or {}, **kw))
        return resp

    async def run(self, graph: bytes, artifacts: dict[str, bytes] | None = None) -> str:
        resp = await self.submit(graph, artifacts)
        assert resp.error_code == 0, resp.error_message
        assert resp.job_id
        return resp.job_id

    async def cancel(self, jid: str) -> bool:
        resp: CancelJobResponse = await self.conn.request(CancelJobRequest(job_id=jid))
        return resp.found

    async def query(self, name: str, *args: Any) -> Any:
        resp: JobQueryResponse = await self.conn.request(JobQueryRequest(query=name,
                                                                         args=list(args)))
        assert resp.error_code == 0, resp.error_message
        return resp.result

    async def wait_state(self, jid: str, states: tuple[str, ...] | str,
                         timeout: float = 30.0) -> dict[str, Any]:
        if isinstance(states, str):
            states = (states,)
        deadline = time.monotonic() + timeout
        d: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            d = await self.query("job_details", jid)
            assert d is not None, f"job {jid} unknown"
            if d["state"] in states:
                return d
            if d["state"] in TERMINAL:
                exc = await self.query("job_exceptions", jid)
                raise AssertionError(f"job {jid} is {d['state']}, not {states}: "
                                     f"{exc and exc['root-exception']}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {jid} still {d and d['state']} after {timeout}s "
                             f"(waiting for {states})")

    async def wait_running(self, jid: str, timeout: float = 30.0) -> dict[str, Any]:
        """Until every subtask runs."""
        deadline = time.monotonic() + timeout
        while True:
            d = await self.wait_state(jid, "RUNNING", timeout)
            if d["status-counts"]["RUNNING"] == sum(d["status-counts"].values()):
                return d
            assert time.monotonic() < deadline, d["status-counts"]
            await asyncio.sleep(0.1)

    async def subtasks(self, jid: str) -> dict[str, list[dict[str, Any]]]:
        """Vertex name -> its subtasks (vertex details)."""
        d = await self.query("job_details", jid)
        out = {}
        for v in d["vertices"]:
            vd = await self.query("vertex_details", jid, v["id"])
            out[v["name"]] = vd["subtasks"]
        return out


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


async def slot_pids(client: JobClient, tmid: str) -> list[int]:
    tm = await client.query("taskmanager", tmid)
    assert tm is not None
    return [s["pid"] for s in tm["slots"] if s.get("pid")]


def data_dir(procs: Processes, name: str) -> Path:
    return procs.root / name


def env_pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
