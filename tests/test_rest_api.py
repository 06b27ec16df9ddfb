"""The JobManager's REST API and dashboard over real HTTP on loopback, against a hand-written
fake ``JobManagerGateway``.

``FakeGateway`` is also what the CLI tests talk to: ``python tests/test_rest_api.py --port 0``
serves it (with seeded jobs and TaskManagers) and prints a ``ready on HOST:PORT`` line, which
is also the way to look at the dashboard by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from moldau.clients.stream.jobgraph import JobGraph
from moldau.jobmanager.rest import RestServer

STATES = ("CREATED", "SCHEDULED", "DEPLOYING", "RUNNING", "FINISHED", "CANCELING", "CANCELED",
          "FAILED", "RECONCILING", "INITIALIZING")
TERMINAL = ("FINISHED", "CANCELED", "FAILED")


def _now() -> int:
    return int(time.time() * 1000)


@dataclass
class FakeJob:
    jid: str
    name: str
    start: int
    vertices: list[dict[str, Any]]  # id, name, parallelism
    plan: dict[str, Any]
    state: str = "RUNNING"
    end: int = -1
    # a submitted job ends by itself at this time (ms) with this state
    ends_at: int | None = None
    ends_as: str = "FINISHED"
    root_exception: str | None = None
    submission: dict[str, Any] = field(default_factory=dict)

    def current_state(self) -> str:
        if self.state not in TERMINAL and self.ends_at is not None and _now() >= self.ends_at:
            self.state = self.ends_as
            self.end = self.ends_at
            if self.ends_as == "FAILED":
                self.root_exception = ("Traceback (most recent call last):\n"
                                       '  File "job.py", line 7, in fail\n'
                                       "ValueError: the fake job failed on purpose")
        return self.state

    def duration(self) -> int:
        return (self.end if self.end > 0 else _now()) - self.start

    def vertex_state(self) -> str:
        s = self.current_state()
        return s if s != "CREATED" else "CREATED"

    def tasks(self) -> dict[str, int]:
        t = {s.lower(): 0 for s in STATES}
        t[self.vertex_state().lower()] = sum(v["parallelism"] for v in self.vertices)
        t["total"] = sum(v["parallelism"] for v in self.vertices)
        return t


def plan_of(jid: str, name: str, vertices: list[dict[str, Any]],
            edges: list[tuple[str, str, str]]) -> dict[str, Any]:
    nodes = []
    for v in vertices:
        inputs = [{"num": i, "id": s, "ship_strategy": how, "exchange": "pipelined_bounded"}
                  for i, (s, t, how) in enumerate(e for e in edges if e[1] == v["id"])]
        node: dict[str, Any] = {"id": v["id"], "parallelism": v["parallelism"], "operator": "",
                                "operator_strategy": "", "description": v["name"],
                                "optimizer_properties": {}}
        if inputs:
            node["inputs"] = inputs
        nodes.append(node)
    return {"jid": jid, "name": name, "type": "STREAMING", "nodes": nodes}


class FakeGateway:
    """A JobManager in memory: jobs, TaskManagers and their stdout, all made up."""

    def __init__(self, *, seed: bool = True, record: Path | None = None,
                 finish_after_ms: int = 600) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.cancelled: list[str] = []
        self.submissions: list[dict[str, Any]] = []
        self.record = record
        self.finish_after_ms = finish_after_ms
        self.tms = {
            "tm-1": {"id": "tm-1", "path": "127.0.0.1:6122", "dataPort": 6123,
                     "timeSinceLastHeartbeat": _now() - 1200, "slotsNumber": 2, "freeSlots": 0,
                     "hardware": {"cpuCores": 8, "physicalMemory": 16 << 30,
                                  "freeMemory": 4 << 30, "managedMemory": 1 << 30}},
            "tm-2": {"id": "tm-2", "path": "127.0.0.1:6124", "dataPort": 6125,
                     "timeSinceLastHeartbeat": _now() - 800, "slotsNumber": 2, "freeSlots": 1,
                     "hardware": {"cpuCores": 8, "physicalMemory": 16 << 30,
                                  "freeMemory": 4 << 30, "managedMemory": 1 << 30}},
        } if seed else {}
        self.stdout = {"tm-1": "".join(f"({w!r}, {i})\n" for i, w in
                                       enumerate(["moldau", "kafka", "flink"] * 20)),
                       "tm-2": ""}
        if seed:
            self._seed()

    def _seed(self) -> None:
        t = _now()
        src, fm, win, sink = (uuid.uuid4().hex for _ in range(4))
        wc = [{"id": src, "name": "Source: Kafka twitterText", "parallelism": 1},
              {"id": fm, "name": "Flat Map -> Map", "parallelism": 2},
              {"id": win, "name": "Window(SlidingProcessingTimeWindows(15000, 5000), "
               "ProcessingTimeTrigger, ReduceFunction)", "parallelism": 2},
              {"id": sink, "name": "Sink: Print to Std. Out", "parallelism": 1}]
        edges = [(src, fm, "REBALANCE"), (fm, win, "HASH"), (win, sink, "REBALANCE")]
        self._add("a" * 32, "Streaming WordCount", t - 95_000, wc, edges, "RUNNING")
        s2, m2 = uuid.uuid4().hex, uuid.uuid4().hex
        small = [{"id": s2, "name": "Source: Collection Source -> Map", "parallelism": 1},
                 {"id": m2, "name": "Sink: Print to Std. Out", "parallelism": 2}]
        self._add("b" * 32, "RideCleansing", t - 3_600_000, small, [(s2, m2, "REBALANCE")],
                  "FINISHED", end=t - 3_540_000)
        failed = self._add("c" * 32, "PopularPlaces", t - 7_200_000, small,
                           [(s2, m2, "REBALANCE")], "FAILED", end=t - 7_100_000)
        failed.root_exception = ("Traceback (most recent call last):\n  File \"job.py\", "
                                 "line 12, in map\nKeyError: 'lon'")
        self._add("d" * 32, "Console exchange", t - 1_000_000, small, [(s2, m2, "REBALANCE")],
                  "CANCELED", end=t - 900_000)
        self._add("e" * 32, "Waiting for slots", t - 5_000, small, [(s2, m2, "REBALANCE")],
                  "CREATED")

    def _add(self, jid: str, name: str, start: int, vertices: list[dict[str, Any]],
             edges: list[tuple[str, str, str]], state: str, end: int = -1) -> FakeJob:
        job = FakeJob(jid, name, start, vertices, plan_of(jid, name, vertices, edges), state, end)
        self.jobs[jid] = job
        return job

    # queries ----------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        states = [j.current_state() for j in self.jobs.values()]
        return {"taskmanagers": len(self.tms),
                "slots-total": sum(t["slotsNumber"] for t in self.tms.values()),
                "slots-available": sum(t["freeSlots"] for t in self.tms.values()),
                "jobs-running": sum(s not in TERMINAL for s in states),
                "jobs-finished": states.count("FINISHED"),
                "jobs-cancelled": states.count("CANCELED"),
                "jobs-failed": states.count("FAILED"),
                "flink-version": "moldau 0.1.0", "flink-commit": "fake"}

    def config(self) -> dict[str, Any]:
        return {"refresh-interval": 2000, "timezone-name": "UTC", "timezone-offset": 0,
                "flink-version": "moldau 0.1.0", "flink-revision": "fake",
                "features": {"web-submit": True, "web-cancel": True}}

    def jobs_overview(self) -> list[dict[str, Any]]:
        return [{"jid": j.jid, "name": j.name, "state": j.current_state(),
                 "start-time": j.start, "end-time": j.end, "duration": j.duration(),
                 "last-modification": j.end if j.end > 0 else j.start, "tasks": j.tasks()}
                for j in self.jobs.values()]

    def job_details(self, jid: str) -> dict[str, Any] | None:
        j = self.jobs.get(jid)
        if j is None:
            return None
        state = j.current_state()
        vs = state
        vertices = []
        for i, v in enumerate(j.vertices):
            n = v["parallelism"]
            vertices.append({
                "id": v["id"], "name": v["name"], "parallelism": n, "status": vs,
                "start-time": j.start, "end-time": j.end, "duration": j.duration(),
                "tasks": {s: (n if s == vs else 0) for s in STATES},
                "metrics": {"read-records": 1000 * i, "write-records": 1000 * (i + 1),
                            "read-bytes": 52_000 * i, "write-bytes": 52_000 * (i + 1)}})
        return {"jid": j.jid, "name": j.name, "isStoppable": False, "state": state,
                "start-time": j.start, "end-time": j.end, "duration": j.duration(),
                "now": _now(), "timestamps": {"CREATED": j.start, state: j.start},
                "vertices": vertices,
                "status-counts": {s: sum(v["tasks"][s] for v in vertices) for s in STATES},
                "plan": j.plan}

    def job_exceptions(self, jid: str) -> dict[str, Any] | None:
        j = self.jobs.get(jid)
        if j is None:
            return None
        j.current_state()
        if j.root_exception is None:
            return {"root-exception": None, "timestamp": None, "all-exceptions": [],
                    "truncated": False}
        return {"root-exception": j.root_exception, "timestamp": j.end,
                "all-exceptions": [{"exception": j.root_exception, "task": j.vertices[0]["name"],
                                    "location": "127.0.0.1:6122", "timestamp": j.end}],
                "truncated": False}

    def vertex_details(self, jid: str, vid: str) -> dict[str, Any] | None:
        d = self.job_details(jid)
        if d is None:
            return None
        for v in d["vertices"]:
            if v["id"] == vid:
                return {"id": vid, "name": v["name"], "parallelism": v["parallelism"],
                        "now": _now(), "subtasks": [
                            {"subtask": i, "status": v["status"], "attempt": 0,
                             "host": "127.0.0.1", "start-time": v["start-time"],
                             "end-time": v["end-time"], "duration": v["duration"],
                             "taskmanager-id": f"tm-{i % 2 + 1}",
                             "metrics": {"read-records": 500, "write-records": 500}}
                            for i in range(v["parallelism"])]}
        return None

    def taskmanagers(self) -> list[dict[str, Any]]:
        return list(self.tms.values())

    def taskmanager(self, tmid: str) -> dict[str, Any] | None:
        return self.tms.get(tmid)

    async def taskmanager_log(self, tmid: str, which: str = "stdout",
                              max_bytes: int = 1 << 20) -> str | None:
        if tmid not in self.tms:
            return None
        if which == "log":
            return f"2024-01-01 00:00:00 INFO taskmanager {tmid} registered\n"
        return self.stdout.get(tmid, "")[-max_bytes:]

    # commands ---------------------------------------------------------------------------

    async def submit_job(self, job_graph: bytes, artifacts: dict[str, bytes], *,
                         savepoint_path: str | None = None,
                         allow_non_restored_state: bool = False,
                         parallelism: int | None = None,
                         program_args: list[str] | None = None) -> str:
        graph = JobGraph.from_bytes(job_graph)  # GraphError is a ValueError
        sub = {"graph": graph, "graph_bytes": job_graph, "artifacts": dict(artifacts),
               "savepoint_path": savepoint_path,
               "allow_non_restored_state": allow_non_restored_state,
               "parallelism": parallelism, "program_args": program_args}
        self.submissions.append(sub)
        jid = uuid.uuid4().hex
        vertices = [{"id": v.id, "name": v.name, "parallelism": v.parallelism}
                    for v in graph.vertices]
        job = FakeJob(jid, graph.name, _now(), vertices, graph.to_json_plan(), "RUNNING",
                      ends_at=_now() + self.finish_after_ms,
                      ends_as="FAILED" if "fail" in graph.name else "FINISHED")
        self.jobs[jid] = job
        if self.record is not None:
            with self.record.open("a") as f:
                f.write(json.dumps({
                    "jid": jid, "name": graph.name,
                    "vertices": [[v.name, v.parallelism] for v in graph.vertices],
                    "config": {k: v for k, v in graph.config.items()
                               if isinstance(v, str | int | float | bool)},
                    "artifacts": sorted(artifacts), "savepoint_path": savepoint_path,
                    "allow_non_restored_state": allow_non_restored_state,
                    "parallelism": parallelism, "program_args": program_args}) + "\n")
        return jid

    async def cancel_job(self, jid: str) -> bool:
        j = self.jobs.get(jid)
        if j is None:
            return False
        self.cancelled.append(jid)
        if j.current_state() not in TERMINAL:
            j.state, j.end = "CANCELED", _now()
        return True


# --------------------------------------------------------------------------- fixtures


@dataclass
class Api:
    server: RestServer
    gateway: FakeGateway
    session: aiohttp.ClientSession
    base: str

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as r:
            return r.status, await _body(r)

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kw) as r:
            return r.status, await _body(r)


async def _body(r: aiohttp.ClientResponse) -> Any:
    if r.content_type == "application/json":
        return await r.json()
    return await r.text()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    gw = FakeGateway()
    server = RestServer(gw, upload_dir=tmp_path / "uploads", max_upload_bytes=2 * 1024 * 1024,
                        plan_timeout=30)
    host, port = await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Api(server, gw, session, f"http://{host}:{port}")
    await server.stop()


JOB_SCRIPT = """\
import sys
from moldau.clients.stream import StreamExecutionEnvironment
from helper import shout

