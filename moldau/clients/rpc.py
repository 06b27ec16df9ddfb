"""Request/response over TCP with the moldau frame protocol: the client ``Connection`` and the
server side ``serve`` that every daemon uses.

A connection pipelines requests: each carries a correlation id and responses may be awaited
in any order. On the server, requests of one connection start in arrival order (each
handler's synchronous prefix runs before the next request's), and responses leave in the
same order, as Kafka's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from moldau.clients.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    PUSH_CORRELATION_ID,
    Api,
    ErrorCode,
    FrameDecoder,
    FrameTooLarge,
    Message,
    MoldauError,
    ProtocolError,
    RequestHeader,
    UnsupportedApi,
    decode_request,
    decode_request_body,
    decode_response,
    encode_request,
    encode_response,
    from_body,
    response_class,
)
from moldau.clients.protocol.messages import SCHEMAS, ApiVersionsResponse, MdWatchEvent

log = logging.getLogger(__name__)

_HIGH_WATER = 4 * 1024 * 1024


class ConnectionClosed(ConnectionError):
    pass


def parse_hostport(s: str, default_port: int) -> tuple[str, int]:
    s = s.strip()
    if s.startswith("["):  # [::1]:9092
        host, _, rest = s[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = s.rpartition(":")
    if not sep:
        return s, default_port
    if not port.isdigit():
        raise ValueError(f"bad port in address {s!r}")
    return host or "127.0.0.1", int(port)


def parse_hostports(s: str, default_port: int) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` -> list of (host, port); a trailing ``/chroot`` is ignored."""
    s = s.split("/", 1)[0]
    out = [parse_hostport(p, default_port) for p in s.split(",") if p.strip()]
    if not out:
        raise ValueError("no address given")
    return out


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.conn._decoder.feed(data)
        except ProtocolError as e:
            self.conn._fail(ConnectionClosed(f"bad frame from server: {e}"))
            return
        for frame in frames:
            self.conn._on_frame(frame)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        self.conn._fail(ConnectionClosed(f"connection to {self.conn.address} lost: {exc}"
                                         if exc else f"connection to {self.conn.address} closed"))


class Connection:
    """One TCP connection to a moldau daemon. No I/O until ``connect()``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "moldau",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        on_push: Callable[[Message], None] | None = None,
        on_close: Callable[[Exception], None] | None = None,
        ssl: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.on_push = on_push
        self.on_close = on_close
        self._ssl = ssl
        self._decoder = FrameDecoder(max_frame_size)
        self._proto: _ClientProtocol | None = None
        self._pending: dict[int, tuple[asyncio.Future[Message], type[Message]]] = {}
        self._next_id = 0
        self._closed: Exception | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._proto is not None and self._closed is None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def connect(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(
                lambda: _ClientProtocol(self), self.host, self.port, ssl=self._ssl
            )
        self._proto = proto

    def _fail(self, exc: Exception) -> None:
        first = self._closed is None
        if self._closed is None:
            self._closed = exc
        closed = self._closed
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(closed)
        if self._proto and self._proto.transport:
            self._proto.transport.abort()
        if first and self.on_close is not None:
            self.on_close(closed)

    def _on_frame(self, frame: bytes) -> None:
        try:
            corr, err, body = decode_response(frame)
        except ProtocolError as e:
            self._fail(ConnectionClosed(f"bad response from {self.address}: {e}"))
            return
        if corr == PUSH_CORRELATION_ID:
            if self.on_push is not None:
                try:
                    self.on_push(from_body(MdWatchEvent, body))
                except ProtocolError:
                    log.warning("ignoring malformed push from %s", self.address)
            return
        entry = self._pending.pop(corr, None)
        if entry is None:
            return
        fut, cls = entry
        if fut.done():
            return
        if err:
            fut.set_exception(MoldauError(err, str(body)))
            return
        try:
            fut.set_result(from_body(cls, body))
        except ProtocolError as e:
            fut.set_exception(e)

    def _write(self, api: int, version: int, body: Any) -> int:
        if self._closed is not None:
            raise self._closed
        if self._proto is None or self._proto.transport is None:
            raise ConnectionClosed("not connected")
        corr = self._next_id
        self._next_id = (corr + 1) & 0x7FFFFFFF
        self._proto.transport.write(encode_request(api, version, corr, self.client_id, body))
        return corr

    async def request(self, msg: Message, *, version: int = 0,
                      timeout: float | None = 30.0) -> Any:
        """Send ``msg`` and wait for its response message.

        Raises MoldauError for a frame-level error answer, ConnectionClosed when the
        connection drops, TimeoutError after ``timeout`` seconds.
        """
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        corr = self._write(msg.API, version, msg.to_body())
        self._pending[corr] = (fut, response_class(msg.API))
        assert self._proto is not None
        if not self._proto._can_write.is_set():
            await self._proto._can_write.wait()
        try:
            if timeout is None:
                return await fut
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(corr, None)

    async def send_only(self, msg: Message, *, version: int = 0) -> None:
        """Send a request that gets no response (produce with acks=0)."""
        self._write(msg.API, version, msg.to_body())
        assert self._proto is not None
        if not self._proto._can_write.is_set():
            await self._proto._can_write.wait()

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._fail(ConnectionClosed("connection closed by client"))


# --------------------------------------------------------------------------- server side


class ServerConnection:
    """What a request handler knows of the client connection it serves."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer: str = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.state: dict[str, Any] = {}
        self.closed = False
        self.close_callbacks: list[Callable[[ServerConnection], None]] = []

    def push(self, msg: Message) -> None:
        """Send an unsolicited message (a watch event) to the client."""
        if not self.closed:
            self.transport.write(encode_response(PUSH_CORRELATION_ID, msg.to_body()))


