"""The private channel between a TaskManager and one of its slot processes: a socket pair
made by the TaskManager, the slot process's end passed as a file descriptor.

Messages both ways are ``u32 length | msgpack [kind, body]``. TaskManager to slot:
``deploy`` {job_id, graph, artifacts, tasks, config}, ``cancel`` {job_id}, ``shutdown``.
Slot to TaskManager: ``ready`` {pid, data_host, data_port}, ``state`` {job_id,
execution_id, state, error, metrics}, ``metrics`` {execution id: [state, records_in,
records_out, bytes_in, bytes_out]}, ``done`` {job_id} (every task of the job ended: the
process exits right after). The end of the connection is the end of the other side.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import msgpack

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_MESSAGE = 1 << 30

Handler = Callable[[str, dict[str, Any]], None]


class _Proto(asyncio.Protocol):
    def __init__(self, channel: ControlChannel) -> None:
        self.channel = channel
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.channel.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > MAX_MESSAGE:
                self.channel.transport.abort()  # type: ignore[union-attr]
                return
            if n - pos - 4 < length:
                break
            try:
                kind, body = msgpack.unpackb(bytes(buf[pos + 4:pos + 4 + length]), raw=False,
                                             strict_map_key=False)
            except Exception:
                log.exception("undecodable control message")
                self.channel.transport.abort()  # type: ignore[union-attr]
                return
            pos += 4 + length
            try:
                self.channel.on_message(str(kind), body if isinstance(body, dict) else {})
            except Exception:
                log.exception("control message %s failed", kind)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._lost()


class ControlChannel:
    """One end of the TaskManager <-> slot channel."""

    def __init__(self, on_message: Handler, on_close: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    async def open(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: _Proto(self), sock)

    def send(self, kind: str, body: dict[str, Any] | None = None) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        data = msgpack.packb([kind, body or {}], use_bin_type=True)
        t.write(_LEN.pack(len(data)) + data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _lost(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.on_close()
