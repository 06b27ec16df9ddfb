"""The metadata tree: a deterministic state machine over logged transactions (pure, no I/O).

Invariant: the tree is a pure function of the sequence of transactions applied to it. Every
transaction carries the zxid and the wall-clock time the leader decided for it, and the
leader also decides session ids and expiries (as ``create_session`` / ``close_session``
transactions), so replaying the same log on any node, or restoring a snapshot and replaying
the rest, yields an identical tree. Failed operations are transactions too: they consume a
zxid and change nothing.

Transactions (``Txn.op`` and ``Txn.args``)::

    create          {"path", "data", "ephemeral", "sequential"}  (owner: txn.session)
    delete          {"path", "version"}
    set_data        {"path", "data", "version"}
    check           {"path", "version"}                          (only inside multi)
    multi           {"ops": [{"op": "create" | "delete" | "set" | "check", ...}, ...]}
    create_session  {"session_id", "timeout_ms"}
    close_session   {"session_id"}                  (deletes the session's ephemeral nodes)
    noop            {}                 (a new quorum leader's first entry; changes nothing)

In a quorum the zxid is the transaction's Raft log index and ``term`` its Raft term (0 on a
single node, where it is not written).

Stats follow ZooKeeper: a create bumps the parent's ``cversion`` and sets its ``pzxid``, a
delete does the same (``cversion`` counts changes to the children), a set bumps
``version``. A sequential node's name ends in the parent's ``cversion`` before the create,
as ten digits. Ephemeral nodes cannot have children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from moldau.clients.protocol import ErrorCode
from moldau.clients.protocol.messages import WatchEventType

MAX_DATA_SIZE = 1024 * 1024  # ZooKeeper's default jute.maxbuffer
MAX_PATH_LENGTH = 4096

Event = tuple[WatchEventType, str]


class TxnError(Exception):
    """An operation failed: the tree is left as it was before the transaction."""

    def __init__(self, code: ErrorCode, path: str) -> None:
        super().__init__(f"{code.name}: {path}")
        self.code = code
        self.path = path


def path_error(path: object, *, sequential: bool = False) -> str | None:
    """Why ``path`` is not a valid node path (None when it is).

    ZooKeeper's rules: absolute, no trailing ``/``, no empty, ``.`` or ``..`` components, no
    control characters. A sequential create may end in ``/`` (the suffix becomes the name).
    """
    if not isinstance(path, str):
        return "path is not a string"
    if sequential:
        path = path + "0"
    if not path.startswith("/"):
        return f"path must start with '/': {path!r}"
    if len(path) > MAX_PATH_LENGTH:
        return f"path longer than {MAX_PATH_LENGTH} characters"
    if path == "/":
        return None
    if path.endswith("/"):
        return f"path must not end with '/': {path!r}"
    for part in path[1:].split("/"):
        if not part:
            return f"empty path component: {path!r}"
        if part in (".", ".."):
            return f"relative path component {part!r}: {path!r}"
    if any(c < "\x20" or "\x7f" <= c <= "\x9f" for c in path):
        return f"control character in path: {path!r}"
    return None


def split_path(path: str) -> tuple[str, str]:
    """``"/a/b"`` -> ``("/a", "b")``; ``"/a"`` -> ``("/", "a")``."""
    parent, _, name = path.rpartition("/")
    return parent or "/", name


@dataclass(frozen=True, slots=True)
class Txn:
    """One logged transaction; encoded as msgpack ``[zxid, time, session, op, args]``, with
    ``term`` as a sixth item when it is not 0."""

    zxid: int
    time: int  # milliseconds since the epoch, decided by the leader
    session: int  # the session that issued it, 0 for none
    op: str
    args: dict[str, Any]
    term: int = 0  # the Raft term of the entry (quorum only)

    def encode(self) -> bytes:
        items: list[Any] = [self.zxid, self.time, self.session, self.op, self.args]
        if self.term:
            items.append(self.term)
        return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Txn:
        v = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if (not isinstance(v, list) or len(v) not in (5, 6)
                or not all(isinstance(x, int) for x in v[:3])
                or not isinstance(v[3], str) or not isinstance(v[4], dict)
                or (len(v) == 6 and not isinstance(v[5], int))):
            raise ValueError("not a transaction record")
        return cls(v[0], v[1], v[2], v[3], v[4], v[5] if len(v) == 6 else 0)


@dataclass(slots=True)
class ApplyResult:
    """What applying one transaction did: its error (NONE on success), the created path,
    the node's new stat, per-op results of a multi, and the watch events it triggers."""

    error: ErrorCode = ErrorCode.NONE
    path: str = ""
    stat: dict[str, int] | None = None
    results: list[dict[str, Any]] | None = None
    events: list[Event] = field(default_factory=list)


