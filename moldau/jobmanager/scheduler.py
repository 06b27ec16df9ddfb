"""The :class:`Scheduler`: jobs waiting for slots, in submission order.

A job waits (status CREATED, with a message "waiting for N slots, M free") until the
slot pool can give it all the slots it needs at once; it is tried again whenever slots
may have freed up (a TaskManager registered, a job ended) and fails after
``slot.request.timeout`` ms with Flink's NoResourceAvailableException. A later job that
fits may start before an earlier one that does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moldau.jobmanager.execution_state import JobStatus
from moldau.jobmanager.job_master import JobMaster
from moldau.jobmanager.slot_pool import SlotPool

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, pool: SlotPool, slot_request_timeout_ms: int,
                 taskmanagers: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.timeout_ms = slot_request_timeout_ms
        self.taskmanagers = taskmanagers
        self.clock = clock
        self.pending: list[tuple[JobMaster, float]] = []

    def submit(self, master: JobMaster) -> None:
        self.pending.append((master, self.clock()))
        self.try_schedule()

    def remove(self, master: JobMaster) -> None:
        self.pending = [(m, t) for m, t in self.pending if m is not master]

    def _message(self, needed: int) -> str:
        return (f"waiting for {needed} slot{'s' if needed != 1 else ''}, "
                f"{self.pool.free_count()} free ({self.taskmanagers()} TaskManagers, "
                f"{self.pool.total()} slots in total)")

    def try_schedule(self) -> None:
        still: list[tuple[JobMaster, float]] = []
        for master, since in self.pending:
            if master.status is not JobStatus.CREATED:
                continue
            needed = master.slots_needed()
            slots = self.pool.allocate(master.job_id, needed)
            if slots is None:
                master.eg.status_message = self._message(needed)
                still.append((master, since))
                continue
            master.deploy(slots)
        self.pending = still

    def check_timeouts(self) -> None:
        now = self.clock()
        for master, since in list(self.pending):
            waited = (now - since) * 1000
            if waited >= self.timeout_ms:
                self.remove(master)
                needed = master.slots_needed()
                master.slot_request_timed_out(
                    "NoResourceAvailableException: Could not acquire the minimum required "
                    f"resources: the job needs {needed} slot{'s' if needed != 1 else ''}, "
                    f"{self.pool.free_count()} are free ({self.taskmanagers()} TaskManagers, "
                    f"{self.pool.total()} slots in total), waited {int(waited)} ms "
                    "(slot.request.timeout)")
