"""``moldau local``: an embedded cluster on this machine, as background processes.

``start`` runs every process of ``ROLES`` in order (each role's processes may use the
addresses of the roles before it), each in its own session with stdout and stderr appended
to ``DIR/logs/<name>.log``, and waits for its ``ready on HOST:PORT`` line. What runs is
recorded in ``DIR/cluster.json``::

    {"version": 1, "data_dir": "...", "host": "127.0.0.1",
     "started_at": "2024-01-01T00:00:00Z", "started_at_ms": 1704067200000,
     "zookeeper": "127.0.0.1:2181", "bootstrap_servers": "127.0.0.1:9092,...",
     "processes": [{"name": "metadata", "role": "metadata", "pid": 123,
                    "address": "127.0.0.1:2181", "log": "logs/metadata.log",
                    "argv": [...]}, ...]}

``stop`` signals those PIDs (after checking each still runs a moldau daemon for this
directory, so a reused PID is never signalled), later roles first; ``status`` reports them.
A process of this cluster is never a child of the command that reads the file, so liveness
is read from the process table, not from ``wait()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moldau.clients.cli.base import CliError, child_env

CLUSTER_FILE = "cluster.json"
MARKER_FILE = ".moldau-local"
READY_RE = re.compile(rb"ready on (\S+):(\d+)")
DEFAULT_GRACE_S = 15.0
DEFAULT_READY_TIMEOUT_S = 30.0


def moldau_home() -> Path:
    return Path(os.environ.get("MOLDAU_HOME") or Path.home() / ".moldau").expanduser()


def default_data_dir() -> Path:
    return moldau_home() / "local"


# --------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class Role:
    """One kind of process of the local cluster.

    ``argv(index, port, data_dir, started, options)`` builds the daemon's arguments (after
    ``python -m module``); ``started`` maps each earlier role to the addresses it serves on.
    Process ``index`` prefers port ``base_port + index`` (the classic ports), or the one
    given by the ``port_option`` attribute of the options (0: any free port).
    """

    role: str
    module: str
    count: Callable[[argparse.Namespace], int]
    name: Callable[[int, argparse.Namespace], str]
    base_port: int
    port_option: str
    argv: Callable[[int, int, Path, dict[str, list[str]], argparse.Namespace], list[str]]


def _free_port(host: str, preferred: int) -> int:
    if port_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _metadata_argv(index: int, port: int, data_dir: Path, started: dict[str, list[str]],
                   opts: argparse.Namespace) -> list[str]:
    n = int(getattr(opts, "metadata_nodes", 1) or 1)
    if n == 1:
        return ["--host", opts.host, "--port", str(port),
                "--data-dir", str(data_dir / "metadata")]
    # a quorum: every node needs every peer's address before the first one starts
    if index == 0:
        opts.metadata_peers = ",".join(
            f"{i + 1}={opts.host}:{_free_port(opts.host, 2888 + i)}" for i in range(n))
    return ["--id", str(index + 1), "--peers", opts.metadata_peers, "--host", opts.host,
            "--port", str(port), "--data-dir", str(data_dir / f"metadata-{index + 1}")]





def _broker_argv(index: int, port: int, data_dir: Path, started: dict[str, list[str]],
                 opts: argparse.Namespace) -> list[str]:
    broker_id = index + 1
    argv = ["--broker-id", str(broker_id), "--listeners", f"{opts.host}:{port}",
            "--log-dirs", str(data_dir / f"broker-{broker_id}"),
            "--zookeeper", ",".join(started["metadata"])]
    if getattr(opts, "partitions_default", None):
        argv += ["--override", f"num.partitions={opts.partitions_default}"]
    for item in getattr(opts, "broker_override", None) or ():
        argv += ["--override", item]
    return argv


def _jobmanager_argv(index: int, port: int, data_dir: Path, started: dict[str, list[str]],
                     opts: argparse.Namespace) -> list[str]:
    rest = getattr(opts, "rest_port", None)
    rest_port = 8081 if rest is None else int(rest)
    if rest_port and not port_free(opts.host, rest_port):
        rest_port = 0
    if rest_port == 0:
        with socket.socket() as s:
            s.bind((opts.host, 0))
            rest_port = int(s.getsockname()[1])
    return ["--rpc", f"{opts.host}:{port}", "--rest", f"{opts.host}:{rest_port}",
            "--data-dir", str(data_dir / "jobmanager")]


def _taskmanager_argv(index: int, port: int, data_dir: Path, started: dict[str, list[str]],
                      opts: argparse.Namespace) -> list[str]:
    return ["--jobmanager", started["jobmanager"][0], "--slots", str(opts.slots),
            "--host", opts.host, "--data-port", str(port), "--id", f"taskmanager-{index + 1}",
            "--data-dir", str(data_dir / f"taskmanager-{index + 1}")]


def _stream_processes(opts: argparse.Namespace) -> int:
    return 1 if int(getattr(opts, "taskmanagers", 0) or 0) > 0 else 0


ROLES: tuple[Role, ...] = (
    Role("metadata", "moldau.broker.metadata",
         lambda o: int(o.metadata_nodes),
         lambda i, o: "metadata" if o.metadata_nodes == 1 else f"metadata-{i + 1}", 2181,
         "metadata_port", _metadata_argv),
    Role("broker", "moldau.broker", lambda o: int(o.brokers), lambda i, o: f"broker-{i + 1}",
         9092, "broker_port", _broker_argv),
    Role("jobmanager", "moldau.jobmanager", _stream_processes, lambda i, o: "jobmanager", 6123,
         "jobmanager_port", _jobmanager_argv),
    Role("taskmanager", "moldau.taskmanager", lambda o: int(getattr(o, "taskmanagers", 0) or 0),
         lambda i, o: f"taskmanager-{i + 1}", 0, "taskmanager_port", _taskmanager_argv),
)


# --------------------------------------------------------------------------- the record


@dataclass
class ProcessRecord:
    name: str
    role: str
    pid: int
    address: str
    log: str
    argv: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "pid": self.pid,
                "address": self.address, "log": self.log, "argv": self.argv}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProcessRecord:
        return cls(str(d["name"]), str(d["role"]), int(d["pid"]), str(d.get("address", "")),
                   str(d.get("log", "")), [str(a) for a in d.get("argv", [])])


@dataclass
class ClusterRecord:
    data_dir: Path
    host: str
    started_at_ms: int
    processes: list[ProcessRecord]

    def addresses(self, role: str) -> list[str]:
        return [p.address for p in self.processes if p.role == role]

    @property
    def zookeeper(self) -> str:
        return ",".join(self.addresses("metadata"))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.addresses("broker"))

    @property
    def jobmanager_rest(self) -> str:
        """The JobManager's REST address (from its ``--rest`` argument), or ''."""
        for p in self.processes:
            if p.role == "jobmanager" and "--rest" in p.argv:
                return p.argv[p.argv.index("--rest") + 1]
        return ""

    def to_json(self) -> dict[str, Any]:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at_ms / 1000))
        return {"version": 1, "data_dir": str(self.data_dir), "host": self.host,
                "started_at": started, "started_at_ms": self.started_at_ms,
                "zookeeper": self.zookeeper, "bootstrap_servers": self.bootstrap_servers,
                "jobmanager_rest": self.jobmanager_rest,
                "processes": [p.to_json() for p in self.processes]}

    def save(self) -> None:
        path = self.data_dir / CLUSTER_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, data_dir: Path) -> ClusterRecord | None:
        path = data_dir / CLUSTER_FILE
        try:
            d = json.loads(path.read_text())
            return cls(data_dir, str(d.get("host", "127.0.0.1")), int(d.get("started_at_ms", 0)),
                       [ProcessRecord.from_json(p) for p in d.get("processes", [])])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CliError(f"{path} is unreadable ({e}); remove it if no cluster runs") from None


