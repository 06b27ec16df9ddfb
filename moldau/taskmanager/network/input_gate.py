"""The consuming side: an :class:`InputGate` per subtask with one input channel per
upstream subtask it reads from, numbered as ``JobGraph.input_channels`` numbers them.

Buffers of all channels queue in arrival order; the task takes them one by one
(``poll``) and, once a buffer is processed, gives its credit back (``release``) so the
producer may send another. A :class:`LocalInputChannel` reads a subpartition of the same
slot process (buffers are handed over as objects); a :class:`RemoteInputChannel` opens a
TCP connection to the producer's slot and receives encoded buffers.

A remote channel whose connection fails is retried, and a connection lost before the end
of the partition fails the task only after ``lost_grace`` seconds: a lost upstream usually
means its TaskManager died, and the JobManager then fails the job with that cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, cast

from moldau.taskmanager.network.codec import (
    BUFFER,
    ERROR,
    CodecError,
    FrameReader,
    credit_frame,
    request_frame,
)
from moldau.taskmanager.network.partition_manager import PartitionManager
from moldau.taskmanager.network.result_partition import ResultSubpartition

log = logging.getLogger(__name__)


class InputGate:
    """Buffers from every input channel of one subtask, in arrival order."""

    def __init__(self) -> None:
        self.channels: list[InputChannel] = []
        self.ready: deque[tuple[int, Any]] = deque()
        self.error: str | None = None
        self.bytes_in = 0
        self._waiter: asyncio.Future[None] | None = None

    def on_buffer(self, channel: int, buffer: Any) -> None:
        self.ready.append((channel, buffer))
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def on_error(self, message: str) -> None:
        if self.error is None:
            self.error = message
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def poll(self) -> tuple[int, Any] | None:
        return self.ready.popleft() if self.ready else None

    async def wait(self, timeout: float | None) -> None:
        """Until a buffer or an error arrives, or ``timeout`` seconds pass."""
        if self.ready or self.error is not None:
            return
        loop = asyncio.get_running_loop()
        w = self._waiter = loop.create_future()
        handle = None
        if timeout is not None:
            handle = loop.call_later(max(0.0, timeout), _wake, w)
        try:
            await w
        finally:
            if handle is not None:
                handle.cancel()
            if self._waiter is w:
                self._waiter = None

    def release(self, channel: int) -> None:
        """A buffer of ``channel`` was processed: one credit goes back."""
        self.channels[channel].return_credit(1)

    def channel_finished(self, channel: int) -> None:
        """``channel`` delivered its end of partition and it was processed."""
        self.channels[channel].finished()

    async def start(self) -> None:
        for ch in self.channels:
            await ch.start()

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


def _wake(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


class InputChannel:
    """One upstream subtask's subpartition, as seen by the consumer."""

    index: int

    async def start(self) -> None:
        raise NotImplementedError

    def return_credit(self, n: int) -> None:
        raise NotImplementedError

    def finished(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LocalInputChannel(InputChannel):
    """Reads a subpartition of this slot process; buffers move as objects."""

    def __init__(self, gate: InputGate, index: int, partitions: PartitionManager, job_id: str,
                 execution_id: str, edge: int, subpartition: int, credit: int,
                 timeout: float) -> None:
        self.gate = gate
        self.index = index
        self.partitions = partitions
        self.key = (job_id, execution_id, edge)
        self.subpartition_index = subpartition
        self.initial_credit = credit
        self.timeout = timeout
        self.sub: ResultSubpartition | None = None
        self._task: asyncio.Task[None] | None = None

    def deliver(self, buffer: list[Any]) -> None:
        self.gate.on_buffer(self.index, buffer)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._attach())

    async def _attach(self) -> None:
        try:
            part = await self.partitions.lookup(self.key, self.timeout)
            sub = part.subpartitions[self.subpartition_index]
            sub.attach(self, self.initial_credit)
            self.sub = sub
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.gate.on_error(f"input channel {self.index}: {e}")

    def return_credit(self, n: int) -> None:
        if self.sub is not None:
            self.sub.add_credit(n)

    def finished(self) -> None:
        if self.sub is not None:
            self.sub.consumer_finished()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.sub is not None and not self.sub.released:
            self.sub.consumer_lost()


class _ChannelProtocol(asyncio.Protocol):
    def __init__(self, channel: RemoteInputChannel) -> None:
        self.channel = channel
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ch = self.channel
        try:
            frames = self.reader.feed(data)
        except CodecError as e:
            ch.lost(f"bad data from upstream: {e}")
            return
        for ftype, payload in frames:
            if ftype == BUFFER:
                ch.gate.bytes_in += len(payload) + 5
                ch.gate.on_buffer(ch.index, payload)
            elif ftype == ERROR:
                ch.failed(payload.decode("utf-8", "replace"))
            else:
                ch.lost(f"unexpected frame type {ftype} from upstream")

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel.lost(f"connection closed{': ' + str(exc) if exc else ''}")


class RemoteInputChannel(InputChannel):
    """Reads a subpartition of another slot process over TCP."""

    def __init__(self, gate: InputGate, index: int, host: str, port: int, job_id: str,
                 execution_id: str, edge: int, subpartition: int, credit: int,
                 describe: str, lost_grace: float, connect_timeout: float) -> None:
        self.gate = gate
        self.index = index
        self.host = host
        self.port = port
        self.request = request_frame(job_id, execution_id, edge, subpartition, credit)
        self.describe = describe
        self.lost_grace = lost_grace
        self.connect_timeout = connect_timeout
        self.transport: asyncio.Transport | None = None
        self.done = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                transport, _ = await loop.create_connection(
                    lambda: _ChannelProtocol(self), self.host, self.port)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    self.gate.on_error(f"cannot connect to {self.describe} at "
                                       f"{self.host}:{self.port}: {e}")
                    return
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
        self.transport = transport
        transport.write(self.request)

    def return_credit(self, n: int) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(credit_frame(n))

    def finished(self) -> None:
        self.done = True
        if self.transport is not None:
            self.transport.close()

    def failed(self, message: str) -> None:
        self.done = True
        self.gate.on_error(f"{self.describe}: {message}")

    def lost(self, message: str) -> None:
        if self.done:
            return
        self.done = True
        if self.transport is not None:
            self.transport.abort()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._fail_later(message))

    async def _fail_later(self, message: str) -> None:
        # a lost upstream most likely lost its TaskManager: give the JobManager the time
        # to notice and fail the job with that cause
        await asyncio.sleep(self.lost_grace)
        self.gate.on_error(f"the connection to {self.describe} at {self.host}:{self.port} "
                           f"was lost ({message}); the TaskManager running it may be gone")

    def close(self) -> None:
        self.done = True
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
