"""``moldau local``: the embedded cluster's start/status/stop round trip, the demo, and
``moldau metadata`` against it. Every test stops the cluster it started and kills any PID
left in cluster.json."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Processes
from test_cli_common import assert_one_line_error, moldau


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _recorded_pids(data_dir: Path) -> list[int]:
    try:
        rec = json.loads((data_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        return []
    return [int(p["pid"]) for p in rec["processes"]]


@pytest.fixture
def local_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir for ``moldau local``; whatever runs from it is killed at the end."""
    data_dir = tmp_path / "local"
    seen: set[int] = set()
    try:
        yield data_dir
    finally:
        seen.update(_recorded_pids(data_dir))
        if seen:
            moldau("local", "stop", "--data-dir", str(data_dir), "--grace", "5",
                   home=tmp_path, timeout=60)
        for pid in seen | set(_recorded_pids(data_dir)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _local(data_dir: Path, *args: str, timeout: float = 90) -> tuple[int, str, str]:
    r = moldau("local", *args, "--data-dir", str(data_dir), home=data_dir.parent,
               timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def _start_args(brokers: int, taskmanagers: int = 0) -> list[str]:
    # any free ports: a developer's own cluster may hold 2181/9092/8081
    return ["--brokers", str(brokers), "--metadata-port", "0", "--broker-port", "0",
            "--taskmanagers", str(taskmanagers), "--slots", "1", "--rest-port", "0"]


@pytest.mark.timeout(180)
def test_start_status_stop_purge_round_trip(local_dir: Path) -> None:
    rc, out, err = _local(local_dir, "start", *_start_args(2, taskmanagers=1),
                          "--partitions-default", "3")
    assert rc == 0, err
    assert "bootstrap servers: 127.0.0.1:" in out and "zookeeper: 127.0.0.1:" in out
    rec = json.loads((local_dir / "cluster.json").read_text())
    names = [p["name"] for p in rec["processes"]]
    assert names == ["metadata", "broker-1", "broker-2", "jobmanager", "taskmanager-1"]
    assert all(_pid_alive(p["pid"]) for p in rec["processes"])
    assert rec["bootstrap_servers"].count(",") == 1
    assert (local_dir / "logs" / "broker-2.log").exists()
    assert f"http://{rec['jobmanager_rest']}" in out

    # the TaskManager registered its slot with the JobManager
    deadline = time.monotonic() + 30
    overview: dict[str, object] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{rec['jobmanager_rest']}/overview",
                                        timeout=5) as resp:
                overview = json.loads(resp.read())
            if overview.get("taskmanagers") == 1:
                break
        time.sleep(0.3)
    assert overview.get("taskmanagers") == 1 and overview.get("slots-total") == 1, overview

    rc, out, err = _local(local_dir, "status")
    assert rc == 0, err
    assert out.count("alive") == 5, out

    # a second start refuses while the first runs
    rc, out, err = _local(local_dir, "start", *_start_args(1))
    assert rc != 0 and "already running" in err, err

    # both brokers registered with the metadata node
    r = moldau("metadata", "ls", "/brokers/ids", "--zookeeper", rec["zookeeper"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]
    r = moldau("metadata", "get", "/brokers/ids/2", "--zookeeper", rec["zookeeper"])
    assert r.returncode == 0 and '"port"' in r.stdout, r.stdout
    r = moldau("metadata", "stat", "/brokers/ids/2", "--zookeeper", rec["zookeeper"])
    assert r.returncode == 0 and "ephemeral_owner" in r.stdout, r.stdout
    r = moldau("metadata", "ls", "/no/such/node", "--zookeeper", rec["zookeeper"])
    assert_one_line_error(r, "/no/such/node")

    # a topic over the local cluster's addresses
    r = moldau("topics", "--create", "--bootstrap-server", rec["bootstrap_servers"],
               "--topic", "t", "--partitions", "4", "--replication-factor", "1")
    assert r.returncode == 0, r.stderr
    # without --partitions, the brokers' num.partitions (--partitions-default) applies
    r = moldau("topics", "--create", "--bootstrap-server", rec["bootstrap_servers"],
               "--topic", "dflt")
    assert r.returncode == 0, r.stderr
    r = moldau("topics", "--describe", "--zookeeper", rec["zookeeper"], "--topic", "dflt")
    assert "\tPartitionCount: 3\t" in r.stdout, r.stdout

    pids = _recorded_pids(local_dir)
    rc, out, err = _local(local_dir, "stop")
    assert rc == 0, err
    assert not any(_pid_alive(p) for p in pids)
    assert not (local_dir / "cluster.json").exists()
    rc, out, err = _local(local_dir, "status")
    assert rc != 0 and "no local cluster" in out

    # data survives a stop: a restart finds the topic
    rc, out, err = _local(local_dir, "start", *_start_args(1))
    assert rc == 0, err
    rec = json.loads((local_dir / "cluster.json").read_text())
    r = moldau("topics", "--list", "--zookeeper", rec["zookeeper"])
    assert "t" in r.stdout.split()
    pids = _recorded_pids(local_dir)
    rc, out, err = _local(local_dir, "stop", "--purge")
    assert rc == 0, err
    assert not any(_pid_alive(p) for p in pids)
    assert not local_dir.exists()


@pytest.mark.timeout(120)
def test_status_reports_a_dead_process(local_dir: Path) -> None:
    rc, out, err = _local(local_dir, "start", *_start_args(1))
    assert rc == 0, err
    rec = json.loads((local_dir / "cluster.json").read_text())
    broker = next(p for p in rec["processes"] if p["name"] == "broker-1")
    os.kill(broker["pid"], signal.SIGKILL)
    import time

    deadline = time.monotonic() + 10
    while _pid_alive(broker["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    rc, out, err = _local(local_dir, "status")
    assert rc == 1
    assert "broker-1" in out and "dead" in out and "alive" in out
    rc, out, err = _local(local_dir, "stop")
    assert rc == 0, err
    assert "was not running" in out


@pytest.mark.timeout(180)
def test_demo_prints_back_what_it_sent(local_dir: Path) -> None:
    rc, out, err = _local(local_dir, "demo", *_start_args(1), timeout=150)
    assert rc == 0, err + out
    sent = out.split("sent ", 1)[1].split("read back", 1)[0]
    read = out.split("read back", 1)[1]
    sent_values = [line.split(None, 4)[4] for line in sent.splitlines()[1:] if line.strip()]
    read_values = [line.split(None, 4)[4] for line in read.splitlines()[1:]
                   if line.startswith("  partition")]
    assert sent_values and sorted(sent_values) == sorted(read_values), out
    assert "moldau console-producer --broker-list" in out, out
    # a second run reuses the cluster and the topic
    rc, out2, err = _local(local_dir, "demo", timeout=120)
    assert rc == 0, err + out2
    assert "using the local cluster" in out2 and "topic demo exists" in out2, out2


def test_metadata_ls_shows_broker_ids(cluster: Processes) -> None:
    r = moldau("metadata", "ls", "/brokers/ids", "--zookeeper", cluster.daemons[0].address)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\n"


def test_moldau_metadata_and_broker_run_the_daemons(procs: Processes, tmp_path: Path) -> None:
    """``moldau metadata ...`` and ``moldau broker ...`` exec the daemons with the same
    arguments (same pid: the harness's SIGKILL reaches the daemon itself)."""
    from test_cli_common import MOLDAU

    md = procs.spawn("md-via-cli", [*MOLDAU, "metadata", "--host", "127.0.0.1", "--port", "0",
                                    "--data-dir", str(tmp_path / "md")])
    broker = procs.spawn("broker-via-cli", [
        *MOLDAU, "broker", "--broker-id", "7", "--listeners", "127.0.0.1:0",
        "--log-dirs", str(tmp_path / "b7"), "--zookeeper", md.address])
    r = moldau("metadata", "ls", "/brokers/ids", "--zookeeper", md.address)
    assert r.returncode == 0 and r.stdout == "7\n", r.stderr
    r = moldau("topics", "--list", "--bootstrap-server", broker.address)
    assert r.returncode == 0, r.stderr
    assert broker.stop() == 0  # SIGTERM reaches the broker: a clean exit
    assert md.stop() == 0


@pytest.mark.timeout(120)
def test_start_falls_back_to_free_ports(local_dir: Path) -> None:
    import socket

    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 2181))
        held.listen()
    except OSError:
        held.close()
        pytest.skip("port 2181 is in use here already")
    try:
        rc, _, err = _local(local_dir, "start", "--broker-port", "0")
        assert rc == 0, err
        rec = json.loads((local_dir / "cluster.json").read_text())
        assert not rec["zookeeper"].endswith(":2181")
        r = moldau("metadata", "ls", "/brokers/ids", "--zookeeper", rec["zookeeper"])
        assert r.stdout == "1\n", r.stderr
    finally:
        held.close()


@pytest.mark.timeout(180)
def test_quorum_of_three_and_three_brokers_run_the_course_commands(local_dir: Path) -> None:
    rc, _, err = _local(local_dir, "start", *_start_args(3), "--metadata-nodes", "3")
    assert rc == 0, err
    rec = json.loads((local_dir / "cluster.json").read_text())
    assert [p["name"] for p in rec["processes"]] == [
        "metadata-1", "metadata-2", "metadata-3", "broker-1", "broker-2", "broker-3"]
    assert rec["zookeeper"].count(",") == 2
    r = moldau("topics", "--create", "--zookeeper", rec["zookeeper"], "--replication-factor",
               "3", "--partitions", "1", "--topic", "AWSKafkaTutorialTopic")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while True:
        r = moldau("topics", "--describe", "--zookeeper", rec["zookeeper"], "--topic",
                   "AWSKafkaTutorialTopic")
        if "Isr: " in r.stdout and len(r.stdout.split("Isr: ")[1].split()[0].split(",")) == 3:
            break
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(0.5)
    assert "ReplicationFactor: 3" in r.stdout
    rc, _, err = _local(local_dir, "stop")
    assert rc == 0, err
