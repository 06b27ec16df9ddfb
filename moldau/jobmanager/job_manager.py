"""The :class:`JobManager`: the JobManager daemon's core, and its
:class:`~moldau.jobmanager.gateway.JobManagerGateway` implementation.

It serves the JobManager RPC (``JOBMANAGER_APIS``: TaskManager registration, heartbeats
and task state reports; job submission, cancel and queries from clients), keeps the
TaskManager registry, the slot pool and the heartbeat verdicts, runs one
:class:`JobMaster` per job, and the REST server on top of the gateway. Jobs that ended go
to the :class:`JobArchive` (memory and ``DATA_DIR/archive``).

Shutdown order: stop accepting (RPC, REST), cancel the tasks of running jobs on their
TaskManagers, close the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import Coroutine
from pathlib import Path, PurePosixPath
from typing import Any

import moldau
from moldau.clients.protocol import ErrorCode, Message, MoldauError, RequestHeader
from moldau.clients.protocol.messages import (
    JOBMANAGER_APIS,
    CancelJobRequest,
    CancelJobResponse,
    JobQueryRequest,
    JobQueryResponse,
    RegisterTaskManagerRequest,
    RegisterTaskManagerResponse,
    SubmitJobRequest,
    SubmitJobResponse,
    TmHeartbeatRequest,
    TmHeartbeatResponse,
    UnregisterTaskManagerRequest,
    UnregisterTaskManagerResponse,
    UpdateTaskStateRequest,
    UpdateTaskStateResponse,
)
from moldau.clients.rpc import RpcServer, ServerConnection
from moldau.clients.stream.jobgraph import GraphError, JobGraph
from moldau.jobmanager.archive import JobArchive
from moldau.jobmanager.config import JobManagerConfig
from moldau.jobmanager.execution_vertex import SlotRef, now_ms
from moldau.jobmanager.heartbeat_manager import HeartbeatManager
from moldau.jobmanager.job_master import JobMaster
from moldau.jobmanager.restart_strategy import from_config as restart_strategy
from moldau.jobmanager.scheduler import Scheduler
from moldau.jobmanager.slot_pool import SlotPool
from moldau.jobmanager.taskmanager_registry import TaskManagerInfo, TaskManagerRegistry

log = logging.getLogger("moldau.jobmanager")

VERSION = f"moldau {getattr(moldau, '__version__', '0.1.0')}"
QUERIES = frozenset({"overview", "config", "jobs_overview", "job_details", "job_exceptions",
                     "vertex_details", "taskmanagers", "taskmanager", "taskmanager_log"})


def check_artifacts(artifacts: dict[str, bytes]) -> dict[str, bytes]:
    """The job's files: relative paths inside the job, bytes."""
    out: dict[str, bytes] = {}
    for name, data in artifacts.items():
        if not isinstance(name, str) or not isinstance(data, bytes | bytearray):
            raise ValueError("job files must map relative paths to bytes")
        p = PurePosixPath(name)
        if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
            raise ValueError(f"job file {name!r} is not a relative path inside the job")
        out[name] = bytes(data)
    return out


