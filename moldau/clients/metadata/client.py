"""Async client of the metadata service, with ZooKeeper's session semantics.

One client holds one session over one connection at a time. A background task pings every
third of the session timeout and watches the connection; when it drops, the task reconnects
to any node of the connect string (with backoff) and resumes the session by id, then
re-registers outstanding watches. Meanwhile:

- a request that was on the dropped connection fails with CONNECTION_LOSS if it was a write
  (it may or may not have been applied); reads are reissued on the new connection;
- a request issued while disconnected waits for the reconnection, at most one session
  timeout, then fails with CONNECTION_LOSS;
- once a node answers SESSION_EXPIRED, ``expired`` is set, ``on_expired`` is called, and every
  later call raises SESSION_EXPIRED: the session's ephemeral nodes are gone and the user must
  make a new client;
- a node of a quorum that has lost its leader answers NOT_QUORUM_LEADER (to pings too): the
  client drops it, resumes the session on another node of the connect string, and sends the
  request again, reads and writes alike (a write refused so was not applied). After a whole
  session timeout without success the request fails with that error.

Watches are plain callbacks called once on the event loop with a ``WatchEvent``. After a
reconnect each is re-registered; one whose node changed while the client was away (its
mzxid, pzxid or existence differs from what the client last saw) fires at once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, NamedTuple

from moldau.clients.protocol import ErrorCode, Message, MoldauError
from moldau.clients.protocol.messages import (
    MdCloseSessionRequest,
    MdConnectRequest,
    MdConnectResponse,
    MdCreateRequest,
    MdDeleteRequest,
    MdExistsRequest,
    MdGetChildrenRequest,
    MdGetDataRequest,
    MdMultiRequest,
    MdPingRequest,
    MdSetDataRequest,
    MdSyncRequest,
    MdWatchEvent,
    WatchEventType,
)
from moldau.clients.rpc import Connection, parse_hostports

log = logging.getLogger(__name__)

DEFAULT_PORT = 2181
_POLL = 0.05  # how often the keeper looks at the connection between pings (no I/O)


class WatchEvent(NamedTuple):
    type: WatchEventType
    path: str


@dataclass(frozen=True, slots=True)
class Stat:
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int

    @classmethod
    def from_map(cls, m: dict[str, int]) -> Stat:
        return cls(**{f.name: int(m.get(f.name, 0)) for f in fields(cls)})


WatchCallback = Callable[[WatchEvent], None]

_DATA_EVENTS = (WatchEventType.NODE_CREATED, WatchEventType.NODE_DATA_CHANGED,
                WatchEventType.NODE_DELETED)
_CHILD_EVENTS = (WatchEventType.NODE_CHILDREN_CHANGED, WatchEventType.NODE_DELETED)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class MetadataClient:
    """``MetadataClient("h1:2181,h2:2181,h3:2181")``; no I/O until ``await start()``."""

    def __init__(self, connect_string: str, *, session_timeout_ms: int = 10000,
                 client_id: str = "moldau", connect_timeout: float = 10.0) -> None:
        self.hosts = parse_hostports(connect_string, DEFAULT_PORT)
        self.requested_timeout_ms = session_timeout_ms
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self.session_id = 0
        self.session_timeout_ms = session_timeout_ms  # as negotiated once started
        self.expired = asyncio.Event()
        self.on_expired: Callable[[], None] | None = None
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        # path -> callbacks (insertion-ordered sets); the stat the client last saw for the
        # path, to notice changes missed while disconnected: data: mzxid (0: no node),
        # children: pzxid
        self._data_watches: dict[str, dict[WatchCallback, None]] = {}
        self._child_watches: dict[str, dict[WatchCallback, None]] = {}
        self._data_seen: dict[str, int] = {}
        self._child_seen: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self._closed and not self.expired.is_set()

    @property
    def address(self) -> str:
        """The node this client talks to now ("" while disconnected)."""
        return self._conn.address if self._conn is not None and self.connected else ""

    async def start(self) -> None:
        """Connect to one of the nodes and create a session; raises CONNECTION_LOSS if no
        node answered within ``connect_timeout``."""
        if self._keeper is not None:
            raise RuntimeError("client already started")
        try:
            async with asyncio.timeout(self.connect_timeout):
                while True:
                    if await self._connect_any(0):
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise MoldauError(ErrorCode.CONNECTION_LOSS,
                              f"no metadata node reachable at {self._hosts_str()}") from None
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name=f"md-client-{self.session_id:x}")

    async def close(self) -> None:
        """Close the session (its ephemeral nodes go at once) and the connection."""
        if self._closed:
            return
        self._closed = True
        await self._stop_keeper()
        conn = self._conn
        if conn is not None and conn.is_open and not self.expired.is_set():
            with contextlib.suppress(MoldauError, ConnectionError, OSError, TimeoutError):
                await conn.request(MdCloseSessionRequest(),
                                   timeout=min(5.0, self.session_timeout_ms / 1000))
        await self._drop()
        self._wake()

    async def __aenter__(self) -> MetadataClient:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _stop_keeper(self) -> None:
        task, self._keeper = self._keeper, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _hosts_str(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.hosts)

    def _wake(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None:
            await conn.close()

    def _expire(self) -> None:
        if self.expired.is_set():
            return
        log.warning("metadata session %#x expired", self.session_id)
        self.expired.set()
        self._connected.clear()
        self._wake()
        if self.on_expired is not None:
            try:
                self.on_expired()
            except Exception:
                log.exception("on_expired callback failed")

    async def _connect_any(self, session_id: int) -> bool:
        """Try each node once (shuffled); True once one accepted the session."""
        hosts = list(self.hosts)
        random.shuffle(hosts)
        per_try = max(0.2, min(self.connect_timeout, self.session_timeout_ms / 1000 / 3))
        for host, port in hosts:
            conn = Connection(host, port, client_id=self.client_id, on_push=self._on_push)
            ok = False
            try:
                await conn.connect(timeout=per_try)
                resp: MdConnectResponse = await conn.request(
                    MdConnectRequest(timeout_ms=self.requested_timeout_ms,
                                     session_id=session_id), timeout=per_try)
                if resp.error_code == ErrorCode.SESSION_EXPIRED:
                    self._expire()
                    return False
                if resp.error_code:
                    log.debug("metadata node %s:%d refused: %s", host, port,
                              ErrorCode.of(resp.error_code).name)
                    continue
                ok = not session_id or await self._rewatch(conn)
            except (ConnectionError, OSError, TimeoutError, MoldauError) as e:
                log.debug("metadata node %s:%d: %s", host, port, e)
                continue
            finally:
                if not ok:
                    await conn.close()
            if not ok:
                continue
            self.session_id = resp.session_id
            self.session_timeout_ms = resp.timeout_ms
            self._conn = conn
            self._connected.set()
            self._wake()
            log.info("metadata session %#x %s on %s:%d (timeout %d ms)", self.session_id,
                     "resumed" if session_id else "created", host, port, resp.timeout_ms)
            return True
        return False

    async def _keep(self) -> None:
        """Ping while connected; reconnect and resume when the connection drops."""
        loop = asyncio.get_running_loop()
        while not self._closed and not self.expired.is_set():
            conn = self._conn
            interval = self.session_timeout_ms / 1000 / 3
            if conn is not None and conn.is_open:
                # a Connection has no close notification: look at it often, ping rarely
                next_ping = loop.time() + interval
                while True:
                    await asyncio.sleep(_POLL)
                    if not conn.is_open or loop.time() >= next_ping:
                        break
                if conn.is_open:
                    try:
                        resp = await conn.request(MdPingRequest(), timeout=interval)
                        self._raise_for(resp.error_code, "")
                        continue
                    except MoldauError as e:
                        if e.code == ErrorCode.SESSION_EXPIRED:
                            self._expire()
                            break
                        log.warning("metadata ping to %s failed: %s", conn.address, e)
                    except (ConnectionError, OSError, TimeoutError) as e:
                        log.warning("metadata ping to %s failed: %r", conn.address, e)
                if self._conn is conn:
                    log.warning("lost connection to metadata node %s", conn.address)
                    await self._drop()
                    self._wake()
                continue
            # disconnected: retry every node with backoff until resumed or expired
            backoff = 0.05
            while not self._closed and not self.expired.is_set():
                if await self._connect_any(self.session_id):
                    break
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
        await self._drop()

    # ------------------------------------------------------------------ requests

    def _check_usable(self) -> None:
        if self.expired.is_set():
            raise MoldauError(ErrorCode.SESSION_EXPIRED, f"session {self.session_id:#x}")
        if self._closed:
            raise MoldauError(ErrorCode.SESSION_EXPIRED, "the client is closed")
        if self._keeper is None:
            raise MoldauError(ErrorCode.CONNECTION_LOSS, "the client is not started")

    async def _call(self, msg: Message, *, retry: bool) -> Any:
        """Send ``msg`` on the current connection, waiting (at most one session timeout)
        for a reconnection if there is none. Writes lost with their connection raise
        CONNECTION_LOSS; reads (``retry``) are sent again."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            self._check_usable()
            conn = self._conn
            if conn is None or not self._connected.is_set():
                if deadline is None:
                    deadline = loop.time() + self.session_timeout_ms / 1000
                changed = self._state_changed
                try:
                    async with asyncio.timeout_at(deadline):
                        await changed.wait()
                except TimeoutError:
                    raise MoldauError(ErrorCode.CONNECTION_LOSS,
                                      f"not connected to {self._hosts_str()}") from None
                continue
            try:
                resp = await conn.request(msg, timeout=self.session_timeout_ms / 1000)
            except MoldauError as e:
                if e.code == ErrorCode.SESSION_EXPIRED:
                    self._expire()
                if e.code != ErrorCode.NOT_QUORUM_LEADER:
                    raise
                resp = None
            except (ConnectionError, OSError, TimeoutError) as e:
                if self._conn is conn:
                    await self._drop()
                    self._wake()
                if not retry:
                    raise MoldauError(ErrorCode.CONNECTION_LOSS,
                                      f"connection to {conn.address} lost: {e}") from None
                if deadline is None:
                    deadline = loop.time() + self.session_timeout_ms / 1000
                continue
            if resp is not None and getattr(resp, "error_code", 0) != ErrorCode.NOT_QUORUM_LEADER:
                return resp
            # that node lost its quorum and did nothing: move to another node and retry
            if deadline is None:
                deadline = loop.time() + self.session_timeout_ms / 1000
            if loop.time() >= deadline:
                raise MoldauError(ErrorCode.NOT_QUORUM_LEADER,
                                  f"no metadata node of {self._hosts_str()} has a quorum")
            if self._conn is conn:
                log.info("metadata node %s has no quorum; moving to another", conn.address)
                await self._drop()
                self._wake()

    def _raise_for(self, code: int, path: str) -> None:
        if code:
            err = MoldauError(code, path)
            if err.code == ErrorCode.SESSION_EXPIRED:
                self._expire()
            raise err

    # ------------------------------------------------------------------ watches

    def _on_push(self, msg: Message) -> None:
        if not isinstance(msg, MdWatchEvent):
            return
        try:
            etype = WatchEventType(msg.type)
        except ValueError:
            log.warning("ignoring watch event of unknown type %r", msg.type)
            return
        self._fire(etype, msg.path)

    def _fire(self, etype: WatchEventType, path: str) -> None:
        cbs: dict[WatchCallback, None] = {}
        if etype in _DATA_EVENTS:
            cbs.update(self._data_watches.pop(path, {}))
            self._data_seen.pop(path, None)
        if etype in _CHILD_EVENTS:
            cbs.update(self._child_watches.pop(path, {}))
            self._child_seen.pop(path, None)
        event = WatchEvent(etype, path)
        for cb in cbs:
            try:
                cb(event)
            except Exception:
                log.exception("watch callback for %s failed", path)

    @staticmethod
    def _add(table: dict[str, dict[WatchCallback, None]], path: str,
             cb: WatchCallback) -> None:
        table.setdefault(path, {})[cb] = None

    @staticmethod
    def _discard(table: dict[str, dict[WatchCallback, None]], path: str,
                 cb: WatchCallback) -> None:
        cbs = table.get(path)
        if cbs is not None:
            cbs.pop(cb, None)
            if not cbs:
                del table[path]

    async def _rewatch(self, conn: Connection) -> bool:
        """Re-register every outstanding watch on a new connection; fire those whose node
        changed meanwhile. False if the connection failed."""
        timeout = self.session_timeout_ms / 1000
        fire: list[tuple[WatchEventType, str]] = []
        try:
            for path in list(self._data_watches):
                resp = await conn.request(MdExistsRequest(path=path, watch=True),
                                          timeout=timeout)
                if resp.error_code:
                    continue
                seen = self._data_seen.get(path)
                now = resp.stat["mzxid"] if resp.stat else 0
                if seen is None or seen == now:
                    continue
                if resp.stat is None:
                    fire.append((WatchEventType.NODE_DELETED, path))
                elif seen == 0:
                    fire.append((WatchEventType.NODE_CREATED, path))
                else:
                    fire.append((WatchEventType.NODE_DATA_CHANGED, path))
            for path in list(self._child_watches):
                resp = await conn.request(MdGetChildrenRequest(path=path, watch=True),
                                          timeout=timeout)
                if resp.error_code == ErrorCode.NO_NODE:
                    fire.append((WatchEventType.NODE_DELETED, path))
                    continue
                seen = self._child_seen.get(path)
                if not resp.error_code and seen is not None and resp.stat["pzxid"] != seen:
                    fire.append((WatchEventType.NODE_CHILDREN_CHANGED, path))
        except (ConnectionError, OSError, TimeoutError, MoldauError) as e:
            log.warning("re-registering watches on %s failed: %s", conn.address, e)
            return False
        for etype, path in fire:
            self._fire(etype, path)
        return True

    # ------------------------------------------------------------------ API

    async def create(self, path: str, data: bytes = b"", *, ephemeral: bool = False,
                     sequential: bool = False, make_parents: bool = False) -> str:
        """Create a node; returns its path (with the suffix of a sequential node)."""
        for _ in range(10):
            resp = await self._call(MdCreateRequest(path=path, data=bytes(data),
                                                    ephemeral=ephemeral,
                                                    sequential=sequential), retry=False)
            if resp.error_code == ErrorCode.NO_NODE and make_parents:
                await self.ensure_path(_parent(path))
                continue
            self._raise_for(resp.error_code, path)
            return str(resp.path)
        raise MoldauError(ErrorCode.NO_NODE, path)

    async def ensure_path(self, path: str) -> None:
        """Create the missing persistent nodes along ``path``."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise MoldauError(ErrorCode.BAD_ARGUMENTS, str(path))
        if path == "/" or await self.exists(path) is not None:
            return
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            try:
                await self.create(sub)
            except MoldauError as e:
                if e.code != ErrorCode.NODE_EXISTS:
                    raise

    async def get(self, path: str, watch: WatchCallback | None = None) -> tuple[bytes, Stat]:
        """Data and stat of a node (NO_NODE if missing); ``watch`` fires on its next change
        or deletion."""
        if watch is not None:
            self._add(self._data_watches, path, watch)
        try:
            resp = await self._call(MdGetDataRequest(path=path, watch=watch is not None),
                                    retry=True)
            self._raise_for(resp.error_code, path)
        except BaseException:
            if watch is not None:
                self._discard(self._data_watches, path, watch)
            raise
        stat = Stat.from_map(resp.stat)
        if watch is not None and path in self._data_watches:
            self._data_seen[path] = stat.mzxid
        return bytes(resp.data), stat

    async def exists(self, path: str, watch: WatchCallback | None = None) -> Stat | None:
        """The node's stat, or None; ``watch`` fires when it is created, changed or
        deleted."""
        if watch is not None:
            self._add(self._data_watches, path, watch)
        try:
            resp = await self._call(MdExistsRequest(path=path, watch=watch is not None),
                                    retry=True)
            self._raise_for(resp.error_code, path)
        except BaseException:
            if watch is not None:
                self._discard(self._data_watches, path, watch)
            raise
        stat = None if resp.stat is None else Stat.from_map(resp.stat)
        if watch is not None and path in self._data_watches:
            self._data_seen[path] = stat.mzxid if stat is not None else 0
        return stat

    async def children(self, path: str, watch: WatchCallback | None = None) -> list[str]:
        """Sorted child names (NO_NODE if missing); ``watch`` fires when a child is added or
        removed, or the node is deleted."""
        if watch is not None:
            self._add(self._child_watches, path, watch)
        try:
            resp = await self._call(MdGetChildrenRequest(path=path, watch=watch is not None),
                                    retry=True)
            self._raise_for(resp.error_code, path)
        except BaseException:
            if watch is not None:
                self._discard(self._child_watches, path, watch)
            raise
        if watch is not None and path in self._child_watches and resp.stat is not None:
            self._child_seen[path] = int(resp.stat["pzxid"])
        return sorted(resp.children)

    async def set(self, path: str, data: bytes, version: int = -1) -> Stat:
        """Replace a node's data if its version matches (-1: any); returns the new stat."""
        resp = await self._call(MdSetDataRequest(path=path, data=bytes(data), version=version),
                                retry=False)
        self._raise_for(resp.error_code, path)
        return Stat.from_map(resp.stat)

    async def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete a node if its version matches; with ``recursive``, its descendants first
        (descendants already gone are fine)."""
        if recursive:
            for _ in range(10):
                kids = await self.children(path)
                for kid in kids:
                    child = f"{path.rstrip('/')}/{kid}"
                    try:
                        await self.delete(child, recursive=True)
                    except MoldauError as e:
                        if e.code != ErrorCode.NO_NODE:
                            raise
                if path == "/":
                    return
                try:
                    await self._delete_one(path, version)
                    return
                except MoldauError as e:
                    if e.code != ErrorCode.NOT_EMPTY:  # a child appeared meanwhile
                        raise
            raise MoldauError(ErrorCode.NOT_EMPTY, path)
        await self._delete_one(path, version)

    async def _delete_one(self, path: str, version: int) -> None:
        resp = await self._call(MdDeleteRequest(path=path, version=version), retry=False)
        self._raise_for(resp.error_code, path)

    async def multi(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``ops`` (maps as in MdMultiRequest) all or nothing; returns one result map
        per op, or raises the first failing op's error (message: its path)."""
        norm = []
        for op in ops:
            o = dict(op)
            if "data" in o:
                o["data"] = bytes(o["data"])
            norm.append(o)
        resp = await self._call(MdMultiRequest(ops=norm), retry=False)
        if resp.error_code:
            for i, r in enumerate(resp.results):
                if r.get("error_code"):
                    path = r.get("path") or (ops[i].get("path", "") if i < len(ops) else "")
                    raise MoldauError(r["error_code"], str(path))
            raise MoldauError(resp.error_code, "multi")
        return list(resp.results)

    async def sync(self, path: str = "/") -> None:
        """Wait until the node this client talks to has applied everything committed before
        the call (reads after it are not stale)."""
        resp = await self._call(MdSyncRequest(path=path), retry=True)
        self._raise_for(resp.error_code, path)
