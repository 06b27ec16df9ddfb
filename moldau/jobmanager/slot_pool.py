"""The :class:`SlotPool`: every slot the registered TaskManagers offer, and which job holds
it (Flink's ResourceManager and SlotPool in one, as there is one JobManager).

Slot sharing as in Flink's default group: a job needs as many slots as its largest
parallelism, and slot ``i`` of the job runs subtask ``i`` of every vertex. Slots are taken
spreading over TaskManagers (:func:`spread`: round-robin over the TaskManagers, those with
the most free slots first), so a job at parallelism 3 on two TaskManagers runs on both.

Invariant: a slot is held by at most one job; a job holds all of its slots or none.
"""

from __future__ import annotations

from dataclasses import dataclass

from moldau.jobmanager.execution_vertex import SlotRef


def spread(free: dict[str, list[int]], n: int) -> list[tuple[str, int]] | None:
    """``n`` slots from ``free`` (TaskManager id -> free slot indexes), one TaskManager at
    a time round-robin, TaskManagers with more free slots first (ties by id); None when
    fewer than ``n`` are free. Pure."""
    if n <= 0:
        return []
    if sum(len(v) for v in free.values()) < n:
        return None
    order = sorted((tm for tm in free if free[tm]), key=lambda tm: (-len(free[tm]), tm))
    queues = {tm: sorted(free[tm]) for tm in order}
    out: list[tuple[str, int]] = []
    while len(out) < n:
        for tm in order:
            if queues[tm] and len(out) < n:
                out.append((tm, queues[tm].pop(0)))
    return out


@dataclass
class PoolSlot:
    ref: SlotRef
    job_id: str | None = None


class SlotPool:
    def __init__(self) -> None:
        # TaskManager id -> slot index -> slot
        self.slots: dict[str, dict[int, PoolSlot]] = {}

    def add_taskmanager(self, tm_id: str, refs: list[SlotRef]) -> None:
        """Offer the slots of a (re)registered TaskManager; a known slot keeps its
        holder, its address is updated."""
        current = self.slots.setdefault(tm_id, {})
        for ref in refs:
            s = current.get(ref.index)
            if s is None:
                current[ref.index] = PoolSlot(ref)
            else:
                s.ref = ref
        for idx in [i for i in current if i not in {r.index for r in refs}]:
            del current[idx]

    def update_address(self, tm_id: str, index: int, host: str, port: int) -> None:
        s = self.slots.get(tm_id, {}).get(index)
        if s is not None and (s.ref.data_host, s.ref.data_port) != (host, port) and port:
            s.ref = SlotRef(tm_id, index, host, port)

    def remove_taskmanager(self, tm_id: str) -> None:
        self.slots.pop(tm_id, None)

    def total(self) -> int:
        return sum(len(v) for v in self.slots.values())

    def free_count(self) -> int:
        return sum(1 for v in self.slots.values() for s in v.values() if s.job_id is None)

    def free_of(self, tm_id: str) -> int:
        return sum(1 for s in self.slots.get(tm_id, {}).values() if s.job_id is None)

    def allocate(self, job_id: str, n: int) -> list[SlotRef] | None:
        """``n`` free slots for ``job_id``, spread over TaskManagers; None if too few."""
        free = {tm: [i for i, s in v.items() if s.job_id is None]
                for tm, v in self.slots.items()}
        picked = spread(free, n)
        if picked is None:
            return None
        out = []
        for tm, i in picked:
            s = self.slots[tm][i]
            s.job_id = job_id
            out.append(s.ref)
        return out

    def release(self, job_id: str) -> int:
        n = 0
        for v in self.slots.values():
            for s in v.values():
                if s.job_id == job_id:
                    s.job_id = None
                    n += 1
        return n
