"""The :class:`HeartbeatManager`: when each TaskManager was last heard of, and the
verdict "lost" for one silent longer than the heartbeat timeout.

TaskManagers send heartbeats every ``interval`` (a fifth of the timeout, at most 2 s, so
several can be missed before the verdict); the manager checks a few times per interval.
``on_lost(tm_id, silent_ms)`` is called once per loss, after which the TaskManager is
forgotten until it registers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def interval_for(timeout_ms: int) -> int:
    return max(50, min(2000, timeout_ms // 5))


class HeartbeatManager:
    def __init__(self, timeout_ms: int, on_lost: Callable[[str, int], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_ms = timeout_ms
        self.interval_ms = interval_for(timeout_ms)
        self.on_lost = on_lost
        self.clock = clock
        self.last: dict[str, float] = {}

    def monitor(self, tm_id: str) -> None:
        self.last[tm_id] = self.clock()

    def unmonitor(self, tm_id: str) -> None:
        self.last.pop(tm_id, None)

    def heard(self, tm_id: str) -> bool:
        """Record a heartbeat; False for a TaskManager not monitored (it must register)."""
        if tm_id not in self.last:
            return False
        self.last[tm_id] = self.clock()
        return True

    def check(self) -> list[tuple[str, int]]:
        """Declare and forget the TaskManagers silent for longer than the timeout."""
        now = self.clock()
        lost = [(tm, int((now - t) * 1000)) for tm, t in self.last.items()
                if (now - t) * 1000 > self.timeout_ms]
        for tm, silent in lost:
            del self.last[tm]
            self.on_lost(tm, silent)
        return lost

    async def run(self) -> None:
        step = self.interval_ms / 4000
        while True:
            await asyncio.sleep(step)
            self.check()