class RequestHandler(Protocol):
    async def handle(self, conn: ServerConnection, header: RequestHeader,
                     request: Message) -> Message | None:
        """Answer ``request``; None means no response (acks=0)."""
        ...


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.decoder = FrameDecoder(server.max_frame_size)
        self.conn: ServerConnection | None = None
        self.transport: asyncio.Transport | None = None
        # responses leave in request order: (correlation id, task or ready bytes)
        self.queue: deque[tuple[int, asyncio.Task[Message | None] | bytes | None]] = deque()
        self.tasks: set[asyncio.Task[Message | None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn = ServerConnection(self.transport)
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as e:
            log.warning("closing %s: %s", self.conn and self.conn.peer, e)
            self.transport.abort()
            return
        for frame in frames:
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        assert self.transport is not None and self.conn is not None
        try:
            header, body = decode_request(frame)
        except ProtocolError as e:
            # without a header there is no correlation id to answer to
            log.warning("closing %s: undecodable request: %s", self.conn.peer, e)
            self.transport.abort()
            return
        try:
            request = decode_request_body(header.api, header.version, body)
        except UnsupportedApi as e:
            self._enqueue(header.correlation_id,
                          encode_response(header.correlation_id, str(e),
                                          ErrorCode.UNSUPPORTED_VERSION))
            return
        except ProtocolError as e:
            self._enqueue(header.correlation_id,
                          encode_response(header.correlation_id, str(e),
                                          ErrorCode.INVALID_REQUEST))
            return
        if request.API not in self.server.apis:
            self._enqueue(header.correlation_id,
                          encode_response(header.correlation_id,
                                          f"api {Api(request.API).name} not served here",
                                          ErrorCode.UNSUPPORTED_VERSION))
            return
        task = asyncio.get_running_loop().create_task(
            self.server.handler.handle(self.conn, header, request))
        self.tasks.add(task)
        task.add_done_callback(self._done)
        self._enqueue(header.correlation_id, task)

    def _enqueue(self, corr: int, item: asyncio.Task[Message | None] | bytes) -> None:
        self.queue.append((corr, item))
        self._flush()

    def _done(self, task: asyncio.Task[Message | None]) -> None:
        self.tasks.discard(task)
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        q = self.queue
        while q:
            corr, item = q[0]
            if isinstance(item, bytes):
                transport.write(item)
            elif isinstance(item, asyncio.Task):
                if not item.done():
                    return
                if item.cancelled():
                    q.popleft()
                    continue
                exc = item.exception()
                if exc is not None:
                    if isinstance(exc, MoldauError):
                        transport.write(encode_response(corr, exc.message or str(exc), exc.code))
                    elif isinstance(exc, ProtocolError):
                        transport.write(encode_response(corr, str(exc),
                                                        ErrorCode.INVALID_REQUEST))
                    else:
                        log.error("request %s failed:\n%s", corr, "".join(
                            traceback.format_exception(exc)))
                        transport.write(encode_response(
                            corr, f"{type(exc).__name__}: {exc}",
                            ErrorCode.UNKNOWN_SERVER_ERROR))
                else:
                    resp = item.result()
                    if resp is not None:
                        transport.write(encode_response(corr, resp.to_body()))
            q.popleft()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.conn is not None:
            self.conn.closed = True
            for cb in self.conn.close_callbacks:
                try:
                    cb(self.conn)
                except Exception:
                    log.exception("connection close callback failed")
        for t in list(self.tasks):
            t.cancel()
        self.queue.clear()


class RpcServer:
    """A TCP server that decodes frames and hands requests to ``handler``."""

    def __init__(self, handler: RequestHandler, apis: frozenset[Api] | set[Api], *,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, ssl: Any = None) -> None:
        self.handler = handler
        self.apis = frozenset(apis) | {Api.API_VERSIONS}
        self.max_frame_size = max_frame_size
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerProtocol] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self), host, port, ssl=self._ssl, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def drain(self, grace: float = 5.0) -> None:
        """Wait up to ``grace`` seconds for in-flight requests, then close every connection."""
        tasks = [t for c in self._connections for t in c.tasks]
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*tasks, return_exceptions=True)
        for c in list(self._connections):
            if c.transport is not None:
                c.transport.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    async def stop(self, grace: float = 5.0) -> None:
        self.stop_accepting()
        await self.drain(grace)


def api_versions_response(apis: frozenset[Api]) -> Message:
    """The ApiVersions answer for a server that serves ``apis``."""
    return ApiVersionsResponse(
        error_code=0,
        api_keys=[[int(a), SCHEMAS[a][2], SCHEMAS[a][3]] for a in sorted(apis)],
    )

