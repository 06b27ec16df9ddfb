"""Frames: the unit of every moldau connection (sans-I/O: bytes in, frames out).

Wire format::

    frame    = u32 length (big-endian, bytes after this field) | header | body
    request  header = msgpack [api: int, version: int, correlation_id: int, client_id: str]
    response header = msgpack [correlation_id: int, error_code: int]
    body     = one msgpack value (a map for every moldau message)

A response with a non-zero header error code is a frame-level error (unsupported version,
undecodable request, ...): its body is the error message. The server may also push frames
with ``correlation_id == PUSH_CORRELATION_ID`` (metadata watch events).

Invariant: a decoder never returns part of a frame; a length over ``max_frame_size`` raises
FrameTooLarge before any byte of the frame is buffered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024
PUSH_CORRELATION_ID = -1
_LEN = struct.Struct(">I")


class ProtocolError(ValueError):
    """Bytes that do not form a valid moldau frame or message."""


class FrameTooLarge(ProtocolError):
    pass


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api: int
    version: int
    correlation_id: int
    client_id: str


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_request(api: int, version: int, correlation_id: int, client_id: str,
                   body: Any) -> bytes:
    payload = _pack([api, version, correlation_id, client_id]) + _pack(body)
    return _LEN.pack(len(payload)) + payload


def encode_response(correlation_id: int, body: Any, error_code: int = 0) -> bytes:
    payload = _pack([correlation_id, error_code]) + _pack(body)
    return _LEN.pack(len(payload)) + payload


def _split(frame: bytes | memoryview) -> tuple[Any, Any]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(frame), 1024),
                                strict_map_key=False)
    unpacker.feed(frame)
    try:
        header = unpacker.unpack()
        body = unpacker.unpack()
    except msgpack.OutOfData:
        raise ProtocolError("frame ends inside its header or body") from None
    except Exception as e:  # msgpack raises several types on garbage
        raise ProtocolError(f"undecodable frame: {e}") from None
    if unpacker.tell() != len(frame):
        raise ProtocolError("trailing bytes after frame body")
    return header, body


def decode_request(frame: bytes | memoryview) -> tuple[RequestHeader, Any]:
    header, body = _split(frame)
    if (
        not isinstance(header, list) or len(header) != 4
        or not all(isinstance(x, int) for x in header[:3])
        or not isinstance(header[3], str)
    ):
        raise ProtocolError("bad request header")
    return RequestHeader(header[0], header[1], header[2], header[3]), body


def decode_response(frame: bytes | memoryview) -> tuple[int, int, Any]:
    """Return ``(correlation_id, error_code, body)``."""
    header, body = _split(frame)
    if not isinstance(header, list) or len(header) != 2 or not all(
        isinstance(x, int) for x in header
    ):
        raise ProtocolError("bad response header")
    return header[0], header[1], body


class FrameDecoder:
    """Splits a byte stream into frames: ``feed(data) -> list[bytes]``."""

    __slots__ = ("_buf", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self.max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the maximum of {self.max_frame_size}"
                )
            if n - pos - 4 < length:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return frames
