"""Where decided transactions go: the seam between the request path and the state machine.

A ``TxnSink`` takes an operation the leader decided to perform, stamps it with its zxid and
time, makes it durable (on a quorum, for a replicated sink), applies committed transactions to
the tree strictly in zxid order, calls ``on_apply`` for each (watches, sessions), and then
resolves the proposer's future with the result. ``LocalTxnSink`` is the single-node sink: a
transaction is committed once an fdatasync of the local log covered it. A Raft replicator
slots in as another implementation (committed = on a majority of the logs).

Invariant: a transaction that was written to the log is applied even if its proposer goes
away (the request's task is cancelled when its connection drops): proposers only ever wait on
a shielded future, and the commit loop alone applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from moldau.broker.metadata.store import MetadataStore
from moldau.broker.metadata.tree import ApplyResult, Txn
from moldau.clients.protocol import ErrorCode, MoldauError

log = logging.getLogger(__name__)

ApplyListener = Callable[[Txn, ApplyResult], None]


class TxnSink(Protocol):
    on_apply: ApplyListener | None

    def submit(self, session: int, op: str, args: dict[str, Any]) -> asyncio.Future[ApplyResult]:
        """Decide a transaction now (its place in the order is fixed by this call) and return
        a future of its result once applied. Raises MoldauError if this node cannot accept
        writes."""
        ...

    async def barrier(self) -> None:
        """Return once everything submitted before the call has been applied."""
        ...

    async def sync(self) -> None:
        """Return once this node has applied everything committed anywhere before the call
        (a linearizable read may follow). Raises MoldauError if that cannot be known."""
        ...

    async def run(self) -> None:
        """The commit loop; runs until cancelled, raises on a fatal storage error."""
        ...

    async def close(self) -> None:
        """Release what ``run`` does not own (connections); after ``run`` was cancelled."""
        ...


class LocalTxnSink:
    """Single node: the local ``TxnLog`` is the log; durable means committed."""

    def __init__(self, store: MetadataStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.on_apply: ApplyListener | None = None
        self._clock = clock
        self._pending: deque[tuple[int, Txn, asyncio.Future[ApplyResult]]] = deque()
        self._wake = asyncio.Event()
        self._failed: BaseException | None = None
        self._last_time = 0

    def _now_ms(self) -> int:
        # transaction times never go backwards, whatever the wall clock does
        self._last_time = max(self._last_time, int(self._clock() * 1000))
        return self._last_time

    def submit(self, session: int, op: str, args: dict[str, Any]) -> asyncio.Future[ApplyResult]:
        if self._failed is not None:
            raise MoldauError(ErrorCode.KAFKA_STORAGE_ERROR, f"metadata log failed: "
                              f"{self._failed!r}")
        txn = Txn(self.store.last_zxid + 1, self._now_ms(), session, op, args)
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        try:
            seq = self.store.append(txn)
        except BaseException as e:
            self._failed = e
            self._wake.set()
            raise MoldauError(ErrorCode.KAFKA_STORAGE_ERROR, f"metadata log write failed: {e!r}"
                              ) from e
        self._pending.append((seq, txn, fut))
        self._wake.set()
        return fut

    async def barrier(self) -> None:
        if self._pending:
            await asyncio.wait([self._pending[-1][2]])

    @property
    def idle(self) -> bool:
        return not self._pending

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._failed is not None:
                    raise self._failed
                durable = await self.store.flush()
                pending = self._pending
                while pending and pending[0][0] <= durable:
                    _, txn, fut = pending.popleft()
                    result = self.store.apply(txn)
                    if self.on_apply is not None:
                        self.on_apply(txn, result)
                    if not fut.done():
                        fut.set_result(result)
        except BaseException as e:
            err = MoldauError(ErrorCode.KAFKA_STORAGE_ERROR, f"metadata log failed: {e!r}")
            if not isinstance(e, asyncio.CancelledError):
                self._failed = e
            while self._pending:
                _, _, fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # retrieved here: its proposer may be gone
            raise

    async def sync(self) -> None:
        # alone, this node's log is the whole truth
        await self.barrier()

    async def close(self) -> None:
        pass

    async def drain(self) -> None:
        """Apply everything submitted so far (before a clean stop)."""
        await self.barrier()
