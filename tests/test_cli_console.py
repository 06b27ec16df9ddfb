"""The course's console exchange: ``moldau console-producer`` in one "terminal", ``moldau
console-consumer --from-beginning`` in another, lines arriving in real time."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import time

import pytest
from harness import Processes
from test_cli_common import LineReader, moldau, popen, stderr_of, terminate


def _create(zk: str, topic: str, partitions: int = 3) -> None:
    r = moldau("topics", "--create", "--zookeeper", zk, "--replication-factor", "1",
               "--partitions", str(partitions), "--topic", topic)
    assert r.returncode == 0, r.stderr


def _bootstrap_sees(bootstrap: str, topic: str) -> None:
    """Wait until the broker serves the topic (created behind its back, through the tree)."""
    deadline = time.monotonic() + 15
    while True:
        r = moldau("topics", "--describe", "--bootstrap-server", bootstrap, "--topic", topic)
        if r.returncode == 0 and "Leader: 1" in r.stdout:
            return
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)


@pytest.mark.timeout(90)
def test_two_terminals_exchange_lines_in_real_time(cluster: Processes) -> None:
    zk, bootstrap = cluster.daemons[0].address, cluster.daemons[1].address
    _create(zk, "chat")
    _bootstrap_sees(bootstrap, "chat")
    consumer = popen("console-consumer", "--bootstrap-server", bootstrap, "--topic", "chat",
                     "--from-beginning")
    producer = popen("console-producer", "--broker-list", bootstrap, "--topic", "chat")
    try:
        assert producer.stdin is not None and consumer.stdout is not None
        out = LineReader(consumer.stdout)
        rng = random.Random()
        seed = rng.randrange(2**32)
        print("seed", seed)
        rng.seed(seed)

        def say(line: str, timeout: float) -> None:
            assert producer.stdin is not None
            producer.stdin.write(line.encode() + b"\n")
            producer.stdin.flush()
            try:
                got = out.get(timeout)
            except queue.Empty:
                raise AssertionError(f"{line!r} not consumed within {timeout} s") from None
            assert got == line.encode() + b"\n"

        # the first line also waits for both processes to start and connect
        say("hello from terminal 1", 20)
        for i in range(10):
            say(f"line {i}: {rng.random()} 안녕하세요", 2)
        producer.stdin.close()
        assert producer.wait(20) == 0, stderr_of(producer)
        consumer.send_signal(signal.SIGINT)  # Ctrl-C in the consumer's terminal
        assert consumer.wait(15) == 130
        err = stderr_of(consumer)
        assert err.strip().splitlines() == ["Processed a total of 11 messages"], err
    finally:
        terminate(producer)
        terminate(consumer)


def test_piped_input_max_messages_and_keys(cluster: Processes) -> None:
    zk, bootstrap = cluster.daemons[0].address, cluster.daemons[1].address
    _create(zk, "keyed", partitions=1)
    _bootstrap_sees(bootstrap, "keyed")
    lines = [f"k{i}:value {i}" for i in range(500)]
    r = moldau("console-producer", "--bootstrap-server", bootstrap, "--topic", "keyed",
               "--property", "parse.key=true", "--property", "key.separator=:",
               input="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # no '>' prompt when stdin is not a terminal
    r = moldau("console-consumer", "--bootstrap-server", bootstrap, "--topic", "keyed",
               "--from-beginning", "--max-messages", "7", "--property", "print.key=true",
               "--property", "key.separator=:", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines[:7]
    assert r.stderr.strip().endswith("Processed a total of 7 messages")
    # all 500 are there, in order, values only by default
    r = moldau("console-consumer", "--bootstrap-server", bootstrap, "--topic", "keyed",
               "--from-beginning", "--max-messages", "500", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [line.split(":", 1)[1] for line in lines]
    # one partition from an offset, with partition and offset columns
    r = moldau("console-consumer", "--bootstrap-server", bootstrap, "--topic", "keyed",
               "--partition", "0", "--offset", "498", "--max-messages", "2",
               "--property", "print.offset=true", "--property", "print.partition=true",
               timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Partition:0\tOffset:498\tvalue 498",
                                     "Partition:0\tOffset:499\tvalue 499"]
    # a line without the separator is refused, as Kafka does
    r = moldau("console-producer", "--bootstrap-server", bootstrap, "--topic", "keyed",
               "--property", "parse.key=true", input="no separator here\n")
    assert r.returncode != 0
    assert "No key separator found on line number 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_timeout_ms_and_unknown_topic(cluster: Processes) -> None:
    zk, bootstrap = cluster.daemons[0].address, cluster.daemons[1].address
    _create(zk, "quiet", partitions=2)
    _bootstrap_sees(bootstrap, "quiet")
    r = moldau("console-consumer", "--bootstrap-server", bootstrap, "--topic", "quiet",
               "--timeout-ms", "1000", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "Processed a total of 0 messages" in r.stderr
    r = moldau("console-producer", "--bootstrap-server", bootstrap, "--topic", "missing",
               input="x\n", timeout=60)
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "missing" in r.stderr, r.stderr


def test_group_is_accepted_with_a_note(cluster: Processes) -> None:
    zk, bootstrap = cluster.daemons[0].address, cluster.daemons[1].address
    _create(zk, "grouped", partitions=1)
    _bootstrap_sees(bootstrap, "grouped")
    assert moldau("console-producer", "--bootstrap-server", bootstrap, "--topic", "grouped",
                  input="a\nb\n").returncode == 0
    r = moldau("console-consumer", "--bootstrap-server", bootstrap, "--topic", "grouped",
               "--group", "g1", "--from-beginning", "--max-messages", "2", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a\nb\n"
    assert "groups" in r.stderr


def test_ctrl_c_exits_cleanly(cluster: Processes) -> None:
    zk, bootstrap = cluster.daemons[0].address, cluster.daemons[1].address
    _create(zk, "interrupted", partitions=1)
    _bootstrap_sees(bootstrap, "interrupted")
    consumer = popen("console-consumer", "--bootstrap-server", bootstrap, "--topic",
                     "interrupted", stdin=subprocess.DEVNULL)
    producer = popen("console-producer", "--bootstrap-server", bootstrap, "--topic",
                     "interrupted")
    try:
        time.sleep(2)  # both connected and waiting: for records, for input
        for p in (consumer, producer):
            p.send_signal(signal.SIGINT)
        for p in (consumer, producer):
            assert p.wait(15) == 130
        assert stderr_of(consumer).strip() == "Processed a total of 0 messages"
        assert stderr_of(producer) == ""
    finally:
        terminate(consumer)
        terminate(producer)
