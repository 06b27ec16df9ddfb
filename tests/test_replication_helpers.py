"""Helpers for the replication tests: a metadata node and N brokers on loopback, and ways to
look at the cluster (leaders, ISRs, raw logs) from the outside."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from harness import DaemonProcess, Processes

from moldau.clients.admin import Admin
from moldau.clients.types import TopicDescription

# fast failure detection for tests; production defaults are 6 s / 30 s / 1 s
SESSION_MS = 2500
LAG_MS = 2500
BROKER_OVERRIDES = (
    f"zookeeper.session.timeout.ms={SESSION_MS}",
    f"replica.lag.time.max.ms={LAG_MS}",
    "replica.fetch.backoff.ms=100",
    "replica.fetch.wait.max.ms=200",
)


def overrides(*extra: str) -> list[str]:
    out: list[str] = []
    for kv in (*BROKER_OVERRIDES, *extra):
        out += ["--override", kv]
    return out


class Cluster:
    """One metadata node and brokers 1..n, each restartable on its own port and log dir."""

    def __init__(self, procs: Processes, n: int = 3, extra: Sequence[str] = ()) -> None:
        self.procs = procs
        self.n = n
        self.extra = list(extra)
        self.md: DaemonProcess | None = None
        self.brokers: dict[int, DaemonProcess] = {}
        self.ports: dict[int, int] = {}

    async def start(self) -> Cluster:
        self.md = self.procs.metadata()
        await asyncio.gather(*(self.start_broker(i) for i in range(1, self.n + 1)))
        return self

    @property
    def zk(self) -> str:
        assert self.md is not None
        return self.md.address

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def log_dir(self, broker_id: int) -> Path:
        return self.procs.root / f"broker-{broker_id}"

    async def start_broker(self, broker_id: int) -> DaemonProcess:
        port = self.ports.get(broker_id, 0)
        d = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.procs.broker(broker_id, self.zk, port=port,
                                            extra=overrides(*self.extra)))
        self.brokers[broker_id] = d
        self.ports[broker_id] = d.port
        return d

    def kill(self, broker_id: int) -> None:
        self.brokers[broker_id].kill()

    async def stop(self, broker_id: int) -> int | None:
        d = self.brokers[broker_id]
        return await asyncio.get_running_loop().run_in_executor(None, d.stop)

    def alive(self) -> list[int]:
        return sorted(b for b, d in self.brokers.items() if d.alive())


async def describe(admin: Admin, topic: str) -> TopicDescription:
    (d,) = await admin.describe_topics([topic])
    return d


async def wait_for(admin: Admin, topic: str, check, timeout: float = 15.0,  # type: ignore[no-untyped-def]
                   what: str = "condition") -> TopicDescription:
    """Poll the topic's description until ``check(description)`` holds."""
    deadline = time.monotonic() + timeout
    last: TopicDescription | None = None
    while True:
        try:
            last = await describe(admin, topic)
            if check(last):
                return last
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s; last: {last}")
        await asyncio.sleep(0.1)


def full_isr(d: TopicDescription) -> bool:
    return all(p.leader >= 0 and set(p.isr) == set(p.replicas) for p in d.partitions)


def log_bytes(log_dir: Path, topic: str, partition: int) -> bytes:
    """The partition's records as stored: every segment's .log file, in order."""
    d = log_dir / f"{topic}-{partition}"
    return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))


def test_overrides_are_pairs() -> None:
    assert overrides("a=b")[-2:] == ["--override", "a=b"]
