"""Garbage over the wire: each bad input gets an error response or a closed connection, the
broker stays up, and another client can still produce and fetch afterwards."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import msgpack
import pytest
from harness import Processes
from test_broker_helpers import batch, connect, create_topic, fetch_all, produce, values_of

from moldau.clients.protocol import Api, ErrorCode, FrameDecoder, decode_response, encode_request


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()

    @classmethod
    async def open(cls, address: str) -> RawClient:
        host, _, port = address.rpartition(":")
        r, w = await asyncio.open_connection(host, int(port))
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 5.0) -> tuple[int, int, Any] | None:
        """The next response, or None if the broker closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return None
                frames = self.decoder.feed(data)
                if frames:
                    return decode_response(frames[0])

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Whether the broker hung up (then this side is closed too)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.reader.read(65536)
                    if not data:
                        break
        except (ConnectionError, OSError):
            pass
        self.close()
        return True

    def close(self) -> None:
        self.writer.close()
        self.writer.transport.abort()


def raw_request(api: int, version: int, body: Any, corr: int = 7) -> bytes:
    return encode_request(api, version, corr, "raw", body)


async def still_serves(address: str, topic: str) -> None:
    conn = await connect(address)
    entry = await produce(conn, topic, 0, batch([b"still here"]))
    assert entry[1] == 0, entry
    vals = values_of(await fetch_all(conn, topic, 0))
    assert vals[-1][1] == b"still here"
    await conn.close()


@pytest.fixture
async def broker(procs: Processes) -> str:
    md = procs.metadata()
    b = procs.broker(1, md.address, extra=["--override", "socket.request.max.bytes=1024"])
    conn = await connect(b.address)
    assert (await create_topic(conn, "t"))["error_code"] == 0
    await conn.close()
    return b.address


async def test_random_bytes(broker: str) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(20):
        c = await RawClient.open(broker)
        await c.send(rng.randbytes(rng.randrange(1, 3000)))
        # whatever the broker made of it, it either answered or hung up; then we hang up
        try:
            await asyncio.wait_for(c.reader.read(65536), 0.2)
        except TimeoutError:
            pass
        c.close()
    await still_serves(broker, "t")


async def test_garbage_frame_with_valid_length(broker: str) -> None:
    c = await RawClient.open(broker)
    payload = b"\xc1" * 40  # 0xc1 is never valid msgpack
    await c.send(struct.pack(">I", len(payload)) + payload)
    assert await c.closed_by_peer()
    await still_serves(broker, "t")


