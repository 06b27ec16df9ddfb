"""The JobManager's REST API and web dashboard, on Flink's paths and JSON shapes.

Every answer comes from a :class:`JobManagerGateway`; this module owns only HTTP, job
submission plumbing and the static dashboard. Paths (each also under ``/v1``, as in Flink):

    GET    /overview  /config  /jobs  /jobs/overview  /jobs/<jid>  /jobs/<jid>/plan
           /jobs/<jid>/exceptions  /jobs/<jid>/vertices/<vid>
           /taskmanagers  /taskmanagers/<tmid>  /taskmanagers/<tmid>/stdout|log (text)
    PATCH  /jobs/<jid>[?mode=cancel]                  cancel: 202 {}
    POST   /jars/upload (multipart, field "jarfile")  GET /jars  DELETE /jars/<id>
    POST   /jars/<id>/run {"entryClass", "programArgsList", "parallelism", ...}
    POST   /v1/jobs  (msgpack body; what ``moldau run`` sends)
    GET    /  and the dashboard's files (``web/``)

Errors are JSON ``{"errors": ["..."]}`` with 400 (bad input), 404 (unknown path or id), 405,
413 (body over ``max_upload_bytes``) or 500.

Uploaded "jars" are zips of a job script and the files beside it (or a single ``.py``),
stored as ``upload_dir/<32 hex>_<name>``; the file name is the jar id. Running one extracts
it to a temporary directory and builds the JobGraph with ``python -m
moldau.jobmanager.plan_builder`` in a subprocess (the script is user code: it must not run,
hang or crash inside the JobManager), with a timeout; the graph and every file of the zip go
to ``gateway.submit_job``.

aiohttp carries the HTTP: its parser, multipart streaming and keep-alive handling are tried
and tested, and this is the control plane, far from any per-record path.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from moldau.jobmanager.gateway import JobManagerGateway

log = logging.getLogger("moldau.jobmanager.rest")

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "RestServer"]

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # Flink's rest.server.max-content-length
DEFAULT_PLAN_TIMEOUT_S = 120.0
WEB_DIR = Path(__file__).resolve().parent / "web"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
JAR_ID_RE = re.compile(r"^[0-9a-f]{32}_[A-Za-z0-9._-]{1,200}$")
STATIC_RE = r"[A-Za-z0-9_.-]+\.(?:html|js|css|svg|ico|png)"
MAX_ZIP_MEMBERS = 10_000
# how much of a failed plan builder's stderr goes into the 400 answer
ERROR_TAIL_LINES = 40
ERROR_TAIL_BYTES = 16 * 1024

T = TypeVar("T")
MAX_UPLOAD_KEY = web.AppKey("max_upload_bytes", int)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """An answer other than 200: ``status`` with ``{"errors": errors}``."""

    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(errors[0] if errors else str(status))
        self.status = status
        self.errors = list(errors)


def error_response(status: int, *errors: str) -> web.Response:
    return web.json_response({"errors": list(errors)}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is a JSON ``{"errors": [...]}`` answer, never an HTML page."""
    try:
        return await handler(request)
    except RequestError as e:
        return error_response(e.status, *e.errors)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 404:
            return error_response(404, f"Not found: {request.path}")
        if e.status == 405:
            return error_response(405, f"Method {request.method} is not allowed for "
                                  f"{request.path}")
        if e.status == 413:
            return error_response(413, "The request is too large (the limit is "
                                  f"{request.app[MAX_UPLOAD_KEY]} bytes)")
        return error_response(e.status, e.reason)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "Internal server error: see the JobManager's log")


# --------------------------------------------------------------------------- job files


def safe_member_name(name: str) -> str | None:
    """A zip member's path if it stays inside the extraction directory, else None."""
    if not name or "\\" in name or "\0" in name or name.startswith("/"):
        return None
    parts = name.split("/")
    if any(p in ("..",) for p in parts) or re.match(r"^[A-Za-z]:", name):
        return None
    return "/".join(p for p in parts if p not in ("", "."))


@dataclass
class JobFiles:
    """The files of an uploaded job, by path relative to the job's root."""

    files: dict[str, bytes]

    def entries(self) -> list[str]:
        """Candidate entry scripts: the ``.py`` files at the root that mention
        ``execute(`` (a helper module doesn't), or all of them when none does."""
        scripts = sorted(n for n in self.files if "/" not in n and n.endswith(".py"))
        runnable = [n for n in scripts if b"execute(" in self.files[n]]
        return runnable or scripts


