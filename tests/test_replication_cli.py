"""The console tools on a replicated cluster: ``topics --create`` with a replication factor
and topic configs, ``--describe`` in Kafka's format with leaders, replicas and ISRs,
``--under-replicated-partitions``, and ``console-producer`` with acks=all."""

from __future__ import annotations

import re
import time

import pytest
from harness import Processes
from test_cli_common import moldau
from test_replication_helpers import SESSION_MS, Cluster

from moldau.clients.consumer import Consumer
from moldau.clients.types import TopicPartition

PART = re.compile(r"^\tTopic: (?P<name>\S+)\tPartition: (?P<p>\d+)\tLeader: (?P<leader>\S+)\t"
                  r"Replicas: (?P<replicas>[\d,]+)\tIsr: (?P<isr>[\d,]*)(?P<rest>.*)$")


def describe(where: list[str], topic: str, *flags: str) -> list[str]:
    r = moldau("topics", "--describe", "--topic", topic, *where, *flags)
    assert r.returncode == 0, r.stderr
    return [x for x in r.stdout.split("\n") if x]


def partitions(lines: list[str]) -> list[re.Match[str]]:
    out = [PART.match(x) for x in lines if x.startswith("\t")]
    assert all(out), lines
    return out  # type: ignore[return-value]


def wait_describe(where: list[str], topic: str, check, timeout: float = 15.0,  # type: ignore[no-untyped-def]
                  *flags: str) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = describe(where, topic, *flags)
        if check(lines):
            return lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)


def full(lines: list[str]) -> bool:
    ps = partitions(lines)
    return bool(ps) and all(sorted(m["isr"].split(",")) == sorted(m["replicas"].split(","))
                            for m in ps)


@pytest.mark.timeout(90)
async def test_topics_and_console_producer_on_three_brokers(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    boot = ["--bootstrap-server", cluster.bootstrap]
    zk = ["--zookeeper", cluster.zk]
    for where, name in ((boot, "course"), (zk, "course-zk")):
        r = moldau("topics", "--create", *where, "--topic", name, "--partitions", "3",
                   "--replication-factor", "3", "--config", "min.insync.replicas=2")
        assert (r.returncode, r.stdout) == (0, f"Created topic {name}.\n"), r.stderr
        lines = wait_describe(boot, name, full)
        assert lines[0].startswith(f"Topic: {name}\tTopicId: ")
        assert "\tReplicationFactor: 3\t" in lines[0]
        assert "min.insync.replicas=2" in lines[0]
        ps = partitions(lines)
        assert [int(m["p"]) for m in ps] == [0, 1, 2]
        for m in ps:
            replicas = m["replicas"].split(",")
            assert sorted(replicas) == ["1", "2", "3"]
            assert m["leader"] == replicas[0]
        assert sorted(m["leader"] for m in ps) == ["1", "2", "3"]
        # the metadata tree says the same
        assert partitions(describe(zk, name)) and full(describe(zk, name))

    # the console producer with acks=all, both spellings
    r = moldau("console-producer", "--bootstrap-server", cluster.bootstrap, "--topic",
               "course", "--producer-property", "acks=all", input="one\ntwo\nthree\n")
    assert r.returncode == 0, r.stderr
    r = moldau("console-producer", "--broker-list", cluster.bootstrap, "--topic", "course",
               "--request-required-acks", "all", input="four\nfive\n")
    assert r.returncode == 0, r.stderr
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest",
                        fetch_max_wait_ms=100) as consumer:
        consumer.assign([TopicPartition("course", p) for p in range(3)])
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < 5:
            assert time.monotonic() < deadline, got
            got += [r.value for r in await consumer.poll(timeout_ms=200)]
    assert sorted(got) == sorted([b"one", b"two", b"three", b"four", b"five"])

    # a broker goes: its partitions are under-replicated, none unavailable
    assert describe(boot, "course", "--under-replicated-partitions") == []
    cluster.kill(3)
    lines = wait_describe(boot, "course", lambda ls: len(ls) == 3,
                          SESSION_MS / 1000 + 10, "--under-replicated-partitions")
    for m in partitions(lines):
        assert "3" not in m["isr"].split(",") and m["leader"] in ("1", "2")
    assert describe(boot, "course", "--unavailable-partitions") == []
    # with min.insync.replicas=2 and two brokers left, acks=all still works
    r = moldau("console-producer", "--bootstrap-server", cluster.bootstrap, "--topic",
               "course", "--producer-property", "acks=all", input="six\n")
    assert r.returncode == 0, r.stderr
