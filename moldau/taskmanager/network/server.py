"""The data server of a slot process: consumers in other slot processes connect here and
request a subpartition; buffers then flow against the credit they grant."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from moldau.clients.stream.operators import Batch
from moldau.taskmanager.network.codec import (
    BUFFER,
    CREDIT,
    ERROR,
    REQUEST,
    CodecError,
    FrameReader,
    encode_buffer,
    frame,
    parse_credit,
    parse_request,
)
from moldau.taskmanager.network.partition_manager import PartitionManager
from moldau.taskmanager.network.result_partition import ResultSubpartition

log = logging.getLogger(__name__)


class _RemoteConsumer:
    """A subpartition's consumer on the far end of a connection."""

    __slots__ = ("sub", "transport")

    def __init__(self, transport: asyncio.Transport, sub: ResultSubpartition) -> None:
        self.transport = transport
        self.sub = sub

    def deliver(self, buffer: list[Any]) -> None:
        data = encode_buffer(buffer)
        records = 0
        for el in buffer:
            if type(el) is Batch:
                records += len(el.values)
        if records:
            self.sub.bytes_per_record = len(data) / records
        self.sub.partition.bytes_out += len(data) + 5
        self.transport.write(frame(BUFFER, data))


class _ProducerProtocol(asyncio.Protocol):
    def __init__(self, server: NetworkServer) -> None:
        self.server = server
        self.reader = FrameReader(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.sub: ResultSubpartition | None = None
        self.lookup: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def _error(self, message: str) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(frame(ERROR, message.encode()))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except CodecError as e:
            self._error(str(e))
            return
        for ftype, payload in frames:
            if ftype == CREDIT and self.sub is not None:
                try:
                    self.sub.add_credit(parse_credit(payload))
                except CodecError as e:
                    self._error(str(e))
                    return
            elif ftype == REQUEST and self.lookup is None:
                try:
                    req = parse_request(payload)
                except CodecError as e:
                    self._error(str(e))
                    return
                self.lookup = asyncio.get_running_loop().create_task(self._attach(*req))
            else:
                self._error(f"unexpected frame type {ftype}")
                return

    async def _attach(self, job_id: str, execution_id: str, edge: int, index: int,
                      credit: int) -> None:
        try:
            part = await self.server.partitions.lookup((job_id, execution_id, edge),
                                                       self.server.request_timeout)
            sub = part.subpartitions.get(index)
            if sub is None:
                raise LookupError(f"{part} has no subpartition {index}")
            assert self.transport is not None
            if self.transport.is_closing():
                return
            sub.attach(_RemoteConsumer(self.transport, sub), credit)
            self.sub = sub
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._error(str(e))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.lookup is not None and not self.lookup.done():
            self.lookup.cancel()
        if self.sub is not None:
            self.sub.consumer_lost()


class NetworkServer:
    """Serves this slot process's result partitions to remote consumers."""

    def __init__(self, partitions: PartitionManager, request_timeout: float = 60.0) -> None:
        self.partitions = partitions
        self.request_timeout = request_timeout
        self.connections: set[_ProducerProtocol] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ProducerProtocol(self), host, port,
                                                reuse_address=True)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