class JobManager:
    """See the module docstring. ``await start()``, ``await serve(stop_event)``."""

    def __init__(self, config: JobManagerConfig) -> None:
        self.cfg = config
        self.instance = uuid.uuid4().hex
        self.registry = TaskManagerRegistry()
        self.pool = SlotPool()
        self.heartbeats = HeartbeatManager(config.heartbeat_timeout_ms, self._tm_lost)
        self.scheduler = Scheduler(self.pool, config.slot_request_timeout_ms,
                                   lambda: len(self.registry.tms))
        self.archive = JobArchive(config.data_dir / "archive", config.archive_capacity)
        self.jobs: dict[str, JobMaster] = {}
        self.rpc = RpcServer(self, JOBMANAGER_APIS)
        self.rest: Any = None
        self.rest_address: tuple[str, int] | None = None
        self.rest_error: str | None = None
        self.rpc_address: tuple[str, int] = ("", 0)
        self._background: set[asyncio.Task[Any]] = set()
        # (TaskManager, job) -> when the JobManager last told it to cancel a job it still
        # runs although the job is over here
        self._zombie_cancels: dict[tuple[str, str], float] = {}
        self._loops: list[asyncio.Task[None]] = []
        self.started_at = now_ms()

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.archive.load()
        self.rpc_address = await self.rpc.start(self.cfg.rpc_host, self.cfg.rpc_port)
        loop = asyncio.get_running_loop()
        self._loops.append(loop.create_task(self.heartbeats.run(), name="heartbeats"))
        self._loops.append(loop.create_task(self._scheduler_loop(), name="scheduler"))
        await self._start_rest()
        return self.rpc_address

    async def _start_rest(self) -> None:
        try:
            from moldau.jobmanager.rest import RestServer
        except ImportError as e:
            self.rest_error = f"the REST API is not available: {e}"
            log.warning("%s", self.rest_error)
            return
        web_dir = self.cfg.web_dir or Path(__file__).parent / "web"
        self.rest = RestServer(self, web_dir=web_dir, upload_dir=self.cfg.data_dir / "uploads")
        self.rest_address = await self.rest.start(self.cfg.rest_host, self.cfg.rest_port)

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop()

    async def stop(self) -> None:
        t0 = time.monotonic()
        log.info("jobmanager shutting down")
        self.rpc.stop_accepting()
        if self.rest is not None:
            with contextlib.suppress(Exception):
                await self.rest.stop()
        running = [m for m in self.jobs.values() if not m.status.is_terminal]
        cancels = [self.registry.cancel_tasks(tm, m.job_id) for m in running for tm in m.tms()]
        if cancels:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await asyncio.gather(*cancels, return_exceptions=True)
            log.info("canceled the tasks of %d running jobs", len(running))
        for t in [*self._loops, *self._background]:
            t.cancel()
        await asyncio.gather(*self._loops, *self._background, return_exceptions=True)
        await self.registry.close()
        await self.rpc.drain(2.0)
        log.info("jobmanager stopped in %.2fs", time.monotonic() - t0)

    async def _scheduler_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.scheduler.check_timeouts()
            self.scheduler.try_schedule()

    # JobMasterServices -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed:\n%s",
                      "".join(traceback.format_exception(task.exception())))

    def task_config(self, graph: JobGraph) -> dict[str, Any]:
        out = {k: v for k, v in self.cfg.task_defaults().items() if k not in graph.config}
        if "moldau.network.partition-lost-grace-ms" not in graph.config:
            out["moldau.network.partition-lost-grace-ms"] = self.cfg.heartbeat_timeout_ms + 2000
        return out

    def host_of(self, tm_id: str) -> str:
        info = self.registry.get(tm_id)
        return info.host if info is not None else tm_id

    def job_terminated(self, master: JobMaster) -> None:
        self.scheduler.remove(master)
        self.pool.release(master.job_id)
        now = now_ms()
        eg = master.eg
        hosts = {tm: info.host for tm, info in self.registry.tms.items()}
        self.archive.add(master.job_id, {
            "overview": eg.overview(now), "details": eg.details(now),
            "exceptions": eg.exceptions_json(),
            "vertices": {v.id: eg.vertex_details(v.id, now, hosts) for v in eg.vertices},
        })
        self.jobs.pop(master.job_id, None)
        self.scheduler.try_schedule()

    # TaskManagers ------------------------------------------------------------------------------

    def _register(self, req: RegisterTaskManagerRequest) -> RegisterTaskManagerResponse:
        info = TaskManagerInfo(req.tm_id, req.instance, req.host, req.port, list(req.slots),
                               dict(req.hardware))
        old = self.registry.register(info)
        if old is not None:
            self._tm_gone(req.tm_id, f"TaskManager {req.tm_id} restarted (its tasks are gone)")
        self.pool.add_taskmanager(req.tm_id, self._slot_refs(req.tm_id, req.host, req.slots))
        self.heartbeats.monitor(req.tm_id)
        log.info("TaskManager %s registered from %s:%d with %d slots", req.tm_id, req.host,
                 req.port, len(req.slots))
        self.scheduler.try_schedule()
        return RegisterTaskManagerResponse(
            error_code=0, jm_instance=self.instance,
            heartbeat_interval_ms=self.heartbeats.interval_ms,
            heartbeat_timeout_ms=self.cfg.heartbeat_timeout_ms)

    @staticmethod
    def _slot_refs(tm_id: str, host: str, slots: list[dict[str, Any]]) -> list[SlotRef]:
        return [SlotRef(tm_id, int(s["index"]), str(s.get("data_host") or host),
                        int(s.get("data_port") or 0)) for s in slots]

    def _heartbeat(self, req: TmHeartbeatRequest) -> TmHeartbeatResponse:
        info = self.registry.get(req.tm_id)
        if info is None or info.instance != req.instance or not self.heartbeats.heard(req.tm_id):
            return TmHeartbeatResponse(error_code=ErrorCode.UNKNOWN_MEMBER_ID,
                                       error_message="unknown TaskManager: register")
        info.last_heartbeat = time.time()
        info.slots = list(req.slots)
        now = time.monotonic()
        for s in req.slots:
            job = s.get("job_id")
            if job and job not in self.jobs:
                key = (req.tm_id, str(job))
                if now - self._zombie_cancels.get(key, -1e9) > 10.0:
                    if len(self._zombie_cancels) > 1000:
                        self._zombie_cancels.clear()
                    self._zombie_cancels[key] = now
                    log.info("TaskManager %s still runs tasks of job %s, which is over: "
                             "canceling them", req.tm_id, job)
                    self.spawn(self.registry.cancel_tasks(req.tm_id, str(job)))
        for s in req.slots:
            self.pool.update_address(req.tm_id, int(s["index"]),
                                     str(s.get("data_host") or info.host),
                                     int(s.get("data_port") or 0))
        # the heartbeat carries every task's state and metrics: it repairs lost reports
        for master in list(self.jobs.values()):
            if req.tm_id not in master.tms():
                continue
            for eid, ev in master.eg.by_execution.items():
                t = req.tasks.get(eid)
                if t is None or ev.slot is None or ev.slot.tm_id != req.tm_id:
                    continue
                ev.update_metrics(list(t[1:5]))
                state = str(t[0])
                if state in ("RUNNING", "FINISHED", "CANCELED", "FAILED") \
                        and state != ev.state.value:
                    master.update_task(eid, state, t[5] if len(t) > 5 else None, None)
        return TmHeartbeatResponse(error_code=0)

    def _tm_lost(self, tm_id: str, silent_ms: int) -> None:
        log.warning("TaskManager %s lost: no heartbeat for %d ms", tm_id, silent_ms)
        self.registry.remove(tm_id)
        self._tm_gone(tm_id, f"TaskManager {tm_id} lost (no heartbeat for {silent_ms} ms)")

    def _tm_gone(self, tm_id: str, reason: str) -> None:
        self.pool.remove_taskmanager(tm_id)
        for master in list(self.jobs.values()):
            if tm_id in master.tms():
                master.taskmanager_lost(tm_id, reason)

    # RPC ---------------------------------------------------------------------------------------

    async def handle(self, conn: ServerConnection, header: RequestHeader,
                     request: Message) -> Message | None:
        if isinstance(request, TmHeartbeatRequest):
            return self._heartbeat(request)
        if isinstance(request, UpdateTaskStateRequest):
            master = self.jobs.get(request.job_id)
            if master is not None:
                master.update_task(request.execution_id, request.state, request.error,
                                   request.metrics)
            return UpdateTaskStateResponse(error_code=0)
        if isinstance(request, RegisterTaskManagerRequest):
            return self._register(request)
        if isinstance(request, UnregisterTaskManagerRequest):
            info = self.registry.get(request.tm_id)
            if info is not None and info.instance == request.instance:
                log.info("TaskManager %s unregistered: %s", request.tm_id,
                         request.reason or "shutting down")
                self.heartbeats.unmonitor(request.tm_id)
                self.registry.remove(request.tm_id)
                self._tm_gone(request.tm_id, f"TaskManager {request.tm_id} shut down"
                              + (f": {request.reason}" if request.reason else ""))
                self.scheduler.try_schedule()
            return UnregisterTaskManagerResponse(error_code=0)
        if isinstance(request, SubmitJobRequest):
            try:
                jid = await self.submit_job(
                    request.job_graph, dict(request.artifacts),
                    savepoint_path=request.savepoint_path,
                    allow_non_restored_state=request.allow_non_restored_state,
                    parallelism=request.parallelism, program_args=request.program_args)
            except ValueError as e:
                return SubmitJobResponse(error_code=ErrorCode.INVALID_REQUEST,
                                         error_message=str(e))
            return SubmitJobResponse(error_code=0, job_id=jid)
        if isinstance(request, CancelJobRequest):
            return CancelJobResponse(error_code=0, found=await self.cancel_job(request.job_id))
        if isinstance(request, JobQueryRequest):
            return await self._query(request)
        raise MoldauError(ErrorCode.INVALID_REQUEST, f"unexpected request {request!r:.60}")

    async def _query(self, req: JobQueryRequest) -> JobQueryResponse:
        if req.query not in QUERIES:
            return JobQueryResponse(error_code=ErrorCode.INVALID_REQUEST,
                                    error_message=f"unknown query {req.query!r}: one of "
                                                  f"{', '.join(sorted(QUERIES))}")
        fn = getattr(self, req.query)
        try:
            result = fn(*req.args)
            if asyncio.iscoroutine(result):
                result = await result
        except TypeError as e:
            return JobQueryResponse(error_code=ErrorCode.INVALID_REQUEST,
                                    error_message=f"{req.query}: {e}")
        return JobQueryResponse(error_code=0, result=result)

    # the gateway -------------------------------------------------------------------------------

    async def submit_job(self, job_graph: bytes, artifacts: dict[str, bytes], *,
                         savepoint_path: str | None = None,
                         allow_non_restored_state: bool = False,
                         parallelism: int | None = None,
                         program_args: list[str] | None = None) -> str:
        if not isinstance(job_graph, bytes | bytearray) or not job_graph:
            raise ValueError("no job graph given")
        if savepoint_path:
            raise ValueError("starting a job from a savepoint is not supported by this "
                             "JobManager yet")
        # ``parallelism`` was applied when the graph was built (as the default under the
        # job's own settings): a built graph is run as it is
        if parallelism is not None and int(parallelism) < 1:
            raise ValueError(f"parallelism must be at least 1, got {parallelism}")
        try:
            graph = JobGraph.from_bytes(bytes(job_graph))
        except GraphError as e:
            raise ValueError(str(e)) from None
        files = check_artifacts(dict(graph.user_artifacts))
        files.update(check_artifacts(artifacts))
        jid = graph.job_id
        if not jid or jid in self.jobs or self.archive.get(jid) is not None:
            jid = uuid.uuid4().hex
        master = JobMaster(self, graph, bytes(job_graph), files, jid,
                           restart_strategy(graph.config),
                           cancel_timeout_s=self.cfg.cancel_timeout_ms / 1000,
                           program_args=program_args)
        self.jobs[jid] = master
        log.info("job %s (%s) submitted: %d tasks in %d vertices, %d slots needed", jid,
                 graph.name, graph.num_tasks(), len(graph.vertices), master.slots_needed())
        self.scheduler.submit(master)
        return jid

    async def cancel_job(self, jid: str) -> bool:
        master = self.jobs.get(jid)
        if master is not None:
            master.cancel()
            return True
        return self.archive.get(jid) is not None

    def overview(self) -> dict[str, Any]:
        counts = {"RUNNING": 0, "FINISHED": 0, "CANCELED": 0, "FAILED": 0}
        for m in self.jobs.values():
            if not m.status.is_terminal:
                counts["RUNNING"] += 1
        for doc in self.archive.jobs.values():
            s = doc["overview"]["state"]
            if s in counts:
                counts[s] += 1
        return {
            "taskmanagers": len(self.registry.tms), "slots-total": self.pool.total(),
            "slots-available": self.pool.free_count(), "jobs-running": counts["RUNNING"],
            "jobs-finished": counts["FINISHED"], "jobs-cancelled": counts["CANCELED"],
            "jobs-failed": counts["FAILED"], "flink-version": VERSION,
            "flink-commit": "moldau",
        }

    def config(self) -> dict[str, Any]:
        c = self.cfg
        effective = dict(c.raw)
        effective.update({
            "jobmanager.rpc.address": self.rpc_address[0] or c.rpc_host,
            "jobmanager.rpc.port": str(self.rpc_address[1] or c.rpc_port),
            "rest.address": self.rest_address[0] if self.rest_address else c.rest_host,
            "rest.port": str(self.rest_address[1] if self.rest_address else c.rest_port),
            "heartbeat.timeout": str(c.heartbeat_timeout_ms),
            "heartbeat.interval": str(self.heartbeats.interval_ms),
            "slot.request.timeout": str(c.slot_request_timeout_ms),
            "jobstore.max-capacity": str(c.archive_capacity),
            "task.cancellation.timeout": str(c.cancel_timeout_ms),
        })
        return {
            "refresh-interval": 3000, "timezone-name": "Coordinated Universal Time",
            "timezone-offset": 0, "flink-version": VERSION, "flink-revision": "moldau",
            "features": {"web-submit": True, "web-cancel": True, "web-history": False},
            "jobmanager": [{"key": k, "value": v} for k, v in sorted(effective.items())],
        }

    def jobs_overview(self) -> list[dict[str, Any]]:
        now = now_ms()
        out = [m.eg.overview(now) for m in self.jobs.values()]
        out.extend(doc["overview"] for doc in self.archive.jobs.values())
        out.sort(key=lambda j: j["start-time"], reverse=True)
        return out

    def job_details(self, jid: str) -> dict[str, Any] | None:
        now = now_ms()
        m = self.jobs.get(jid)
        if m is not None:
            return m.eg.details(now)
        doc = self.archive.get(jid)
        if doc is None:
            return None
        return dict(doc["details"], now=now)

    def job_exceptions(self, jid: str) -> dict[str, Any] | None:
        m = self.jobs.get(jid)
        if m is not None:
            return m.eg.exceptions_json()
        doc = self.archive.get(jid)
        return None if doc is None else doc["exceptions"]

    def vertex_details(self, jid: str, vid: str) -> dict[str, Any] | None:
        now = now_ms()
        m = self.jobs.get(jid)
        if m is not None:
            hosts = {tm: info.host for tm, info in self.registry.tms.items()}
            return m.eg.vertex_details(vid, now, hosts)
        doc = self.archive.get(jid)
        if doc is None:
            return None
        v = doc["vertices"].get(vid)
        return None if v is None else dict(v, now=now)

    def taskmanagers(self) -> list[dict[str, Any]]:
        return [info.to_json(self.pool.free_of(tm)) for tm, info in
                sorted(self.registry.tms.items())]

    def taskmanager(self, tmid: str) -> dict[str, Any] | None:
        info = self.registry.get(tmid)
        if info is None:
            return None
        d = info.to_json(self.pool.free_of(tmid))
        d["metrics"] = {"heapUsed": 0, "heapCommitted": 0, "heapMax": 0,
                        "nettyShuffleMemoryUsed": 0}
        return d

    async def taskmanager_log(self, tmid: str, which: str = "stdout",
                              max_bytes: int = 1 << 20) -> str | None:
        if self.registry.get(tmid) is None:
            return None
        try:
            return await self.registry.read_log(tmid, which, max_bytes)
        except (OSError, MoldauError, TimeoutError) as e:
            return f"(could not read the {which} of TaskManager {tmid}: {e})"