# --------------------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (``Z`` for a zombie), or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def is_alive(proc: ProcessRecord) -> bool:
    """True when ``proc.pid`` still runs the daemon recorded (not a reused PID)."""
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(proc.pid)
    if state in ("gone", "Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the signal check
    args = [a.decode(errors="replace") for a in cmdline if a]
    # the same interpreter path may be spelt differently; the arguments name the data dir
    return args[1:] == proc.argv[1:]


def _signal(proc: ProcessRecord, sig: int) -> None:
    if is_alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, n: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-n:].decode(errors="replace").rstrip() or "(empty log)"


def spawn(role: Role, name: str, argv: list[str], data_dir: Path,
          timeout: float) -> ProcessRecord:
    """Start one daemon in its own session and wait for its ready line."""
    log_rel = f"logs/{name}.log"
    log_path = data_dir / log_rel
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_at = log_path.stat().st_size if log_path.exists() else 0
    full = [sys.executable, "-m", role.module, *argv]
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=child_env(), cwd=data_dir,
                                 start_new_session=True)
    rec = ProcessRecord(name, role.role, popen.pid, "", log_rel, full)
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, "rb") as f:
            f.seek(start_at)
            m = READY_RE.search(f.read())
        if m:
            rec.address = f"{m.group(1).decode()}:{int(m.group(2))}"
            # no wait() from here on: the daemon outlives this command
            popen.returncode = 0
            return rec
        if popen.poll() is not None:
            raise CliError(f"{name} exited with status {popen.returncode} before it was "
                           f"ready; the end of {log_path}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
            popen.wait(5)
            raise CliError(f"{name} was not ready within {timeout:.0f} s; the end of "
                           f"{log_path}:\n{_tail(log_path)}")
        time.sleep(0.05)


@contextlib.contextmanager
def _lock(data_dir: Path) -> Iterator[None]:
    """One ``moldau local`` command at a time per data dir (two starts would race)."""
    import fcntl

    with open(data_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(f"another 'moldau local' command is working on {data_dir}") from None
        yield


def running_cluster(data_dir: Path) -> ClusterRecord | None:
    """The cluster recorded in ``data_dir`` if any of its processes still runs."""
    rec = ClusterRecord.load(data_dir)
    if rec is not None and any(is_alive(p) for p in rec.processes):
        return rec
    return None


def default_zookeeper() -> str | None:
    """The metadata address of the default local cluster, when it runs."""
    try:
        rec = running_cluster(default_data_dir())
    except CliError:
        return None
    return rec.zookeeper if rec is not None else None


def start_cluster(opts: argparse.Namespace, data_dir: Path, *, quiet: bool = False
                  ) -> ClusterRecord:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER_FILE).touch()
    with _lock(data_dir):
        existing = running_cluster(data_dir)
        if existing is not None:
            alive = [f"{p.name} (pid {p.pid})" for p in existing.processes if is_alive(p)]
            raise CliError(f"a local cluster is already running in {data_dir}: "
                           f"{', '.join(alive)}; stop it with 'moldau local stop"
                           f"{_dir_flag(data_dir)}'")
        rec = ClusterRecord(data_dir, opts.host, int(time.time() * 1000), [])
        started: dict[str, list[str]] = {}
        try:
            for role in ROLES:
                for i in range(role.count(opts)):
                    name = role.name(i, opts)
                    port = _choose_port(role, i, opts)
                    argv = role.argv(i, port, data_dir, started, opts)
                    proc = spawn(role, name, argv, data_dir, opts.timeout)
                    rec.processes.append(proc)
                    rec.save()  # a failure later still leaves every PID on record
                    started.setdefault(role.role, []).append(proc.address)
                    if not quiet:
                        print(f"started {name:<13} pid {proc.pid:<7} on {proc.address}",
                              flush=True)
        except BaseException:
            _stop_processes(rec.processes, DEFAULT_GRACE_S)
            with contextlib.suppress(FileNotFoundError):
                (data_dir / CLUSTER_FILE).unlink()
            raise
        rec.save()
        return rec


def _choose_port(role: Role, index: int, opts: argparse.Namespace) -> int:
    fixed = getattr(opts, role.port_option, None)
    base = role.base_port if fixed is None else int(fixed)
    if base == 0:
        return 0
    port = base + index
    return port if port_free(opts.host, port) else 0


def _dir_flag(data_dir: Path) -> str:
    return "" if data_dir == default_data_dir() else f" --data-dir {data_dir}"


def _stop_processes(procs: list[ProcessRecord], grace: float) -> list[ProcessRecord]:
    """SIGTERM the roles in reverse order of start (each role's processes together), wait
    up to ``grace`` seconds per role, SIGKILL what is left; return the ones killed."""
    killed: list[ProcessRecord] = []
    order = [r.role for r in ROLES]
    roles = sorted({p.role for p in procs}, key=lambda r: order.index(r) if r in order else -1,
                   reverse=True)
    for role in roles:
        group = [p for p in procs if p.role == role]
        for p in group:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(is_alive(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in group:
            if is_alive(p):
                _signal(p, signal.SIGKILL)
                killed.append(p)
        deadline = time.monotonic() + 5
        while any(is_alive(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.05)
    return killed


# --------------------------------------------------------------------------- commands


def register(sub: Any, name: str, **kw: Any) -> None:
    p = sub.add_parser(name, **kw,
                       description="An embedded local cluster: a metadata node, brokers, a "
                       "JobManager and TaskManagers as background processes on loopback ports.")
    cmds = p.add_subparsers(dest="local_command", metavar="start|status|stop|demo",
                            required=True)

    def data_dir_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                       help="where data, logs and cluster.json live "
                       "(default: $MOLDAU_HOME/local, MOLDAU_HOME defaults to ~/.moldau)")

    def start_args(q: argparse.ArgumentParser) -> None:
        data_dir_arg(q)
        q.add_argument("--brokers", type=int, default=1, metavar="N",
                       help="the number of brokers (default: 1)")
        q.add_argument("--metadata-nodes", type=int, default=1, choices=(1, 3, 5),
                       help="metadata nodes: 1, or a Raft quorum of 3 or 5 (default: 1)")
        q.add_argument("--partitions-default", type=int, default=None, metavar="N",
                       help="the brokers' num.partitions (partitions of a topic created "
                       "without --partitions)")
        q.add_argument("--host", default="127.0.0.1",
                       help="the address every daemon binds (default: 127.0.0.1)")
        q.add_argument("--metadata-port", type=int, default=None, metavar="PORT",
                       help="the metadata node's port (default: 2181 when free; 0: any)")
        q.add_argument("--broker-port", type=int, default=None, metavar="PORT",
                       help="the first broker's port, the next ones follow (default: 9092 "
                       "when free; 0: any)")
        q.add_argument("--taskmanagers", type=int, default=1, metavar="N",
                       help="the number of TaskManagers (default: 1); 0 starts no "
                       "JobManager either")
        q.add_argument("--slots", type=int, default=4, metavar="N",
                       help="task slots per TaskManager, each its own process (default: 4)")
        q.add_argument("--rest-port", type=int, default=None, metavar="PORT",
                       help="the JobManager's REST/dashboard port (default: 8081 when free)")
        q.add_argument("--override", dest="broker_override", action="append",
                       metavar="KEY=VALUE", help="a broker setting for every broker "
                       "(repeatable)")
        q.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT_S,
                       metavar="SECONDS", help="how long each process may take to be ready")

    q = cmds.add_parser("start", help="start the local cluster in the background",
                        description="Start a metadata node, N brokers, a JobManager and "
                        "TaskManagers in the background.")
    start_args(q)
    q.set_defaults(func=cmd_start)

    q = cmds.add_parser("status", help="show each process of the local cluster",
                        description="Show whether each process of the local cluster runs.")
    data_dir_arg(q)
    q.set_defaults(func=cmd_status)

    q = cmds.add_parser("stop", help="stop the local cluster",
                        description="Stop every process of the local cluster (SIGTERM, then "
                        "SIGKILL after a grace period).")
    data_dir_arg(q)
    q.add_argument("--purge", action="store_true",
                   help="also delete the data directory (topics, logs, everything)")
    q.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                   help=f"how long to wait after SIGTERM before SIGKILL "
                   f"(default: {DEFAULT_GRACE_S:.0f})")
    q.set_defaults(func=cmd_stop)

    q = cmds.add_parser("demo", help="start the cluster if needed and run the console "
                        "exchange of the course: a topic, a producer, a consumer",
                        description="Start the local cluster if it is not running, create "
                        "topic 'demo' (3 partitions), send some lines, read them back from "
                        "the beginning, and show how to use the console tools.")
    start_args(q)
    q.add_argument("--topic", default="demo", help="the topic to use (default: demo)")
    q.set_defaults(func=cmd_demo)


def _data_dir(args: argparse.Namespace) -> Path:
    d = args.data_dir if args.data_dir is not None else default_data_dir()
    return Path(d).expanduser().resolve()


def _check_start_args(args: argparse.Namespace) -> None:
    if args.brokers < 1:
        raise CliError(f"--brokers must be at least 1, got {args.brokers}")
    if args.taskmanagers < 0:
        raise CliError(f"--taskmanagers must be at least 0, got {args.taskmanagers}")
    if args.slots < 1:
        raise CliError(f"--slots must be at least 1, got {args.slots}")
    if args.partitions_default is not None and args.partitions_default < 1:
        raise CliError(f"--partitions-default must be at least 1, got {args.partitions_default}")
    for flag, port in (("--metadata-port", args.metadata_port),
                       ("--broker-port", args.broker_port)):
        if port is not None and not 0 <= port < 65536:
            raise CliError(f"{flag} must be a port number, got {port}")


def _print_addresses(rec: ClusterRecord) -> None:
    print(f"zookeeper: {rec.zookeeper}")
    print(f"bootstrap servers: {rec.bootstrap_servers}")
    if rec.jobmanager_rest:
        print(f"jobmanager (REST and dashboard): http://{rec.jobmanager_rest}")


def cmd_start(args: argparse.Namespace) -> int:
    _check_start_args(args)
    data_dir = _data_dir(args)
    rec = start_cluster(args, data_dir)
    print(f"local cluster running in {data_dir}")
    _print_addresses(rec)
    print(f"stop it with: moldau local stop{_dir_flag(data_dir)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    rec = ClusterRecord.load(data_dir)
    if rec is None:
        print(f"no local cluster in {data_dir}")
        return 1
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.started_at_ms / 1000))
    print(f"local cluster in {data_dir}, started {started}")
    all_alive = True
    for p in rec.processes:
        alive = is_alive(p)
        all_alive &= alive
        extra = "" if alive else f"  (see {data_dir / p.log})"
        print(f"  {p.name:<13} {'alive' if alive else 'dead':<6} {p.address:<22} "
              f"pid {p.pid}{extra}")
    _print_addresses(rec)
    return 0 if all_alive else 1


