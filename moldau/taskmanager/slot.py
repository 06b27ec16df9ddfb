"""A slot process: ``python -m moldau.taskmanager.slot`` (started by its TaskManager,
never by hand).

One task slot is one OS process, so the subtasks of a job at parallelism ``p`` use ``p``
cores. A slot runs the subtasks the JobManager put into it (with slot sharing, one subtask
of each vertex of one job) on one event loop, serves their result partitions to remote
consumers on its data port, and reports to its TaskManager over the control channel (see
:mod:`moldau.taskmanager.slot_protocol`).

Each job gets a fresh process: once every task of the job ended, the slot process exits
and the TaskManager starts a new one, so nothing of one job (imported modules, threads,
memory) leaks into the next. The job's files are installed into
``DATA_DIR/jobs/<job id>/slot-<index>/`` and put first on ``sys.path``, so the modules
beside the job's script import; ``print()`` goes to the TaskManager's stdout file.

The process dies with its TaskManager (parent-death signal and the end of the control
channel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from moldau.clients.daemon import setup_logging
from moldau.clients.stream.jobgraph import JobGraph
from moldau.taskmanager.network.partition_manager import PartitionManager
from moldau.taskmanager.network.server import NetworkServer
from moldau.taskmanager.slot_protocol import ControlChannel
from moldau.taskmanager.task import FAILED, TERMINAL, Task, TaskDeployment

log = logging.getLogger("moldau.taskmanager.slot")

METRICS_INTERVAL = 0.5


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the TaskManager) dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def install_artifacts(root: Path, artifacts: dict[str, bytes]) -> None:
    """Write the job's files under ``root``; paths must stay inside it."""
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    for name, data in artifacts.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"job file {name!r} is not a relative path inside the job")
        path = (base / rel).resolve()
        if base not in path.parents:
            raise ValueError(f"job file {name!r} is not inside the job")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(data))


class SlotProcess:
    def __init__(self, index: int, host: str, data_port: int, data_dir: Path) -> None:
        self.index = index
        self.host = host
        self.data_port = data_port
        self.data_dir = data_dir
        self.partitions = PartitionManager()
        self.server = NetworkServer(self.partitions)
        self.channel: ControlChannel | None = None
        self.tasks: dict[str, Task] = {}
        self.job_id: str | None = None
        self.job_dir: Path | None = None
        self.address: tuple[str, int] = (host, data_port)
        self.stop = asyncio.Event()
        self._runners: set[asyncio.Task[None]] = set()

    async def run(self, sock: socket.socket) -> None:
        self.address = await self.server.start(self.host, self.data_port)
        self.channel = ControlChannel(self._on_message, self.stop.set)
        await self.channel.open(sock)
        self.channel.send("ready", {"pid": os.getpid(), "data_host": self.address[0],
                                    "data_port": self.address[1]})
        metrics = asyncio.get_running_loop().create_task(self._metrics_loop())
        try:
            await self.stop.wait()
        finally:
            metrics.cancel()
            for t in self.tasks.values():
                t.cancel()
            if self._runners:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*self._runners, return_exceptions=True)
            await self.server.stop()
            if self.channel is not None:
                self.channel.close()
            if self.job_dir is not None:
                shutil.rmtree(self.job_dir, ignore_errors=True)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            if self.tasks and self.channel is not None:
                self.channel.send("metrics", {eid: [t.state, *t.metrics()]
                                              for eid, t in self.tasks.items()})

    # control messages ------------------------------------------------------------------------

    def _on_message(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "deploy":
            self._deploy(body)
        elif kind == "cancel":
            if body.get("job_id") == self.job_id:
                for t in self.tasks.values():
                    t.cancel()
        elif kind == "shutdown":
            self.stop.set()
        else:
            log.warning("unknown control message %r", kind)

    def _report(self, task: Task, state: str, error: str | None) -> None:
        assert self.channel is not None
        self.channel.send("state", {"job_id": task.job_id, "execution_id": task.execution_id,
                                    "state": state, "error": error,
                                    "metrics": task.metrics()})
        if state in TERMINAL and all(t.state in TERMINAL for t in self.tasks.values()):
            # the job is over here: say so, and make room for a fresh process
            self.channel.send("done", {"job_id": self.job_id})
            self.stop.set()

    def _fail(self, job_id: str, execution_id: str, error: str) -> None:
        assert self.channel is not None
        self.channel.send("state", {"job_id": job_id, "execution_id": execution_id,
                                    "state": FAILED, "error": error, "metrics": [0, 0, 0, 0]})

    def _deploy(self, body: dict[str, Any]) -> None:
        job_id = str(body["job_id"])
        specs = list(body.get("tasks") or [])
        if self.job_id is not None and job_id != self.job_id:
            for s in specs:
                self._fail(job_id, str(s.get("execution_id")),
                           f"slot {self.index} is running job {self.job_id}")
            return
        self.job_id = job_id
        try:
            if self.job_dir is None:
                self.job_dir = self.data_dir / "jobs" / job_id / f"slot-{self.index}"
                install_artifacts(self.job_dir, dict(body.get("artifacts") or {}))
                sys.path.insert(0, str(self.job_dir))
            graph = JobGraph.from_bytes(body["graph"])
            config = dict(graph.config)
            config.update(body.get("config") or {})
        except Exception as e:
            text = "".join(traceback.format_exception(e))
            for s in specs:
                self._fail(job_id, str(s.get("execution_id")), text)
            self._maybe_done()
            return
        new: list[Task] = []
        stdout = sys.stdout
        for s in specs:
            eid = str(s.get("execution_id"))
            try:
                d = TaskDeployment.from_dict(s)
                task = Task(job_id, graph, d, partitions=self.partitions,
                            data_address=self.address, stdout=stdout, report=self._report,
                            config=config)
            except Exception as e:
                self._fail(job_id, eid, "".join(traceback.format_exception(e)))
                continue
            self.tasks[eid] = task
            new.append(task)
        for task in new:
            runner = task.start()
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self.tasks or all(t.state in TERMINAL for t in self.tasks.values()):
            assert self.channel is not None
            self.channel.send("done", {"job_id": self.job_id})
            self.stop.set()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moldau-slot", description="a TaskManager's slot process")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-port", type=int, default=0)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    die_with_parent()
    if os.getppid() == 1:
        return 1  # the TaskManager is already gone
    setup_logging(args.log_level)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # the Kafka connectors run here
    import moldau.clients.stream.kafka_runtime  # noqa: F401

    sock = socket.socket(fileno=args.control_fd)
    slot = SlotProcess(args.index, args.host, args.data_port, Path(args.data_dir))

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, slot.stop.set)
        await slot.run(sock)

    import uvloop

    # a development aid: MOLDAU_SLOT_PROFILE=PREFIX writes a cProfile of each slot process
    # to PREFIX.<slot>.<pid>
    profile_prefix = os.environ.get("MOLDAU_SLOT_PROFILE")
    if profile_prefix:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        uvloop.run(amain())
    finally:
        if profile_prefix:
            prof.disable()
            prof.dump_stats(f"{profile_prefix}.{args.index}.{os.getpid()}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