env = StreamExecutionEnvironment.get_execution_environment()
words = env.from_collection(["a", "b", "c"])
words.map(shout).key_by(lambda w: w).map(lambda w: w + "!").print()
env.execute("tiny " + " ".join(sys.argv[1:]))
"""


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def upload(api: Api, data: bytes, filename: str = "job.zip") -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("jarfile", io.BytesIO(data), filename=filename,
                   content_type="application/zip")
    return await api.call("POST", "/jars/upload", data=form)


# --------------------------------------------------------------------------- queries


async def test_overview_and_config(api: Api) -> None:
    status, ov = await api.get("/overview")
    assert status == 200
    assert {"taskmanagers", "slots-total", "slots-available", "jobs-running", "jobs-finished",
            "jobs-cancelled", "jobs-failed", "flink-version", "flink-commit"} <= set(ov)
    assert ov["taskmanagers"] == 2 and ov["jobs-failed"] == 1
    status, cfg = await api.get("/config")
    assert status == 200 and cfg["flink-version"] == "moldau 0.1.0"
    status, v1 = await api.get("/v1/overview")
    assert status == 200 and v1["taskmanagers"] == 2


async def test_jobs_and_jobs_overview(api: Api) -> None:
    status, jobs = await api.get("/jobs")
    assert status == 200
    assert {"id": "a" * 32, "status": "RUNNING"} in jobs["jobs"]
    assert all(set(j) == {"id", "status"} for j in jobs["jobs"])
    status, ov = await api.get("/jobs/overview")
    assert status == 200
    byid = {j["jid"]: j for j in ov["jobs"]}
    assert byid["b" * 32]["state"] == "FINISHED"
    assert {"jid", "name", "state", "start-time", "end-time", "duration",
            "last-modification", "tasks"} <= set(byid["a" * 32])
    assert byid["a" * 32]["tasks"]["running"] == 6


async def test_job_details_plan_exceptions_vertex(api: Api) -> None:
    status, d = await api.get("/jobs/" + "a" * 32)
    assert status == 200
    assert {"jid", "name", "isStoppable", "state", "start-time", "end-time", "duration", "now",
            "timestamps", "vertices", "status-counts", "plan"} <= set(d)
    assert [v["parallelism"] for v in d["vertices"]] == [1, 2, 2, 1]
    status, plan = await api.get("/jobs/" + "a" * 32 + "/plan")
    assert status == 200 and set(plan) == {"plan"}
    assert len(plan["plan"]["nodes"]) == 4
    assert plan["plan"]["nodes"][2]["inputs"][0]["ship_strategy"] == "HASH"
    status, ex = await api.get("/jobs/" + "c" * 32 + "/exceptions")
    assert status == 200 and "KeyError" in ex["root-exception"]
    assert {"root-exception", "timestamp", "all-exceptions"} <= set(ex)
    vid = d["vertices"][1]["id"]
    status, v = await api.get(f"/jobs/{'a' * 32}/vertices/{vid}")
    assert status == 200
    assert {"id", "name", "parallelism", "now", "subtasks"} <= set(v)
    assert [s["subtask"] for s in v["subtasks"]] == [0, 1]
    assert {"subtask", "status", "attempt", "host", "start-time", "end-time", "duration",
            "taskmanager-id", "metrics"} <= set(v["subtasks"][0])


async def test_taskmanagers_and_their_output(api: Api) -> None:
    status, tms = await api.get("/taskmanagers")
    assert status == 200
    assert [t["id"] for t in tms["taskmanagers"]] == ["tm-1", "tm-2"]
    assert {"id", "path", "dataPort", "timeSinceLastHeartbeat", "slotsNumber", "freeSlots",
            "hardware"} <= set(tms["taskmanagers"][0])
    status, tm = await api.get("/taskmanagers/tm-2")
    assert status == 200 and tm["freeSlots"] == 1
    async with api.session.get(api.base + "/taskmanagers/tm-1/stdout") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        assert "('moldau', 0)" in await r.text()
    status, text = await api.get("/taskmanagers/tm-1/log")
    assert status == 200 and "registered" in text


@pytest.mark.parametrize("path", [
    "/nope", "/jobs/" + "f" * 32, "/jobs/" + "f" * 32 + "/plan",
    "/jobs/" + "f" * 32 + "/exceptions", "/jobs/" + "a" * 32 + "/vertices/nope",
    "/jobs/" + "f" * 32 + "/vertices/nope", "/taskmanagers/tm-9", "/taskmanagers/tm-9/stdout",
    "/taskmanagers/tm-9/log", "/jars/nope/x", "/missing.js",
])
async def test_unknown_paths_and_ids_are_json_404(api: Api, path: str) -> None:
    async with api.session.get(api.base + path) as r:
        assert r.status == 404
        assert r.content_type == "application/json"
        body = await r.json()
    assert isinstance(body["errors"], list) and body["errors"][0]


async def test_wrong_method_is_json_405(api: Api) -> None:
    status, body = await api.call("DELETE", "/overview")
    assert status == 405 and "not allowed" in body["errors"][0]
    status, body = await api.call("POST", "/jobs/" + "a" * 32)
    assert status == 405 and body["errors"]


# --------------------------------------------------------------------------- cancel


async def test_patch_cancels(api: Api) -> None:
    status, body = await api.call("PATCH", "/jobs/" + "a" * 32)
    assert (status, body) == (202, {})
    assert api.gateway.cancelled == ["a" * 32]
    status, body = await api.call("PATCH", "/jobs/" + "a" * 32 + "?mode=cancel")
    assert (status, body) == (202, {})  # idempotent
    _, d = await api.get("/jobs/" + "a" * 32)
    assert d["state"] == "CANCELED"


async def test_patch_unknown_job_or_mode(api: Api) -> None:
    status, body = await api.call("PATCH", "/jobs/" + "f" * 32 + "?mode=cancel")
    assert status == 404 and "not found" in body["errors"][0]
    status, body = await api.call("PATCH", "/jobs/" + "a" * 32 + "?mode=stop")
    assert status == 400 and "mode" in body["errors"][0]
    assert api.gateway.cancelled == []


# --------------------------------------------------------------------------- jars


@pytest.mark.timeout(60)
async def test_upload_list_run_and_delete_a_job_zip(api: Api) -> None:
    data = make_zip({"job.py": JOB_SCRIPT, "helper.py": "def shout(w):\n    return w.upper()\n",
                     "data/words.txt": "a b c\n"})
    status, up = await upload(api, data)
    assert status == 200 and up["status"] == "success"
    jarid = up["filename"]
    assert jarid.endswith("_job.zip")
    status, jars = await api.get("/jars")
    assert status == 200
    [entry] = jars["files"]
    assert entry["id"] == jarid and entry["name"] == "job.zip"
    assert [e["name"] for e in entry["entry"]] == ["job.py"]  # helper.py has no execute()

    status, run = await api.call("POST", f"/jars/{jarid}/run", json={
        "entryClass": "job.py", "programArgsList": ["--rate", "5"], "parallelism": 3,
        "savepointPath": "/sp/1", "allowNonRestoredState": True})
    assert status == 200, run
    sub = api.gateway.submissions[-1]
    assert run["jobid"] in api.gateway.jobs
    graph = JobGraph.from_bytes(sub["graph_bytes"])
    assert graph.name == "tiny --rate 5"
    assert [(v.name, v.parallelism) for v in graph.vertices] == [
        ("Source: Collection Source", 1), ("Map", 3), ("Map -> Sink: Print to Std. Out", 3)]
    assert set(sub["artifacts"]) == {"job.py", "helper.py", "data/words.txt"}
    assert sub["artifacts"]["data/words.txt"] == b"a b c\n"
    assert (sub["savepoint_path"], sub["allow_non_restored_state"], sub["parallelism"],
            sub["program_args"]) == ("/sp/1", True, 3, ["--rate", "5"])

    status, _ = await api.call("DELETE", f"/jars/{jarid}")
    assert status == 200
    _, jars = await api.get("/jars")
    assert jars["files"] == []
    status, _ = await api.call("POST", f"/jars/{jarid}/run", json={})
    assert status == 404


@pytest.mark.timeout(60)
async def test_run_a_zipped_directory_and_a_single_script(api: Api) -> None:
    # zip -r job.zip myjob/: the files sit under one top-level directory
    data = make_zip({"myjob/job.py": JOB_SCRIPT,
                     "myjob/helper.py": "def shout(w):\n    return w\n"})
    _, up = await upload(api, data)
    # no entryClass: job.py is the one script that calls execute()
    status, run = await api.call("POST", f"/jars/{up['filename']}/run",
                                 params={"program-args": "x y"})
    assert status == 200, run
    assert api.gateway.submissions[-1]["graph"].name == "tiny x y"

    single = JOB_SCRIPT.replace("from helper import shout", "shout = str.upper")
    status, up = await upload(api, single.encode(), "wc.py")
    assert status == 200 and up["filename"].endswith("_wc.py")
    status, run = await api.call("POST", f"/jars/{up['filename']}/run")
    assert status == 200, run
    assert set(api.gateway.submissions[-1]["artifacts"]) == {"wc.py"}


@pytest.mark.timeout(60)
async def test_a_script_with_a_syntax_error_is_a_400_with_the_message(api: Api) -> None:
    _, up = await upload(api, make_zip({"job.py": "import sys\nx = (\n"}))
    status, body = await api.call("POST", f"/jars/{up['filename']}/run",
                                  json={"entryClass": "job.py"})
    assert status == 400
    assert "SyntaxError" in body["errors"][0]
    assert 'File "job.py", line 2' in body["errors"][1]
    assert api.gateway.submissions == []


@pytest.mark.timeout(60)
async def test_a_failing_script_or_one_without_execute_is_a_400(api: Api) -> None:
    script = "def build():\n    raise RuntimeError('no input topic')\n\nbuild()\n"
    _, up = await upload(api, make_zip({"job.py": script, "other.py": "x = 1\n"}))
    # neither script calls execute(): which one to run must be said
    status, body = await api.call("POST", f"/jars/{up['filename']}/run",
                                  json={"entryClass": "job.py"})
    assert status == 400
    assert "RuntimeError: no input topic" in body["errors"][0]
    assert 'File "job.py", line 4, in <module>' in body["errors"][1]
    assert "runpy" not in body["errors"][1]  # only the job's own frames
    status, body = await api.call("POST", f"/jars/{up['filename']}/run")
    assert status == 400 and "entryClass" in body["errors"][0]
    status, body = await api.call("POST", f"/jars/{up['filename']}/run",
                                  json={"entryClass": "other.py"})
    assert status == 400 and "execute()" in body["errors"][0]
    status, body = await api.call("POST", f"/jars/{up['filename']}/run",
                                  json={"entryClass": "../etc/passwd"})
    assert status == 400
    status, body = await api.call("POST", f"/jars/{up['filename']}/run",
                                  json={"entryClass": "job.py", "parallelism": 0})
    assert status == 400 and "parallelism" in body["errors"][0]


@pytest.mark.timeout(60)
async def test_a_script_that_never_calls_execute_in_time_is_killed(tmp_path: Path) -> None:
    gw = FakeGateway()
    server = RestServer(gw, upload_dir=tmp_path / "up", plan_timeout=1.0)
    host, port = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            a = Api(server, gw, session, f"http://{host}:{port}")
            _, up = await upload(a, make_zip({"job.py": "import time\ntime.sleep(60)\n"}))
            t0 = time.monotonic()
            status, body = await a.call("POST", f"/jars/{up['filename']}/run")
            assert status == 400 and "within 1 s" in body["errors"][0]
            assert time.monotonic() - t0 < 10
    finally:
        await server.stop()


async def test_bad_uploads(api: Api) -> None:
    status, body = await upload(api, b"not a zip", "job.zip")
    assert status == 400 and "zip" in body["errors"][0]
    status, body = await upload(api, make_zip({"../evil.py": "x = 1\n"}))
    assert status == 400 and "unsafe" in body["errors"][0]
    status, body = await upload(api, b"\0" * (3 * 1024 * 1024), "big.zip")
    assert status == 413 and body["errors"]
    status, body = await api.call("POST", "/jars/upload", data=b"plain")
    assert status == 400
    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.zip")
    status, body = await api.call("POST", "/jars/upload", data=form)
    assert status == 400 and "jarfile" in body["errors"][0]
    status, body = await api.call("DELETE", "/jars/" + "0" * 32 + "_x.zip")
    assert status == 404
    _, jars = await api.get("/jars")
    assert jars["files"] == []


# --------------------------------------------------------------------------- /v1/jobs


def tiny_graph() -> bytes:
    from moldau.clients.stream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.from_collection([1, 2]).map(lambda x: x * 2).print()
    return env.get_job_graph("posted").to_bytes()


async def test_post_v1_jobs(api: Api) -> None:
    body = msgpack.packb({"job_graph": tiny_graph(), "artifacts": {"job.py": b"x",
                                                                  "lib/util.py": b"y"},
                          "parallelism": 2, "savepoint_path": None,
                          "allow_non_restored_state": False, "program_args": ["a"]})
    status, answer = await api.call("POST", "/v1/jobs", data=body,
                                    headers={"Content-Type": "application/msgpack"})
    assert status == 200, answer
    sub = api.gateway.submissions[-1]
    assert answer["jobid"] in api.gateway.jobs
    assert sub["graph"].name == "posted"
    assert set(sub["artifacts"]) == {"job.py", "lib/util.py"}
    assert (sub["parallelism"], sub["program_args"]) == (2, ["a"])


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"\xc1", "msgpack"),
    (msgpack.packb([1, 2]), "map"),
    (msgpack.packb({"artifacts": {}}), "job_graph"),
    (msgpack.packb({"job_graph": b"garbage"}), "rejected"),
    (msgpack.packb({"job_graph": b"g", "artifacts": {"../x": b""}}), "artifact"),
    (msgpack.packb({"job_graph": b"g", "parallelism": "many"}), "parallelism"),
])
async def test_post_v1_jobs_bad_bodies(api: Api, payload: bytes, fragment: str) -> None:
    status, body = await api.call("POST", "/v1/jobs", data=payload)
    assert status == 400
    assert fragment in body["errors"][0]
    assert api.gateway.submissions == []


async def test_post_v1_jobs_too_large(api: Api) -> None:
    payload = msgpack.packb({"job_graph": b"x" * (3 * 1024 * 1024)})
    status, body = await api.call("POST", "/v1/jobs", data=io.BytesIO(payload))
    assert status == 413 and body["errors"]


# --------------------------------------------------------------------------- dashboard


async def test_dashboard_is_served(api: Api) -> None:
    async with api.session.get(api.base + "/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        html = await r.text()
    assert '<script src="app.js">' in html and "style.css" in html
    assert "http://" not in html and "https://" not in html  # nothing external
    for name, ctype, marker in (("app.js", "javascript", "jobs/overview"),
                                ("style.css", "text/css", "#sidebar"),
                                ("index.html", "text/html", "moldau")):
        async with api.session.get(f"{api.base}/{name}") as r:
            assert r.status == 200 and ctype in r.content_type
            assert marker in await r.text()


# --------------------------------------------------------------------------- by hand


async def _serve(args: argparse.Namespace) -> None:
    gw = FakeGateway(seed=not args.empty, record=args.record,
                     finish_after_ms=args.finish_after_ms)
    server = RestServer(gw, upload_dir=args.upload_dir)
    host, port = await server.start(args.host, args.port)
    print(f"moldau fake-jobmanager ready on {host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="Serve the REST API over a FakeGateway.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--empty", action="store_true", help="no seeded jobs or TaskManagers")
    p.add_argument("--record", type=Path, default=None,
                   help="append each submission as a JSON line to this file")
    p.add_argument("--finish-after-ms", type=int, default=600)
    p.add_argument("--upload-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "moldau-fake-uploads")
    args = p.parse_args()
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
