"""``moldau run | list | cancel | info``: Flink's ``flink run/list/cancel/info`` for jobs that
are Python scripts.

``run`` executes the script here with the stream environment's executor hook set to upload
the JobGraph of every ``env.execute()`` (with the script and the files beside it) to the
JobManager's REST API (``POST /v1/jobs``, a msgpack body), then, unless detached, follows
the job until it ends. ``info`` executes the script the same way but prints the graph of
its first ``execute()`` and stops there. ``list`` and ``cancel`` use Flink's REST paths.

The JobManager is ``-m HOST:PORT``, else ``$MOLDAU_JOBMANAGER``, else the one a running
``moldau local`` cluster records in its ``cluster.json`` (key ``jobmanager_rest`` or
``jobmanager``), else ``127.0.0.1:8081``.

Only the standard library is imported at module level (``moldau --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moldau.clients.cli.base import CliError, parse_properties

if TYPE_CHECKING:
    from moldau.clients.stream.environment import JobExecutionResult
    from moldau.clients.stream.jobgraph import JobGraph

DEFAULT_JOBMANAGER = "127.0.0.1:8081"
JOBMANAGER_ENV = "MOLDAU_JOBMANAGER"
DEFAULT_REST_PORT = 8081

# What `run` uploads beside the script: the files of its directory tree, without caches,
# version control, hidden directories (virtualenvs) and big data files.
MAX_ARTIFACT_FILE_BYTES = 50 * 1024 * 1024
MAX_ARTIFACT_TOTAL_BYTES = 96 * 1024 * 1024  # under the JobManager's 100 MiB request limit
MAX_ARTIFACT_FILES = 10_000
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")

TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})
POLL_INTERVAL_S = 0.25
# how long `run` keeps asking a JobManager that stopped answering before it gives up
LOST_CONTACT_S = 30.0

NO_JOB = ("The program didn't contain a job. Perhaps you forgot to call execute() on the "
          "execution environment.")


# --------------------------------------------------------------------------- the JobManager


def _local_cluster_jobmanager() -> str | None:
    """The JobManager REST address a running ``moldau local`` cluster records, if any."""
    from moldau.clients.cli import local

    try:
        rec = local.running_cluster(local.default_data_dir())
        if rec is None:
            return None
        d = json.loads((rec.data_dir / local.CLUSTER_FILE).read_text())
    except (CliError, OSError, ValueError):
        return None
    for key in ("jobmanager_rest", "jobmanager"):
        v = d.get(key)
        if isinstance(v, str) and v:
            return v
    return None


def resolve_jobmanager(flag: str | None) -> str:
    """The base URL (``http://host:port``) of the JobManager to talk to."""
    value = flag or os.environ.get(JOBMANAGER_ENV) or _local_cluster_jobmanager()
    return base_url(value or DEFAULT_JOBMANAGER)


def base_url(address: str) -> str:
    """``host:port``, ``host`` or ``http://host:port/`` -> ``http://host:port``."""
    a = address.strip()
    if "://" in a:
        scheme, _, a = a.partition("://")
        if scheme not in ("http", "https"):
            raise CliError(f"bad JobManager address {address!r}: expected HOST:PORT")
    else:
        scheme = "http"
    a = a.rstrip("/")
    if not a or "/" in a:
        raise CliError(f"bad JobManager address {address!r}: expected HOST:PORT")
    host, sep, port = a.rpartition(":")
    if not sep or a.endswith("]"):
        host, port = a, str(DEFAULT_REST_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise CliError(f"bad JobManager address {address!r}: expected HOST:PORT")
    return f"{scheme}://{host}:{int(port)}"


class RestClient:
    """A blocking client of the JobManager's REST API; every failure is a one-line CliError."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self.timeout = timeout

    @property
    def address(self) -> str:
        return self.url.partition("://")[2]

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> Any:
        """Send one request; the decoded JSON answer (None when empty)."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Accept", "application/json")
        if content_type is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as e:
            raise CliError(self._http_error(e.code, e.read())) from None
        except urllib.error.URLError as e:
            reason = e.reason
            text = (reason.strerror or str(reason)) if isinstance(reason, OSError) else reason
            raise CliError(f"cannot reach the JobManager at {self.address} ({text})") from None
        except (TimeoutError, OSError) as e:
            raise CliError(f"cannot reach the JobManager at {self.address} "
                           f"({getattr(e, 'strerror', None) or e or 'timed out'})") from None
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise CliError(f"the JobManager at {self.address} answered {path} with something "
                           "that is not JSON") from None

    @staticmethod
    def _http_error(status: int, data: bytes) -> str:
        try:
            errors = json.loads(data).get("errors") or []
        except (ValueError, AttributeError):
            errors = []
        first = next((str(x) for x in errors if x), "")
        if first:
            return first.splitlines()[0]
        return f"the JobManager answered HTTP {status}"


# --------------------------------------------------------------------------- job scripts


def _coerce(value: str) -> Any:
    """A ``-D`` value as the plain type the stream configuration expects."""
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def context_configuration(parallelism: int | None, properties: list[str] | None
                          ) -> dict[str, Any]:
    config: dict[str, Any] = {k: _coerce(v) for k, v in
                              parse_properties(properties, "-D property").items()}
    if parallelism is not None:
        if parallelism < 1:
            raise CliError(f"the parallelism must be at least 1, got {parallelism}")
        config["parallelism.default"] = parallelism
    return config


class _ScriptStopped(BaseException):
    """Raised by an executor to stop the job script after its first ``execute()`` (a
    BaseException, so the script's own ``except Exception`` does not swallow it)."""


def _user_frames_only(tb: list[traceback.FrameSummary], root: Path) -> list[Any]:
    """The frames of the job's own files (runpy and moldau's frames are noise to the user);
    all frames when none is the user's."""
    root_s = str(root)
    mine = [f for f in tb if f.filename.startswith(root_s)]
    return mine or tb


def format_script_error(exc: BaseException, root: Path) -> str:
    """A job script's failure as the user wants to read it: the traceback of their files
    (paths relative to ``root``), then the exception line."""
    if isinstance(exc, SyntaxError):
        where = _relative(exc.filename or "<script>", root)
        text = f'  File "{where}", line {exc.lineno}\n'
        if exc.text:
            line = exc.text.rstrip("\n")
            stripped = line.lstrip()
            text += f"    {stripped}\n"
            if exc.offset:
                col = max(0, exc.offset - 1 - (len(line) - len(stripped)))
                text += "    " + " " * col + "^\n"
        return text + f"{type(exc).__name__}: {exc.msg}"
    frames = _user_frames_only(traceback.extract_tb(exc.__traceback__), root)
    for f in frames:
        f.filename = _relative(f.filename, root)
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames),
             *traceback.format_exception_only(type(exc), exc)]
    return "".join(lines).rstrip("\n")


