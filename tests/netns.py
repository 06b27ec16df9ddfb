"""Hosts on one machine as Linux network namespaces, for multi-host tests and local play.

A ``Network`` with prefix ``P`` and ``N`` hosts is laid out as:

- namespace ``P-sw`` (the switch): a bridge ``br0`` and, per host ``I``, a veth end ``hI``
  enslaved to the bridge;
- namespace ``P-hI`` (host ``I``): the veth's other end, ``eth0``, with address ``subnet + I``
  (e.g. ``10.213.0.I/24``), and ``lo`` up.

Invariants: nothing is created in the machine's own network namespace, and no host has a
default route, so test traffic can only reach the other hosts of the same network. Deleting
the namespaces (after killing every process inside them, which would otherwise keep a
namespace and its interfaces alive without a name) removes every veth and the bridge.

``Host.cut()`` detaches the host's port from the bridge: the host's link stays up and its
processes keep running, but every frame to or from it is silently dropped, as when a switch
port fails. ``heal()`` attaches it again; TCP connections that have not timed out resume.
``Network.partition(groups...)`` puts each group of hosts on a bridge of its own (a split
brain); ``Network.heal()`` joins everything again.

Names are unique per run (``make_network`` uses ``<base><pid>x<counter>``), and
``sweep(base)`` removes the namespaces of earlier runs whose process is gone. ``cleanup()`` is
idempotent and is also registered with ``atexit``.

Run as a script (``python tests/netns.py up|down|status|exec ...``) it makes or removes the
same hosts for a person to use; ``deploy/local-hosts.sh`` calls it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness import DaemonProcess

DEFAULT_SUBNET = "10.213.0.0/24"
TEST_BASE = "mnt"  # prefix base of the networks tests make: mnt<pid>x<counter>
BRIDGE = "br0"
HOST_IF = "eth0"

_counter = itertools.count(1)
_live: list[Network] = []
_live_lock = threading.Lock()


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message carries its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` and return the result; raise ``NetnsError`` if ``check`` and it fails."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def list_namespaces() -> list[str]:
    r = ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    r = ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


@functools.cache
def unavailable_reason() -> str | None:
    """Why network namespaces can't be used here, or None if they can (probes by making one
    with a bridge and a veth pair, once per process)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the netns tests as root, as CI does)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = f"{TEST_BASE}probe{os.getpid()}x{next(_counter)}"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace: {e}"
    try:
        ip("-n", probe, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    except NetnsError as e:
        return f"cannot create a bridge or veth pair in a namespace: {e}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_network(prefix: str) -> list[str]:
    """Delete the switch and host namespaces named ``<prefix>-sw`` / ``<prefix>-hI`` and
    SIGKILL the processes inside them; return the namespaces removed."""
    pattern = re.compile(re.escape(prefix) + r"-(sw|h\d+)$")
    names = [ns for ns in list_namespaces() if pattern.match(ns)]
    for ns in names:
        _kill_pids(namespace_pids(ns))
    for ns in names:
        _wait_empty(ns, 5.0)
        ip("netns", "del", ns, check=False)
    return names


def _wait_empty(ns: str, timeout: float) -> None:
    """Killed processes leave the namespace only once they are reaped; wait for that."""
    deadline = time.monotonic() + timeout
    while namespace_pids(ns) and time.monotonic() < deadline:
        time.sleep(0.02)


def sweep(base: str = TEST_BASE) -> list[str]:
    """Remove networks named ``<base><pid>x<n>`` whose creating process no longer runs
    (leftovers of crashed runs); networks of live processes, e.g. parallel runs, stay."""
    pattern = re.compile(re.escape(base) + r"(?:probe)?(\d+)x(\d+)-(?:sw|h\d+)$")
    prefixes: set[str] = set()
    for ns in list_namespaces():
        m = pattern.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            prefixes.add(ns.rsplit("-", 1)[0])
    removed: list[str] = []
    for p in sorted(prefixes):
        removed += remove_network(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Host:
    """One host: a network namespace with one address. Processes started here are owned by
    the network and SIGKILLed by PID at cleanup."""

    def __init__(self, network: Network, index: int, address: str) -> None:
        self.network = network
        self.index = index
        self.name = f"h{index}"
        self.namespace = f"{network.prefix}-h{index}"
        self.address = address
        self.port_name = f"h{index}"  # the veth end in the switch namespace
        self.is_cut = False

    def __repr__(self) -> str:
        return f"Host({self.namespace}, {self.address})"

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` wrapped to run inside this host (``ip netns exec`` execs in place, so
        the PID of the wrapped command is the PID of ``args``)."""
        return ["ip", "netns", "exec", self.namespace, *args]

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, args: Sequence[str], timeout: float = 20.0,
              env: dict[str, str] | None = None) -> DaemonProcess:
        """Start a daemon here and wait for its ``ready on HOST:PORT`` line."""
        d = DaemonProcess(f"{self.name}-{name}", self.command(args),
                          self.network.workdir / "logs" / f"{self.name}-{name}.log", env)
        self.network.daemons.append(d)
        return d.start(timeout)

    def metadata(self, name: str = "metadata", port: int = 2181,
                 extra: Sequence[str] = ()) -> DaemonProcess:
        """A metadata service on this host's address."""
        return self.spawn(name, [sys.executable, "-m", "moldau.broker.metadata",
                                 "--host", self.address, "--port", str(port),
                                 "--data-dir", str(self.data_dir(name)), *extra])

    def broker(self, broker_id: int, zookeeper: str, port: int = 9092,
               extra: Sequence[str] = ()) -> DaemonProcess:
        """A broker listening on this host's address."""
        name = f"broker-{broker_id}"
        return self.spawn(name, [
            sys.executable, "-m", "moldau.broker", "--broker-id", str(broker_id),
            "--listeners", f"{self.address}:{port}", "--log-dirs", str(self.data_dir(name)),
            "--zookeeper", zookeeper, *extra])

    def data_dir(self, name: str) -> Path:
        return self.network.workdir / self.name / name

    def launch(self, name: str, args: Sequence[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process here without waiting for anything; its output goes to
        ``logs/<host>-<name>.log``. Owned by the network (killed at cleanup)."""
        log_path = self.network.workdir / "logs" / f"{self.name}-{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            p = subprocess.Popen(self.command(args), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                 start_new_session=True)
        self.network.popens.append((f"{self.name}-{name}", log_path, p))
        return p

    def run(self, args: Sequence[str], timeout: float = 30.0, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a one-off command here and return its output (``check`` raises on failure)."""
        r = subprocess.run(self.command(args), capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise NetnsError(f"{self.name}: {' '.join(args)} exited {r.returncode}:\n"
                             f"{r.stdout[-2000:]}{r.stderr[-4000:]}")
        return r

    def python(self, code: str, *args: str, timeout: float = 30.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet here with this test run's interpreter."""
        return self.run([sys.executable, "-c", code, *args], timeout=timeout, check=check)

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` succeeds."""
        code = ("import socket,sys\n"
                "try:\n"
                f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
                "except OSError:\n"
                "    sys.exit(1)\n")
        return self.python(code, timeout=timeout + 10, check=False).returncode == 0

    @staticmethod
    def kill(proc: DaemonProcess) -> None:
        """SIGKILL the process and reap it."""
        proc.kill()

    @staticmethod
    def stop_process(proc: DaemonProcess) -> None:
        """SIGSTOP: the process freezes but keeps its sockets (a long GC pause, a hung VM)."""
        proc.signal(signal.SIGSTOP)

    @staticmethod
    def cont(proc: DaemonProcess) -> None:
        """SIGCONT a stopped process."""
        proc.signal(signal.SIGCONT)

    # ------------------------------------------------------------------ the link

    def cut(self) -> None:
        """Isolate this host: its port leaves the bridge, so all its traffic is dropped
        silently while its link stays up and its processes keep running."""
        ip("-n", self.network.switch, "link", "set", self.port_name, "nomaster")
        self.is_cut = True

    def heal(self) -> None:
        """Plug this host back into the bridge. Established connections resume on their
        next retransmission; an address lookup (ARP) still pending from the cut may fail
        just after, as on a real network, so callers retry new connections."""
        ip("-n", self.network.switch, "link", "set", self.port_name, "master", BRIDGE)
        self.is_cut = False


class Network:
    """``n_hosts`` hosts on a private subnet joined by one bridge. ``create()`` makes them,
    ``cleanup()`` kills every process started through them and removes everything made."""

    def __init__(self, name_prefix: str, n_hosts: int, subnet: str = DEFAULT_SUBNET,
                 workdir: Path | None = None) -> None:
        net = ipaddress.ip_network(subnet)
        if not net.is_private:
            raise ValueError(f"{subnet} is not a private subnet")
        if not 1 <= n_hosts <= net.num_addresses - 2:
            raise ValueError(f"{n_hosts} hosts do not fit in {subnet}")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", name_prefix):
            raise ValueError(f"bad name prefix {name_prefix!r}")
        self.prefix = name_prefix
        self.subnet = net
        self.switch = f"{name_prefix}-sw"
        self.workdir = workdir if workdir is not None else Path(
            tempfile.mkdtemp(prefix=f"{name_prefix}-"))
        self.hosts = [Host(self, i, str(net.network_address + i))
                      for i in range(1, n_hosts + 1)]
        self.daemons: list[DaemonProcess] = []
        self.popens: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self._created: list[str] = []
        self._bridges: list[str] = []  # extra bridges made by partition()
        self._closed = False

    def __repr__(self) -> str:
        return f"Network({self.prefix}, {[h.address for h in self.hosts]})"

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def create(self, register: bool = True) -> Network:
        """Make the namespaces, bridge and veths. On any failure everything made so far is
        removed. ``register`` (the default) also cleans up at interpreter exit."""
        if register:
            with _live_lock:
                _live.append(self)
        try:
            self._make()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _make(self) -> None:
        plen = self.subnet.prefixlen
        for ns in (self.switch, *(h.namespace for h in self.hosts)):
            ip("netns", "add", ns)
            self._created.append(ns)
        sw = self.switch
        ip("-n", sw, "link", "add", BRIDGE, "type", "bridge")
        # a host's frames are forwarded as soon as its port joins (no STP listening delay)
        ip("-n", sw, "link", "set", BRIDGE, "type", "bridge", "forward_delay", "0")
        ip("-n", sw, "link", "set", BRIDGE, "up")
        for h in self.hosts:
            ip("-n", sw, "link", "add", h.port_name, "type", "veth",
               "peer", "name", HOST_IF, "netns", h.namespace)
            ip("-n", sw, "link", "set", h.port_name, "master", BRIDGE)
            ip("-n", sw, "link", "set", h.port_name, "up")
            ip("-n", h.namespace, "link", "set", "lo", "up")
            ip("-n", h.namespace, "addr", "add", f"{h.address}/{plen}", "dev", HOST_IF)
            ip("-n", h.namespace, "link", "set", HOST_IF, "up")

    def cleanup(self) -> None:
        """Kill every process started here (by PID, then anything else left inside the
        namespaces), then delete the namespaces. Safe to call more than once."""
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.kill()
        for _, _, p in self.popens:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        if not self._closed:
            # a daemon's own children live in the namespaces too
            ns_all = [ns for ns in self._created if ns in set(list_namespaces())]
            for ns in ns_all:
                _kill_pids(namespace_pids(ns))
            for ns in ns_all:
                _wait_empty(ns, 5.0)
                ip("netns", "del", ns, check=False)
            self._created.clear()
            self._closed = True
        with _live_lock:
            if self in _live:
                _live.remove(self)

    def partition(self, *groups: Sequence[Host]) -> None:
        """Split the network: each group can reach only its own members. The first group
        (with any host not named) stays on the main bridge, each other group gets a bridge
        of its own. ``heal()`` joins everything again."""
        for i, group in enumerate(groups[1:], start=1):
            bridge = f"br{i}"
            if bridge not in self._bridges:
                ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
                ip("-n", self.switch, "link", "set", bridge, "type", "bridge",
                   "forward_delay", "0")
                ip("-n", self.switch, "link", "set", bridge, "up")
                self._bridges.append(bridge)
            for h in group:
                ip("-n", self.switch, "link", "set", h.port_name, "master", bridge)
                h.is_cut = False
        for h in groups[0] if groups else ():
            h.heal()

    def heal(self) -> None:
        """Undo every cut and partition: all hosts on the main bridge again."""
        for h in self.hosts:
            h.heal()
        for bridge in self._bridges:
            ip("-n", self.switch, "link", "del", bridge)
        self._bridges.clear()

    def remaining(self) -> list[str]:
        """Namespaces of this network that still exist (empty after ``cleanup``)."""
        pattern = re.compile(re.escape(self.prefix) + r"-(sw|h\d+)$")
        return [ns for ns in list_namespaces() if pattern.match(ns)]

    def logs(self) -> str:
        parts = [f"===== {d.name} (pid {d.popen.pid if d.popen else '-'})\n{d.tail()}"
                 for d in self.daemons]
        for name, path, p in self.popens:
            try:
                text = path.read_bytes().decode(errors="replace")[-4000:]
            except OSError:
                text = ""
            parts.append(f"===== {name} (pid {p.pid})\n{text}")
        return "\n".join(parts)


def make_network(n_hosts: int, workdir: Path | None = None, subnet: str = DEFAULT_SUBNET,
                 base: str = TEST_BASE) -> Network:
    """A new network with a name unique to this process (``<base><pid>x<counter>``), after
    sweeping away leftovers of crashed runs."""
    sweep(base)
    return Network(f"{base}{os.getpid()}x{next(_counter)}", n_hosts, subnet, workdir).create()


@atexit.register
def _cleanup_all() -> None:
    with _live_lock:
        nets = list(_live)
    for n in nets:
        with contextlib.suppress(Exception):
            n.cleanup()


# ---------------------------------------------------------------------- command line

def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="netns.py", description="Make N hosts as network namespaces joined by a bridge.")
    ap.add_argument("--prefix", default="moldau", help="namespace name prefix (default moldau)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="make N hosts <prefix>-h1..hN")
    up.add_argument("n", type=int)
    up.add_argument("--subnet", default=DEFAULT_SUBNET)
    sub.add_parser("down", help="kill everything inside the hosts and remove them")
    sub.add_parser("status", help="list the hosts and their addresses")
    ex = sub.add_parser("exec", help="run a command on host I")
    ex.add_argument("i", type=int)
    ex.add_argument("args", nargs=argparse.REMAINDER)
    for name in ("cut", "heal"):
        c = sub.add_parser(name, help=f"{name} host I's link")
        c.add_argument("i", type=int)
    a = ap.parse_args(argv)

    reason = unavailable_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    if a.cmd == "up":
        if remove_network(a.prefix):
            print(f"removed the previous {a.prefix} hosts", file=sys.stderr)
        net = Network(a.prefix, a.n, a.subnet, workdir=Path(tempfile.gettempdir()))
        net.create(register=False)
        a.cmd = "status"
    if a.cmd == "down":
        removed = remove_network(a.prefix)
        print(f"removed {len(removed)} namespaces" if removed else "nothing to remove")
        return 0
    if a.cmd == "status":
        found = False
        for ns in sorted(list_namespaces(), key=_host_order):
            if re.fullmatch(re.escape(a.prefix) + r"-h\d+", ns):
                found = True
                r = ip("-n", ns, "-4", "-o", "addr", "show", "dev", HOST_IF, check=False)
                addr = r.stdout.split()[3].split("/")[0] if r.stdout.split()[3:] else "?"
                print(f"{ns}\t{addr}")
        if not found:
            print(f"no {a.prefix} hosts", file=sys.stderr)
            return 1
        return 0
    if a.cmd in ("cut", "heal"):
        port = f"h{a.i}"
        switch = f"{a.prefix}-sw"
        if a.cmd == "cut":
            ip("-n", switch, "link", "set", port, "nomaster")
        else:
            ip("-n", switch, "link", "set", port, "master", BRIDGE)
        return 0
    if a.cmd == "exec":
        args = a.args or [os.environ.get("SHELL", "/bin/sh")]
        os.execvp("ip", ["ip", "netns", "exec", f"{a.prefix}-h{a.i}", *args])
    return 0


def _host_order(ns: str) -> tuple[str, int]:
    m = re.search(r"-h(\d+)$", ns)
    return (ns, 0) if m is None else (ns[: m.start()], int(m.group(1)))


if __name__ == "__main__":
    sys.exit(_main())
