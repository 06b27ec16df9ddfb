"""The :class:`JobMaster`: one job's life on the JobManager.

It holds the job's :class:`ExecutionGraph`; once the scheduler gives it slots it assigns
subtask ``i`` of every vertex to slot ``i`` and deploys each slot's subtasks in one
``SUBMIT_TASKS`` (the graph, the job's files, and for every subtask the data addresses of
the subtasks it reads from and writes to). Task state reports drive the executions
through their state table; the job then ends:

* FINISHED when every subtask finished;
* FAILED when a subtask failed, its TaskManager was lost, or deployment failed: the first
  cause (with its traceback) is the root exception, the other subtasks are canceled, and
  the job is FAILED once they all ended (a restart strategy is asked first; none restarts
  yet);
* CANCELED on request, once every subtask ended.

Invariant: the job status and every execution state change only along their tables
(:mod:`moldau.jobmanager.execution_state`); terminal is final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from moldau.clients.protocol.messages import SubmitTasksRequest
from moldau.clients.stream.jobgraph import JobGraph, connected_targets
from moldau.jobmanager.execution_graph import ExceptionRecord, ExecutionGraph
from moldau.jobmanager.execution_state import ExecutionState, JobStatus, can_transition
from moldau.jobmanager.execution_vertex import ExecutionVertex, SlotRef, now_ms
from moldau.jobmanager.restart_strategy import RestartStrategy
from moldau.jobmanager.taskmanager_registry import TaskManagerRegistry

log = logging.getLogger(__name__)

_S = ExecutionState
_J = JobStatus


class JobMasterServices(Protocol):
    """What a JobMaster needs of its JobManager."""

    registry: TaskManagerRegistry

    def job_terminated(self, master: JobMaster) -> None: ...

    def task_config(self, graph: JobGraph) -> dict[str, Any]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def host_of(self, tm_id: str) -> str: ...


class JobMaster:
    def __init__(self, services: JobMasterServices, graph: JobGraph, graph_bytes: bytes,
                 artifacts: dict[str, bytes], job_id: str, restart: RestartStrategy,
                 *, cancel_timeout_s: float = 60.0,
                 program_args: list[str] | None = None) -> None:
        self.services = services
        self.graph = graph
        self.graph_bytes = graph_bytes
        self.artifacts = artifacts
        self.restart = restart
        self.cancel_timeout_s = cancel_timeout_s
        self.program_args = list(program_args or [])
        self.eg = ExecutionGraph(graph, job_id)
        self.slots: list[SlotRef] = []
        self._ended = False

    @property
    def job_id(self) -> str:
        return self.eg.job_id

    @property
    def status(self) -> JobStatus:
        return self.eg.status

    def slots_needed(self) -> int:
        return self.eg.slots_needed()

    def tms(self) -> set[str]:
        return {s.tm_id for s in self.slots}

    # deployment --------------------------------------------------------------------------------

    def deploy(self, slots: list[SlotRef]) -> None:
        """Run the job on ``slots`` (one per subtask index)."""
        eg = self.eg
        self.slots = list(slots)
        eg.status_message = ""
        eg.transition(_J.RUNNING)
        for ev in eg.executions():
            ev.slot = self.slots[ev.subtask]
            ev.transition(_S.SCHEDULED)
        config = self.services.task_config(self.graph)
        for i, slot in enumerate(self.slots):
            evs = [ev for ev in eg.executions() if ev.subtask == i]
            tasks = [self._descriptor(ev) for ev in evs]
            for ev in evs:
                ev.transition(_S.DEPLOYING)
            req = SubmitTasksRequest(job_id=self.job_id, slot_index=slot.index,
                                     job_graph=self.graph_bytes, artifacts=self.artifacts,
                                     tasks=tasks, config=config)
            self.services.spawn(self._submit(slot, req))
        log.info("job %s (%s): deployed %d tasks to %d slots on %s", self.job_id,
                 eg.name, len(eg.by_execution), len(self.slots),
                 ", ".join(sorted(self.tms())))

    def _descriptor(self, ev: ExecutionVertex) -> dict[str, Any]:
        g = self.graph
        eg = self.eg
        inputs = []
        for edge_index, up in g.input_channels(ev.vertex_id, ev.subtask):
            producer = eg.by_vertex[g.edges[edge_index].source].subtasks[up]
            assert producer.slot is not None
            inputs.append([edge_index, up, producer.execution_id, producer.slot.data_host,
                           producer.slot.data_port])
        outputs = []
        v = g.vertex(ev.vertex_id)
        for edge_index, e in enumerate(g.edges):
            if e.source != ev.vertex_id:
                continue
            target = g.vertex(e.target)
            consumers = []
            for t in connected_targets(e.partitioning, ev.subtask, v.parallelism,
                                       target.parallelism):
                c = eg.by_vertex[target.id].subtasks[t]
                assert c.slot is not None
                consumers.append([t, c.slot.data_host, c.slot.data_port])
            outputs.append([edge_index, consumers])
        return {"execution_id": ev.execution_id, "vertex_id": ev.vertex_id,
                "subtask": ev.subtask, "attempt": ev.attempt, "inputs": inputs,
                "outputs": outputs}

    async def _submit(self, slot: SlotRef, req: SubmitTasksRequest) -> None:
        try:
            await self.services.registry.submit_tasks(slot.tm_id, req)
        except Exception as e:
            self.fail(f"Could not deploy the tasks of slot {slot.index} to TaskManager "
                      f"{slot.tm_id}: {e}", tm_id=slot.tm_id)

    # task reports ------------------------------------------------------------------------------

    def update_task(self, execution_id: str, state: str, error: str | None,
                    metrics: list[int] | None) -> None:
        ev = self.eg.by_execution.get(execution_id)
        if ev is None:
            return
        ev.update_metrics(metrics)
        try:
            target = ExecutionState(state)
        except ValueError:
            log.warning("job %s: unknown task state %r", self.job_id, state)
            return
        if ev.state.is_terminal or target is ev.state:
            return
        if not can_transition(ev.state, target):
            if ev.state is _S.CANCELING and target is _S.FINISHED:
                target = _S.CANCELED
            else:
                return  # e.g. RUNNING reported after the cancel began
        ev.transition(target)
        self.eg.last_modification = now_ms()
        if target is _S.FAILED:
            ev.failure = error or "the task failed (no details were reported)"
            self._task_failed(ev)
        elif target is _S.CANCELED and self.eg.status is _J.RUNNING:
            # nobody asked: its TaskManager canceled it (shutting down, a restarted
            # JobManager), and the job can't go on without it
            tm = ev.slot.tm_id if ev.slot is not None else "?"
            ev.failure = f"{self.eg.task_name(ev)} was canceled by TaskManager {tm}"
            self.fail(ev.failure, task=ev, tm_id=tm)
        self._check_done()

    def _task_failed(self, ev: ExecutionVertex) -> None:
        tm = ev.slot.tm_id if ev.slot is not None else None
        if self.eg.status is _J.RUNNING:
            self.fail(ev.failure or "task failed", task=ev, tm_id=tm)

    # failing and canceling -------------------------------------------------------------------

    def fail(self, cause: str, *, task: ExecutionVertex | None = None,
             tm_id: str | None = None) -> None:
        eg = self.eg
        if eg.status.is_terminal or eg.status in (_J.FAILING, _J.CANCELING):
            return
        eg.exceptions.append(ExceptionRecord(
            cause, now_ms(), eg.task_name(task) if task is not None else None,
            self.services.host_of(tm_id) if tm_id else None, tm_id))
        log.warning("job %s (%s) fails: %s", self.job_id, eg.name,
                    cause.strip().splitlines()[-1] if cause.strip() else cause)
        self.restart.notify_failure(cause)
        # the restart hook: with checkpoints, a strategy that allows it restarts from here
        if eg.status is _J.CREATED:
            eg.transition(_J.FAILED)
            self._terminated()
            return
        eg.transition(_J.FAILING)
        self._cancel_tasks()
        self._check_done()

    def cancel(self) -> None:
        eg = self.eg
        if eg.status.is_terminal or eg.status in (_J.CANCELING, _J.FAILING):
            return
        log.info("job %s (%s): canceling", self.job_id, eg.name)
        if eg.status is _J.CREATED:
            eg.transition(_J.CANCELED)
            self._terminated()
            return
        eg.transition(_J.CANCELING)
        self._cancel_tasks()
        self._check_done()

    def _cancel_tasks(self) -> None:
        tms: set[str] = set()
        for ev in self.eg.executions():
            if ev.state.is_terminal:
                continue
            if ev.state in (_S.CREATED, _S.SCHEDULED):
                ev.transition(_S.CANCELED)
            else:
                ev.transition(_S.CANCELING)
                if ev.slot is not None:
                    tms.add(ev.slot.tm_id)
        for tm in tms:
            self.services.spawn(self.services.registry.cancel_tasks(tm, self.job_id))
        if tms:
            self.services.spawn(self._cancel_watchdog())

    async def _cancel_watchdog(self) -> None:
        """Tasks that never report their end (an unreachable TaskManager that still
        heartbeats) must not keep the job from ending."""
        await asyncio.sleep(self.cancel_timeout_s)
        if self.eg.status.is_terminal:
            return
        for ev in self.eg.executions():
            if not ev.state.is_terminal:
                ev.failure = ev.failure or (f"did not confirm the cancel within "
                                            f"{self.cancel_timeout_s:.0f} s")
                ev.transition(_S.CANCELED if ev.state is _S.CANCELING else _S.FAILED)
        self._check_done()

    def taskmanager_lost(self, tm_id: str, reason: str) -> None:
        """``tm_id`` is gone with every task it ran."""
        lost = [ev for ev in self.eg.executions()
                if ev.slot is not None and ev.slot.tm_id == tm_id and not ev.state.is_terminal]
        if not lost:
            return
        for ev in lost:
            ev.failure = reason
            ev.transition(_S.FAILED)
        self.fail(reason, tm_id=tm_id)
        self._check_done()

    def slot_request_timed_out(self, message: str) -> None:
        self.fail(message)

    # the end -----------------------------------------------------------------------------------

    def _check_done(self) -> None:
        eg = self.eg
        if eg.status is _J.RUNNING and eg.all_finished():
            eg.transition(_J.FINISHED)
        elif eg.status is _J.FAILING and eg.all_terminal():
            eg.transition(_J.FAILED)
        elif eg.status is _J.CANCELING and eg.all_terminal():
            eg.transition(_J.CANCELED)
        else:
            return
        self._terminated()

    def _terminated(self) -> None:
        if self._ended:
            return
        self._ended = True
        log.info("job %s (%s) is %s after %d ms", self.job_id, self.eg.name, self.eg.status,
                 self.eg.duration(now_ms()))
        self.services.job_terminated(self)
