"""Session liveness on the leader: who has been heard from lately.

The tree knows which sessions exist (``create_session`` / ``close_session`` transactions);
this tracker only keeps each one's deadline on the local monotonic clock. Every request and
ping pushes the deadline a full timeout ahead. Each tick, sessions past their deadline are
marked closing (no request may use them any more) and handed to ``expire``, which logs their
``close_session`` transaction. Sessions restored from disk get a fresh full timeout from the
start of this process, so clients that survived a restart can resume them.

In a quorum every node tracks the sessions its tree knows, but only the leader expires them:
followers report the sessions they hear from to the leader, and a new leader starts every
session afresh (``reset``), as a restarted node does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Container

log = logging.getLogger(__name__)


class SessionTracker:
    def __init__(self, min_timeout_ms: int, max_timeout_ms: int, tick_ms: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min_timeout_ms > max_timeout_ms:
            raise ValueError("min session timeout above the max")
        self.min_timeout_ms = min_timeout_ms
        self.max_timeout_ms = max_timeout_ms
        self.tick_ms = tick_ms
        self._clock = clock
        self._deadline: dict[int, float] = {}
        self._timeout: dict[int, int] = {}
        self._closing: set[int] = set()

    def negotiate(self, requested_ms: int) -> int:
        return max(self.min_timeout_ms, min(self.max_timeout_ms, requested_ms))

    @staticmethod
    def new_session_id(taken: Container[int]) -> int:
        while True:
            sid = secrets.randbits(63)
            if sid and sid not in taken:
                return sid

    def add(self, sid: int, timeout_ms: int) -> None:
        self._timeout[sid] = timeout_ms
        self._deadline[sid] = self._clock() + timeout_ms / 1000
        self._closing.discard(sid)

    def remove(self, sid: int) -> None:
        self._timeout.pop(sid, None)
        self._deadline.pop(sid, None)
        self._closing.discard(sid)

    def touch(self, sid: int) -> bool:
        """Push the session's deadline; False if it is unknown or closing."""
        timeout = self._timeout.get(sid)
        if timeout is None or sid in self._closing:
            return False
        self._deadline[sid] = self._clock() + timeout / 1000
        return True

    def live(self, sid: int) -> bool:
        return sid in self._timeout and sid not in self._closing

    def mark_closing(self, sid: int) -> None:
        if sid in self._timeout:
            self._closing.add(sid)

    def expired(self) -> list[int]:
        """Sessions past their deadline, now marked closing (each returned once)."""
        now = self._clock()
        out = [s for s, d in self._deadline.items() if d <= now and s not in self._closing]
        self._closing.update(out)
        return sorted(out)

    def __len__(self) -> int:
        return len(self._timeout)

    def reset(self, sessions: dict[int, int]) -> None:
        """Track exactly ``sessions`` (id -> timeout), each with a full timeout from now."""
        self._timeout.clear()
        self._deadline.clear()
        self._closing.clear()
        for sid, timeout in sessions.items():
            self.add(sid, timeout)

    async def run(self, expire: Callable[[int], Awaitable[None]],
                  active: Callable[[], bool] = lambda: True) -> None:
        """Every tick, expire the sessions past their deadline (until cancelled), while
        ``active()`` (this node decides about sessions)."""
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            if not active():
                continue
            gone = self.expired()
            if gone:
                for sid in gone:
                    log.info("session %#x expired", sid)
                await asyncio.gather(*(expire(sid) for sid in gone))
