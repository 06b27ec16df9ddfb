"""`JobManagerGateway`: the seam between the JobManager runtime and its REST API.

The REST server (`moldau.jobmanager.rest`) only ever talks to the JobManager through this
protocol, so it can be tested against a hand-written fake. Every query method returns
Flink-REST-shaped, JSON-ready dicts; an unknown job, vertex or TaskManager id returns None
(never raises KeyError). `submit_job` raises ValueError with a message fit for a 400 answer
when the graph or its parameters are bad.
"""

from __future__ import annotations

from typing import Any, Protocol


class JobManagerGateway(Protocol):
    def overview(self) -> dict[str, Any]:
        """/overview: taskmanagers, slots-total, slots-available, jobs-running, jobs-finished,
        jobs-cancelled, jobs-failed, flink-version ("moldau x.y"), flink-commit."""
        ...

    def config(self) -> dict[str, Any]:
        """/config: the JobManager's effective configuration."""
        ...

    def jobs_overview(self) -> list[dict[str, Any]]:
        """/jobs/overview "jobs": [{jid, name, state, start-time, end-time, duration,
        last-modification, tasks: {total, created, scheduled, deploying, running, finished,
        canceling, canceled, failed, reconciling, initializing}}]."""
        ...

    def job_details(self, jid: str) -> dict[str, Any] | None:
        """/jobs/<jid>: jid, name, isStoppable, state, start-time, end-time, duration, now,
        timestamps{STATE: ms}, vertices[{id, name, parallelism, status, start-time, end-time,
        duration, tasks{STATE: n}, metrics{read-records, write-records, read-bytes,
        write-bytes}}], status-counts, plan (Flink plan JSON)."""
        ...

    def job_exceptions(self, jid: str) -> dict[str, Any] | None:
        """/jobs/<jid>/exceptions: root-exception (text with traceback), timestamp,
        all-exceptions[...]."""
        ...

    def vertex_details(self, jid: str, vid: str) -> dict[str, Any] | None:
        """/jobs/<jid>/vertices/<vid>: id, name, parallelism, now, subtasks[{subtask, status,
        attempt, host, start-time, end-time, duration, taskmanager-id, metrics{...}}]."""
        ...

    def taskmanagers(self) -> list[dict[str, Any]]:
        """/taskmanagers "taskmanagers": [{id, path, dataPort, timeSinceLastHeartbeat,
        slotsNumber, freeSlots, hardware{cpuCores, physicalMemory, ...}}]."""
        ...

    def taskmanager(self, tmid: str) -> dict[str, Any] | None:
        """/taskmanagers/<tmid>: one entry of `taskmanagers()`, plus details."""
        ...

    async def taskmanager_log(
        self, tmid: str, which: str = "stdout", max_bytes: int = 1 << 20
    ) -> str | None:
        """/taskmanagers/<tmid>/stdout and /log: the tail (at most max_bytes) of that
        TaskManager's stdout (what print() wrote) or its log; None for an unknown tmid."""
        ...

    async def submit_job(
        self,
        job_graph: bytes,
        artifacts: dict[str, bytes],
        *,
        savepoint_path: str | None = None,
        allow_non_restored_state: bool = False,
        parallelism: int | None = None,
        program_args: list[str] | None = None,
    ) -> str:
        """Accept a job (bytes of `JobGraph.to_bytes()` and the files beside its script);
        returns the job id. Raises ValueError with a clear message for a bad graph."""
        ...

    async def cancel_job(self, jid: str) -> bool:
        """Cancel a job; False when the id is unknown. Idempotent."""
        ...
