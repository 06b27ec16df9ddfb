"""The :class:`TaskExecutor`: the TaskManager daemon's core (Flink's ``TaskExecutor``).

It registers with the JobManager and heartbeats to it (re-registering whenever the
JobManager answers that it does not know this TaskManager, e.g. after a restart: the new
JobManager knows none of the old jobs, so their tasks are canceled here), serves the
JobManager's requests on its port (``SUBMIT_TASKS``, ``CANCEL_TASKS``, ``READ_TM_LOG``),
and forwards every task state change of its slot processes upward, with the tasks'
metrics (records and bytes in and out).

Files in the data directory: ``taskmanager.out`` (what tasks print), ``taskmanager.log``
(this daemon's and its slot processes' log), ``jobs/<job id>/slot-<n>/`` (a running job's
files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from moldau.clients.protocol import ErrorCode, Message, MoldauError, RequestHeader
from moldau.clients.protocol.messages import (
    TASKMANAGER_APIS,
    CancelTasksRequest,
    CancelTasksResponse,
    ReadTmLogRequest,
    ReadTmLogResponse,
    RegisterTaskManagerRequest,
    RegisterTaskManagerResponse,
    SubmitTasksRequest,
    SubmitTasksResponse,
    TmHeartbeatRequest,
    TmHeartbeatResponse,
    UnregisterTaskManagerRequest,
    UpdateTaskStateRequest,
)
from moldau.clients.rpc import Connection, RpcServer, ServerConnection
from moldau.taskmanager.slot_table import TERMINAL, SlotTable

log = logging.getLogger("moldau.taskmanager")

RECENT_TERMINAL_S = 120.0


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"cpuCores": os.cpu_count() or 1, "physicalMemory": 0,
                            "freeMemory": 0, "managedMemory": 0}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "MemTotal":
                    info["physicalMemory"] = int(v.split()[0]) * 1024
                elif k == "MemAvailable":
                    info["freeMemory"] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return info


def tail(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    if size > max_bytes:
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1:]
    return data.decode("utf-8", "replace")


class TaskExecutor:
    def __init__(self, *, jobmanager: tuple[str, int], slots: int, data_dir: Path,
                 host: str = "127.0.0.1", port: int = 0, tm_id: str | None = None,
                 log_level: str = "INFO", cancel_timeout: float = 30.0) -> None:
        if slots < 1:
            raise ValueError("a TaskManager needs at least one slot")
        self.jm_address = jobmanager
        self.data_dir = data_dir
        self.host = host
        # where others reach this TaskManager (a wildcard bind is not an address)
        self.advertised_host = (host if host not in ("", "0.0.0.0", "::")
                                else socket.gethostbyname(socket.gethostname()))
        self.port = port
        self.tm_id = tm_id or ""
        self.instance = uuid.uuid4().hex
        self.rpc = RpcServer(self, TASKMANAGER_APIS)
        self.slot_table = SlotTable(slots, host=host, base_data_port=port, data_dir=data_dir,
                                    listener=self._on_task_state, log_level=log_level,
                                    cancel_timeout=cancel_timeout)
        self.jm: Connection | None = None
        self.jm_instance = ""
        self.heartbeat_interval = 1.0
        self.registered = asyncio.Event()
        # execution id -> [job id, state, metrics..., error, ended at] of tasks that ended
        # lately
        self.recent: dict[str, list[Any]] = {}
        # execution id -> state updates on their way: the heartbeat leaves those tasks out,
        # so it never overtakes the update that carries the failure's traceback
        self.in_flight: dict[str, int] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._updates: set[asyncio.Task[None]] = set()
        self._stopping = False

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port = await self.rpc.start(self.host, self.port)
        self.port = port
        if not self.tm_id:
            self.tm_id = f"{self.advertised_host}:{port}-{uuid.uuid4().hex[:6]}"
        await self.slot_table.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._jm_loop(),
                                                                 name="jobmanager-link")
        return host, port

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop()

    async def stop(self) -> None:
        t0 = time.monotonic()
        self._stopping = True
        log.info("taskmanager %s shutting down", self.tm_id)
        self.rpc.stop_accepting()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self.jm is not None and self.registered.is_set():
            # tell the JobManager now rather than let it wait for the heartbeat timeout
            with contextlib.suppress(OSError, MoldauError, TimeoutError):
                await self.jm.request(UnregisterTaskManagerRequest(
                    tm_id=self.tm_id, instance=self.instance, reason="shutting down"),
                    timeout=2.0)
        self.slot_table.cancel_all()
        await self.slot_table.stop(grace=5.0)
        log.info("slot processes stopped")
        if self._updates:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*self._updates, return_exceptions=True)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self.jm is not None:
            await self.jm.close()
        await self.rpc.drain(2.0)
        log.info("taskmanager %s stopped in %.2fs", self.tm_id, time.monotonic() - t0)

    # the JobManager link -------------------------------------------------------------------

    async def _jm_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._connect_and_register()
                backoff = 0.2
                await self._heartbeats()
            except asyncio.CancelledError:
                raise
            except (OSError, MoldauError, TimeoutError) as e:
                if self.registered.is_set():
                    log.warning("lost the JobManager at %s:%d: %s", *self.jm_address, e)
                self.registered.clear()
                if self.jm is not None:
                    await self.jm.close()
                    self.jm = None
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    async def _connect_and_register(self) -> None:
        if self.jm is None or not self.jm.is_open:
            jm = Connection(*self.jm_address, client_id=f"taskmanager-{self.tm_id}")
            await jm.connect(timeout=5.0)
            self.jm = jm
        resp: RegisterTaskManagerResponse = await self.jm.request(RegisterTaskManagerRequest(
            tm_id=self.tm_id, instance=self.instance, host=self.advertised_host,
            port=self.port, slots=self._slots(), hardware=hardware()),
            timeout=10.0)
        if resp.error_code:
            raise MoldauError(resp.error_code, resp.error_message or "registration refused")
        if self.jm_instance and resp.jm_instance != self.jm_instance:
            log.info("the JobManager restarted: canceling the tasks of its earlier life")
            self.slot_table.cancel_all()
        self.jm_instance = resp.jm_instance
        self.heartbeat_interval = max(0.05, resp.heartbeat_interval_ms / 1000)
        self.registered.set()
        log.info("registered at the JobManager %s:%d as %s", *self.jm_address, self.tm_id)

    async def _heartbeats(self) -> None:
        while True:
            assert self.jm is not None
            resp: TmHeartbeatResponse = await self.jm.request(TmHeartbeatRequest(
                tm_id=self.tm_id, instance=self.instance,
                slots=self._slots(), tasks=self._task_report()),
                timeout=max(5.0, self.heartbeat_interval * 3))
            if resp.error_code == ErrorCode.UNKNOWN_MEMBER_ID:
                # declared lost: the JobManager failed our tasks' jobs already
                log.info("the JobManager does not know this TaskManager: canceling its "
                         "tasks and registering again")
                self.slot_table.cancel_all()
                await self._connect_and_register()
            elif resp.error_code:
                raise MoldauError(resp.error_code, resp.error_message or "heartbeat refused")
            await asyncio.sleep(self.heartbeat_interval)

    def _slots(self) -> list[dict[str, Any]]:
        out = []
        for s in self.slot_table.slots:
            d = s.describe()
            if d["data_host"] in ("", "0.0.0.0", "::"):
                d["data_host"] = self.advertised_host
            out.append(d)
        return out

    def _task_report(self) -> dict[str, list[Any]]:
        now = time.monotonic()
        for eid in [e for e, t in self.recent.items() if now - t[-1] > RECENT_TERMINAL_S]:
            del self.recent[eid]
        out = {eid: t[1:-1] for eid, t in self.recent.items()}
        for eid, t in self.slot_table.task_states().items():
            if eid not in self.recent:
                out[eid] = t
        for eid in self.in_flight:
            out.pop(eid, None)
        return out

    def _on_task_state(self, job_id: str, execution_id: str, state: str, error: str | None,
                       metrics: list[int] | None) -> None:
        if state in TERMINAL:
            self.recent[execution_id] = [job_id, state, *(metrics or [0, 0, 0, 0])[:4],
                                         error, time.monotonic()]
        req = UpdateTaskStateRequest(tm_id=self.tm_id, job_id=job_id,
                                     execution_id=execution_id, state=state, error=error,
                                     metrics=list(metrics) if metrics else None)
        self.in_flight[execution_id] = self.in_flight.get(execution_id, 0) + 1
        task = asyncio.get_running_loop().create_task(self._send_update(req))
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    async def _send_update(self, req: UpdateTaskStateRequest) -> None:
        # a lost update is not lost for good: the heartbeat carries every task's state
        try:
            for _ in range(3):
                jm = self.jm
                if jm is not None and jm.is_open:
                    try:
                        await jm.request(req, timeout=10.0)
                        return
                    except (OSError, MoldauError, TimeoutError):
                        pass
                await asyncio.sleep(0.5)
        finally:
            n = self.in_flight.pop(req.execution_id, 1) - 1
            if n > 0:
                self.in_flight[req.execution_id] = n

    # requests of the JobManager -----------------------------------------------------------------

    async def handle(self, conn: ServerConnection, header: RequestHeader,
                     request: Message) -> Message | None:
        if isinstance(request, SubmitTasksRequest):
            return self._submit(request)
        if isinstance(request, CancelTasksRequest):
            self.slot_table.cancel(request.job_id)
            return CancelTasksResponse(error_code=0)
        if isinstance(request, ReadTmLogRequest):
            name = {"stdout": "taskmanager.out", "log": "taskmanager.log"}.get(request.which)
            if name is None:
                return ReadTmLogResponse(error_code=ErrorCode.INVALID_REQUEST)
            text = await asyncio.to_thread(tail, self.data_dir / name,
                                           max(0, int(request.max_bytes)))
            return ReadTmLogResponse(error_code=0, text=text)
        raise MoldauError(ErrorCode.INVALID_REQUEST, f"unexpected request {request!r:.60}")

    def _submit(self, req: SubmitTasksRequest) -> SubmitTasksResponse:
        if self._stopping:
            return SubmitTasksResponse(error_code=ErrorCode.BROKER_NOT_AVAILABLE,
                                       error_message="the TaskManager is shutting down")
        if not 0 <= req.slot_index < len(self.slot_table.slots):
            return SubmitTasksResponse(error_code=ErrorCode.INVALID_REQUEST,
                                       error_message=f"no slot {req.slot_index} here")
        self.slot_table.canceled_jobs.discard(req.job_id)
        self.slot_table.deploy(req.slot_index, {
            "job_id": req.job_id, "graph": req.job_graph, "artifacts": req.artifacts,
            "tasks": req.tasks, "config": req.config})
        return SubmitTasksResponse(error_code=0)
