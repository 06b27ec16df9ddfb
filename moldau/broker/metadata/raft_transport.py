"""Raft messages between metadata nodes, over the moldau frame protocol on each node's peer
port.

Every Raft message travels one-way (``send_only``): an answer is a message of its own, sent
on the answering node's connection to the asker. So each node keeps one outbound connection
per peer, fed from a bounded queue by one task; when a peer is unreachable its queue is
dropped (Raft resends what matters) and the connection is retried with backoff. The same
connection carries ``MdForward`` requests (a follower's client writes and session touches
for the leader), which are answered as usual.

A ``SnapshotRequest`` from the core carries no data: the sender reads the node's newest
snapshot file when the message leaves and sends it whole, with that snapshot's index and term.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from moldau.broker.metadata import raft, snapshot
from moldau.broker.metadata.tree import Txn
from moldau.clients.protocol import Message, RequestHeader
from moldau.clients.protocol.messages import (
    METADATA_PEER_APIS,
    MdForwardRequest,
    MdForwardResponse,
    RaftAppendEntriesRequest,
    RaftAppendResult,
    RaftInstallSnapshotRequest,
    RaftReadIndexRequest,
    RaftReadIndexResult,
    RaftVoteRequest,
    RaftVoteResult,
)
from moldau.clients.rpc import Connection, RpcServer, ServerConnection

log = logging.getLogger(__name__)

MAX_QUEUE = 10000  # messages waiting for one peer; beyond it the oldest are dropped


def noop_txn(index: int, term: int) -> Txn:
    return Txn(index, 0, 0, "noop", {}, term)


def txn_of(entry: raft.Entry) -> Txn:
    """The metadata transaction an entry carries (the leader's no-op has no payload)."""
    if entry.payload is None:
        return noop_txn(entry.index, entry.term)
    txn: Txn = entry.payload
    return txn


def to_wire(msg: raft.Message) -> Message:
    match msg:
        case raft.VoteRequest():
            return RaftVoteRequest(msg.src, msg.dst, msg.term, msg.last_index, msg.last_term,
                                   msg.pre_vote)
        case raft.VoteResponse():
            return RaftVoteResult(msg.src, msg.dst, msg.term, msg.granted, msg.pre_vote)
        case raft.AppendRequest():
            return RaftAppendEntriesRequest(
                msg.src, msg.dst, msg.term, msg.prev_index, msg.prev_term,
                [[e.index, e.term, txn_of(e).encode()] for e in msg.entries], msg.commit,
                msg.read_seq)
        case raft.AppendResponse():
            return RaftAppendResult(msg.src, msg.dst, msg.term, msg.success, msg.index,
                                    msg.read_seq)
        case raft.SnapshotRequest():
            return RaftInstallSnapshotRequest(msg.src, msg.dst, msg.term, msg.index,
                                              msg.last_term, msg.data or b"")
        case raft.ReadIndexRequest():
            return RaftReadIndexRequest(msg.src, msg.dst, msg.term, msg.ctx)
        case raft.ReadIndexResponse():
            return RaftReadIndexResult(msg.src, msg.dst, msg.term, msg.ctx, msg.index)
    raise TypeError(f"not a raft message: {msg!r}")


def from_wire(msg: Message) -> raft.Message:
    """ValueError if a field has the wrong type (a peer must not crash this node)."""
    out: raft.Message
    match msg:
        case RaftVoteRequest():
            out = raft.VoteRequest(msg.src, msg.dst, msg.term, msg.last_index, msg.last_term,
                                   bool(msg.pre_vote))
        case RaftVoteResult():
            out = raft.VoteResponse(msg.src, msg.dst, msg.term, bool(msg.granted),
                                    bool(msg.pre_vote))
        case RaftAppendEntriesRequest():
            entries = []
            for item in msg.entries:
                index, term, payload = item
                txn = Txn.decode(payload)
                if txn.zxid != index or txn.term != term:
                    raise ValueError(f"entry {index}/{term} carries zxid {txn.zxid}")
                entries.append(raft.Entry(index, term, txn))
            out = raft.AppendRequest(msg.src, msg.dst, msg.term, msg.prev_index, msg.prev_term,
                                     tuple(entries), msg.commit, msg.read_seq)
        case RaftAppendResult():
            out = raft.AppendResponse(msg.src, msg.dst, msg.term, bool(msg.success), msg.index,
                                      msg.read_seq)
        case RaftInstallSnapshotRequest():
            out = raft.SnapshotRequest(msg.src, msg.dst, msg.term, msg.index, msg.last_term,
                                       bytes(msg.data))
        case RaftReadIndexRequest():
            out = raft.ReadIndexRequest(msg.src, msg.dst, msg.term, msg.ctx)
        case RaftReadIndexResult():
            out = raft.ReadIndexResponse(msg.src, msg.dst, msg.term, msg.ctx, msg.index)
        case _:
            raise ValueError(f"not a raft message: {type(msg).__name__}")
    for name in ("src", "dst", "term"):
        if not isinstance(getattr(out, name), int):
            raise ValueError(f"{name} is not an int")
    return out


SnapshotSource = Callable[[], "tuple[int, bytes] | None"]


class _Link:
    """The outbound connection to one peer and the queue of messages for it."""

    def __init__(self, transport: PeerTransport, peer: int, host: str, port: int) -> None:
        self.t = transport
        self.peer = peer
        self.host, self.port = host, port
        self.queue: deque[raft.Message] = deque()
        self.wake = asyncio.Event()
        self.conn: Connection | None = None
        self.up = False
        self._connecting: asyncio.Future[Connection] | None = None

    def send(self, msg: raft.Message) -> None:
        if len(self.queue) >= MAX_QUEUE:
            self.queue.popleft()
        self.queue.append(msg)
        self.wake.set()

    async def connection(self, timeout: float) -> Connection:
        if self.conn is not None and self.conn.is_open:
            return self.conn
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect(timeout))
            # retrieved here too: every waiter may have been cancelled meanwhile
            self._connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(self._connecting)

    async def _connect(self, timeout: float) -> Connection:
        conn = Connection(self.host, self.port, client_id=f"md-{self.t.node_id}",
                          max_frame_size=self.t.max_frame_size)
        try:
            await conn.connect(timeout=timeout)
        except BaseException:
            await conn.close()
            raise
        if self.conn is not None:
            await self.conn.close()
        self.conn = conn
        if not self.up:
            self.up = True
            log.info("connected to peer %d at %s:%d", self.peer, self.host, self.port)
        return conn

    async def run(self) -> None:
        backoff = 0.05
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                conn = await self.connection(timeout=1.0)
            except (OSError, TimeoutError) as e:
                if self.up:
                    self.up = False
                    log.warning("peer %d at %s:%d unreachable: %r", self.peer, self.host,
                                self.port, e)
                self.queue.clear()  # Raft resends whatever still matters
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            try:
                while self.queue:
                    msg = self.queue.popleft()
                    if isinstance(msg, raft.SnapshotRequest):
                        msg = await self.t.fill_snapshot(msg)
                    await conn.send_only(to_wire(msg))
            except (ConnectionError, OSError) as e:
                if self.up:
                    self.up = False
                    log.warning("lost peer %d: %r", self.peer, e)
                self.queue.clear()
                await conn.close()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PeerTransport:
    """Listens on this node's peer address; ``send`` queues a Raft message for a peer."""

    def __init__(self, node_id: int, peers: dict[int, tuple[str, int]],
                 on_message: Callable[[raft.Message], None],
                 on_forward: Callable[[MdForwardRequest], Awaitable[MdForwardResponse]],
                 snapshot_source: SnapshotSource, max_frame_size: int) -> None:
        self.node_id = node_id
        self.peers = peers
        self.on_message = on_message
        self.on_forward = on_forward
        self.snapshot_source = snapshot_source
        self.max_frame_size = max_frame_size
        self.links = {p: _Link(self, p, h, port) for p, (h, port) in peers.items()
                      if p != node_id}
        self.rpc = RpcServer(self, METADATA_PEER_APIS, max_frame_size=max_frame_size)
        self._tasks: list[asyncio.Task[None]] = []
        self.address: tuple[str, int] = ("", 0)

    async def start(self) -> tuple[str, int]:
        host, port = self.peers[self.node_id]
        self.address = await self.rpc.start(host, port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(link.run(), name=f"md-peer-{p}")
                       for p, link in self.links.items()]
        return self.address

    def send(self, msg: raft.Message) -> None:
        link = self.links.get(msg.dst)
        if link is not None:
            link.send(msg)

    async def forward(self, peer: int, req: MdForwardRequest, timeout: float) -> Any:
        """Send ``req`` to ``peer`` and return its MdForwardResponse. OSError/TimeoutError
        from the connect (nothing was sent), ConnectionError/TimeoutError after it (the
        outcome is unknown) are distinguished by ``ForwardNotSent``."""
        link = self.links[peer]
        try:
            conn = await link.connection(timeout=min(1.0, timeout))
        except (OSError, TimeoutError) as e:
            raise ForwardNotSent(str(e)) from e
        return await conn.request(req, timeout=timeout)

    async def fill_snapshot(self, msg: raft.SnapshotRequest) -> raft.SnapshotRequest:
        snap = await asyncio.to_thread(self.snapshot_source)
        if snap is None:
            raise RuntimeError("no snapshot on disk to send")
        zxid, data = snap
        image = await asyncio.to_thread(snapshot.decode_snapshot, data)
        log.info("sending snapshot %#x (%d bytes) to peer %d", zxid, len(data), msg.dst)
        return raft.SnapshotRequest(msg.src, msg.dst, msg.term, zxid, int(image.get("term", 0)),
                                    data)

    async def handle(self, conn: ServerConnection, header: RequestHeader,
                     request: Message) -> Message | None:
        if isinstance(request, MdForwardRequest):
            return await self.on_forward(request)
        # synchronous up to here, so messages of one connection are handled in order
        try:
            msg = from_wire(request)
        except Exception as e:  # msgpack raises several types on garbage
            log.warning("dropping a malformed raft message from %s: %s", conn.peer, e)
            return None
        self.on_message(msg)
        return None

    async def stop(self) -> None:
        self.rpc.stop_accepting()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for link in self.links.values():
            await link.close()
        await self.rpc.drain(0.5)


class ForwardNotSent(ConnectionError):
    """The forward never left: no connection to the leader."""
