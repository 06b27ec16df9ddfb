"""Running the real ``moldau`` command as a subprocess, and the checks that need no cluster:
help, version, start-up time, usage errors, unreachable servers.

The helpers here are imported by the other ``test_cli_*`` modules.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from harness import free_port

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "moldau"
MOLDAU: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-m", "moldau.clients.cli"]


def cli_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("MOLDAU_DEBUG", None)
    if home is not None:
        env["MOLDAU_HOME"] = str(home)
    return env


def moldau(*args: str, input: str | bytes | None = None, timeout: float = 60,
           home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``moldau ARGS`` to completion; text output."""
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run([*MOLDAU, *args], input=data, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(home), cwd=REPO)


def popen(*args: str, home: Path | None = None, stdin: int | None = subprocess.PIPE
          ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*MOLDAU, *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(home), cwd=REPO)


class LineReader:
    """Reads a subprocess pipe line by line in a thread, so a test can wait with a timeout."""

    def __init__(self, pipe: object) -> None:
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.all: list[bytes] = []

        def pump() -> None:
            try:
                for line in iter(pipe.readline, b""):  # type: ignore[attr-defined]
                    self.lines.put(line)
            except (ValueError, OSError):
                pass  # the test closed the pipe
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def get(self, timeout: float) -> bytes | None:
        """The next line, or None at end of output; raises queue.Empty after ``timeout``."""
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.all.append(line)
        return line


def assert_one_line_error(r: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith(("Error", "Error while executing topic command")), r.stderr
    for f in fragments:
        assert f in lines[0], (f, r.stderr)


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def terminate(p: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Kill ``p`` if it still runs, reap it, and close its pipes."""
    if p.poll() is None:
        p.kill()
    p.wait(timeout)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            with contextlib.suppress(OSError, ValueError):
                f.close()


def stderr_of(p: subprocess.Popen[bytes]) -> str:
    """What an exited ``p`` wrote to stderr."""
    return p.stderr.read().decode(errors="replace") if p.stderr else ""


# --------------------------------------------------------------------------- tests


def test_help_lists_the_commands_without_importing_them() -> None:
    r = moldau("--help")
    assert r.returncode == 0
    for cmd in ("topics", "console-producer", "console-consumer", "metadata", "broker", "local",
                "jobmanager", "taskmanager", "run", "list", "cancel", "info"):
        assert cmd in r.stdout
    # start-up stays cheap: the top-level help imports no client, daemon or stream module
    code = ("import sys; from moldau.clients.cli.main import build_parser; "
            "build_parser(''); print(sorted(m for m in sys.modules if m.startswith('moldau')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "moldau.clients.producer" not in out and "moldau.clients.stream" not in out, out


def test_version() -> None:
    r = moldau("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("moldau ")


@pytest.mark.parametrize("cmd", [
    ["topics"], ["console-producer"], ["console-consumer"], ["local"], ["local", "start"],
    ["local", "stop"], ["local", "status"], ["local", "demo"], ["metadata", "ls"],
])
def test_every_command_has_help(cmd: Sequence[str]) -> None:
    r = moldau(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: moldau")


def test_broker_help_is_the_brokers_own() -> None:
    r = moldau("broker", "--help")
    assert r.returncode == 0, r.stderr
    assert "--broker-id" in r.stdout
    r = moldau("jobmanager", "--help")
    assert r.returncode == 0 and "--rest" in r.stdout, r.stderr
    r = moldau("taskmanager", "--help")
    assert r.returncode == 0 and "--slots" in r.stdout, r.stderr
    r = moldau("metadata", "--help")
    assert r.returncode == 0, r.stderr
    assert "--data-dir" in r.stdout and "moldau metadata ls" in r.stdout


@pytest.mark.parametrize("args,fragments", [
    (["frobnicate"], ["invalid choice"]),
    (["topics", "--list", "--zookeeper", "x:1", "--frob"], ["unrecognized arguments: --frob"]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1"], ['"[topic]"']),
    (["topics", "--delete", "--bootstrap-server", "127.0.0.1:1"], ['"[topic]"']),
    (["topics", "--list"], ["--bootstrap-server", "--zookeeper"]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1", "--topic", "bad name!",
      "--partitions", "1", "--replication-factor", "1"], ["illegal"]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1", "--topic", "..",
      "--partitions", "1", "--replication-factor", "1"], [".."]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1", "--topic", "x" * 250,
      "--partitions", "1"], ["249"]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1", "--topic", "t",
      "--partitions", "0", "--replication-factor", "1"], ["partitions must be greater than 0"]),
    (["topics", "--create", "--zookeeper", "127.0.0.1:1", "--topic", "t",
      "--partitions", "x"], ["invalid int value"]),
    (["topics", "--create", "--bootstrap-server", "127.0.0.1:1", "--zookeeper", "127.0.0.1:1",
      "--topic", "t"], ["not allowed with"]),
    (["console-producer", "--topic", "t"], ["--bootstrap-server"]),
    (["console-consumer", "--bootstrap-server", "127.0.0.1:1"], ["--topic"]),
    (["console-consumer", "--bootstrap-server", "127.0.0.1:1", "--topic", "t",
      "--offset", "5"], ["partition is required"]),
    (["console-producer", "--broker-list", "127.0.0.1:1", "--topic", "t",
      "--producer-property", "no.such.setting=1"], ["no.such.setting"]),
    (["console-producer", "--broker-list", "127.0.0.1:1", "--topic", "t",
      "--request-required-acks", "7"], ["acks"]),
    (["local", "start", "--brokers", "0"], ["--brokers"]),
    (["metadata", "ls", "brokers", "--zookeeper", "127.0.0.1:1"], ["path must start with"]),
])
def test_usage_errors_are_one_line(args: list[str], fragments: list[str],
                                   tmp_path: Path) -> None:
    assert_one_line_error(moldau(*args, home=tmp_path), *fragments)


def test_unreachable_servers_are_one_line_errors() -> None:
    port = free_port()  # nothing listens there
    addr = f"127.0.0.1:{port}"
    for args in (["topics", "--list", "--bootstrap-server", addr],
                 ["topics", "--describe", "--zookeeper", addr],
                 ["console-producer", "--broker-list", addr, "--topic", "t"],
                 ["console-consumer", "--bootstrap-server", addr, "--topic", "t"],
                 ["metadata", "ls", "/", "--zookeeper", addr]):
        t0 = time.monotonic()
        r = moldau(*args, input="")
        assert_one_line_error(r, "cannot reach", addr)
        assert time.monotonic() - t0 < 10
