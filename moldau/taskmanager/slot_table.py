"""The TaskManager's :class:`SlotTable`: its :class:`TaskSlot` s, each backed by one slot
process (:mod:`moldau.taskmanager.slot`).

A slot is *free* when its process is up and runs no job, *allocated* to one job from the
first deployment of that job until its process reports the job ``done`` (and exits), and
*starting* while a fresh process comes up. Deployments for a slot that is still busy with
an earlier job or starting wait until the fresh process is ready.

Invariants: a slot runs at most one job; every task a slot process was given ends in a
terminal state reported upward (if the process dies first, the TaskManager reports its
unfinished tasks FAILED, or CANCELED when they were being canceled); a slot process that
ends is replaced unless the TaskManager is shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moldau.taskmanager.slot_protocol import ControlChannel

log = logging.getLogger(__name__)

TERMINAL = frozenset({"FINISHED", "CANCELED", "FAILED"})

# (job id, execution id, state, error, metrics)
StateListener = Callable[[str, str, str, "str | None", "list[int] | None"], None]


class TaskSlot:
    """One slot and its current process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: ControlChannel | None = None
        self.ready = asyncio.Event()
        self.job_id: str | None = None
        self.data_host = ""
        self.data_port = 0
        # a fresh process listens where the last one did, so the JobManager's idea of
        # where this slot receives records stays right across process restarts
        self.fixed_port = 0
        self.failed_starts = 0
        self.was_ready = False
        self.pid = 0
        # execution id -> [job id, state, records_in, records_out, bytes_in, bytes_out]
        self.tasks: dict[str, list[Any]] = {}
        self.cancel_requested = False
        self.queued: list[dict[str, Any]] = []
        self.done = False  # the process said its job is over

    @property
    def state(self) -> str:
        if not self.ready.is_set():
            return "starting"
        return "allocated" if self.job_id is not None else "free"

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "data_host": self.data_host, "data_port": self.data_port,
                "ready": self.ready.is_set() and self.job_id is None, "job_id": self.job_id,
                "pid": self.pid}


