"""The quorum's ``TxnSink``: a transaction is committed once Raft has it on a majority of
fsynced logs. The thin asyncio shell around the pure ``raft.RaftNode``.

The Raft log is the metadata txn log (``txnlog.py``): entry ``i`` of term ``t`` is the
transaction with zxid ``i`` and term ``t`` (the leader's no-op is a ``noop`` transaction).
Snapshots are the metadata snapshots (``snapshot.py``); the node compacts its in-memory log
to each new one. The term and vote live in ``<data_dir>/raft.state``::

    raft.state = u32 crc32c(payload) (big-endian) | payload,  payload = msgpack [term, vote]

written to a temporary file, fsynced, renamed, and the directory fsynced.

Effects are carried out in order. Writes (term/vote, log appends and truncations, snapshot
installs) are made at once but are durable only after the flusher's next fdatasync; every
other effect (a message out, an apply, a read answer) waits in ``_gate`` until the writes
before it are durable. That is Raft's "persist before you answer", with group commit.

Writes: on the leader ``submit`` proposes at once (batched per loop turn); a follower hands
the write to the leader (``MdForward``), then answers only once it has applied the
transaction itself, so a client reads its own writes on whichever node it talks to. A
proposal's future resolves when its entry is applied: with the result if the entry applied
at its index is the one proposed; NOT_QUORUM_LEADER (it never took effect, retrying is safe)
if another leader's entry took that index; CONNECTION_LOSS (outcome unknown) on timeout.

Reads: ``sync`` is Raft's ReadIndex: the leader confirms with a heartbeat round that it still
leads and names its commit index; this node waits until it has applied that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import msgpack

from moldau.broker.metadata import raft
from moldau.broker.metadata.config import MetadataConfig
from moldau.broker.metadata.raft_transport import ForwardNotSent, PeerTransport, txn_of
from moldau.broker.metadata.replication import ApplyListener
from moldau.broker.metadata.snapshot import decode_snapshot
from moldau.broker.metadata.store import MetadataStore
from moldau.broker.metadata.tree import ApplyResult, DataTree, Txn
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import MdForwardRequest, MdForwardResponse

log = logging.getLogger(__name__)

STATE_FILE = "raft.state"
_CRC = struct.Struct(">I")
# what a follower may hand to the leader (the server validated the arguments)
FORWARDABLE = frozenset({"create", "delete", "set_data", "multi", "create_session",
                         "close_session"})


def load_hard_state(directory: Path) -> tuple[int, int | None]:
    """Blocking: ``(term, vote)``, ``(0, None)`` for a new node."""
    path = directory / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, None
    (crc,) = _CRC.unpack_from(data, 0) if len(data) >= 4 else (None,)
    if crc != crc32c.crc32c(data[4:]):
        raise RuntimeError(f"{path} is corrupt")
    term, vote = msgpack.unpackb(data[4:])
    return int(term), None if vote is None else int(vote)


def save_hard_state(directory: Path, term: int, vote: int | None) -> None:
    """Blocking: durably replace the term and vote."""
    payload: bytes = msgpack.packb([term, vote])
    path = directory / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, _CRC.pack(crc32c.crc32c(payload)) + payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def result_to_map(r: ApplyResult) -> dict[str, Any]:
    return {"error": int(r.error), "path": r.path, "stat": r.stat, "results": r.results}


def result_from_map(m: dict[str, Any] | None) -> ApplyResult:
    m = m or {}
    return ApplyResult(error=ErrorCode.of(int(m.get("error", 0))), path=str(m.get("path", "")),
                       stat=m.get("stat"), results=m.get("results"))


@dataclass(slots=True)
class _Restore:
    """The tree swap of an InstallSnapshot, ordered with the applies around it."""

    tree: DataTree


@dataclass(slots=True)
class _Write:
    session: int
    op: str
    args: dict[str, Any]
    fut: asyncio.Future[tuple[int, ApplyResult]]
    deadline: float


def _fail(fut: asyncio.Future[Any], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)
        fut.exception()  # retrieved: its waiter may be gone


class RaftTxnSink:
    """One quorum member's sink. No I/O until ``await start()`` (after the store's
    ``start(replay=False)``)."""

    def __init__(self, store: MetadataStore, config: MetadataConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.id = config.id
        self.on_apply: ApplyListener | None = None
        self.on_role_change: Callable[[bool], None] | None = None
        self.on_install: Callable[[DataTree, DataTree], None] | None = None
        self.on_touch: Callable[[list[int]], None] | None = None
        self.timeout = config.request_timeout_ms / 1000
        self._clock = clock
        self._last_time = 0
        self.node: raft.RaftNode | None = None
        self.transport: PeerTransport | None = None
        self._written = 0
        self._durable = 0
        self._gate: deque[tuple[int, Any]] = deque()
        self._hard: tuple[int, int | None] | None = None
        self._flush_wake = asyncio.Event()
        self._failed: BaseException | None = None
        self._proposals: dict[int, tuple[int, asyncio.Future[tuple[int, ApplyResult]]]] = {}
        self._proposal_deadlines: deque[tuple[float, int]] = deque()
        self._batch: list[_Write] = []
        self._batch_scheduled = False
        self._forwards: deque[_Write] = deque()
        self._forward_wake = asyncio.Event()
        self._forward_tasks: set[asyncio.Task[None]] = set()
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._ctx = itertools.count(1)
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()
        self._leader_changed = asyncio.Event()
        self._touched: set[int] = set()
        self._last: asyncio.Future[ApplyResult] | None = None
        self.leader_view: int | None = None  # as of the last RoleChange carried out
        self._is_leader_view = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> tuple[str, int]:
        """Rebuild the Raft node from disk and listen on the peer port."""
        cfg = self.config
        peers = cfg.peer_map()
        term, vote = await asyncio.to_thread(load_hard_state, cfg.data_dir)
        tree = self.store.tree
        entries = [raft.Entry(t.zxid, t.term, t) for t in self.store.unapplied]
        self.store.unapplied = []
        loop = asyncio.get_running_loop()
        rcfg = raft.RaftConfig(election_timeout=cfg.election_timeout_ms / 1000,
                               heartbeat_interval=cfg.heartbeat_ms / 1000)
        self.node = raft.RaftNode(cfg.id, list(peers), rcfg, random.Random(), loop.time(),
                                  term=term, vote=vote, snapshot_index=tree.last_zxid,
                                  snapshot_term=tree.last_term, entries=entries)
        log.info("raft node %d of %s: term %d, vote %s, snapshot %d, %d log entries",
                 cfg.id, sorted(peers), term, vote, tree.last_zxid, len(entries))
        self.store.on_snapshot = self._on_snapshot
        self.transport = PeerTransport(cfg.id, peers, self._on_message, self._on_forward,
                                       self.store.newest_snapshot, cfg.max_frame_size)
        return await self.transport.start()

    async def close(self) -> None:
        for t in list(self._forward_tasks):
            t.cancel()
        if self.transport is not None:
            await self.transport.stop()
        err = MoldauError(ErrorCode.CONNECTION_LOSS, "metadata node stopping")
        for _, fut in self._proposals.values():
            _fail(fut, err)
        for w in [*self._batch, *self._forwards]:
            _fail(w.fut, err)
        for rfut in self._reads.values():
            _fail(rfut, err)

    async def run(self) -> None:
        """Ticks, the flusher, the forwarder and session touches, until cancelled; raises
        on a storage error."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._ticker(), name="raft-tick")
                tg.create_task(self._flusher(), name="raft-flush")
                tg.create_task(self._forwarder(), name="raft-forward")
                tg.create_task(self._toucher(), name="raft-touch")
        except BaseExceptionGroup as eg:
            first = eg.exceptions[0]
            raise first from None

    # ------------------------------------------------------------------ state

    @property
    def core(self) -> raft.RaftNode:
        assert self.node is not None, "not started"
        return self.node

    @property
    def is_leader(self) -> bool:
        """Leader, as far as this node has carried out its role change (session expiry
        acts only then, after the session deadlines were reset)."""
        return self._is_leader_view and self.core.is_leader

    @property
    def leader(self) -> int | None:
        return self.core.leader

    def has_quorum(self) -> bool:
        """The leader, or a follower that heard from one within the election timeout."""
        return self.core.has_leader_contact(asyncio.get_running_loop().time())

    def touch(self, sid: int) -> None:
        """A follower heard from session ``sid``: the leader hears of it within a tick."""
        self._touched.add(sid)

    # ------------------------------------------------------------------ effects

    def _run(self, effects: list[raft.Effect]) -> None:
        store = self.store
        for e in effects:
            match e:
                case raft.AppendLog(entries=entries):
                    for entry in entries:
                        store.append(txn_of(entry))
                    self._written += 1
                case raft.TruncateLog(from_index=index):
                    log.info("truncating the log from %d", index)
                    self._fail_proposals_from(index)
                    store.log.truncate_from(index)
                    self._written += 1
                case raft.SaveState():
                    self._hard = (e.term, e.vote)
                    self._written += 1
                case raft.InstallSnapshot():
                    data, tree = e.data
                    log.info("installing the leader's snapshot at %d (term %d)", e.index,
                             e.term)
                    store.install_files(data, tree)
                    self._written += 1
                    self._enqueue(_Restore(tree))
                case _:
                    self._enqueue(e)
        if self._durable < self._written:
            self._flush_wake.set()

    def _enqueue(self, e: Any) -> None:
        if self._gate or self._durable < self._written:
            self._gate.append((self._written, e))
        else:
            self._execute(e)

    def _execute(self, e: Any) -> None:
        match e:
            case raft.Send(msg=msg):
                assert self.transport is not None
                self.transport.send(msg)
            case raft.Apply(entries=entries):
                self._apply(entries)
            case _Restore(tree=tree):
                old = self.store.swap_tree(tree)
                err = MoldauError(ErrorCode.CONNECTION_LOSS, "superseded by a snapshot")
                for index in [i for i in self._proposals if i <= tree.last_zxid]:
                    _fail(self._proposals.pop(index)[1], err)
                if self.on_install is not None:
                    self.on_install(old, tree)
                self._wake_waiters()
            case raft.ReadReady(ctx=ctx, index=index):
                fut = self._reads.pop(ctx, None)
                if fut is not None and not fut.done():
                    fut.set_result(index)
            case raft.ReadFailed(ctx=ctx):
                fut = self._reads.pop(ctx, None)
                if fut is not None:
                    _fail(fut, MoldauError(ErrorCode.NOT_QUORUM_LEADER, "no leader"))
            case raft.RoleChange(role=role, term=term, leader=leader):
                self._role_change(role, term, leader)

    def _apply(self, entries: tuple[raft.Entry, ...]) -> None:
        store = self.store
        for entry in entries:
            txn = txn_of(entry)
            if txn.zxid <= store.tree.last_zxid:
                continue
            result = store.apply(txn)
            if self.on_apply is not None:
                self.on_apply(txn, result)
            p = self._proposals.pop(entry.index, None)
            if p is not None:
                term, fut = p
                if txn.term == term:
                    if not fut.done():
                        fut.set_result((entry.index, result))
                else:
                    _fail(fut, MoldauError(ErrorCode.NOT_QUORUM_LEADER,
                                           "another leader's entry took its place"))
        self._wake_waiters()

    def _role_change(self, role: raft.Role, term: int, leader: int | None) -> None:
        was = self._is_leader_view
        self._is_leader_view = role == raft.Role.LEADER
        if leader != self.leader_view or was != self._is_leader_view:
            log.info("term %d: %s (leader %s)", term, role.name.lower(), leader)
        self.leader_view = leader
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()
        if was != self._is_leader_view and self.on_role_change is not None:
            self.on_role_change(self._is_leader_view)
        if self._is_leader_view and self._forwards:
            self._forward_wake.set()

    def _fail_proposals_from(self, index: int) -> None:
        err = MoldauError(ErrorCode.NOT_QUORUM_LEADER, "removed from the log: never applied")
        for i in [i for i in self._proposals if i >= index]:
            _fail(self._proposals.pop(i)[1], err)

    async def _flusher(self) -> None:
        cfg = self.config
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            target, hard, self._hard = self._written, self._hard, None
            try:
                await self.store.flush()
                if hard is not None:
                    await asyncio.to_thread(save_hard_state, cfg.data_dir, *hard)
            except BaseException as e:
                if not isinstance(e, asyncio.CancelledError):
                    self._failed = e
                raise
            self._durable = target
            gate = self._gate
            while gate and gate[0][0] <= target:
                self._execute(gate.popleft()[1])

    def _on_message(self, msg: raft.Message) -> None:
        if isinstance(msg, raft.SnapshotRequest):
            # decoded before the core sees it: the core commits to it at once
            try:
                data = bytes(msg.data)
                tree = DataTree.restore(decode_snapshot(data))
                if tree.last_zxid != msg.index or tree.last_term != msg.last_term:
                    raise ValueError(f"snapshot holds {tree.last_zxid}/{tree.last_term}")
            except ValueError as e:
                log.warning("dropping a bad snapshot from peer %d: %s", msg.src, e)
                return
            msg = raft.SnapshotRequest(msg.src, msg.dst, msg.term, msg.index, msg.last_term,
                                       (data, tree))
        self._run(self.core.on_message(msg, asyncio.get_running_loop().time()))

    def _on_snapshot(self, zxid: int) -> None:
        node = self.node
        if node is not None and node.snap_index < zxid <= node.applied:
            node.compact(zxid)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(0.05, max(0.005, self.config.heartbeat_ms / 4000))
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            self._run(self.core.tick(now))
            dl = self._proposal_deadlines
            while dl and dl[0][0] <= now:
                _, index = dl.popleft()
                p = self._proposals.pop(index, None)
                if p is not None:
                    _fail(p[1], MoldauError(ErrorCode.CONNECTION_LOSS,
                                            "no quorum answered in time; it may still apply"))

    # ------------------------------------------------------------------ applied index

    def _wake_waiters(self) -> None:
        applied = self.store.tree.last_zxid
        w = self._waiters
        while w and w[0][0] <= applied:
            fut = heapq.heappop(w)[2]
            if not fut.done():
                fut.set_result(None)

    async def _applied(self, index: int, deadline: float) -> None:
        if self.store.tree.last_zxid >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (index, next(self._waiter_seq), fut))
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            raise MoldauError(ErrorCode.CONNECTION_LOSS,
                              f"this node did not catch up to {index:#x} in time") from None

    # ------------------------------------------------------------------ writes

    def _now_ms(self) -> int:
        # transaction times never go backwards, whatever the clocks of successive leaders do
        node = self.core
        if node.log and isinstance(node.log[-1].payload, Txn):
            self._last_time = max(self._last_time, node.log[-1].payload.time)
        self._last_time = max(self._last_time, int(self._clock() * 1000))
        return self._last_time

    def submit(self, session: int, op: str, args: dict[str, Any]) -> asyncio.Future[ApplyResult]:
        if self._failed is not None:
            raise MoldauError(ErrorCode.KAFKA_STORAGE_ERROR,
                              f"metadata log failed: {self._failed!r}")
        inner = self._submit(session, op, args)
        outer: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future[tuple[int, ApplyResult]]) -> None:
            if outer.done():
                return
            if f.cancelled():
                outer.cancel()
            elif f.exception() is not None:
                _fail(outer, f.exception())  # type: ignore[arg-type]
            else:
                outer.set_result(f.result()[1])

        inner.add_done_callback(done)
        self._last = outer
        return outer

    def _submit(self, session: int, op: str,
                args: dict[str, Any]) -> asyncio.Future[tuple[int, ApplyResult]]:
        """Place the write now: in this turn's batch on the leader, else at the end of the
        queue for the leader."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, ApplyResult]] = loop.create_future()
        w = _Write(session, op, args, fut, loop.time() + self.timeout)
        if self.core.is_leader and not self._forwards:
            self._batch.append(w)
            if not self._batch_scheduled:
                self._batch_scheduled = True
                loop.call_soon(self._propose_batch)
        else:
            self._forwards.append(w)
            self._forward_wake.set()
        return fut

    def _propose_batch(self) -> None:
        self._batch_scheduled = False
        batch, self._batch = self._batch, []
        node = self.core
        if not batch:
            return
        if not node.is_leader:
            # leadership moved before the batch went out: nothing was proposed, hand it on
            self._forwards.extend(batch)
            self._forward_wake.set()
            return
        loop = asyncio.get_running_loop()
        first, term, t = node.last_index + 1, node.term, self._now_ms()
        txns = [Txn(first + i, t, w.session, w.op, w.args, term) for i, w in enumerate(batch)]
        index, effects = node.propose(txns, loop.time())
        assert index == first
        for i, w in enumerate(batch):
            self._proposals[first + i] = (term, w.fut)
            self._proposal_deadlines.append((w.deadline, first + i))
        self._run(effects)

    async def _forwarder(self) -> None:
        """Hand queued writes to the leader, in order; wait while there is none."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._forwards:
                self._forward_wake.clear()
                await self._forward_wake.wait()
                continue
            now = loop.time()
            while self._forwards and (self._forwards[0].fut.done()
                                      or self._forwards[0].deadline <= now):
                w = self._forwards.popleft()
                _fail(w.fut, MoldauError(ErrorCode.NOT_QUORUM_LEADER,
                                         "no metadata leader within the request timeout"))
            if not self._forwards:
                continue
            node = self.core
            if node.is_leader:
                self._batch.extend(self._forwards)
                self._forwards.clear()
                if not self._batch_scheduled:
                    self._batch_scheduled = True
                    loop.call_soon(self._propose_batch)
                continue
            leader = node.leader
            if leader is None or not self.has_quorum():
                changed = self._leader_changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await changed.wait()
                continue
            items = list(self._forwards)
            self._forwards.clear()
            for w in items:
                # tasks start in creation order, so the writes leave in queue order
                task = loop.create_task(self._forward_one(leader, w))
                self._forward_tasks.add(task)
                task.add_done_callback(self._forward_tasks.discard)
            await asyncio.sleep(0)

    async def _forward_one(self, leader: int, w: _Write) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        remaining = w.deadline - loop.time()
        try:
            resp: MdForwardResponse = await self.transport.forward(
                leader, MdForwardRequest(w.session, w.op, w.args), timeout=max(0.01, remaining))
        except ForwardNotSent:
            await asyncio.sleep(0.05)
            self._forwards.append(w)  # never sent: safe to try again
            self._forward_wake.set()
            return
        except (ConnectionError, OSError, TimeoutError, MoldauError) as e:
            _fail(w.fut, MoldauError(ErrorCode.CONNECTION_LOSS,
                                     f"lost the leader while it had the write: {e!r}"))
            return
        code = ErrorCode.of(resp.error_code)
        if code == ErrorCode.NOT_QUORUM_LEADER and loop.time() < w.deadline:
            await asyncio.sleep(0.05)
            self._forwards.append(w)  # the leader did not take it: safe to try again
            self._forward_wake.set()
            return
        if code != ErrorCode.NONE:
            _fail(w.fut, MoldauError(code, "from the leader"))
            return
        try:
            await self._applied(resp.zxid, w.deadline)
        except MoldauError as e:
            _fail(w.fut, e)
            return
        if not w.fut.done():
            w.fut.set_result((resp.zxid, result_from_map(resp.result)))

    async def _on_forward(self, req: MdForwardRequest) -> MdForwardResponse:
        """The leader's side of MdForward (synchronous until the write is placed)."""
        if req.op == "touch":
            sids = req.args.get("sessions") if isinstance(req.args, dict) else None
            if isinstance(sids, list) and self.on_touch is not None:
                self.on_touch([s for s in sids if isinstance(s, int)])
            return MdForwardResponse(error_code=0)
        if not self.core.is_leader:
            return MdForwardResponse(error_code=int(ErrorCode.NOT_QUORUM_LEADER))
        if req.op not in FORWARDABLE or not isinstance(req.args, dict) or not isinstance(
                req.session, int):
            return MdForwardResponse(error_code=int(ErrorCode.BAD_ARGUMENTS))
        try:
            zxid, result = await asyncio.shield(self._submit(req.session, req.op, req.args))
        except MoldauError as e:
            return MdForwardResponse(error_code=int(e.code))
        return MdForwardResponse(error_code=0, zxid=zxid, result=result_to_map(result))

    async def _toucher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick_ms / 1000)
            node = self.core
            if not self._touched or node.is_leader or node.leader is None:
                continue
            sids, self._touched = sorted(self._touched), set()
            task = loop.create_task(self._send_touches(node.leader, sids))
            self._forward_tasks.add(task)
            task.add_done_callback(self._forward_tasks.discard)

    async def _send_touches(self, leader: int, sids: list[int]) -> None:
        assert self.transport is not None
        with contextlib.suppress(ConnectionError, OSError, TimeoutError, MoldauError):
            await self.transport.forward(leader, MdForwardRequest(0, "touch",
                                                                  {"sessions": sids}),
                                         timeout=self.config.tick_ms / 1000 * 5)

    # ------------------------------------------------------------------ reads

    async def barrier(self) -> None:
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

    async def sync(self) -> None:
        """Return once this node has applied everything committed before the call
        (linearizable); NOT_QUORUM_LEADER if no leader confirmed a read index in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempt = max(0.5, 2 * self.config.election_timeout_ms / 1000)
        while True:
            ctx = next(self._ctx)
            fut: asyncio.Future[int] = loop.create_future()
            self._reads[ctx] = fut
            changed = self._leader_changed
            self._run(self.core.read_index(ctx, loop.time()))
            try:
                async with asyncio.timeout(max(0.0, min(attempt, deadline - loop.time()))):
                    index = await fut
            except (TimeoutError, MoldauError):
                self._reads.pop(ctx, None)
                if loop.time() >= deadline:
                    raise MoldauError(ErrorCode.NOT_QUORUM_LEADER,
                                      "no metadata leader confirmed a read in time") from None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await changed.wait()
                continue
            await self._applied(index, deadline)
            return
