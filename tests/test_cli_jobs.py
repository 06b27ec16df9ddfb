"""``moldau run | list | cancel | info`` as a user runs them: the real command in a
subprocess, against the REST API serving a fake JobManager (``tests/test_rest_api.py``
run as a script) in another process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import DaemonProcess, Processes, free_port
from test_cli_common import REPO, assert_one_line_error, cli_env, moldau

FAKE_SERVER = REPO / "tests" / "test_rest_api.py"

JOB = """\
import sys
from moldau.clients.stream import StreamExecutionEnvironment
from helper import shout

env = StreamExecutionEnvironment.get_execution_environment()
words = env.from_collection(["a", "b", "c"])
words.map(shout).key_by(lambda w: w).map(lambda w: w + "!").print()
print("building", sys.argv[1:])
env.execute(sys.argv[1] if len(sys.argv) > 1 else "tiny job")
print("after execute")
"""


def write_job(root: Path, script: str = JOB, name: str = "job.py") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(script)
    (root / "helper.py").write_text("def shout(w):\n    return w.upper()\n")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "words.txt").write_text("a b c\n")
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\0")
    (root / ".git").mkdir(exist_ok=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root / name


def fake_jobmanager(procs: Processes, tmp: Path, *extra: str) -> DaemonProcess:
    return procs.spawn("fake-jobmanager", [
        sys.executable, str(FAKE_SERVER), "--port", "0", "--upload-dir", str(tmp / "uploads"),
        "--record", str(tmp / "submissions.jsonl"), *extra],
        env={"PYTHONPATH": cli_env()["PYTHONPATH"]})


def submissions(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "submissions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- info


def test_info_prints_the_vertices_without_a_cluster(tmp_path: Path) -> None:
    script = write_job(tmp_path / "job")
    r = moldau("info", str(script), "my job")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Job 'my job'")
    assert "Source: Collection Source -> Map  (parallelism 1)" in r.stdout
    assert "Map -> Sink: Print to Std. Out  (parallelism 1)" in r.stdout
    assert "<- HASH from" in r.stdout
    assert "building ['my job']" in r.stderr  # the script's prints stay off stdout
    assert "after execute" not in r.stdout + r.stderr  # stops at the first execute()

    r = moldau("info", "--json", "-p", "3", str(script))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [n["parallelism"] for n in plan["nodes"]] == [1, 3, 3]
    assert plan["nodes"][2]["inputs"][0]["ship_strategy"] == "HASH"


def test_info_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nx = (\n")
    assert_one_line_error(moldau("info", str(bad)), "SyntaxError", "bad.py, line 2")
    assert_one_line_error(moldau("info", str(tmp_path / "nope.py")), "does not exist")
    noexec = tmp_path / "noexec.py"
    noexec.write_text("x = 1\n")
    assert_one_line_error(moldau("info", str(noexec)), "execute()")
    graph_error = tmp_path / "graph.py"
    graph_error.write_text(
        "from moldau.clients.stream import StreamExecutionEnvironment\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.execute('empty')\n")
    assert_one_line_error(moldau("info", str(graph_error)), "No operators defined")


def test_info_shows_the_traceback_of_a_failing_script(tmp_path: Path) -> None:
    boom = tmp_path / "boom.py"
    boom.write_text("def f():\n    return {}['lon']\n\nf()\n")
    r = moldau("info", str(boom))
    assert r.returncode == 1
    assert 'File "boom.py", line 4, in <module>' in r.stderr
    assert "runpy" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: the job script boom.py failed: KeyError: 'lon'")


# --------------------------------------------------------------------------- run


@pytest.mark.timeout(60)
def test_run_submits_the_graph_and_files_and_waits(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path)
    script = write_job(tmp_path / "job")
    r = moldau("run", "-m", jm.address, "-p", "2", "-D", "execution.checkpointing.interval=5000",
               str(script), "word count", "--rate", "5")
    assert r.returncode == 0, r.stderr
    [sub] = submissions(tmp_path)
    assert f"Job has been submitted with JobID {sub['jid']}" in r.stdout
    assert "Job execution switched to status RUNNING." in r.stdout
    assert "Job execution switched to status FINISHED." in r.stdout
    assert f"Job with JobID {sub['jid']} has finished." in r.stdout
    assert "after execute" in r.stdout  # the script goes on once the job ended
    assert sub["name"] == "word count"
    assert sub["vertices"] == [["Source: Collection Source", 1], ["Map", 2],
                               ["Map -> Sink: Print to Std. Out", 2]]
    assert sub["config"]["execution.checkpointing.interval"] == 5000
    assert sub["artifacts"] == ["data/words.txt", "helper.py", "job.py"]
    assert (sub["parallelism"], sub["program_args"]) == (2, ["word count", "--rate", "5"])
    assert (sub["savepoint_path"], sub["allow_non_restored_state"]) == (None, False)


@pytest.mark.timeout(60)
def test_run_detached_from_a_savepoint(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path, "--finish-after-ms", "60000")
    script = write_job(tmp_path / "job")
    t0 = time.monotonic()
    r = moldau("run", "--jobmanager", f"http://{jm.address}/", "-d", "-s", "/sp/savepoint-1",
               "-n", "-py", str(script), "detached job")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    [sub] = submissions(tmp_path)
    assert r.stdout.count("Job has been submitted with JobID") == 1
    assert "switched to status" not in r.stdout
    assert (sub["name"], sub["savepoint_path"], sub["allow_non_restored_state"]) == (
        "detached job", "/sp/savepoint-1", True)
    lst = moldau("list", "-m", jm.address)
    assert f": {sub['jid']} : detached job (RUNNING)" in lst.stdout


@pytest.mark.timeout(60)
def test_run_of_a_failing_job_exits_non_zero_with_the_root_exception(
        procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path)
    script = write_job(tmp_path / "job")
    # the fake JobManager fails every job whose name says "fail"
    r = moldau("run", "-m", jm.address, str(script), "fail please")
    assert r.returncode == 1
    [sub] = submissions(tmp_path)
    assert "Job execution switched to status FAILED." in r.stdout
    assert "The program finished with the following exception:" in r.stderr
    assert "ValueError: the fake job failed on purpose" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"Error: job 'fail please' ({sub['jid']}) failed"
    assert "after execute" not in r.stdout


def test_run_with_the_jobmanager_from_the_environment(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path)
    script = write_job(tmp_path / "job")
    env = cli_env()
    env["MOLDAU_JOBMANAGER"] = jm.address
    r = subprocess.run([sys.executable, "-m", "moldau.clients.cli", "run", "-d", str(script)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(submissions(tmp_path)) == 1


def test_run_errors_are_one_line(procs: Processes, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    script = write_job(tmp_path / "job")
    r = moldau("run", "-m", f"127.0.0.1:{port}", str(script))
    assert_one_line_error(r, f"cannot reach the JobManager at 127.0.0.1:{port}")
    assert "building" not in r.stdout  # the script did not run
    assert_one_line_error(moldau("run", "-m", "127.0.0.1:notaport", str(script)),
                          "bad JobManager address")

    jm = fake_jobmanager(procs, tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text("x = (\n")
    assert_one_line_error(moldau("run", "-m", jm.address, str(bad)), "SyntaxError",
                          "bad.py, line 1")
    assert_one_line_error(moldau("run", "-m", jm.address, str(tmp_path / "none.py")),
                          "does not exist")
    assert_one_line_error(moldau("run", "-m", jm.address, "-p", "0", str(script)),
                          "parallelism")
    assert_one_line_error(moldau("run", "-m", jm.address, "-D", "novalue", str(script)),
                          "key=value")
    assert_one_line_error(moldau("run", "-m", jm.address), "no job file")
    assert submissions(tmp_path) == []


# --------------------------------------------------------------------------- list, cancel


def test_list_prints_flinks_format(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path)
    r = moldau("list", "-m", jm.address)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Waiting for response..."
    assert lines[1] == "------------------ Running/Restarting Jobs -------------------"
    assert lines[2].endswith(f" : {'a' * 32} : Streaming WordCount (RUNNING)")
    assert time.strptime(lines[2].split(" : ")[0], "%d.%m.%Y %H:%M:%S")
    assert lines[3] == "-" * 62
    assert lines[4] == "----------------------- Scheduled Jobs -----------------------"
    assert lines[5].endswith(f" : {'e' * 32} : Waiting for slots (CREATED)")
    assert lines[6] == "-" * 62
    assert len(lines) == 7  # terminated jobs only with -a

    r = moldau("list", "-m", jm.address, "-a")
    lines = r.stdout.splitlines()
    i = lines.index("---------------------- Terminated Jobs -----------------------")
    # oldest first, as Flink sorts them
    assert [ln.rsplit(" : ", 1)[1] for ln in lines[i + 1:i + 4]] == [
        "PopularPlaces (FAILED)", "RideCleansing (FINISHED)", "Console exchange (CANCELED)"]

    r = moldau("list", "-m", jm.address, "-r")
    assert "Scheduled Jobs" not in r.stdout and "Streaming WordCount" in r.stdout
    r = moldau("list", "-m", jm.address, "-s")
    assert "Running/Restarting" not in r.stdout and "Waiting for slots" in r.stdout


def test_list_with_no_jobs(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path, "--empty")
    r = moldau("list", "-m", jm.address, "--all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Waiting for response...", "No running jobs.",
                                     "No scheduled jobs."]


def test_cancel(procs: Processes, tmp_path: Path) -> None:
    jm = fake_jobmanager(procs, tmp_path)
    r = moldau("cancel", "-m", jm.address, "a" * 32)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"Cancelling job {'a' * 32}.", f"Cancelled job {'a' * 32}."]
    r = moldau("list", "-m", jm.address, "-a")
    assert f"{'a' * 32} : Streaming WordCount (CANCELED)" in r.stdout
    r = moldau("cancel", "-m", jm.address, "f" * 32)
    assert r.returncode == 1
    assert r.stderr.strip() == f"Error: Job {'f' * 32} not found"
    port = free_port()
    assert_one_line_error(moldau("cancel", "-m", f"127.0.0.1:{port}", "a" * 32),
                          "cannot reach the JobManager")
    assert_one_line_error(moldau("list", "-m", f"127.0.0.1:{port}"),
                          "cannot reach the JobManager")


# --------------------------------------------------------------------------- end to end


E2E_JOB = """\
from moldau.clients.stream import StreamExecutionEnvironment