def read_job_files(path: Path, max_total: int) -> JobFiles:
    """Every file of an upload. A zip whose files all sit in one top-level directory is
    read from inside it (``zip -r job.zip myjob/``). Raises RequestError(400) for a
    corrupt, unsafe or oversized archive."""
    name = path.name.partition("_")[2] or path.name
    if name.endswith(".py"):
        return JobFiles({name: path.read_bytes()})
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(infos) > MAX_ZIP_MEMBERS:
                raise RequestError(400, f"the zip holds more than {MAX_ZIP_MEMBERS} files")
            total = sum(i.file_size for i in infos)
            if total > max_total:
                raise RequestError(400, f"the zip's files add up to {total} bytes "
                                   f"uncompressed, more than the limit of {max_total}")
            files: dict[str, bytes] = {}
            for info in infos:
                member = safe_member_name(info.filename)
                if member is None:
                    raise RequestError(400, f"unsafe path in the zip: {info.filename!r}")
                # a symlink member (unix mode S_IFLNK) would point outside the job
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise RequestError(400, f"the zip holds a symbolic link: "
                                       f"{info.filename!r}")
                if member:
                    files[member] = zf.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise RequestError(400, f"not a readable zip file: {e}") from None
    tops = {n.split("/", 1)[0] for n in files}
    if len(tops) == 1 and all("/" in n for n in files):
        top = tops.pop() + "/"
        files = {n[len(top):]: data for n, data in files.items()}
    return JobFiles(files)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _tail(data: bytes) -> str:
    text = data[-ERROR_TAIL_BYTES:].decode(errors="replace").rstrip()
    return "\n".join(text.splitlines()[-ERROR_TAIL_LINES:])


