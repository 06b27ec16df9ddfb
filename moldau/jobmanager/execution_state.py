"""The states of a job and of its executions (subtask attempts), as data: an enum and the
table of allowed transitions for each. Anything that changes a state goes through
:func:`check_transition` / :func:`check_job_transition`, so an illegal change (a FINISHED
task becoming RUNNING again) is a loud error, never a silent corruption.

Execution (Flink's ``ExecutionState``)::

    CREATED -> SCHEDULED -> DEPLOYING -> RUNNING -> FINISHED
        any non-terminal -> CANCELING -> CANCELED      any non-terminal -> FAILED
    (CREATED/SCHEDULED may go straight to CANCELED; a DEPLOYING task may finish at once)

Job (Flink's ``JobStatus``)::

    CREATED -> RUNNING -> FINISHED
    CREATED | RUNNING -> CANCELING -> CANCELED     CREATED | RUNNING -> FAILING -> FAILED
    CREATED -> CANCELED | FAILED (canceled or out of slots before it ran)
    RUNNING | FAILING -> RESTARTING -> RUNNING (a restart strategy, later)

FINISHED, CANCELED and FAILED are terminal for both: nothing leaves them.
"""

from __future__ import annotations

import enum


class ExecutionState(enum.StrEnum):
    CREATED = "CREATED"
    SCHEDULED = "SCHEDULED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION_STATES


class JobStatus(enum.StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    FAILING = "FAILING"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    FINISHED = "FINISHED"
    RESTARTING = "RESTARTING"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


_E = ExecutionState
EXECUTION_TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    _E.CREATED: frozenset({_E.SCHEDULED, _E.CANCELING, _E.CANCELED, _E.FAILED}),
    _E.SCHEDULED: frozenset({_E.DEPLOYING, _E.CANCELING, _E.CANCELED, _E.FAILED}),
    _E.DEPLOYING: frozenset({_E.RUNNING, _E.FINISHED, _E.CANCELING, _E.CANCELED, _E.FAILED}),
    _E.RUNNING: frozenset({_E.FINISHED, _E.CANCELING, _E.CANCELED, _E.FAILED}),
    _E.CANCELING: frozenset({_E.CANCELED, _E.FAILED}),
    _E.FINISHED: frozenset(),
    _E.CANCELED: frozenset(),
    _E.FAILED: frozenset(),
}
TERMINAL_EXECUTION_STATES = frozenset({_E.FINISHED, _E.CANCELED, _E.FAILED})

_J = JobStatus
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _J.CREATED: frozenset({_J.RUNNING, _J.CANCELING, _J.CANCELED, _J.FAILING, _J.FAILED}),
    _J.RUNNING: frozenset({_J.FINISHED, _J.CANCELING, _J.FAILING, _J.RESTARTING}),
    _J.FAILING: frozenset({_J.FAILED, _J.RESTARTING}),
    _J.CANCELING: frozenset({_J.CANCELED}),
    _J.RESTARTING: frozenset({_J.RUNNING, _J.FAILED, _J.CANCELING, _J.CANCELED}),
    _J.FINISHED: frozenset(),
    _J.CANCELED: frozenset(),
    _J.FAILED: frozenset(),
}
TERMINAL_JOB_STATES = frozenset({_J.FINISHED, _J.CANCELED, _J.FAILED})


class IllegalStateTransition(RuntimeError):
    pass


def can_transition(current: ExecutionState, target: ExecutionState) -> bool:
    return target in EXECUTION_TRANSITIONS[current]


def check_transition(current: ExecutionState, target: ExecutionState) -> ExecutionState:
    """``target`` if the table allows ``current -> target``, else IllegalStateTransition."""
    if target not in EXECUTION_TRANSITIONS[current]:
        raise IllegalStateTransition(f"execution state {current} -> {target} is not allowed")
    return target


def can_job_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in JOB_TRANSITIONS[current]


def check_job_transition(current: JobStatus, target: JobStatus) -> JobStatus:
    if target not in JOB_TRANSITIONS[current]:
        raise IllegalStateTransition(f"job status {current} -> {target} is not allowed")
    return target


def aggregate_state(counts: dict[ExecutionState, int], parallelism: int) -> ExecutionState:
    """A job vertex's state from its subtasks' (Flink's ``getAggregateJobVertexState``)."""
    if counts.get(_E.FAILED):
        return _E.FAILED
    if counts.get(_E.CANCELING):
        return _E.CANCELING
    if counts.get(_E.CANCELED):
        return _E.CANCELED
    if counts.get(_E.RUNNING):
        return _E.RUNNING
    if counts.get(_E.FINISHED):
        return _E.FINISHED if counts[_E.FINISHED] == parallelism else _E.RUNNING
    for s in (_E.DEPLOYING, _E.SCHEDULED):
        if counts.get(s):
            return s
    return _E.CREATED