class SlotTable:
    def __init__(self, n: int, *, host: str, base_data_port: int, data_dir: Path,
                 listener: StateListener, cancel_timeout: float = 30.0,
                 log_level: str = "INFO") -> None:
        self.host = host
        self.base_data_port = base_data_port
        self.data_dir = data_dir
        self.listener = listener
        self.cancel_timeout = cancel_timeout
        self.log_level = log_level
        self.slots = [TaskSlot(i) for i in range(n)]
        self.stopping = False
        self._supervisors: list[asyncio.Task[None]] = []
        # the jobs this TaskManager was told to cancel, to report late failures as cancels
        self.canceled_jobs: set[str] = set()

    # lifecycle -------------------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        for s in self.slots:
            self._supervisors.append(loop.create_task(self._supervise(s),
                                                      name=f"slot-{s.index}"))
        async with asyncio.timeout(timeout):
            for s in self.slots:
                await s.ready.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Ask every slot process to stop; SIGKILL those still there after ``grace``."""
        self.stopping = True
        for s in self.slots:
            if s.channel is not None:
                s.channel.send("shutdown")
        procs = [s.process for s in self.slots if s.process is not None]
        if procs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(p.wait() for p in procs), return_exceptions=True)
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(Exception):
                    await p.wait()
        for t in self._supervisors:
            t.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)

    def pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid]

    # the process of a slot ---------------------------------------------------------------

    async def _supervise(self, slot: TaskSlot) -> None:
        backoff = 0.5
        while not self.stopping:
            slot.was_ready = False
            try:
                await self._run_process(slot)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slot %d: process failed", slot.index)
            if self.stopping:
                return
            # a process that dies before it serves (a bad environment, a port taken) must
            # not spin
            if not slot.was_ready:
                slot.failed_starts += 1
                if slot.failed_starts >= 3 and not self.base_data_port:
                    slot.fixed_port = 0  # someone else took the port: any will do
                await asyncio.sleep(backoff)
                backoff = min(10.0, backoff * 2)
            else:
                backoff = 0.5
                slot.failed_starts = 0

    def _child_files(self) -> tuple[Any, Any]:
        """A slot process's stdout and stderr: the TaskManager's stdout and log files."""
        out = open(self.data_dir / "taskmanager.out", "ab")  # noqa: SIM115 - the child's
        err = open(self.data_dir / "taskmanager.log", "ab")  # noqa: SIM115 - the child's
        return out, err

    async def _run_process(self, slot: TaskSlot) -> None:
        parent_sock, child_sock = socket.socketpair()
        port = (self.base_data_port + 1 + slot.index if self.base_data_port
                else slot.fixed_port)
        out, err = self._child_files()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "moldau.taskmanager.slot",
                "--control-fd", str(child_sock.fileno()), "--index", str(slot.index),
                "--host", self.host, "--data-port", str(port),
                "--data-dir", str(self.data_dir), "--log-level", self.log_level,
                pass_fds=(child_sock.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        finally:
            child_sock.close()
            out.close()
            err.close()
        slot.process = proc
        slot.pid = proc.pid
        slot.done = False
        slot.cancel_requested = False
        channel = ControlChannel(lambda k, b: self._on_message(slot, k, b), lambda: None)
        slot.channel = channel
        try:
            await channel.open(parent_sock)
            rc = await proc.wait()
        finally:
            channel.close()
            slot.ready.clear()
            slot.channel = None
        self._process_ended(slot, rc)

    def _process_ended(self, slot: TaskSlot, rc: int) -> None:
        how = (f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}")
        if not slot.done and not self.stopping:
            log.warning("slot %d: process %d %s", slot.index, slot.pid, how)
        for eid, t in slot.tasks.items():
            job_id, state = t[0], t[1]
            if state in TERMINAL:
                continue
            if slot.cancel_requested or job_id in self.canceled_jobs:
                new, error = "CANCELED", None
            else:
                new, error = "FAILED", (f"The slot process {slot.pid} (slot {slot.index}) "
                                        f"running this task {how}.")
            t[1] = new
            self.listener(job_id, eid, new, error, None)
        slot.tasks = {}
        slot.job_id = None
        slot.pid = 0
        slot.process = None

    def _on_message(self, slot: TaskSlot, kind: str, body: dict[str, Any]) -> None:
        if kind == "ready":
            slot.data_host = str(body["data_host"])
            slot.data_port = int(body["data_port"])
            slot.fixed_port = slot.data_port
            slot.was_ready = True
            slot.ready.set()
            log.info("slot %d ready (pid %d, data %s:%d)", slot.index, slot.pid,
                     slot.data_host, slot.data_port)
            queued, slot.queued = slot.queued, []
            for d in queued:
                self._send_deploy(slot, d)
        elif kind == "state":
            eid = str(body["execution_id"])
            job_id = str(body["job_id"])
            state = str(body["state"])
            error = body.get("error")
            if state == "FAILED" and (slot.cancel_requested or job_id in self.canceled_jobs):
                state, error = "CANCELED", None
            metrics = body.get("metrics")
            t = slot.tasks.get(eid)
            if t is None:
                t = slot.tasks[eid] = [job_id, state, 0, 0, 0, 0]
            t[1] = state
            if metrics:
                t[2:6] = list(metrics)[:4]
            self.listener(job_id, eid, state, error, metrics)
        elif kind == "metrics":
            for eid, m in body.items():
                t = slot.tasks.get(eid)
                if t is not None and t[1] not in TERMINAL:
                    t[2:6] = list(m)[1:5]
        elif kind == "done":
            slot.done = True
        else:
            log.warning("slot %d: unknown message %r", slot.index, kind)

    # deployments -------------------------------------------------------------------------------

    def deploy(self, index: int, deployment: dict[str, Any]) -> None:
        """Hand tasks of one job to slot ``index`` (now, or once its process is fresh)."""
        slot = self.slots[index]
        job_id = str(deployment["job_id"])
        if slot.ready.is_set() and (slot.job_id is None or slot.job_id == job_id) \
                and not slot.done:
            slot.job_id = job_id
            self._send_deploy(slot, deployment)
        else:
            slot.queued.append(deployment)

    def _send_deploy(self, slot: TaskSlot, deployment: dict[str, Any]) -> None:
        """Hand a deployment to the slot's current process: from now on its tasks end
        with that process at the latest."""
        assert slot.channel is not None
        job_id = slot.job_id = str(deployment["job_id"])
        for spec in deployment["tasks"]:
            slot.tasks[str(spec["execution_id"])] = [job_id, "DEPLOYING", 0, 0, 0, 0]
        slot.channel.send("deploy", deployment)

    def slot_busy_with_other_job(self, index: int, job_id: str) -> bool:
        s = self.slots[index]
        return s.job_id is not None and s.job_id != job_id and not s.done

    def cancel(self, job_id: str) -> None:
        self.canceled_jobs.add(job_id)
        for s in self.slots:
            for d in s.queued:
                if d["job_id"] == job_id:  # never handed to a process
                    for spec in d["tasks"]:
                        self.listener(job_id, str(spec["execution_id"]), "CANCELED", None,
                                      None)
            s.queued = [d for d in s.queued if d["job_id"] != job_id]
            if s.job_id == job_id and s.channel is not None:
                s.cancel_requested = True
                s.channel.send("cancel", {"job_id": job_id})
                asyncio.get_running_loop().create_task(self._cancel_watchdog(s, s.pid))

    async def _cancel_watchdog(self, slot: TaskSlot, pid: int) -> None:
        """A task stuck in user code can't be canceled cooperatively: kill its process."""
        await asyncio.sleep(self.cancel_timeout)
        if slot.pid == pid and slot.process is not None and slot.process.returncode is None:
            log.warning("slot %d: tasks did not cancel within %.0f s: killing process %d",
                        slot.index, self.cancel_timeout, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cancel_all(self) -> None:
        for job_id in {s.job_id for s in self.slots if s.job_id is not None} | {
                str(d["job_id"]) for s in self.slots for d in s.queued}:
            self.cancel(job_id)

    def task_states(self) -> dict[str, list[Any]]:
        """Execution id -> [state, records_in, records_out, bytes_in, bytes_out]."""
        out: dict[str, list[Any]] = {}
        for s in self.slots:
            for d in s.queued:
                for spec in d["tasks"]:
                    out[str(spec["execution_id"])] = ["DEPLOYING", 0, 0, 0, 0]
            for eid, t in s.tasks.items():
                out[eid] = t[1:6]
        return out
