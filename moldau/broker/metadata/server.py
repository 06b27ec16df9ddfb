"""The metadata service's request handler and lifecycle.

A connection first sends MdConnect (a new session, or resuming one by id); every later
request acts for that session and keeps it alive. Mutations go: validate → submit to the
``TxnSink`` (zxid, log, fdatasync) → apply → watches fire → respond. Reads answer from the
tree, after this connection's own earlier writes are applied (a session sees its writes in
order, as in ZooKeeper). A session that expires is closed by logging ``close_session``, which
deletes its ephemeral nodes; its connection is then closed.

In a quorum (``--peers``) the sink is Raft's (``raft_sink``): any node serves any client;
writes go to the leader, reads are served from this node's tree (ZooKeeper's guarantees: a
session sees its own writes and never goes back in time, even across nodes, since resuming a
session first syncs), ``MdSync`` makes the next read linearizable. A node that has no leader
(or, as leader, no majority) answers NOT_QUORUM_LEADER, so its clients move to another node.
The leader alone expires sessions; followers report the sessions they hear from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from moldau.broker.metadata.config import MetadataConfig
from moldau.broker.metadata.raft_sink import RaftTxnSink
from moldau.broker.metadata.replication import LocalTxnSink, TxnSink
from moldau.broker.metadata.sessions import SessionTracker
from moldau.broker.metadata.store import MetadataStore
from moldau.broker.metadata.tree import (
    MAX_DATA_SIZE,
    ApplyResult,
    DataTree,
    Event,
    Txn,
    path_error,
    split_path,
)
from moldau.broker.metadata.watches import WatchManager
from moldau.clients.protocol import ErrorCode, Message, MoldauError, RequestHeader, response_class
from moldau.clients.protocol.messages import (
    METADATA_APIS,
    ApiVersionsRequest,
    MdCloseSessionRequest,
    MdCloseSessionResponse,
    MdConnectRequest,
    MdConnectResponse,
    MdCreateRequest,
    MdCreateResponse,
    MdDeleteRequest,
    MdDeleteResponse,
    MdExistsRequest,
    MdExistsResponse,
    MdGetChildrenRequest,
    MdGetChildrenResponse,
    MdGetDataRequest,
    MdGetDataResponse,
    MdMultiRequest,
    MdMultiResponse,
    MdPingRequest,
    MdPingResponse,
    MdSetDataRequest,
    MdSetDataResponse,
    MdSyncRequest,
    MdSyncResponse,
    WatchEventType,
)
from moldau.clients.rpc import RpcServer, ServerConnection, api_versions_response

log = logging.getLogger(__name__)

_BAD = int(ErrorCode.BAD_ARGUMENTS)
_SESSION = "md_session"
_LAST_WRITE = "md_last_write"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def clean_op(op: object) -> dict[str, Any] | None:
    """A multi op with only the fields its kind uses, or None if it is malformed."""
    if not isinstance(op, dict):
        return None
    kind, path = op.get("op"), op.get("path")
    version = op.get("version", -1)
    data = op.get("data", b"")
    if kind == "create":
        ephemeral, sequential = op.get("ephemeral", False), op.get("sequential", False)
        if (not isinstance(ephemeral, bool) or not isinstance(sequential, bool)
                or path_error(path, sequential=sequential) is not None
                or not isinstance(data, bytes) or len(data) > MAX_DATA_SIZE):
            return None
        return {"op": kind, "path": path, "data": data, "ephemeral": ephemeral,
                "sequential": sequential}
    if kind in ("delete", "check", "set"):
        if path_error(path) is not None or not _is_int(version):
            return None
        if kind == "set":
            if not isinstance(data, bytes) or len(data) > MAX_DATA_SIZE:
                return None
            return {"op": kind, "path": path, "data": data, "version": version}
        return {"op": kind, "path": path, "version": version}
    return None


class MetadataServer:
    """One metadata node. No I/O until ``await start()``."""

    def __init__(self, config: MetadataConfig) -> None:
        self.config = config
        self.store = MetadataStore(config.data_dir, config.snapshot_every)
        self.quorum: RaftTxnSink | None = None
        self.sink: TxnSink
        if config.quorum:
            self.quorum = self.sink = RaftTxnSink(self.store, config)
        else:
            self.sink = LocalTxnSink(self.store)
        self.sessions = SessionTracker(config.min_session_timeout_ms,
                                       config.max_session_timeout_ms, config.tick_ms)
        self.watches = WatchManager()
        self.rpc = RpcServer(self, METADATA_APIS, max_frame_size=config.max_frame_size)
        self._bound: dict[int, ServerConnection] = {}  # session -> its current connection
        self._tasks: list[asyncio.Task[None]] = []
        self.address: tuple[str, int] = ("", 0)
        self.peer_address: tuple[str, int] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> tuple[str, int]:
        q = self.quorum
        # in a quorum, logged entries are applied only once the leader says they committed
        await self.store.start(replay=q is None)
        # restored sessions get a full timeout from now, so their clients can resume them
        for sid, timeout in self.store.tree.sessions.items():
            self.sessions.add(sid, timeout)
        self.sink.on_apply = self._on_apply
        if q is not None:
            q.on_role_change = self._on_role_change
            q.on_install = self._on_install
            q.on_touch = self._on_touch
            self.peer_address = await q.start()
        loop = asyncio.get_running_loop()
        active = (lambda: True) if q is None else (lambda: q.is_leader)
        self._tasks = [loop.create_task(self.sink.run(), name="md-commit"),
                       loop.create_task(self.sessions.run(self._expire, active),
                                        name="md-sessions")]
        self.address = await self.rpc.start(self.config.host, self.config.port)
        return self.address

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down in order; a failed background task
        (a storage error) shuts down too and is re-raised."""
        waiter = asyncio.get_running_loop().create_task(stop.wait())
        try:
            await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        failed = next((t for t in self._tasks if t.done() and not t.cancelled()
                       and t.exception() is not None), None)
        await self.stop()
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, drain in-flight requests, apply what was logged, fsync the log,
        close. Sessions are not expired: their clients may resume them after a restart."""
        log.info("shutdown: stop accepting")
        self.rpc.stop_accepting()
        log.info("shutdown: draining requests")
        await self.rpc.drain(grace)
        commit = self._tasks[0] if self._tasks else None
        if commit is not None and not commit.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.sink.barrier()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.sink.close()
        log.info("shutdown: flushing the txn log")
        await self.store.close()
        log.info("shutdown: done")

    # ------------------------------------------------------------------ state changes

    def _on_apply(self, txn: Txn, result: ApplyResult) -> None:
        if result.events:
            self.watches.trigger(result.events)
        if result.error:
            return
        if txn.op == "create_session":
            self.sessions.add(txn.args["session_id"], txn.args["timeout_ms"])
        elif txn.op == "close_session":
            sid = txn.args["session_id"]
            self.sessions.remove(sid)
            conn = self._bound.pop(sid, None)
            if conn is not None:
                conn.state.pop(_SESSION, None)
                conn.transport.close()

    def _on_role_change(self, leader: bool) -> None:
        # a new leader gives every session a full timeout, as a restarted node does; one that
        # steps down forgets which sessions it was about to close
        self.sessions.reset(self.store.tree.sessions)

    def _on_touch(self, sids: list[int]) -> None:
        for sid in sids:
            self.sessions.touch(sid)

    def _on_install(self, old: DataTree, new: DataTree) -> None:
        """The tree was replaced by a leader's snapshot: fire the watches its changes
        trigger, and follow the sessions it has."""
        events: dict[Event, None] = {}
        for path in old.nodes.keys() | new.nodes.keys():
            o, n = old.nodes.get(path), new.nodes.get(path)
            parent = split_path(path)[0]
            if o is None or n is None:
                events[(WatchEventType.NODE_CREATED if o is None
                        else WatchEventType.NODE_DELETED, path)] = None
                if path != "/":
                    events[(WatchEventType.NODE_CHILDREN_CHANGED, parent)] = None
                continue
            if o.mzxid != n.mzxid:
                events[(WatchEventType.NODE_DATA_CHANGED, path)] = None
            if o.pzxid != n.pzxid:
                events[(WatchEventType.NODE_CHILDREN_CHANGED, path)] = None
        self.watches.trigger(events)
        for sid in old.sessions.keys() - new.sessions.keys():
            self.sessions.remove(sid)
            conn = self._bound.pop(sid, None)
            if conn is not None:
                conn.state.pop(_SESSION, None)
                conn.transport.close()
        for sid in new.sessions.keys() - old.sessions.keys():
            self.sessions.add(sid, new.sessions[sid])

    async def _expire(self, sid: int) -> None:
        try:
            await self.sink.submit(0, "close_session", {"session_id": sid})
        except MoldauError as e:
            log.warning("could not expire session %#x: %s", sid, e)

    def _bind(self, conn: ServerConnection, sid: int) -> None:
        old = self._bound.get(sid)
        if old is not None and old is not conn:
            # the client moved to a new connection; the old one is dead or half-open
            old.state.pop(_SESSION, None)
            old.transport.close()
        self._bound[sid] = conn
        if not conn.state.get("md_cb"):
            conn.state["md_cb"] = True
            conn.close_callbacks.append(self._on_close)
        conn.state[_SESSION] = sid

    def _on_close(self, conn: ServerConnection) -> None:
        self.watches.remove_watcher(conn)
        sid = conn.state.pop(_SESSION, None)
        if sid is not None and self._bound.get(sid) is conn:
            del self._bound[sid]

    def _session(self, conn: ServerConnection) -> int:
        sid = conn.state.get(_SESSION)
        if sid is None:
            raise MoldauError(ErrorCode.INVALID_REQUEST,
                              "no session on this connection: send MdConnect first")
        q = self.quorum
        if q is not None and not q.has_quorum():
            raise MoldauError(ErrorCode.NOT_QUORUM_LEADER, "this node has no quorum")
        if not self.sessions.touch(sid):
            raise MoldauError(ErrorCode.SESSION_EXPIRED, f"session {sid:#x} expired")
        if q is not None and not q.is_leader:
            q.touch(sid)
        return int(sid)

    async def _write(self, conn: ServerConnection, sid: int, op: str,
                     args: dict[str, Any]) -> ApplyResult:
        fut = self.sink.submit(sid, op, args)
        conn.state[_LAST_WRITE] = fut
        return await asyncio.shield(fut)

    @staticmethod
    async def _after_own_writes(conn: ServerConnection) -> None:
        last = conn.state.get(_LAST_WRITE)
        if last is not None and not last.done():
            await asyncio.wait([last])

    # ------------------------------------------------------------------ requests

    async def handle(self, conn: ServerConnection, header: RequestHeader,
                     request: Message) -> Message | None:
        if isinstance(request, ApiVersionsRequest):
            return api_versions_response(self.rpc.apis)
        if isinstance(request, MdConnectRequest):
            return await self._connect(conn, request)
        try:
            sid = self._session(conn)
        except MoldauError as e:
            # answered in the body: every Md response but MdConnect's has only error_code
            # required
            return response_class(request.API)(error_code=int(e.code))  # type: ignore[call-arg]
        try:
            return await self._serve(conn, sid, request)
        except MoldauError as e:
            if e.code in (ErrorCode.NOT_QUORUM_LEADER, ErrorCode.CONNECTION_LOSS,
                          ErrorCode.KAFKA_STORAGE_ERROR) and request.API in self.rpc.apis:
                # in the body, like every other Md error: the client decides what to retry
                return response_class(request.API)(error_code=int(e.code))  # type: ignore[call-arg]
            raise

    async def _serve(self, conn: ServerConnection, sid: int,
                     request: Message) -> Message | None:
        match request:
            case MdPingRequest():
                return MdPingResponse(error_code=0)
            case MdGetDataRequest():
                return await self._get_data(conn, request)
            case MdExistsRequest():
                return await self._exists(conn, request)
            case MdGetChildrenRequest():
                return await self._get_children(conn, request)
            case MdCreateRequest():
                return await self._create(conn, sid, request)
            case MdSetDataRequest():
                return await self._set_data(conn, sid, request)
            case MdDeleteRequest():
                return await self._delete(conn, sid, request)
            case MdMultiRequest():
                return await self._multi(conn, sid, request)
            case MdSyncRequest():
                await self._after_own_writes(conn)
                await self.sink.sync()
                return MdSyncResponse(error_code=0)
            case MdCloseSessionRequest():
                return await self._close_session(conn, sid)
        raise MoldauError(ErrorCode.UNSUPPORTED_VERSION, f"api {request.API.name} not served")

    async def _connect(self, conn: ServerConnection,
                       req: MdConnectRequest) -> Message | None:
        current = conn.state.get(_SESSION)
        if not _is_int(req.timeout_ms) or not _is_int(req.session_id) or (
                current is not None and current != req.session_id):
            return MdConnectResponse(error_code=_BAD, session_id=0, timeout_ms=0)
        q = self.quorum
        leader = "" if q is None or q.leader is None else str(q.leader)
        if q is not None:
            refused = MdConnectResponse(error_code=int(ErrorCode.NOT_QUORUM_LEADER),
                                        session_id=0, timeout_ms=0, leader=leader)
            if not q.has_quorum():
                return refused
            if req.session_id:
                # the session must not see an older tree than on the node it comes from
                try:
                    await q.sync()
                except MoldauError:
                    return refused
        if req.session_id == 0:
            timeout = self.sessions.negotiate(req.timeout_ms)
            sid = self.sessions.new_session_id(self.store.tree.sessions)
            try:
                result = await self._write(conn, 0, "create_session",
                                           {"session_id": sid, "timeout_ms": timeout})
            except MoldauError as e:
                return MdConnectResponse(error_code=int(e.code), session_id=0, timeout_ms=0,
                                         leader=leader)
            if result.error:
                return MdConnectResponse(error_code=int(result.error), session_id=0,
                                         timeout_ms=0)
            if conn.closed:
                return None
            log.info("session %#x created for %s (timeout %d ms)", sid, conn.peer, timeout)
        else:
            sid = req.session_id
            if sid not in self.store.tree.sessions or not self.sessions.touch(sid):
                return MdConnectResponse(error_code=int(ErrorCode.SESSION_EXPIRED),
                                         session_id=sid, timeout_ms=0, leader=leader)
            if q is not None and not q.is_leader:
                q.touch(sid)
            timeout = self.store.tree.sessions[sid]
            log.info("session %#x resumed by %s", sid, conn.peer)
        self._bind(conn, sid)
        return MdConnectResponse(error_code=0, session_id=sid, timeout_ms=timeout,
                                 leader=leader)

    async def _get_data(self, conn: ServerConnection, req: MdGetDataRequest) -> Message:
        if path_error(req.path) is not None:
            return MdGetDataResponse(error_code=_BAD)
        await self._after_own_writes(conn)
        node = self.store.tree.get(req.path)
        if node is None:
            return MdGetDataResponse(error_code=int(ErrorCode.NO_NODE))
        if req.watch:
            self.watches.add_data_watch(req.path, conn)
        return MdGetDataResponse(error_code=0, data=node.data, stat=node.stat())

    async def _exists(self, conn: ServerConnection, req: MdExistsRequest) -> Message:
        if path_error(req.path) is not None:
            return MdExistsResponse(error_code=_BAD)
        await self._after_own_writes(conn)
        node = self.store.tree.get(req.path)
        if req.watch:
            self.watches.add_data_watch(req.path, conn)
        return MdExistsResponse(error_code=0, stat=None if node is None else node.stat())

    async def _get_children(self, conn: ServerConnection,
                            req: MdGetChildrenRequest) -> Message:
        if path_error(req.path) is not None:
            return MdGetChildrenResponse(error_code=_BAD)
        await self._after_own_writes(conn)
        node = self.store.tree.get(req.path)
        if node is None:
            return MdGetChildrenResponse(error_code=int(ErrorCode.NO_NODE))
        if req.watch:
            self.watches.add_child_watch(req.path, conn)
        return MdGetChildrenResponse(error_code=0, children=sorted(node.children),
                                     stat=node.stat())

    async def _create(self, conn: ServerConnection, sid: int, req: MdCreateRequest) -> Message:
        op = clean_op({"op": "create", "path": req.path, "data": req.data,
                       "ephemeral": req.ephemeral, "sequential": req.sequential})
        if op is None:
            return MdCreateResponse(error_code=_BAD)
        del op["op"]
        result = await self._write(conn, sid, "create", op)
        return MdCreateResponse(error_code=int(result.error), path=result.path)

    async def _set_data(self, conn: ServerConnection, sid: int,
                        req: MdSetDataRequest) -> Message:
        op = clean_op({"op": "set", "path": req.path, "data": req.data,
                       "version": req.version})
        if op is None:
            return MdSetDataResponse(error_code=_BAD)
        del op["op"]
        result = await self._write(conn, sid, "set_data", op)
        return MdSetDataResponse(error_code=int(result.error), stat=result.stat)

    async def _delete(self, conn: ServerConnection, sid: int, req: MdDeleteRequest) -> Message:
        op = clean_op({"op": "delete", "path": req.path, "version": req.version})
        if op is None or req.path == "/":
            return MdDeleteResponse(error_code=_BAD)
        del op["op"]
        result = await self._write(conn, sid, "delete", op)
        return MdDeleteResponse(error_code=int(result.error))

    async def _multi(self, conn: ServerConnection, sid: int, req: MdMultiRequest) -> Message:
        if not isinstance(req.ops, list):
            return MdMultiResponse(error_code=_BAD)
        ops = []
        for i, raw in enumerate(req.ops):
            op = clean_op(raw)
            if op is None:
                results = [{"error_code": 0, "path": "", "stat": None} for _ in req.ops]
                results[i]["error_code"] = _BAD
                results[i]["path"] = raw.get("path", "") if isinstance(raw, dict) else ""
                return MdMultiResponse(error_code=_BAD, results=results)
            ops.append(op)
        if not ops:
            return MdMultiResponse(error_code=0, results=[])
        result = await self._write(conn, sid, "multi", {"ops": ops})
        return MdMultiResponse(error_code=int(result.error), results=result.results or [])

    async def _close_session(self, conn: ServerConnection, sid: int) -> Message:
        # unbind first, so the close does not cut the connection before this answer leaves
        self.sessions.mark_closing(sid)
        conn.state.pop(_SESSION, None)
        if self._bound.get(sid) is conn:
            del self._bound[sid]
        result = await self._write(conn, sid, "close_session", {"session_id": sid})
        log.info("session %#x closed by %s", sid, conn.peer)
        return MdCloseSessionResponse(error_code=int(result.error))
