"""The course's word count (examples/wordcount.py) on a local cluster of a metadata node, a
broker, a JobManager and two TaskManagers, fed through the console producer: its window
counts appear in a TaskManager's stdout, read through the REST API."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from test_cli_common import moldau

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "wordcount.py"
LINES = ["안녕하세요 세계, hello world! 안녕하세요", "Hello, Moldau. 세계는 넓다", "world"]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(240)
def test_wordcount_counts_appear_in_taskmanager_stdout(tmp_path: Path) -> None:
    data = tmp_path / "local"
    r = moldau("local", "start", "--data-dir", str(data), "--metadata-port", "0",
               "--broker-port", "0", "--rest-port", "0", "--taskmanagers", "2", "--slots", "1",
               home=tmp_path, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        rec = json.loads((data / "cluster.json").read_text())
        bs, rest = rec["bootstrap_servers"], f"http://{rec['jobmanager_rest']}"
        r = moldau("topics", "--create", "--bootstrap-server", bs, "--topic", "twitterText",
                   "--partitions", "1", "--replication-factor", "1", home=tmp_path)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while _get(f"{rest}/overview")["taskmanagers"] != 2:  # type: ignore[index]
            assert time.monotonic() < deadline, "TaskManagers did not register"
            time.sleep(0.3)

        r = moldau("run", "-m", rec["jobmanager_rest"], "-d", "-p", "2", str(EXAMPLE),
                   "--bootstrap-servers", bs, "--window-seconds", "6", "--slide-seconds", "2",
                   "--from-beginning", home=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        jid = re.search(r"JobID ([0-9a-f]+)", r.stdout)
        assert jid, r.stdout

        r = moldau("console-producer", "--broker-list", bs, "--topic", "twitterText",
                   input="\n".join(LINES) + "\n", home=tmp_path)
        assert r.returncode == 0, r.stderr

        expected = Counter(w for line in LINES for w in re.findall(r"\w+", line.lower()))
        want = {f"({w},{c})" for w, c in expected.items()}
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while not want <= seen and time.monotonic() < deadline:
            time.sleep(1)
            for tm in _get(f"{rest}/taskmanagers")["taskmanagers"]:  # type: ignore[index]
                with urllib.request.urlopen(f"{rest}/taskmanagers/{tm['id']}/stdout",
                                            timeout=5) as resp:
                    out = resp.read().decode()
                # with parallelism 2 print() prefixes the subtask: "2> (word,count)"
                seen |= {re.sub(r"^\d+> ", "", ln) for ln in out.splitlines()}
        assert want <= seen, f"missing {want - seen}; stdout had {sorted(seen)[:40]}"
        # no window ever counts more than the input holds
        for ln in seen:
            m = re.fullmatch(r"\((\w+),(\d+)\)", ln)
            if m:
                assert int(m.group(2)) <= expected[m.group(1)], ln

        jobs = _get(f"{rest}/jobs/overview")["jobs"]  # type: ignore[index]
        assert [j["state"] for j in jobs if j["jid"] == jid.group(1)] == ["RUNNING"]
        r = moldau("cancel", "-m", rec["jobmanager_rest"], jid.group(1), home=tmp_path)
        assert r.returncode == 0, r.stderr
    finally:
        moldau("local", "stop", "--data-dir", str(data), "--grace", "5", home=tmp_path,
               timeout=60)
        with contextlib.suppress(OSError, ValueError):
            for p in json.loads((data / "cluster.json").read_text())["processes"]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p["pid"]), signal.SIGKILL)