def syntax_error_line(exc: SyntaxError, root: Path) -> str:
    where = _relative(exc.filename or "<script>", root)
    return f"SyntaxError in {where}, line {exc.lineno}: {exc.msg}"


def _relative(filename: str, root: Path) -> str:
    try:
        return str(Path(filename).resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return filename


def run_job_script(script: Path, args: list[str], executor: Callable[[JobGraph], Any],
                   config: dict[str, Any]) -> None:
    """Run ``script`` as ``__main__`` with ``args`` as its ``sys.argv[1:]``, its directory
    first on ``sys.path``, and ``executor`` receiving the graph of every ``execute()``.
    Exceptions of the script propagate."""
    import runpy

    from moldau.clients.stream.environment import set_context_configuration, set_executor

    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    set_context_configuration(config)
    set_executor(executor)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        set_executor(None)
        set_context_configuration(None)
        sys.argv = old_argv
        sys.path[:] = old_path


def _script_path(value: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_file():
        raise CliError(f"job file {value} does not exist" if not p.exists()
                       else f"{value} is not a file")
    return p.resolve()


def _run_reporting_errors(script: Path, args: list[str], executor: Callable[[JobGraph], Any],
                          config: dict[str, Any]) -> None:
    """``run_job_script``, with the script's failures turned into what a user reads."""
    from moldau.clients.stream.jobgraph import GraphError

    try:
        run_job_script(script, args, executor, config)
    except CliError:
        raise
    except SyntaxError as e:
        raise CliError(syntax_error_line(e, script.parent)) from None
    except GraphError as e:
        raise CliError(str(e)) from None
    except Exception as e:
        print(format_script_error(e, script.parent), file=sys.stderr)
        raise CliError(f"the job script {script.name} failed: "
                       f"{traceback.format_exception_only(type(e), e)[-1].strip()}") from None


# --------------------------------------------------------------------------- artifacts


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (symlinked files followed, symlinked dirs not), sorted,
    without skipped directories."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                if e.name.startswith(".") or e.name in SKIPPED_DIRS:
                    continue
                yield from _walk_files(Path(e.path))
            elif e.is_file() and not e.name.endswith(SKIPPED_SUFFIXES):
                yield Path(e.path)
        except OSError:
            continue


class _Artifacts:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.total = 0
        self.skipped: list[str] = []

    def add_tree(self, root: Path, prefix: str = "") -> None:
        for path in _walk_files(root):
            self.add(path, prefix + path.relative_to(root).as_posix())

    def add(self, path: Path, name: str) -> None:
        if name in self.files:
            return
        try:
            size = path.stat().st_size
            if size > MAX_ARTIFACT_FILE_BYTES:
                self.skipped.append(f"{name} ({size / 1e6:.0f} MB)")
                return
            if len(self.files) >= MAX_ARTIFACT_FILES:
                raise CliError(f"the job's directory holds more than {MAX_ARTIFACT_FILES} "
                               "files; put the job script in a directory of its own")
            if self.total + size > MAX_ARTIFACT_TOTAL_BYTES:
                raise CliError(
                    f"the files beside the job script add up to more than "
                    f"{MAX_ARTIFACT_TOTAL_BYTES // (1024 * 1024)} MiB; put the job script in "
                    "a directory of its own")
            data = path.read_bytes()
        except OSError as e:
            self.skipped.append(f"{name} (unreadable: {e.strerror or e})")
            return
        self.files[name] = data
        self.total += len(data)


def collect_artifacts(script: Path, python_files: list[str] | None = None
                      ) -> tuple[dict[str, bytes], list[str]]:
    """The files to upload with a job: the script, the files of its directory tree (paths
    relative to it), and the files and directories the job named with
    ``env.add_python_file`` (under their own names). Returns them and what was skipped."""
    arts = _Artifacts()
    arts.add(script, script.name)
    arts.add_tree(script.parent)
    for item in python_files or ():
        p = Path(item).expanduser()
        if p.is_dir():
            arts.add_tree(p, p.resolve().name + "/")
        elif p.is_file():
            arts.add(p, p.name)
        else:
            arts.skipped.append(f"{item} (added with add_python_file, but it does not exist)")
    return arts.files, arts.skipped


# --------------------------------------------------------------------------- run


def _fmt_time(ms: Any, fmt: str = "%d.%m.%Y %H:%M:%S") -> str:
    try:
        v = int(ms)
    except (TypeError, ValueError):
        return "-"
    return time.strftime(fmt, time.localtime(v / 1000)) if v > 0 else "-"


class JobSubmitter:
    """The executor ``moldau run`` installs: uploads each graph, then follows the job."""

    def __init__(self, client: RestClient, script: Path, args: argparse.Namespace,
                 program_args: list[str]) -> None:
        self.client = client
        self.script = script
        self.detached = bool(args.detached)
        self.parallelism: int | None = args.parallelism
        self.savepoint: str | None = args.fromSavepoint
        self.allow_non_restored = bool(args.allowNonRestoredState)
        self.program_args = program_args
        self.submitted: list[str] = []

    def __call__(self, graph: JobGraph) -> JobExecutionResult:
        import msgpack

        from moldau.clients.stream.environment import JobExecutionResult

        python_files = graph.config.get("python.files")
        artifacts, skipped = collect_artifacts(
            self.script, [str(p) for p in python_files] if isinstance(python_files, list)
            else None)
        for s in skipped:
            print(f"Warning: not uploading {s}", file=sys.stderr)
        body = msgpack.packb({
            "job_graph": graph.to_bytes(), "artifacts": artifacts,
            "parallelism": self.parallelism, "savepoint_path": self.savepoint,
            "allow_non_restored_state": self.allow_non_restored,
            "program_args": self.program_args,
        }, use_bin_type=True)
        answer = self.client.request("POST", "/v1/jobs", body, "application/msgpack")
        jid = str((answer or {}).get("jobid") or "")
        if not jid:
            raise CliError(f"the JobManager at {self.client.address} did not return a job id")
        self.submitted.append(jid)
        print(f"Job has been submitted with JobID {jid}", flush=True)
        if self.detached:
            return JobExecutionResult(jid, graph.name, -1)
        try:
            return self._follow(jid, graph.name)
        except KeyboardInterrupt:
            print(f"\nStopped waiting; the job keeps running. Cancel it with: moldau cancel "
                  f"{jid}", file=sys.stderr, flush=True)
            raise

    def _poll(self, jid: str) -> dict[str, Any]:
        """``/jobs/<jid>``, retrying while the JobManager is unreachable (not when it says
        the job is unknown)."""
        from urllib.parse import quote

        deadline = time.monotonic() + LOST_CONTACT_S
        while True:
            try:
                d = self.client.request("GET", f"/jobs/{quote(jid, safe='')}")
                return d if isinstance(d, dict) else {}
            except CliError as e:
                if not e.message.startswith("cannot reach") or time.monotonic() > deadline:
                    raise CliError(f"{e.message}; lost track of job {jid} (see moldau list)"
                                   ) from None
            time.sleep(1.0)

    def _follow(self, jid: str, name: str) -> JobExecutionResult:
        from urllib.parse import quote

        from moldau.clients.stream.environment import JobExecutionResult

        state = ""
        while True:
            d = self._poll(jid)
            new = str(d.get("state", ""))
            if new and new != state:
                state = new
                print(f"{_fmt_time(time.time() * 1000)}\tJob execution switched to status "
                      f"{state}.", flush=True)
            if state in TERMINAL_STATES:
                break
            time.sleep(POLL_INTERVAL_S)
        runtime = int(d.get("duration") or 0)
        if state == "FINISHED":
            print("Program execution finished")
            print(f"Job with JobID {jid} has finished.")
            print(f"Job Runtime: {runtime} ms", flush=True)
        elif state == "CANCELED":
            print(f"Job with JobID {jid} has been canceled.", flush=True)
        else:
            exc = self.client.request("GET", f"/jobs/{quote(jid, safe='')}/exceptions") or {}
            root = str(exc.get("root-exception") or "(no exception recorded)").rstrip()
            print("\n------------------------------------------------------------\n"
                  " The program finished with the following exception:\n\n"
                  f"Job with JobID {jid} failed:\n{root}\n", file=sys.stderr, flush=True)
            raise CliError(f"job {name!r} ({jid}) failed")
        return JobExecutionResult(jid, name, runtime)


def _split_script_args(args: argparse.Namespace) -> tuple[str, list[str]]:
    rest = list(args.args or [])
    script = args.python
    if script is None:
        if not args.script:
            raise CliError("no job file given: moldau run [OPTIONS] job.py [ARGS...]")
        script = args.script
    elif args.script:
        rest.insert(0, args.script)
    return script, rest


def cmd_run(args: argparse.Namespace) -> int:
    script_arg, program_args = _split_script_args(args)
    script = _script_path(script_arg)
    config = context_configuration(args.parallelism, args.define)
    client = RestClient(resolve_jobmanager(args.jobmanager))
    client.request("GET", "/overview")  # fail fast, before the script runs
    submitter = JobSubmitter(client, script, args, program_args)
    _run_reporting_errors(script, program_args, submitter, config)
    if not submitter.submitted:
        raise CliError(NO_JOB)
    return 0


# --------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    script_arg, program_args = _split_script_args(args)
    script = _script_path(script_arg)
    config = context_configuration(args.parallelism, args.define)
    graphs: list[JobGraph] = []

    def capture(graph: JobGraph) -> Any:
        graphs.append(graph)
        raise _ScriptStopped

    import contextlib

    # what the script prints goes to stderr: stdout carries the graph (JSON with --json)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            _run_reporting_errors(script, program_args, capture, config)
    except _ScriptStopped:
        pass
    if not graphs:
        raise CliError(NO_JOB)
    g = graphs[0]
    if args.json:
        print(json.dumps(g.to_json_plan(), indent=2))
    else:
        print(g.describe())
    return 0


# --------------------------------------------------------------------------- list, cancel


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    for j in jobs:
        print(f"{_fmt_time(j.get('start-time'))} : {j.get('jid')} : {j.get('name')} "
              f"({j.get('state')})")


RULE = "--------------------------------------------------------------"


def cmd_list(args: argparse.Namespace) -> int:
    client = RestClient(resolve_jobmanager(args.jobmanager))
    show_all = bool(args.all)
    show_running, show_scheduled = bool(args.running), bool(args.scheduled)
    if not (show_running or show_scheduled or show_all):
        show_running = show_scheduled = True
    print("Waiting for response...", flush=True)
    answer = client.request("GET", "/jobs/overview") or {}
    jobs = sorted((j for j in answer.get("jobs", []) if isinstance(j, dict)),
                  key=lambda j: int(j.get("start-time") or 0))
    running = [j for j in jobs if j.get("state") not in TERMINAL_STATES
               and j.get("state") != "CREATED"]
    scheduled = [j for j in jobs if j.get("state") == "CREATED"]
    terminated = [j for j in jobs if j.get("state") in TERMINAL_STATES]
    if show_running or show_all:
        if not running:
            print("No running jobs.")
        else:
            print("------------------ Running/Restarting Jobs -------------------")
            _print_jobs(running)
            print(RULE)
    if show_scheduled or show_all:
        if not scheduled:
            print("No scheduled jobs.")
        else:
            print("----------------------- Scheduled Jobs -----------------------")
            _print_jobs(scheduled)
            print(RULE)
    if show_all and terminated:
        print("---------------------- Terminated Jobs -----------------------")
        _print_jobs(terminated)
        print(RULE)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    jid = args.jobid.strip()
    if not jid:
        raise CliError("no job id given: moldau cancel JOBID")
    client = RestClient(resolve_jobmanager(args.jobmanager))
    print(f"Cancelling job {jid}.", flush=True)
    client.request("PATCH", f"/jobs/{quote(jid, safe='')}?mode=cancel")
    print(f"Cancelled job {jid}.")
    return 0


# --------------------------------------------------------------------------- parsers


def _jobmanager_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--jobmanager", metavar="HOST:PORT", default=None,
                   help="the JobManager's REST address (default: $MOLDAU_JOBMANAGER, the "
                   f"running local cluster's, or {DEFAULT_JOBMANAGER})")


def _script_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--parallelism", type=int, default=None, metavar="N",
                   help="the default parallelism of the job's operators")
    p.add_argument("-D", dest="define", action="append", metavar="KEY=VALUE",
                   help="a job configuration setting, e.g. -D "
                   "execution.checkpointing.interval=10000 (repeatable)")
    p.add_argument("-py", "--python", default=None, metavar="FILE",
                   help="the job script (PyFlink's spelling; or give it as the first "
                   "positional argument)")
    p.add_argument("script", nargs="?", metavar="job.py", help="the job script")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for the job script")


