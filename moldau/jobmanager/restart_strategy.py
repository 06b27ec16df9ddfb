"""Restart strategies: what a failing job does instead of failing (Flink's
``RestartBackoffTimeStrategy``). Restarts need checkpoints to restore from, which come
later; until then every strategy says "fail", but the JobMaster already asks, so the
hook is in place.
"""

from __future__ import annotations

from typing import Any, Protocol


class RestartStrategy(Protocol):
    def can_restart(self) -> bool: ...

    def backoff_ms(self) -> int: ...

    def notify_failure(self, cause: str) -> None: ...


class NoRestartStrategy:
    def can_restart(self) -> bool:
        return False

    def backoff_ms(self) -> int:
        return 0

    def notify_failure(self, cause: str) -> None:
        pass

    def __repr__(self) -> str:
        return "NoRestartStrategy"


def from_config(config: dict[str, Any]) -> RestartStrategy:
    """The job's strategy (``restart-strategy``); for now always no restart."""
    return NoRestartStrategy()