async def test_truncated_frame_then_close(broker: str) -> None:
    frame = raw_request(Api.PRODUCE, 0, {"acks": 1, "timeout_ms": 1000,
                                         "topics": [["t", [[0, batch([b"partial"])]]]]})
    c = await RawClient.open(broker)
    await c.send(frame[: len(frame) // 2])
    c.close()
    await asyncio.sleep(0.2)
    await still_serves(broker, "t")
    conn = await connect(broker)
    vals = [v for _, v in values_of(await fetch_all(conn, "t", 0))]
    assert b"partial" not in vals
    await conn.close()


async def test_frame_over_the_maximum(broker: str) -> None:
    # a length field over socket.request.max.bytes (1024 here) closes the connection
    c = await RawClient.open(broker)
    await c.send(struct.pack(">I", 1_000_000) + b"\x00" * 100)
    assert await c.closed_by_peer()
    # a real produce request over the limit, too
    c = await RawClient.open(broker)
    await c.send(raw_request(Api.PRODUCE, 0, {"acks": 1, "timeout_ms": 1000,
                                              "topics": [["t", [[0, batch([b"z" * 2000])]]]]}))
    assert await c.closed_by_peer()
    await still_serves(broker, "t")


BAD_REQUESTS: list[tuple[int, int, Any, ErrorCode]] = [
    (999, 0, {}, ErrorCode.UNSUPPORTED_VERSION),
    (Api.PRODUCE, 7, {"acks": 1, "timeout_ms": 1, "topics": []}, ErrorCode.UNSUPPORTED_VERSION),
    (Api.MD_CREATE, 0, {"path": "/x"}, ErrorCode.UNSUPPORTED_VERSION),
    (Api.PRODUCE, 0, {"acks": 1}, ErrorCode.INVALID_REQUEST),
    (Api.PRODUCE, 0, [1, 2, 3], ErrorCode.INVALID_REQUEST),
    (Api.PRODUCE, 0, {"acks": 1, "timeout_ms": 1, "topics": "t"}, ErrorCode.INVALID_REQUEST),
    (Api.PRODUCE, 0, {"acks": 1, "timeout_ms": 1, "topics": [["t", [[0, 5]]]]},
     ErrorCode.INVALID_REQUEST),
    (Api.PRODUCE, 0, {"acks": 1, "timeout_ms": 1, "topics": [["t", [["0", b"x"]]]]},
     ErrorCode.INVALID_REQUEST),
    (Api.FETCH, 0, {"max_wait_ms": "x", "min_bytes": 1, "max_bytes": 1, "topics": []},
     ErrorCode.INVALID_REQUEST),
    (Api.FETCH, 0, {"max_wait_ms": 1, "min_bytes": 1, "max_bytes": 1,
                    "topics": [["t", [[0]]]]}, ErrorCode.INVALID_REQUEST),
    (Api.LIST_OFFSETS, 0, {"topics": [[1, 2]]}, ErrorCode.INVALID_REQUEST),
    (Api.METADATA, 0, {"topics": 5}, ErrorCode.INVALID_REQUEST),
    (Api.CREATE_TOPICS, 0, {"topics": {"a": 1}}, ErrorCode.INVALID_REQUEST),
    (Api.DELETE_TOPICS, 0, {"topics": None}, ErrorCode.INVALID_REQUEST),
    (Api.DESCRIBE_CONFIGS, 0, {"resources": 3}, ErrorCode.INVALID_REQUEST),
]


async def test_bad_requests_get_error_responses(broker: str) -> None:
    for api, version, body, code in BAD_REQUESTS:
        case = f"api {api} v{version} body {body!r}"
        c = await RawClient.open(broker)
        await c.send(raw_request(api, version, body, corr=42))
        resp = await c.response()
        assert resp is not None, f"{case}: connection closed instead of an error response"
        corr, err, _msg = resp
        assert (corr, err) == (42, code), case
        # the connection stays usable after a per-request error
        await c.send(raw_request(Api.API_VERSIONS, 0, {}, corr=43))
        resp = await c.response()
        assert resp is not None and resp[:2] == (43, 0), case
        c.close()
        await still_serves(broker, "t")


async def test_corrupt_batch_is_refused_whole(broker: str) -> None:
    conn = await connect(broker)
    good = batch([b"good"])
    bad = bytearray(batch([b"bad"]))
    bad[-1] ^= 0xFF  # breaks the CRC
    entry = await produce(conn, "t", 0, good + bytes(bad))
    assert entry[1] == ErrorCode.CORRUPT_MESSAGE
    entry = await produce(conn, "t", 0, b"\x00" * 30)
    assert entry[1] == ErrorCode.CORRUPT_MESSAGE
    entry = await produce(conn, "t", 0, b"")
    assert entry[1] == ErrorCode.CORRUPT_MESSAGE
    vals = [v for _, v in values_of(await fetch_all(conn, "t", 0))]
    assert b"good" not in vals and b"bad" not in vals
    await conn.close()
    await still_serves(broker, "t")


async def test_bad_partition_entries_do_not_apply_any_part(broker: str) -> None:
    c = await RawClient.open(broker)
    body = {"acks": 1, "timeout_ms": 1000,
            "topics": [["t", [[0, batch([b"first"])], [1]]]]}
    await c.send(encode_request(Api.PRODUCE, 0, 1, "raw", body))
    resp = await c.response()
    assert resp is not None and resp[1] == ErrorCode.INVALID_REQUEST
    c.close()
    conn = await connect(broker)
    vals = [v for _, v in values_of(await fetch_all(conn, "t", 0))]
    assert b"first" not in vals
    await conn.close()


async def test_many_bad_clients_at_once(broker: str) -> None:
    async def one(i: int) -> None:
        c = await RawClient.open(broker)
        body = msgpack.packb([Api.FETCH, 0, i, "x"]) + b"\xc1"
        await c.send(struct.pack(">I", len(body)) + body)
        # an undecodable request has no correlation id to answer: the broker hangs up
        assert await c.closed_by_peer()
        c.close()

    await asyncio.gather(*(one(i) for i in range(50)))
    await still_serves(broker, "t")