class Node:
    __slots__ = ("children", "ctime", "cversion", "czxid", "data", "ephemeral_owner", "mtime",
                 "mzxid", "pzxid", "version")

    def __init__(self, data: bytes, zxid: int, time: int, ephemeral_owner: int = 0) -> None:
        self.data = data
        self.czxid = self.mzxid = self.pzxid = zxid
        self.ctime = self.mtime = time
        self.version = 0
        self.cversion = 0
        self.ephemeral_owner = ephemeral_owner
        self.children: set[str] = set()

    def stat(self) -> dict[str, int]:
        return {
            "czxid": self.czxid, "mzxid": self.mzxid, "pzxid": self.pzxid,
            "ctime": self.ctime, "mtime": self.mtime, "version": self.version,
            "cversion": self.cversion, "ephemeral_owner": self.ephemeral_owner,
            "data_length": len(self.data), "num_children": len(self.children),
        }


Undo = list[Callable[[], None]]


class DataTree:
    """Nodes by path, sessions by id, and the zxid of the last applied transaction."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"/": Node(b"", 0, 0)}
        self.sessions: dict[int, int] = {}  # session id -> negotiated timeout (ms)
        self.ephemerals: dict[int, set[str]] = {}  # session id -> its ephemeral paths
        self.last_zxid = 0
        self.last_term = 0  # the Raft term of the last applied transaction (quorum only)

    # ------------------------------------------------------------------ reads

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def children(self, path: str) -> list[str] | None:
        node = self.nodes.get(path)
        return None if node is None else sorted(node.children)

    def __len__(self) -> int:
        return len(self.nodes)

    # ------------------------------------------------------------------ apply

    def apply(self, txn: Txn) -> ApplyResult:
        """Apply one transaction; raises ValueError for a zxid not after the last one."""
        if txn.zxid <= self.last_zxid:
            raise ValueError(f"zxid {txn.zxid} not after the last applied {self.last_zxid}")
        self.last_zxid = txn.zxid
        self.last_term = txn.term
        undo: Undo = []
        result = ApplyResult()
        try:
            if txn.op == "noop":
                pass
            elif txn.op == "multi":
                self._multi(txn, result, undo)
            elif txn.op == "create_session":
                self._create_session(txn.args)
            elif txn.op == "close_session":
                self._close_session(txn, result)
            else:
                self._single(txn, txn.op, txn.args, result, undo)
        except TxnError as e:
            for u in reversed(undo):
                u()
            return ApplyResult(error=e.code, path=e.path, results=result.results)
        return result

    def _single(self, txn: Txn, op: str, args: dict[str, Any], result: ApplyResult,
                undo: Undo) -> dict[str, Any]:
        """Apply one operation of a plain or multi transaction; its multi result map."""
        path = args.get("path")
        if op == "create":
            created = self._create(txn, path, args.get("data", b""), bool(args.get("ephemeral")),
                                   bool(args.get("sequential")), result.events, undo)
            result.path = created
            return {"error_code": 0, "path": created, "stat": None}
        if op == "delete":
            self._delete(txn, path, args.get("version", -1), result.events, undo)
            return {"error_code": 0, "path": path, "stat": None}
        if op in ("set_data", "set"):
            result.stat = self._set_data(txn, path, args.get("data"), args.get("version", -1),
                                         result.events, undo)
            return {"error_code": 0, "path": path, "stat": result.stat}
        if op == "check":
            self._node_at(path, args.get("version", -1))
            return {"error_code": 0, "path": path, "stat": None}
        raise TxnError(ErrorCode.BAD_ARGUMENTS, f"unknown operation {op!r}")

    def _multi(self, txn: Txn, result: ApplyResult, undo: Undo) -> None:
        ops = txn.args.get("ops")
        if not isinstance(ops, list):
            raise TxnError(ErrorCode.BAD_ARGUMENTS, "multi without a list of ops")
        results: list[dict[str, Any]] = [
            {"error_code": 0, "path": "", "stat": None} for _ in ops]
        result.results = results
        for i, op in enumerate(ops):
            if not isinstance(op, dict) or op.get("op") not in ("create", "delete", "set",
                                                                 "check"):
                results[i] = {"error_code": int(ErrorCode.BAD_ARGUMENTS), "path": "",
                              "stat": None}
                raise TxnError(ErrorCode.BAD_ARGUMENTS, f"bad op #{i} in multi")
            try:
                results[i] = self._single(txn, op["op"], op, result, undo)
            except TxnError as e:
                # nothing is applied: only the failing op reports anything
                for j in range(i):
                    results[j] = {"error_code": 0, "path": "", "stat": None}
                results[i] = {"error_code": int(e.code), "path": e.path, "stat": None}
                raise
        result.path = ""
        result.stat = None

    @staticmethod
    def _check_path(path: object, sequential: bool = False) -> str:
        if path_error(path, sequential=sequential) is not None:
            raise TxnError(ErrorCode.BAD_ARGUMENTS, str(path))
        assert isinstance(path, str)
        return path

    @staticmethod
    def _check_data(data: object, path: str) -> bytes:
        if not isinstance(data, bytes) or len(data) > MAX_DATA_SIZE:
            raise TxnError(ErrorCode.BAD_ARGUMENTS, path)
        return data

    def _node_at(self, path: object, version: object) -> Node:
        path = self._check_path(path)
        node = self.nodes.get(path)
        if node is None:
            raise TxnError(ErrorCode.NO_NODE, path)
        if not isinstance(version, int):
            raise TxnError(ErrorCode.BAD_ARGUMENTS, path)
        if version != -1 and version != node.version:
            raise TxnError(ErrorCode.BAD_VERSION, path)
        return node

    def _create(self, txn: Txn, path: object, data: object, ephemeral: bool, sequential: bool,
                events: list[Event], undo: Undo) -> str:
        path = self._check_path(path, sequential)
        data = self._check_data(data, path)
        if path == "/":
            raise TxnError(ErrorCode.NODE_EXISTS, path)
        parent_path, name = split_path(path)
        parent = self.nodes.get(parent_path)
        if parent is None:
            raise TxnError(ErrorCode.NO_NODE, path)
        if parent.ephemeral_owner:
            raise TxnError(ErrorCode.NO_CHILDREN_FOR_EPHEMERALS, path)
        if sequential:
            suffix = f"{parent.cversion:010d}"
            path, name = path + suffix, name + suffix
        if path in self.nodes:
            raise TxnError(ErrorCode.NODE_EXISTS, path)
        owner = 0
        if ephemeral:
            if txn.session not in self.sessions:
                raise TxnError(ErrorCode.SESSION_EXPIRED, path)
            owner = txn.session
        node = Node(data, txn.zxid, txn.time, owner)
        old_parent = (parent.cversion, parent.pzxid)
        self.nodes[path] = node
        parent.children.add(name)
        parent.cversion += 1
        parent.pzxid = txn.zxid
        if owner:
            self.ephemerals.setdefault(owner, set()).add(path)

        def revert() -> None:
            del self.nodes[path]
            parent.children.discard(name)
            parent.cversion, parent.pzxid = old_parent
            if owner:
                self._forget_ephemeral(owner, path)

        undo.append(revert)
        events.append((WatchEventType.NODE_CREATED, path))
        events.append((WatchEventType.NODE_CHILDREN_CHANGED, parent_path))
        return path

    def _delete(self, txn: Txn, path: object, version: object, events: list[Event],
                undo: Undo) -> None:
        path = self._check_path(path)
        if path == "/":
            raise TxnError(ErrorCode.BAD_ARGUMENTS, path)
        node = self._node_at(path, version)
        if node.children:
            raise TxnError(ErrorCode.NOT_EMPTY, path)
        self._remove(txn.zxid, path, node, events, undo)

    def _remove(self, zxid: int, path: str, node: Node, events: list[Event],
                undo: Undo | None) -> None:
        parent_path, name = split_path(path)
        parent = self.nodes[parent_path]
        old_parent = (parent.cversion, parent.pzxid)
        del self.nodes[path]
        parent.children.discard(name)
        parent.cversion += 1
        parent.pzxid = zxid
        owner = node.ephemeral_owner
        if owner:
            self._forget_ephemeral(owner, path)
        if undo is not None:
            def revert() -> None:
                self.nodes[path] = node
                parent.children.add(name)
                parent.cversion, parent.pzxid = old_parent
                if owner:
                    self.ephemerals.setdefault(owner, set()).add(path)

            undo.append(revert)
        events.append((WatchEventType.NODE_DELETED, path))
        events.append((WatchEventType.NODE_CHILDREN_CHANGED, parent_path))

    def _forget_ephemeral(self, owner: int, path: str) -> None:
        paths = self.ephemerals.get(owner)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self.ephemerals[owner]

    def _set_data(self, txn: Txn, path: object, data: object, version: object,
                  events: list[Event], undo: Undo) -> dict[str, int]:
        node = self._node_at(path, version)
        assert isinstance(path, str)
        data = self._check_data(data, path)
        old = (node.data, node.mzxid, node.mtime, node.version)
        node.data = data
        node.mzxid = txn.zxid
        node.mtime = txn.time
        node.version += 1

        def revert() -> None:
            node.data, node.mzxid, node.mtime, node.version = old

        undo.append(revert)
        events.append((WatchEventType.NODE_DATA_CHANGED, path))
        return node.stat()

    def _create_session(self, args: dict[str, Any]) -> None:
        sid, timeout = args.get("session_id"), args.get("timeout_ms")
        if not isinstance(sid, int) or not isinstance(timeout, int) or sid <= 0:
            raise TxnError(ErrorCode.BAD_ARGUMENTS, "create_session")
        if sid in self.sessions:
            raise TxnError(ErrorCode.BAD_ARGUMENTS, f"session {sid:#x} exists")
        self.sessions[sid] = timeout

    def _close_session(self, txn: Txn, result: ApplyResult) -> None:
        sid = txn.args.get("session_id")
        if not isinstance(sid, int):
            raise TxnError(ErrorCode.BAD_ARGUMENTS, "close_session")
        self.sessions.pop(sid, None)
        # ephemeral nodes have no children, so any order works; sorted for determinism
        for path in sorted(self.ephemerals.pop(sid, ())):
            self._remove(txn.zxid, path, self.nodes[path], result.events, None)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able image: ``{"zxid", "nodes": [[path, data, czxid, mzxid, pzxid,
        ctime, mtime, version, cversion, ephemeral_owner], ...] (sorted by path, so parents
        come first), "sessions": [[id, timeout_ms], ...]}``, and ``"term"`` (the Raft term
        of the last transaction) in a quorum."""
        nodes = [[p, n.data, n.czxid, n.mzxid, n.pzxid, n.ctime, n.mtime, n.version,
                  n.cversion, n.ephemeral_owner] for p, n in sorted(self.nodes.items())]
        image: dict[str, Any] = {"zxid": self.last_zxid, "nodes": nodes,
                                 "sessions": sorted([s, t] for s, t in self.sessions.items())}
        if self.last_term:
            image["term"] = self.last_term
        return image

    @classmethod
    def restore(cls, image: dict[str, Any]) -> DataTree:
        """Rebuild a tree from ``snapshot()``; ValueError if the image is inconsistent."""
        tree = cls()
        try:
            tree.last_zxid = int(image["zxid"])
            tree.last_term = int(image.get("term", 0))
            tree.sessions = {int(s): int(t) for s, t in image["sessions"]}
            for (path, data, czxid, mzxid, pzxid, ctime, mtime, version, cversion,
                 owner) in image["nodes"]:
                node = Node(bytes(data), czxid, ctime, owner)
                node.mzxid, node.pzxid, node.mtime = mzxid, pzxid, mtime
                node.version, node.cversion = version, cversion
                if path == "/":
                    node.children = tree.nodes["/"].children
                    tree.nodes["/"] = node
                    continue
                parent_path, name = split_path(path)
                tree.nodes[parent_path].children.add(name)
                tree.nodes[path] = node
                if owner:
                    tree.ephemerals.setdefault(owner, set()).add(path)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"inconsistent tree image: {e!r}") from None
        return tree

    def walk(self) -> Iterator[tuple[str, Node]]:
        return iter(sorted(self.nodes.items()))
