"""Start moldau daemons as real OS processes for tests, and always clean them up by PID.

Every daemon prints one line ``moldau <role> ... ready on HOST:PORT`` to stdout when it
serves; stdout and stderr go to a log file next to its data, shown when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

READY_RE = re.compile(rb"ready on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.log_path.read_bytes()[start_at:]
            m = READY_RE.search(data)
            if m:
                self.host, self.port = m.group(1).decode(), int(m.group(2))
                return self
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n"
                                   f"{data.decode(errors='replace')[-4000:]}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"{self.name} not ready within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.popen is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, SIGKILL if still running; return the exit code."""
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class Processes:
    """Owns every daemon a test starts; ``cleanup()`` kills the survivors by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemons: list[DaemonProcess] = []

    def spawn(self, name: str, args: Sequence[str], timeout: float = 20.0,
              env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(name, args, self.root / "logs" / f"{name}.log", env)
        self.daemons.append(d)
        return d.start(timeout)

    def metadata(self, name: str = "metadata", port: int = 0,
                 extra: Sequence[str] = ()) -> DaemonProcess:
        data = self.root / name
        return self.spawn(name, [sys.executable, "-m", "moldau.broker.metadata",
                                 "--host", "127.0.0.1", "--port", str(port),
                                 "--data-dir", str(data), *extra])

    def broker(self, broker_id: int, zookeeper: str, port: int = 0,
               extra: Sequence[str] = ()) -> DaemonProcess:
        data = self.root / f"broker-{broker_id}"
        return self.spawn(f"broker-{broker_id}", [
            sys.executable, "-m", "moldau.broker", "--broker-id", str(broker_id),
            "--listeners", f"127.0.0.1:{port}", "--log-dirs", str(data),
            "--zookeeper", zookeeper, *extra])

    def cleanup(self) -> None:
        for d in self.daemons:
            d.kill()

    def logs(self) -> str:
        return "\n".join(f"===== {d.name} (pid {d.popen.pid if d.popen else '-'})\n{d.tail()}"
                         for d in self.daemons)
