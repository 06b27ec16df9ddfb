"""An :class:`ExecutionVertex`: one parallel subtask of a job vertex, with its current
attempt (an execution): its state, when it entered each state, where it runs, its failure
and the metrics its TaskManager reported.

Invariant: ``state`` only changes through :meth:`transition`, along the table of
:mod:`moldau.jobmanager.execution_state`; ``timestamps`` holds the first time (epoch ms)
of each state entered.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from moldau.jobmanager.execution_state import ExecutionState, check_transition


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SlotRef:
    """A slot of a TaskManager, and where its slot process receives records."""

    tm_id: str
    index: int
    data_host: str
    data_port: int


@dataclass
class ExecutionVertex:
    vertex_id: str
    subtask: int
    attempt: int = 0
    execution_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: ExecutionState = ExecutionState.CREATED
    timestamps: dict[str, int] = field(default_factory=dict)
    slot: SlotRef | None = None
    failure: str | None = None
    # records_in, records_out, bytes_in, bytes_out
    metrics: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def __post_init__(self) -> None:
        self.timestamps.setdefault(ExecutionState.CREATED.value, now_ms())

    def transition(self, target: ExecutionState, at: int | None = None) -> bool:
        """Move to ``target``; False (and nothing changes) when already there."""
        if target is self.state:
            return False
        self.state = check_transition(self.state, target)
        self.timestamps.setdefault(target.value, at if at is not None else now_ms())
        return True

    @property
    def start_time(self) -> int:
        """When it was deployed (-1 before)."""
        for s in ("DEPLOYING", "RUNNING"):
            if s in self.timestamps:
                return self.timestamps[s]
        return -1

    @property
    def end_time(self) -> int:
        if self.state.is_terminal:
            return self.timestamps.get(self.state.value, -1)
        return -1

    def duration(self, now: int) -> int:
        start = self.start_time
        if start < 0:
            return -1
        end = self.end_time
        return (end if end >= 0 else now) - start

    def update_metrics(self, metrics: list[int] | None) -> None:
        if metrics and len(metrics) >= 4:
            self.metrics = [int(m) for m in metrics[:4]]
