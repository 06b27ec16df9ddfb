"""Network and process faults on a replicated cluster spread over hosts (network namespaces).

Layout: the metadata service on h1, brokers 1-3 on h2-h4, clients on h5 (for the metadata
quorum test: three metadata nodes on h1-h3, brokers on h4-h6, clients on h7). Topic ``events``
has 3 partitions, replication factor 3, ``min.insync.replicas=2``; producers use
``acks=all`` and put (writer, sequence number) in every value, logging each acknowledged
(partition, offset, seq) to a file (see netns_workload.py). The invariant checked after
every fault: each acknowledged record is read back exactly once, at its acknowledged offset,
in order per partition (duplicates are counted, and allowed only without an idempotent
producer). Recovery times are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import inspect
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess
from netns import Host, Network
from netns_workload import read_events, recovery_seconds, verify

pytestmark = pytest.mark.netns

WORKLOAD = str(Path(__file__).with_name("netns_workload.py"))
TOPIC = "events"
PARTITIONS = 3
BROKER_OVERRIDES = {
    # a dead broker's session ends (and the controller reacts) within 3 s
    "zookeeper.session.timeout.ms": "3000",
    # a follower that stopped fetching leaves the ISR within 3 s
    "replica.lag.time.max.ms": "3000",
    # a fetch to a leader that went silent gives up after 5 s, not 30
    "replica.socket.timeout.ms": "5000",
    "min.insync.replicas": "2",
    "default.replication.factor": "3",
    "unclean.leader.election.enable": "false",
}
NOT_ENOUGH = {"NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND"}


def idempotence_available() -> bool:
    from moldau.clients import Producer

    return "enable_idempotence" in inspect.signature(Producer).parameters


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(interval)


@dataclass
class ProducerRun:
    """A producer script running on a host until ``stop()``."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    idempotent: bool

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.out)

    def acked(self, after: float = 0.0) -> int:
        return sum(1 for e in self.events() if e.get("ev") == "ack" and e["ts"] >= after)

    def wait_acked(self, n: int, timeout: float, after: float = 0.0) -> None:
        wait_for(lambda: self.acked(after) >= n or self.popen.poll() is not None, timeout,
                 f"{n} acks for {self.name}")
        assert self.popen.poll() is None, f"producer {self.name} exited early"

    def stop(self, timeout: float = 40.0) -> list[dict[str, Any]]:
        """SIGTERM: the script stops sending, waits for what is in flight, logs ``done``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout)
        events = self.events()
        assert events and events[-1].get("ev") == "done", f"{self.name} did not finish"
        return events


@dataclass
class Cluster:
    net: Network
    client: Host
    broker_hosts: dict[int, Host]
    brokers: dict[int, DaemonProcess] = field(default_factory=dict)
    runs: int = 0

    def bootstrap(self, only: Iterable[int] | None = None) -> str:
        ids = sorted(self.brokers) if only is None else list(only)
        return ",".join(f"{self.broker_hosts[b].address}:9092" for b in ids)

    def workload(self, *args: str, host: Host | None = None,
                 timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return (host or self.client).run([sys.executable, WORKLOAD, *args], timeout=timeout,
                                         check=False)

    def describe(self, via: Iterable[int] | None = None) -> dict[int, dict[str, Any]] | None:
        """Partition -> leader/epoch/replicas/isr as the brokers ``via`` report it, or None
        if none answered."""
        r = self.workload("describe", "--bootstrap", self.bootstrap(via), "--topic", TOPIC)
        try:
            d = json.loads(r.stdout)
        except json.JSONDecodeError:
            return None
        if "error" in d:
            return None
        return {int(p): v for p, v in d.items()}

    def leader(self, partition: int, via: Iterable[int] | None = None) -> int:
        d = wait_for(lambda: self.describe(via), 10, "a metadata answer")
        return int(d[partition]["leader"])

    def leader_other_than(self, old: int, partition: int, via: Iterable[int],
                          timeout: float = 10.0) -> int:
        """Wait until the brokers ``via`` report a leader of ``partition`` other than ``old``."""
        def other() -> int:
            d = self.describe(via)
            lead = -1 if d is None else int(d[partition]["leader"])
            return lead if lead not in (old, -1) else 0
        return int(wait_for(other, timeout, f"a leader of partition {partition} "
                                            f"other than {old}"))

    def in_sync(self, via: Iterable[int] | None = None) -> bool:
        d = self.describe(via)
        return d is not None and all(
            v["leader"] >= 0 and sorted(v["isr"]) == sorted(v["replicas"]) for v in d.values())

    def wait_in_sync(self, timeout: float, via: Iterable[int] | None = None) -> float:
        start = time.monotonic()
        wait_for(lambda: self.in_sync(via), timeout, "every replica back in sync",
                 interval=0.3)
        return time.monotonic() - start

    def producer(self, name: str, host: Host | None = None, **opts: Any) -> ProducerRun:
        self.runs += 1
        out = self.net.workdir / f"produced-{name}-{self.runs}.jsonl"
        idem = idempotence_available()
        args = {"duration": 120, "rate": 200, "window": 2000, "acks": "all",
                "request-timeout-ms": 3000, "delivery-timeout-ms": 30000, "grace": 25,
                "writer": name}
        args.update({k.replace("_", "-"): v for k, v in opts.items()})
        argv = [sys.executable, WORKLOAD, "produce", "--bootstrap", self.bootstrap(),
                "--topic", TOPIC, "--partitions", str(PARTITIONS), "--out", str(out),
                "--idempotence" if idem else "--no-idempotence"]
        for k, v in args.items():
            argv += [f"--{k}", str(v)]
        p = (host or self.client).launch(f"producer-{name}-{self.runs}", argv)
        return ProducerRun(name, p, out, idem)

    def consume_all(self, via: Iterable[int] | None = None) -> list[dict[str, Any]]:
        self.runs += 1
        out = self.net.workdir / f"consumed-{self.runs}.jsonl"
        r = self.workload("consume", "--bootstrap", self.bootstrap(via), "--topic", TOPIC,
                          "--partitions", str(PARTITIONS), "--out", str(out),
                          "--timeout", "30", timeout=60)
        assert r.returncode == 0, f"read-back failed:\n{r.stdout}{r.stderr}"
        return read_events(out)

    def restart(self, broker_id: int) -> DaemonProcess:
        return self.brokers[broker_id].start()


def check(produced: Iterable[list[dict[str, Any]]], consumed: list[dict[str, Any]],
          idempotent: bool) -> None:
    events = [e for run in produced for e in run]
    v = verify(events, consumed)
    print(f"acknowledged {v.acked}, read back {v.consumed} "
          f"({v.unacked_present} written without an ack, {len(v.duplicates)} duplicates)")
    assert v.acked > 0
    assert v.problems(duplicates_allowed=not idempotent) == []


@pytest.fixture
def cluster(make_network: Callable[..., Network]) -> Cluster:
    net = make_network(5)
    h1, h2, h3, h4, h5 = net.hosts
    md = h1.metadata()
    extra: list[str] = []
    for k, v in BROKER_OVERRIDES.items():
        extra += ["--override", f"{k}={v}"]
    c = Cluster(net, h5, {1: h2, 2: h3, 3: h4})
    for b, h in c.broker_hosts.items():
        c.brokers[b] = h.broker(b, md.address, extra=extra)
    r = c.workload("create", "--bootstrap", c.bootstrap(), "--topic", TOPIC,
                   "--partitions", str(PARTITIONS), "--replication-factor", "3",
                   "--config", "min.insync.replicas=2")
    if r.returncode != 0:
        if "replication factor above 1" in r.stdout:
            pytest.skip("waiting for the replicated cluster: topics with a replication "
                        "factor above 1 are still refused")
        raise AssertionError(f"topic creation failed: {r.stdout}{r.stderr}")
    c.wait_in_sync(20)
    return c


@pytest.mark.timeout(120)
def test_sigkill_of_a_partition_leader_loses_nothing_acknowledged(cluster: Cluster) -> None:
    prod = cluster.producer("main")
    prod.wait_acked(400, 20)
    victim = cluster.leader(0)
    cluster.brokers[victim].kill()
    fault_at = time.time()

    rec = wait_for(lambda: recovery_seconds(prod.events(), fault_at, range(PARTITIONS)),
                   12, "producing to every partition after the leader's SIGKILL")
    print(f"leader {victim} SIGKILLed: every partition acknowledged new records after "
          f"{rec:.2f}s")
    assert rec <= 10.0
    cluster.leader_other_than(victim, 0, via=[b for b in cluster.brokers if b != victim])

    cluster.restart(victim)
    took = cluster.wait_in_sync(30)
    print(f"broker {victim} restarted and back in every ISR after {took:.2f}s")
    prod.wait_acked(200, 15, after=time.time())
    check([prod.stop()], cluster.consume_all(), prod.idempotent)


@pytest.mark.timeout(150)
@pytest.mark.slow
def test_an_isolated_leader_loses_no_acknowledged_write_and_follows_after_heal(
        cluster: Cluster) -> None:
    victim = cluster.leader(0)
    vhost = cluster.broker_hosts[victim]
    others = [b for b in cluster.brokers if b != victim]
    main = cluster.producer("main")
    # a client on the leader's own host: once cut off, it can only reach the isolated side
    stranded = cluster.producer("stranded", host=vhost)
    main.wait_acked(300, 20)
    stranded.wait_acked(300, 20)

    vhost.cut()
    fault_at = time.time()
    # the client host can't reach the isolated leader, so partition 0 acknowledging records
    # sent after the cut means a new leader serves it
    rec = wait_for(lambda: recovery_seconds(main.events(), fault_at, range(PARTITIONS)),
                   12, "producing to every partition after the cut")
    new_leader = cluster.leader_other_than(victim, 0, via=others)
    print(f"leader {victim} cut off: every partition acknowledged new records after "
          f"{rec:.2f}s; broker {new_leader} leads partition 0")
    assert rec <= 10.0
    time.sleep(2)  # let the isolated side try to take writes
    isolated_acks = stranded.acked(after=fault_at + 0.5)
    print(f"acknowledged on the isolated side while cut: {isolated_acks}")

    vhost.heal()
    took = cluster.wait_in_sync(30)
    print(f"broker {victim} healed and back in every ISR after {took:.2f}s")
    main.wait_acked(200, 15, after=time.time())
    runs = [main.stop(), stranded.stop()]
    check(runs, cluster.consume_all(), main.idempotent)

    # the old leader truncated what it alone had and follows: with the others gone it
    # leads every partition and still serves exactly the acknowledged records
    for b in others:
        cluster.brokers[b].kill()
    wait_for(lambda: (d := cluster.describe(via=[victim])) is not None
             and all(v["leader"] == victim for v in d.values()), 20,
             f"broker {victim} leading every partition alone")
    check(runs, cluster.consume_all(via=[victim]), main.idempotent)


@pytest.mark.timeout(120)
def test_two_of_three_brokers_down_refuses_acks_all_then_resumes(cluster: Cluster) -> None:
    prod = cluster.producer("main", delivery_timeout_ms=6000)
    prod.wait_acked(400, 20)
    survivor, *victims = sorted(cluster.brokers)
    for b in victims:
        cluster.brokers[b].kill()
    fault_at = time.time()

    refused = wait_for(lambda: [e for e in prod.events()
                                if e.get("ev") == "err" and e["ts"] >= fault_at
                                and e["code"] in NOT_ENOUGH], 25,
                       "NOT_ENOUGH_REPLICAS for acks=all")
    print(f"brokers {victims} SIGKILLed: acks=all refused with {refused[0]['code']} "
          f"{refused[0]['t'] - fault_at:.2f}s later")
    late = [e for e in prod.events() if e.get("ev") == "ack" and e["ts"] > fault_at]
    assert late == [], f"acknowledged with one replica alive: {late[:5]}"

    cluster.restart(victims[0])
    back_at = time.time()
    prod.wait_acked(200, 25, after=back_at)
    resumed = recovery_seconds(prod.events(), back_at, range(PARTITIONS))
    print(f"broker {victims[0]} restarted: acks=all resumed on every partition after "
          f"{resumed:.2f}s" if resumed is not None else "resumed on some partitions")
    assert resumed is not None
    check([prod.stop()], cluster.consume_all(via=[survivor, victims[0]]), prod.idempotent)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_a_rolling_restart_under_load_loses_nothing_acknowledged(cluster: Cluster) -> None:
    prod = cluster.producer("main")
    prod.wait_acked(300, 20)
    for b in sorted(cluster.brokers):
        start = time.monotonic()
        code = cluster.brokers[b].stop()
        assert code == 0, f"broker {b} did not shut down cleanly ({code})"
        cluster.restart(b)
        cluster.wait_in_sync(40)
        print(f"broker {b}: stopped, restarted and back in sync in "
              f"{time.monotonic() - start:.2f}s")
        prod.wait_acked(100, 15, after=time.time())
    check([prod.stop()], cluster.consume_all(), prod.idempotent)


@dataclass
class QuorumCluster:
    cluster: Cluster
    md_hosts: dict[int, Host]
    md: dict[int, DaemonProcess]

    @property
    def servers(self) -> str:
        return ",".join(f"{h.address}:2181" for h in self.md_hosts.values())

    def md_leader(self, among: Iterable[int] | None = None) -> int:
        """The metadata leader the running nodes ``among`` agree on, or 0."""
        ids = list(among) if among is not None else [i for i, d in self.md.items()
                                                     if d.alive()]
        r = self.cluster.workload("md-leader", "--servers", self.servers)
        try:
            seen = json.loads(r.stdout)
        except json.JSONDecodeError:
            return 0
        views = {seen[f"{self.md_hosts[i].address}:2181"] for i in ids}
        return int(views.pop()) if len(views) == 1 and None not in views else 0


@pytest.fixture
def quorum_cluster(make_network: Callable[..., Network]) -> QuorumCluster:
    """Three metadata nodes (h1-h3) in a quorum, brokers 1-3 on h4-h6, clients on h7."""
    net = make_network(7)
    md_hosts = {i: net.hosts[i - 1] for i in (1, 2, 3)}
    peers = ",".join(f"{i}={h.address}:2888" for i, h in md_hosts.items())
    md = {i: h.metadata(extra=["--id", str(i), "--peers", peers])
          for i, h in md_hosts.items()}
    zookeeper = ",".join(d.address for d in md.values())
    extra: list[str] = []
    # sessions must outlive a metadata leader election
    for k, v in {**BROKER_OVERRIDES, "zookeeper.session.timeout.ms": "6000"}.items():
        extra += ["--override", f"{k}={v}"]
    c = Cluster(net, net.hosts[6], {1: net.hosts[3], 2: net.hosts[4], 3: net.hosts[5]})
    for b, h in c.broker_hosts.items():
        c.brokers[b] = h.broker(b, zookeeper, extra=extra)
    r = c.workload("create", "--bootstrap", c.bootstrap(), "--topic", TOPIC,
                   "--partitions", str(PARTITIONS), "--replication-factor", "3",
                   "--config", "min.insync.replicas=2")
    assert r.returncode == 0, f"topic creation failed: {r.stdout}{r.stderr}"
    c.wait_in_sync(20)
    return QuorumCluster(c, md_hosts, md)


def longest_pause(events: list[dict[str, Any]], start: float, end: float) -> float:
    """The longest time without any acknowledgement between ``start`` and ``end``."""
    times = sorted(e["t"] for e in events if e.get("ev") == "ack" and start <= e["t"] <= end)
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


@pytest.mark.timeout(150)
@pytest.mark.slow
def test_killing_the_metadata_leader_keeps_the_cluster_serving(
        quorum_cluster: QuorumCluster) -> None:
    q, c = quorum_cluster, quorum_cluster.cluster
    prod = c.producer("main")
    prod.wait_acked(300, 20)
    old = wait_for(q.md_leader, 10, "an agreed metadata leader")
    q.md[old].kill()
    fault_at = time.time()

    rest = [i for i in q.md if i != old]
    new = wait_for(lambda: (lead := q.md_leader(rest)) != old and lead, 10,
                   "a new metadata leader")
    elected = time.time() - fault_at
    rec = wait_for(lambda: recovery_seconds(prod.events(), fault_at, range(PARTITIONS)),
                   12, "producing to every partition after the metadata leader died")
    assert rec <= 10.0
    # consuming works on the failed-over cluster
    acked_before = prod.acked()
    mid = c.consume_all()
    assert sum(1 for r in mid if "ev" not in r) >= acked_before
    # and so does creating a topic, which writes to the metadata quorum
    created = wait_for(
        lambda: c.workload("create", "--bootstrap", c.bootstrap(), "--topic", "after",
                           "--partitions", "2", "--replication-factor", "3"
                           ).returncode == 0, 20, "a topic created after the failover")
    assert created
    pause = longest_pause(prod.events(), fault_at - 1.0, time.time())
    print(f"metadata leader {old} SIGKILLed: node {new} leads after {elected:.2f}s; "
          f"new records acknowledged on every partition after {rec:.2f}s; longest pause in "
          f"acknowledgements {pause:.2f}s; topic created after the failover")
    assert pause <= 10.0

    q.md[old].start()
    wait_for(lambda: q.md_leader() > 0, 15,
             f"metadata node {old} back, agreeing with the others on the leader")
    prod.wait_acked(200, 15, after=time.time())
    check([prod.stop()], c.consume_all(), prod.idempotent)