def _safe_filename(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return base[:200] or "job.zip"


# --------------------------------------------------------------------------- parameters


def _opt_int(value: Any, what: str) -> int | None:
    """A positive int, or None for "the default" (absent, empty, or Flink's -1)."""
    if value is None or value == "":
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise RequestError(400, f"{what} must be a number, got {value!r}") from None
    if v == -1:
        return None
    if v < 1:
        raise RequestError(400, f"{what} must be at least 1, got {v}")
    return v


def _opt_bool(value: Any, what: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RequestError(400, f"{what} must be true or false, got {value!r}")


def _opt_str(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(400, f"{what} must be a string, got {value!r}")
    return value


def _program_args(body: dict[str, Any], query: Any) -> list[str]:
    lst = body.get("programArgsList")
    if lst is not None:
        if not isinstance(lst, list) or not all(isinstance(a, str) for a in lst):
            raise RequestError(400, "programArgsList must be a list of strings")
        return list(lst)
    text = body.get("programArgs", query.get("program-args") or query.get("programArgs"))
    if text in (None, ""):
        return []
    if not isinstance(text, str):
        raise RequestError(400, "programArgs must be a string")
    try:
        return shlex.split(text)
    except ValueError as e:
        raise RequestError(400, f"programArgs: {e}") from None


# --------------------------------------------------------------------------- the server


class RestServer:
    """Serves the REST API and the dashboard over HTTP for one JobManager.

    ``await start(host, port)`` binds (port 0: any free port) and returns the address it
    serves on; ``await stop()`` stops accepting, lets requests in flight end for a few
    seconds, and kills plan builders still running.
    """

    def __init__(self, gateway: JobManagerGateway, *, web_dir: Path | None = None,
                 upload_dir: Path, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 plan_timeout: float = DEFAULT_PLAN_TIMEOUT_S, max_concurrent_builds: int = 4,
                 python: str = sys.executable) -> None:
        self.gateway = gateway
        self.web_dir = (web_dir or WEB_DIR).resolve()
        self.upload_dir = Path(upload_dir)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_extracted_bytes = 4 * self.max_upload_bytes
        self.plan_timeout = float(plan_timeout)
        self.python = python
        self._builds = asyncio.Semaphore(max_concurrent_builds)
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the REST server is not started")
        return self._address

    # lifecycle ---------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors], client_max_size=self.max_upload_bytes)
        app[MAX_UPLOAD_KEY] = self.max_upload_bytes
        r = app.router
        for prefix in ("", "/v1"):
            r.add_get(prefix + "/overview", self._overview)
            r.add_get(prefix + "/config", self._config)
            r.add_get(prefix + "/jobs", self._jobs)
            r.add_get(prefix + "/jobs/overview", self._jobs_overview)
            r.add_get(prefix + "/jobs/{jid}", self._job)
            r.add_patch(prefix + "/jobs/{jid}", self._cancel)
            r.add_get(prefix + "/jobs/{jid}/plan", self._plan)
            r.add_get(prefix + "/jobs/{jid}/exceptions", self._exceptions)
            r.add_get(prefix + "/jobs/{jid}/vertices/{vid}", self._vertex)
            r.add_get(prefix + "/taskmanagers", self._taskmanagers)
            r.add_get(prefix + "/taskmanagers/{tmid}", self._taskmanager)
            r.add_get(prefix + "/taskmanagers/{tmid}/stdout", self._tm_stdout)
            r.add_get(prefix + "/taskmanagers/{tmid}/log", self._tm_log)
            r.add_get(prefix + "/jars", self._jars)
            r.add_post(prefix + "/jars/upload", self._upload)
            r.add_delete(prefix + "/jars/{jarid}", self._delete_jar)
            r.add_post(prefix + "/jars/{jarid}/run", self._run_jar)
        r.add_post("/v1/jobs", self._submit)
        r.add_get("/", self._index)
        r.add_get("/{name:" + STATIC_RE + "}", self._static)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 8081) -> tuple[str, int]:
        await asyncio.to_thread(self.upload_dir.mkdir, parents=True, exist_ok=True)
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=5.0)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._address = (host, int(sock.getsockname()[1]))
        log.info("REST API and dashboard on http://%s:%d/", host, self._address[1])
        return self._address

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # queries -----------------------------------------------------------------------------

    @staticmethod
    def _found(value: T | None, what: str) -> T:
        if value is None:
            raise RequestError(404, f"{what} not found")
        return value

    async def _overview(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.overview())

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.config())

    async def _jobs(self, request: web.Request) -> web.Response:
        jobs = [{"id": j.get("jid"), "status": j.get("state")}
                for j in self.gateway.jobs_overview()]
        return web.json_response({"jobs": jobs})

    async def _jobs_overview(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": self.gateway.jobs_overview()})

    def _job_details(self, jid: str) -> dict[str, Any]:
        return self._found(self.gateway.job_details(jid), f"Job {jid}")

    async def _job(self, request: web.Request) -> web.Response:
        return web.json_response(self._job_details(request.match_info["jid"]))

    async def _plan(self, request: web.Request) -> web.Response:
        d = self._job_details(request.match_info["jid"])
        return web.json_response({"plan": d.get("plan") or {}})

    async def _exceptions(self, request: web.Request) -> web.Response:
        jid = request.match_info["jid"]
        return web.json_response(self._found(self.gateway.job_exceptions(jid), f"Job {jid}"))

    async def _vertex(self, request: web.Request) -> web.Response:
        jid, vid = request.match_info["jid"], request.match_info["vid"]
        if self.gateway.job_details(jid) is None:
            raise RequestError(404, f"Job {jid} not found")
        v = self.gateway.vertex_details(jid, vid)
        return web.json_response(self._found(v, f"Vertex {vid} of job {jid}"))

    async def _taskmanagers(self, request: web.Request) -> web.Response:
        return web.json_response({"taskmanagers": self.gateway.taskmanagers()})

    async def _taskmanager(self, request: web.Request) -> web.Response:
        tmid = request.match_info["tmid"]
        return web.json_response(self._found(self.gateway.taskmanager(tmid),
                                             f"TaskManager {tmid}"))

    async def _tm_text(self, request: web.Request, which: str) -> web.Response:
        tmid = request.match_info["tmid"]
        text = await self.gateway.taskmanager_log(tmid, which)
        text = self._found(text, f"TaskManager {tmid}")
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _tm_stdout(self, request: web.Request) -> web.Response:
        return await self._tm_text(request, "stdout")

    async def _tm_log(self, request: web.Request) -> web.Response:
        return await self._tm_text(request, "log")

    # cancel ------------------------------------------------------------------------------

    async def _cancel(self, request: web.Request) -> web.Response:
        jid = request.match_info["jid"]
        mode = request.query.get("mode", "cancel")
        if mode != "cancel":
            raise RequestError(400, f"unsupported mode {mode!r}: only mode=cancel is "
                               "supported (stop with a savepoint is not available yet)")
        if not await self.gateway.cancel_job(jid):
            raise RequestError(404, f"Job {jid} not found")
        return web.json_response({}, status=202)

    # jars --------------------------------------------------------------------------------

    def _jar_path(self, jarid: str) -> Path:
        if not JAR_ID_RE.match(jarid):
            raise RequestError(404, f"Jar {jarid} not found")
        p = self.upload_dir / jarid
        if not p.is_file():
            raise RequestError(404, f"Jar {jarid} not found")
        return p

    async def _upload(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_upload_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_upload_bytes,
                                                actual_size=request.content_length)
        if not request.content_type.startswith("multipart/"):
            raise RequestError(400, "expected a multipart/form-data upload with the file in "
                               "the field 'jarfile'")
        reader = await request.multipart()
        name: str | None = None
        data = bytearray()
        seen = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "nested multipart uploads are not supported")
            is_file = part.name == "jarfile" and name is None
            if is_file:
                name = _safe_filename(part.filename or "job.zip")
            while chunk := await part.read_chunk(1 << 16):
                seen += len(chunk)
                if seen > self.max_upload_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=self.max_upload_bytes,
                                                        actual_size=seen)
                if is_file:
                    data += chunk
        if name is None:
            raise RequestError(400, "no file in the field 'jarfile' of the upload")
        if name.endswith(".py"):
            pass
        elif not (name.endswith(".zip") or name.endswith(".jar")) or not zipfile.is_zipfile(
                io.BytesIO(data)):
            raise RequestError(400, "Only zip files (a job script with the files beside it) "
                               "or a single .py script can be uploaded")
        jarid = f"{uuid.uuid4().hex}_{name}"
        path = self.upload_dir / jarid
        await asyncio.to_thread(self._store, path, bytes(data))
        if not name.endswith(".py"):
            try:
                await asyncio.to_thread(read_job_files, path, self.max_extracted_bytes)
            except RequestError:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                raise
        return web.json_response({"filename": jarid, "status": "success"})

    @staticmethod
    def _store(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _list_jars(self) -> list[dict[str, Any]]:
        """The uploads, newest first (a file deleted meanwhile is left out)."""
        out: list[dict[str, Any]] = []
        for p in self.upload_dir.iterdir():
            if not JAR_ID_RE.match(p.name):
                continue
            try:
                mtime = p.stat().st_mtime
                entries = read_job_files(p, self.max_extracted_bytes).entries()
            except RequestError:
                entries = []
            except OSError:
                continue
            out.append({"id": p.name, "name": p.name.partition("_")[2],
                        "uploaded": int(mtime * 1000),
                        "entry": [{"name": e, "description": None} for e in entries]})
        out.sort(key=lambda j: j["uploaded"], reverse=True)
        return out

    async def _jars(self, request: web.Request) -> web.Response:
        files = await asyncio.to_thread(self._list_jars)
        return web.json_response({"address": f"{request.scheme}://{request.host}",
                                  "files": files})

    async def _delete_jar(self, request: web.Request) -> web.Response:
        path = self._jar_path(request.match_info["jarid"])
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return web.json_response({})

    async def _run_jar(self, request: web.Request) -> web.Response:
        path = self._jar_path(request.match_info["jarid"])
        body: Any = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise RequestError(400, f"the request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        q = request.query
        entry = _opt_str(body.get("entryClass", q.get("entry-class")), "entryClass")
        parallelism = _opt_int(body.get("parallelism", q.get("parallelism")), "parallelism")
        savepoint = _opt_str(body.get("savepointPath", q.get("savepointPath")),
                             "savepointPath")
        allow = _opt_bool(body.get("allowNonRestoredState", q.get("allowNonRestoredState")),
                          "allowNonRestoredState")
        args = _program_args(body, q)

        job = await asyncio.to_thread(read_job_files, path, self.max_extracted_bytes)
        if entry is None:
            candidates = job.entries()
            if len(candidates) != 1:
                raise RequestError(400, "entryClass is required: name the job script to run "
                                   f"(the upload holds {', '.join(candidates) or 'no .py file'}"
                                   " at its top level)")
            entry = candidates[0]
        entry_name = safe_member_name(entry)
        if not entry_name or entry_name not in job.files:
            raise RequestError(400, f"entryClass {entry!r} is not a file of the upload")
        graph = await self._build_graph(job, entry_name, args, parallelism)
        return await self._submit_graph(graph, job.files, savepoint, allow, parallelism, args)

    async def _build_graph(self, job: JobFiles, entry: str, args: list[str],
                           parallelism: int | None) -> bytes:
        async with self._builds:
            tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="moldau-plan-"))
            try:
                return await self._run_builder(tmp, job, entry, args, parallelism)
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def _run_builder(self, tmp: Path, job: JobFiles, entry: str, args: list[str],
                           parallelism: int | None) -> bytes:
        root = tmp / "job"
        output = tmp / "jobgraph.bin"
        errors_path = tmp / "stderr.txt"
        await asyncio.to_thread(_write_tree, root, job.files)
        argv = [self.python, "-m", "moldau.jobmanager.plan_builder", "--output", str(output)]
        if parallelism is not None:
            argv += ["--parallelism", str(parallelism)]
        argv += [str(root), entry, *args]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *paths])
        errfile = await asyncio.to_thread(open, errors_path, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=errfile, cwd=root, env=env, start_new_session=True)
        finally:
            errfile.close()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.plan_timeout):
                rc = await proc.wait()
        except TimeoutError:
            raise RequestError(400, f"The job script {entry} did not call execute() within "
                               f"{self.plan_timeout:.0f} s") from None
        finally:
            if proc.returncode is None:
                # the builder runs in its own session: its process group is what it started
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.CancelledError, ProcessLookupError):
                    await asyncio.shield(proc.wait())
        log.info("built the job graph of %s in %.2f s (exit status %d)", entry,
                 time.monotonic() - t0, rc)
        if rc == 0:
            return await asyncio.to_thread(output.read_bytes)
        tail = _tail(await asyncio.to_thread(errors_path.read_bytes))
        last = tail.splitlines()[-1] if tail else f"exit status {rc}"
        errors = [f"The job script {entry} failed: {last}"]
        if tail != last:
            errors.append(tail)
        raise RequestError(400, *errors)

    async def _submit_graph(self, graph: bytes, artifacts: dict[str, bytes],
                            savepoint: str | None, allow: bool, parallelism: int | None,
                            args: list[str]) -> web.Response:
        try:
            jid = await self.gateway.submit_job(
                graph, artifacts, savepoint_path=savepoint, allow_non_restored_state=allow,
                parallelism=parallelism, program_args=args)
        except ValueError as e:
            raise RequestError(400, f"The job was rejected: {e}") from None
        return web.json_response({"jobid": jid})

    # moldau's submission -----------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        import msgpack

        raw = await request.read()
        try:
            body = msgpack.unpackb(raw, raw=False)
        except Exception as e:
            raise RequestError(400, f"the request body is not msgpack: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a msgpack map")
        graph = body.get("job_graph")
        if not isinstance(graph, bytes) or not graph:
            raise RequestError(400, "job_graph (bytes) is required")
        artifacts = body.get("artifacts") or {}
        if not isinstance(artifacts, dict):
            raise RequestError(400, "artifacts must be a map of relative path to bytes")
        for name, data in artifacts.items():
            if not isinstance(name, str) or safe_member_name(name) != name or not isinstance(
                    data, bytes):
                raise RequestError(400, f"bad artifact {name!r}: expected a relative path "
                                   "without '..' and bytes")
        args = body.get("program_args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise RequestError(400, "program_args must be a list of strings")
        return await self._submit_graph(
            graph, artifacts, _opt_str(body.get("savepoint_path"), "savepoint_path"),
            _opt_bool(body.get("allow_non_restored_state"), "allow_non_restored_state"),
            _opt_int(body.get("parallelism"), "parallelism"), list(args))

    # dashboard ---------------------------------------------------------------------------

    def _file(self, name: str) -> web.StreamResponse:
        p = (self.web_dir / name).resolve()
        if p.parent != self.web_dir or not p.is_file():
            raise RequestError(404, f"Not found: /{name}")
        return web.FileResponse(p, headers={"Cache-Control": "no-cache"})

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])
