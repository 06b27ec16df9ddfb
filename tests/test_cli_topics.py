"""``moldau topics`` against real daemons, over ``--zookeeper`` and ``--bootstrap-server``:
the course's create/list/describe, Kafka's output format and Kafka's error messages."""

from __future__ import annotations

import re
import time

from harness import Processes
from test_cli_common import assert_one_line_error, moldau

DESCRIBE_HEAD = re.compile(
    r"^Topic: (?P<name>\S+)\tTopicId: \S+\tPartitionCount: (?P<count>\d+)\t"
    r"ReplicationFactor: (?P<rf>\d+)\tConfigs: (?P<configs>\S*)$")
DESCRIBE_PART = re.compile(
    r"^\tTopic: (?P<name>\S+)\tPartition: (?P<p>\d+)\tLeader: (?P<leader>\S+)\t"
    r"Replicas: (?P<replicas>[\d,]+)\tIsr: (?P<isr>[\d,]*)$")


def _addresses(cluster: Processes) -> tuple[str, str]:
    return cluster.daemons[0].address, cluster.daemons[1].address


def _describe(where: list[str], topic: str) -> list[str]:
    r = moldau("topics", "--describe", "--topic", topic, *where)
    assert r.returncode == 0, r.stderr
    return r.stdout.rstrip("\n").split("\n")


def _check_describe(lines: list[str], topic: str, partitions: int,
                    configs: str | None = None) -> None:
    head = DESCRIBE_HEAD.match(lines[0])
    assert head, lines[0]
    assert head["name"] == topic
    assert int(head["count"]) == partitions and head["rf"] == "1"
    if configs is not None:
        assert head["configs"] == configs
    assert len(lines) == 1 + partitions, lines
    for p, line in enumerate(lines[1:]):
        m = DESCRIBE_PART.match(line)
        assert m, repr(line)
        assert m["name"] == topic and int(m["p"]) == p
        assert m["leader"] == "1" and m["replicas"] == "1" and m["isr"] == "1"


def test_course_create_list_describe_over_zookeeper(cluster: Processes) -> None:
    zk, bootstrap = _addresses(cluster)
    # the course's command, hosts changed (two metadata addresses: the second one is down)
    r = moldau("topics", "--create", "--zookeeper", f"{zk},127.0.0.1:1",
               "--replication-factor", "1", "--partitions", "3", "--topic", "course")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Created topic course.\n"
    r = moldau("topics", "--list", "--zookeeper", zk)
    assert r.returncode == 0, r.stderr
    assert "course" in r.stdout.split("\n")
    _check_describe(_describe(["--zookeeper", zk], "course"), "course", 3)
    # the brokers see the topic created behind their back
    deadline = time.monotonic() + 15
    while True:
        lines = _describe(["--bootstrap-server", bootstrap], "course")
        if DESCRIBE_HEAD.match(lines[0]) and len(lines) == 4:
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.2)
    _check_describe(lines, "course", 3)
    r = moldau("topics", "--list", "--bootstrap-server", bootstrap)
    assert "course" in r.stdout.split("\n")


