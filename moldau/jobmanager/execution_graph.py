"""The :class:`ExecutionGraph`: a JobGraph expanded into one :class:`ExecutionVertex` per
parallel subtask (chains are already the JobGraph's vertices), with the job's status and
its history, and the Flink REST shapes of all of it.

Invariants: the job status only changes through :meth:`transition` (the table of
:mod:`moldau.jobmanager.execution_state`); ``timestamps`` keeps the first time of every
status; ``exceptions`` lists failures oldest first and the first one is the root cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moldau.clients.stream.jobgraph import JobGraph, JobVertex
from moldau.jobmanager.execution_state import (
    ExecutionState,
    JobStatus,
    aggregate_state,
    check_job_transition,
)
from moldau.jobmanager.execution_vertex import ExecutionVertex, now_ms

_METRIC_KEYS = ("read-records", "write-records", "read-bytes", "write-bytes")


@dataclass
class ExceptionRecord:
    exception: str
    timestamp: int
    task: str | None = None
    location: str | None = None
    tm_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"exception": self.exception, "timestamp": self.timestamp,
                "task": self.task, "location": self.location, "taskManagerId": self.tm_id}


def metrics_json(m: list[int], complete: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in zip(_METRIC_KEYS, (m[0], m[1], m[2], m[3]), strict=True):
        out[k] = v
        out[f"{k}-complete"] = complete
    return out


class ExecutionJobVertex:
    """The subtasks of one job vertex."""

    def __init__(self, vertex: JobVertex) -> None:
        self.vertex = vertex
        self.subtasks = [ExecutionVertex(vertex.id, i) for i in range(vertex.parallelism)]

    @property
    def id(self) -> str:
        return self.vertex.id

    def counts(self) -> dict[ExecutionState, int]:
        c = {s: 0 for s in ExecutionState}
        for ev in self.subtasks:
            c[ev.state] += 1
        return c

    def state(self) -> ExecutionState:
        return aggregate_state(self.counts(), len(self.subtasks))

    def start_time(self) -> int:
        starts = [ev.start_time for ev in self.subtasks if ev.start_time >= 0]
        return min(starts) if starts else -1

    def end_time(self) -> int:
        if not all(ev.state.is_terminal for ev in self.subtasks):
            return -1
        return max(ev.end_time for ev in self.subtasks)

    def metrics(self) -> list[int]:
        total = [0, 0, 0, 0]
        for ev in self.subtasks:
            for i in range(4):
                total[i] += ev.metrics[i]
        return total


class ExecutionGraph:
    def __init__(self, graph: JobGraph, job_id: str) -> None:
        self.graph = graph
        self.job_id = job_id
        self.name = graph.name
        self.status = JobStatus.CREATED
        self.timestamps: dict[str, int] = {JobStatus.CREATED.value: now_ms()}
        self.vertices = [ExecutionJobVertex(v) for v in graph.vertices]
        self.by_vertex = {ejv.id: ejv for ejv in self.vertices}
        self.by_execution: dict[str, ExecutionVertex] = {
            ev.execution_id: ev for ejv in self.vertices for ev in ejv.subtasks}
        self.exceptions: list[ExceptionRecord] = []
        self.status_message = ""
        self.last_modification = self.timestamps[JobStatus.CREATED.value]

    # state -----------------------------------------------------------------------------------

    def transition(self, target: JobStatus) -> bool:
        if target is self.status:
            return False
        self.status = check_job_transition(self.status, target)
        t = now_ms()
        self.timestamps.setdefault(target.value, t)
        self.last_modification = t
        return True

    def executions(self) -> list[ExecutionVertex]:
        return [ev for ejv in self.vertices for ev in ejv.subtasks]

    def all_terminal(self) -> bool:
        return all(ev.state.is_terminal for ev in self.by_execution.values())

    def all_finished(self) -> bool:
        return all(ev.state is ExecutionState.FINISHED for ev in self.by_execution.values())

    def slots_needed(self) -> int:
        return max(v.parallelism for v in self.graph.vertices)

    def task_name(self, ev: ExecutionVertex) -> str:
        v = self.by_vertex[ev.vertex_id].vertex
        return f"{v.name} ({ev.subtask + 1}/{v.parallelism})"

    @property
    def start_time(self) -> int:
        return self.timestamps[JobStatus.CREATED.value]

    @property
    def end_time(self) -> int:
        if self.status.is_terminal:
            return self.timestamps.get(self.status.value, -1)
        return -1

    def duration(self, now: int) -> int:
        end = self.end_time
        return (end if end >= 0 else now) - self.start_time

    def status_counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in ExecutionState}
        for ev in self.by_execution.values():
            c[ev.state.value] += 1
        return c

    def task_counts(self) -> dict[str, int]:
        """The ``tasks`` of ``/jobs/overview``: per vertex (Flink counts job vertices by
        their aggregate state)."""
        c = {k: 0 for k in ("total", "created", "scheduled", "deploying", "running",
                            "finished", "canceling", "canceled", "failed", "reconciling",
                            "initializing")}
        c["total"] = len(self.vertices)
        for ejv in self.vertices:
            c[ejv.state().value.lower()] += 1
        return c

    # REST shapes -----------------------------------------------------------------------------

    def overview(self, now: int) -> dict[str, Any]:
        return {"jid": self.job_id, "name": self.name, "state": self.status.value,
                "start-time": self.start_time, "end-time": self.end_time,
                "duration": self.duration(now), "last-modification": self.last_modification,
                "tasks": self.task_counts(), "status-message": self.status_message}

    def details(self, now: int) -> dict[str, Any]:
        vertices = []
        for ejv in self.vertices:
            v = ejv.vertex
            start, end = ejv.start_time(), ejv.end_time()
            state = ejv.state()
            vertices.append({
                "id": v.id, "name": v.name, "maxParallelism": v.max_parallelism,
                "parallelism": v.parallelism, "status": state.value,
                "start-time": start, "end-time": end,
                "duration": -1 if start < 0 else (end if end >= 0 else now) - start,
                "tasks": {s.value: n for s, n in ejv.counts().items()},
                "metrics": metrics_json(ejv.metrics(), state.is_terminal),
            })
        return {
            "jid": self.job_id, "name": self.name, "isStoppable": False,
            "state": self.status.value, "job-type": "STREAMING",
            "start-time": self.start_time, "end-time": self.end_time,
            "duration": self.duration(now), "maxParallelism": self.graph.max_parallelism,
            "now": now,
            "timestamps": {s.value: self.timestamps.get(s.value, 0) for s in JobStatus},
            "vertices": vertices, "status-counts": self.status_counts(),
            "plan": self.graph.to_json_plan(), "status-message": self.status_message,
        }

    def exceptions_json(self) -> dict[str, Any]:
        root = self.exceptions[0] if self.exceptions else None
        entries = [e.to_json() for e in self.exceptions]
        return {
            "root-exception": root.exception if root else None,
            "timestamp": root.timestamp if root else None,
            "all-exceptions": entries, "truncated": False,
            "exceptionHistory": {"entries": [
                {"exceptionName": e.exception.strip().splitlines()[-1].split(":")[0]
                 if e.exception.strip() else "", "stacktrace": e.exception,
                 "timestamp": e.timestamp, "taskName": e.task, "location": e.location,
                 "taskManagerId": e.tm_id} for e in reversed(self.exceptions)],
                "truncated": False},
        }

    def vertex_details(self, vid: str, now: int, hosts: dict[str, str]) -> dict[str, Any] | None:
        ejv = self.by_vertex.get(vid)
        if ejv is None:
            return None
        v = ejv.vertex
        subtasks = []
        for ev in ejv.subtasks:
            tm = ev.slot.tm_id if ev.slot is not None else None
            subtasks.append({
                "subtask": ev.subtask, "status": ev.state.value, "attempt": ev.attempt,
                "host": hosts.get(tm, tm) if tm else "(unassigned)",
                "start-time": ev.start_time, "start_time": ev.start_time,
                "end-time": ev.end_time, "duration": ev.duration(now),
                "metrics": metrics_json(ev.metrics, ev.state.is_terminal),
                "taskmanager-id": tm or "(unassigned)",
                "slot": ev.slot.index if ev.slot is not None else None,
                "timestamps": dict(ev.timestamps),
                "failure-cause": ev.failure,
            })
        return {"id": v.id, "name": v.name, "parallelism": v.parallelism,
                "maxParallelism": v.max_parallelism, "now": now, "subtasks": subtasks}