def cmd_stop(args: argparse.Namespace) -> int:
    import shutil

    data_dir = _data_dir(args)
    if not data_dir.exists():
        print(f"no local cluster in {data_dir}")
        return 0
    with _lock(data_dir):
        rec = ClusterRecord.load(data_dir)
        if rec is None:
            print(f"no local cluster is running in {data_dir}")
        else:
            running = [p for p in rec.processes if is_alive(p)]
            killed = _stop_processes(running, args.grace)
            for p in rec.processes:
                how = ("killed (SIGKILL)" if p in killed else "stopped" if p in running
                       else "was not running")
                print(f"{p.name:<13} pid {p.pid:<7} {how}")
            still = [p for p in rec.processes if is_alive(p)]
            if still:
                raise CliError("could not stop " + ", ".join(
                    f"{p.name} (pid {p.pid})" for p in still))
            (data_dir / CLUSTER_FILE).unlink(missing_ok=True)
    if args.purge:
        if not (data_dir / MARKER_FILE).exists():
            raise CliError(f"not purging {data_dir}: it is not a moldau local cluster "
                           f"directory (no {MARKER_FILE} in it)")
        shutil.rmtree(data_dir)
        print(f"deleted {data_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _check_start_args(args)
    data_dir = _data_dir(args)
    rec = running_cluster(data_dir)
    if rec is None:
        print(f"starting a local cluster in {data_dir}", flush=True)
        rec = start_cluster(args, data_dir)
    else:
        print(f"using the local cluster running in {data_dir}")
    _print_addresses(rec)
    from moldau.clients.cli import demo
    from moldau.clients.cli.base import run_async

    run_async(demo.run_demo(rec.bootstrap_servers, args.topic))
    demo.print_next_steps(rec.zookeeper, rec.bootstrap_servers, args.topic,
                          _dir_flag(data_dir))
    return 0