def test_create_over_bootstrap_with_config(cluster: Processes) -> None:
    zk, bootstrap = _addresses(cluster)
    r = moldau("topics", "--create", "--bootstrap-server", bootstrap, "--topic", "cfg",
               "--partitions", "2", "--replication-factor", "1",
               "--config", "retention.ms=60000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Created topic cfg.\n"
    lines = _describe(["--zookeeper", zk], "cfg")
    _check_describe(lines, "cfg", 2, configs="retention.ms=60000")
    lines = _describe(["--bootstrap-server", bootstrap], "cfg")
    _check_describe(lines, "cfg", 2)
    assert "retention.ms=60000" in lines[0]


def test_create_errors_are_kafkas(cluster: Processes) -> None:
    zk, bootstrap = _addresses(cluster)
    for where in (["--zookeeper", zk], ["--bootstrap-server", bootstrap]):
        name = f"dup-{where[0].strip('-')}"
        r = moldau("topics", "--create", *where, "--topic", name, "--partitions", "1",
                   "--replication-factor", "1")
        assert r.returncode == 0, r.stderr
        r = moldau("topics", "--create", *where, "--topic", name, "--partitions", "1",
                   "--replication-factor", "1")
        assert_one_line_error(r)
        assert r.stderr == (f"Error while executing topic command : Topic '{name}' already "
                            "exists.\n")
        r = moldau("topics", "--create", *where, "--topic", name, "--partitions", "1",
                   "--if-not-exists")
        assert r.returncode == 0 and r.stderr == ""
        r = moldau("topics", "--create", *where, "--topic", "rf3", "--partitions", "1",
                   "--replication-factor", "3")
        assert_one_line_error(r, "Replication factor: 3 larger than available brokers: 1")
        r = moldau("topics", "--create", *where, "--topic", "bad/name", "--partitions", "1")
        assert_one_line_error(r, "illegal")
        r = moldau("topics", "--create", *where, "--topic", "zero", "--partitions", "0",
                   "--replication-factor", "1")
        assert_one_line_error(r, "partitions must be greater than 0")
        r = moldau("topics", "--describe", *where, "--topic", "no-such-topic")
        assert_one_line_error(r, "Topic 'no-such-topic' does not exist as expected")
        r = moldau("topics", "--delete", *where, "--topic", "no-such-topic")
        assert_one_line_error(r, "does not exist")
        r = moldau("topics", "--delete", *where, "--topic", "no-such-topic", "--if-exists")
        assert r.returncode == 0, r.stderr


def test_replication_up_to_the_live_brokers(procs: Processes) -> None:
    md = procs.metadata()
    procs.broker(1, md.address)
    b2 = procs.broker(2, md.address)
    for where in (["--zookeeper", md.address], ["--bootstrap-server", b2.address]):
        name = f"rf2-{where[0].strip('-')}"
        r = moldau("topics", "--create", *where, "--topic", name, "--partitions", "1",
                   "--replication-factor", "2")
        assert r.returncode == 0, r.stderr
        r = moldau("topics", "--create", *where, "--topic", f"{name}-3", "--partitions", "1",
                   "--replication-factor", "3")
        assert_one_line_error(r, "Replication factor: 3 larger than available brokers: 2.")


def test_alter_delete_and_under_replicated(cluster: Processes) -> None:
    zk, bootstrap = _addresses(cluster)
    assert moldau("topics", "--create", "--zookeeper", zk, "--topic", "grow",
                  "--partitions", "2", "--replication-factor", "1").returncode == 0
    r = moldau("topics", "--alter", "--zookeeper", zk, "--topic", "grow", "--partitions", "4")
    assert r.returncode == 0, r.stderr
    _check_describe(_describe(["--zookeeper", zk], "grow"), "grow", 4)
    r = moldau("topics", "--alter", "--bootstrap-server", bootstrap, "--topic", "grow",
               "--partitions", "3")
    assert_one_line_error(r, "can only be increased")
    # nothing is under-replicated with one replica per partition: no lines at all
    r = moldau("topics", "--describe", "--zookeeper", zk, "--under-replicated-partitions")
    assert r.returncode == 0 and r.stdout == "", r.stdout
    r = moldau("topics", "--delete", "--bootstrap-server", bootstrap, "--topic", "grow")
    assert r.returncode == 0, r.stderr
    assert moldau("topics", "--create", "--zookeeper", zk, "--topic", "gone",
                  "--partitions", "1").returncode == 0
    r = moldau("topics", "--delete", "--zookeeper", zk, "--topic", "gone")
    assert r.returncode == 0 and r.stdout == "Topic gone is marked for deletion.\n", r.stderr
    for where in (["--zookeeper", zk], ["--bootstrap-server", bootstrap]):
        deadline = time.monotonic() + 15
        while True:
            listed = moldau("topics", "--list", *where).stdout.split("\n")
            if "grow" not in listed and "gone" not in listed:
                break
            assert time.monotonic() < deadline, f"topics not deleted: {listed}"
            time.sleep(0.2)