env = StreamExecutionEnvironment.get_execution_environment()
env.from_collection(["alpha", "beta", "gamma"]).map(lambda s: "e2e " + s.upper()).print()
env.execute("e2e print")
"""


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_end_to_end_on_a_real_jobmanager_and_taskmanager(procs: Processes,
                                                         tmp_path: Path) -> None:
    import re
    from urllib.parse import quote

    jm = procs.spawn("jobmanager", [
        sys.executable, "-m", "moldau.jobmanager", "--rpc", "127.0.0.1:0",
        "--rest", "127.0.0.1:0", "--data-dir", str(tmp_path / "jm")])
    m = re.search(r"rest on (\S+):(\d+)", jm.tail())
    assert m, jm.tail()
    rest = f"{m.group(1)}:{m.group(2)}"
    procs.spawn("taskmanager", [
        sys.executable, "-m", "moldau.taskmanager", "--jobmanager", jm.address,
        "--slots", "2", "--data-dir", str(tmp_path / "tm")])
    deadline = time.monotonic() + 20
    while json.loads(_get(f"http://{rest}/overview"))["taskmanagers"] < 1:
        assert time.monotonic() < deadline, "the TaskManager did not register"
        time.sleep(0.1)

    script = tmp_path / "job" / "job.py"
    script.parent.mkdir()
    script.write_text(E2E_JOB)
    r = moldau("run", "-m", rest, str(script), timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr)
    jid = re.search(r"Job has been submitted with JobID (\S+)", r.stdout)
    assert jid, r.stdout
    assert f"Job with JobID {jid.group(1)} has finished." in r.stdout

    r = moldau("list", "-m", rest, "-a")
    assert f" : {jid.group(1)} : e2e print (FINISHED)" in r.stdout, r.stdout

    [tm] = json.loads(_get(f"http://{rest}/taskmanagers"))["taskmanagers"]
    out = _get(f"http://{rest}/taskmanagers/{quote(tm['id'], safe='')}/stdout").decode()
    assert {"e2e ALPHA", "e2e BETA", "e2e GAMMA"} <= set(out.splitlines()), out