def register(sub: Any, name: str, **kw: Any) -> None:
    if name == "run":
        p = sub.add_parser(name, **kw, description=(
            "Run a job script: build its dataflow here and submit it, with the files beside "
            "the script, to the JobManager; then wait for the job to end (unless -d)."))
        _jobmanager_arg(p)
        p.add_argument("-d", "--detached", action="store_true",
                       help="submit and return at once, without waiting for the job")
        p.add_argument("-s", "--fromSavepoint", default=None, metavar="PATH",
                       help="the savepoint to restore the job's state from")
        p.add_argument("-n", "--allowNonRestoredState", action="store_true",
                       help="with -s: skip savepoint state that maps to no operator")
        _script_args(p)
        p.set_defaults(func=cmd_run)
    elif name == "info":
        p = sub.add_parser(name, **kw, description=(
            "Print the job graph a job script builds (its vertices, parallelism and "
            "edges), without a cluster."))
        p.add_argument("--json", action="store_true",
                       help="print the execution plan as JSON (Flink's plan format)")
        _script_args(p)
        p.set_defaults(func=cmd_info)
    elif name == "list":
        p = sub.add_parser(name, **kw, description=(
            "List the jobs of the JobManager (running and scheduled ones by default)."))
        _jobmanager_arg(p)
        p.add_argument("-a", "--all", action="store_true",
                       help="show all jobs, the terminated ones too")
        p.add_argument("-r", "--running", action="store_true",
                       help="show only running jobs")
        p.add_argument("-s", "--scheduled", action="store_true",
                       help="show only scheduled jobs")
        p.set_defaults(func=cmd_list)
    elif name == "cancel":
        p = sub.add_parser(name, **kw, description="Cancel a running job.")
        _jobmanager_arg(p)
        p.add_argument("jobid", metavar="JOBID", help="the id of the job to cancel")
        p.set_defaults(func=cmd_cancel)
    else:  # pragma: no cover - main.COMMANDS names only the four above
        raise ValueError(f"jobs.register: unknown command {name!r}")
