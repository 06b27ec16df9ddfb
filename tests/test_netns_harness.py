"""The multi-host harness: hosts as network namespaces reach each other only on their own
subnet, a daemon cluster spans them, a cut isolates a host without stopping it, and cleanup
leaves nothing behind. Needs root (skips otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import netns
import pytest
from harness import DaemonProcess
from netns import Host, Network
from netns_workload import read_events, verify

pytestmark = pytest.mark.netns

WORKLOAD = str(Path(__file__).with_name("netns_workload.py"))

# A line echo server: prints its ready line, answers each line it reads with the same line.
ECHO_SERVER = """
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print(f"moldau echo  ready on {sys.argv[1]}:{s.getsockname()[1]}", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(line)
        f.flush()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# One round trip with a deadline: exit 0 if the echo came back.
ECHO_ONCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(b"ping\\n")
sys.exit(0 if c.makefile("rb").readline() == b"ping\\n" else 1)
"""


def echo_server(host: Host, port: int = 7000) -> DaemonProcess:
    return host.spawn(f"echo-{port}", [sys.executable, "-c", ECHO_SERVER, host.address,
                                       str(port)])


def echo_once(src: Host, dst: str, port: int = 7000, timeout: float = 1.0) -> bool:
    r = src.run([sys.executable, "-c", ECHO_ONCE, dst, str(port), str(timeout)],
                timeout=timeout + 10, check=False)
    return r.returncode == 0


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred`` until true; return the seconds it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_hosts_reach_each_other_and_nothing_else(hosts: Network) -> None:
    servers = [echo_server(h) for h in hosts.hosts]
    assert [s.host for s in servers] == [h.address for h in hosts.hosts]
    assert len({h.address for h in hosts.hosts}) == 4
    for src in hosts.hosts:
        for dst in hosts.hosts:
            assert echo_once(src, dst.address), f"{src} cannot reach {dst}"
        # only the subnet's own route: no default route out of the test network
        routes = src.run(["ip", "-4", "route", "show"]).stdout.strip().splitlines()
        assert routes == [f"{hosts.subnet} dev eth0 proto kernel scope link src {src.address}"]
        links = src.run(["ip", "-o", "link", "show"]).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0]
                      for line in links.splitlines()) == ["eth0", "lo"]
    # each host also has its own loopback
    lo = hosts.hosts[0].python(
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 7000)); print('ok')")
    assert lo.stdout.strip() == "ok"


def test_a_spawned_daemon_runs_inside_its_host_under_its_own_pid(hosts: Network) -> None:
    h2 = hosts.hosts[1]
    d = echo_server(h2)
    ident = subprocess.run(["ip", "netns", "identify", str(d.pid)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert ident == h2.namespace
    assert Path(f"/proc/{d.pid}/cmdline").read_bytes().split(b"\0")[0] == \
        sys.executable.encode()
    h2.kill(d)
    assert not d.alive()
    assert not echo_once(hosts.hosts[0], h2.address)


def test_cut_isolates_a_host_that_keeps_running_and_heal_restores_it(
        hosts: Network, tmp_path: Path) -> None:
    h1, h2, h3, _ = hosts.hosts
    server = echo_server(h2)
    echo_server(h3)
    # a connection opened before the cut, whose next line is sent while cut
    flag = tmp_path / "send-now"
    client = h1.launch("held", [sys.executable, "-c", f"""
import os, socket, sys, time
c = socket.create_connection(({h2.address!r}, 7000), timeout=60)
f = c.makefile("rwb")
f.write(b"one\\n"); f.flush(); assert f.readline() == b"one\\n"
print("connected", flush=True)
while not os.path.exists({str(flag)!r}):
    time.sleep(0.02)
f.write(b"two\\n"); f.flush()
assert f.readline() == b"two\\n"
print("resumed", flush=True)
"""])
    log = hosts.workdir / "logs" / "h1-held.log"
    wait_for(lambda: b"connected" in log.read_bytes(), 10, "the held connection")

    h2.cut()
    assert h2.is_cut
    assert not echo_once(h1, h2.address), "a cut host is still reachable"
    assert not echo_once(h2, h3.address), "a cut host still reaches others"
    assert echo_once(h1, h3.address), "the rest of the network broke too"
    assert server.alive()
    flag.touch()
    time.sleep(1.5)
    assert b"resumed" not in log.read_bytes()

    h2.heal()
    took = wait_for(lambda: b"resumed" in log.read_bytes(), 20,
                    "the held connection after heal")
    print(f"held TCP connection resumed {took:.2f}s after heal")
    assert client.wait(5) == 0
    # an address left unresolved during the cut may still fail its pending ARP lookup
    # (EHOSTUNREACH) just after the heal, as on a real network: retry for a few seconds
    wait_for(lambda: echo_once(h1, h2.address), 5, "h1 -> h2 after heal")
    wait_for(lambda: echo_once(h2, h3.address), 5, "h2 -> h3 after heal")


def test_a_partition_splits_the_hosts_into_groups_until_healed(hosts: Network) -> None:
    h1, h2, h3, h4 = hosts.hosts
    for h in hosts.hosts:
        echo_server(h)
    hosts.partition([h1, h2], [h3, h4])
    for a, b in ((h1, h2), (h2, h1), (h3, h4), (h4, h3)):
        assert echo_once(a, b.address), f"{a} cannot reach {b} in its own group"
    for a, b in ((h1, h3), (h2, h4), (h3, h1), (h4, h2)):
        assert not echo_once(a, b.address, timeout=0.5), f"{a} reaches {b} across the split"
    hosts.heal()
    for a in hosts.hosts:
        for b in hosts.hosts:
            wait_for(lambda a=a, b=b: echo_once(a, b.address), 5, f"{a} -> {b} after heal")


def test_a_stopped_process_answers_only_once_continued(hosts: Network) -> None:
    h1, h2 = hosts.hosts[:2]
    server = echo_server(h2)
    h2.stop_process(server)
    assert not echo_once(h1, h2.address, timeout=1.0)
    assert server.alive()
    h2.cont(server)
    assert echo_once(h1, h2.address)


def test_a_cluster_across_hosts_serves_a_client_on_another_host(hosts: Network) -> None:
    h1, h2, h3, h4 = hosts.hosts
    md = h1.metadata()
    assert md.address == f"{h1.address}:2181"
    b1 = h2.broker(1, md.address)
    b2 = h3.broker(2, md.address)
    assert (b1.address, b2.address) == (f"{h2.address}:9092", f"{h3.address}:9092")
    bootstrap = f"{b1.address},{b2.address}"
    h4.run([sys.executable, "-m", "moldau.clients.cli", "topics", "--create",
            "--topic", "t", "--partitions", "4", "--replication-factor", "1",
            "--bootstrap-server", bootstrap])
    desc = h4.run([sys.executable, "-m", "moldau.clients.cli", "topics", "--describe",
                   "--topic", "t", "--bootstrap-server", bootstrap]).stdout
    assert "Leader: 1" in desc and "Leader: 2" in desc, desc

    produced = hosts.workdir / "produced.jsonl"
    h4.run([sys.executable, WORKLOAD, "produce", "--bootstrap", bootstrap, "--topic", "t",
            "--partitions", "4", "--out", str(produced), "--duration", "2", "--rate", "500"],
           timeout=60)
    consumed = hosts.workdir / "consumed.jsonl"
    h4.run([sys.executable, WORKLOAD, "consume", "--bootstrap", bootstrap, "--topic", "t",
            "--partitions", "4", "--out", str(consumed), "--timeout", "30"], timeout=60)
    p, c = read_events(produced), read_events(consumed)
    done = p[-1]
    assert done["ev"] == "done" and done["failed"] == 0 and done["acked"] == done["sent"]
    assert done["acked"] > 500
    v = verify(p, c)
    assert v.problems() == [] and v.acked == v.consumed == done["acked"]
    assert {e["p"] for e in p if e.get("ev") == "ack"} == {0, 1, 2, 3}


def test_cleanup_kills_everything_and_removes_every_namespace(tmp_path: Path) -> None:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                  check=True).stdout
    net = netns.make_network(3, tmp_path)
    try:
        h1, h2, h3 = net.hosts
        running = echo_server(h1)
        stopped = echo_server(h2)
        h2.stop_process(stopped)
        # a grandchild the harness never saw: found through the namespace
        pidfile = tmp_path / "child.pid"
        h3.launch("parent", ["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"])
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 10,
                 "the grandchild")
        grandchild = int(pidfile.read_text())
        assert len(net.remaining()) == 4
        h1.cut()
    finally:
        net.cleanup()
    assert net.remaining() == []
    for pid in (running.pid, stopped.pid, grandchild):
        assert not Path(f"/proc/{pid}").exists() or \
            "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    assert not any(ns.startswith(net.prefix) for ns in netns.list_namespaces())
    links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                 check=True).stdout
    assert len(links_after.splitlines()) == len(links_before.splitlines())
    net.cleanup()  # idempotent


def test_sweep_removes_leftovers_of_dead_runs_only(tmp_path: Path) -> None:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = netns.make_network(1, tmp_path / "live")
    stale = Network(f"{netns.TEST_BASE}{dead.pid}x1", 2, workdir=tmp_path / "stale")
    stale.create(register=False)
    orphan = None
    try:
        # a process a crashed run left behind inside its namespace
        orphan = subprocess.Popen(stale.hosts[0].command(["sleep", "600"]),
                                  start_new_session=True)
        wait_for(lambda: orphan.pid in netns.namespace_pids(stale.hosts[0].namespace), 10,
                 "the orphan in its namespace")
        removed = netns.sweep()
        assert sorted(removed) == sorted([stale.switch, *(h.namespace for h in stale.hosts)])
        assert orphan.wait(5) == -9
        assert stale.remaining() == []
        assert len(live.remaining()) == 2
    finally:
        stale.cleanup()
        live.cleanup()
        if orphan is not None and orphan.poll() is None:
            orphan.kill()
            orphan.wait()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_without_root_the_reason_to_skip_is_clear() -> None:
    if os.geteuid() != 0:
        assert "root" in (netns.unavailable_reason() or "")
        return
    code = "import netns; print(netns.unavailable_reason())"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).parent, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "need root" in r.stdout, r.stdout
