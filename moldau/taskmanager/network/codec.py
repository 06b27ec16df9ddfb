"""Bytes of the data plane (pure: no I/O).

A **buffer** is what one credit pays for: a list of *elements* in channel order, each
one of

* a :class:`Batch` of records,
* ``(WATERMARK, timestamp)``, ``(STATUS, idle)``: event time and idleness travel in-band,
  so a watermark never overtakes the records emitted before it;
* ``(END_OF_PARTITION,)``: the producing subtask finished; nothing follows.

On the wire a buffer is a msgpack array of items: ``[0, codec, values, timestamps]`` for a
batch (``codec`` 0: ``values`` is the msgpack array of the values themselves, exact for
None/bool/int/float/str/bytes and lists/dicts of those; 1: pickled bytes of the list, for
tuples, rows and user classes), ``[1, ts]``, ``[2, idle]``, ``[3]``. The codec is chosen
per batch: msgpack when every value is exactly representable, else pickle (cloudpickle
when plain pickle refuses, e.g. classes defined in the job script).

Frames on a channel connection: ``u32 length | u8 type | payload``. Consumer to producer:
``REQUEST`` (msgpack map: job, execution id, edge, subpartition, initial credit) and
``CREDIT`` (u32: more buffers may be sent). Producer to consumer: ``BUFFER`` (an encoded
buffer) and ``ERROR`` (utf-8 text; the connection closes after it).
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import msgpack

from moldau.clients.stream.operators import Batch

WATERMARK = 1
STATUS = 2
END_OF_PARTITION = 3
EOP: tuple[int] = (END_OF_PARTITION,)

# frame types
REQUEST = 1
CREDIT = 2
BUFFER = 16
ERROR = 17

_LEN = struct.Struct(">I")
_LEN_TYPE = struct.Struct(">IB")
_U32 = struct.Struct(">I")

CODEC_MSGPACK = 0
CODEC_PICKLE = 1

_packer_strict = msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=True)
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


class CodecError(ValueError):
    """Bytes that are not a valid data-plane frame or buffer."""


def encode_values(values: list[Any]) -> tuple[int, bytes]:
    """``(codec, packed)`` for a batch's values; msgpack when exact, else pickle."""
    try:
        return CODEC_MSGPACK, _packer_strict.pack(values)
    except (TypeError, ValueError, OverflowError):
        _packer_strict.reset()
    try:
        data = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        data = cloudpickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    return CODEC_PICKLE, _packer.pack(data)


def encode_buffer(elements: list[Any]) -> bytes:
    """One buffer's elements as bytes (see the module docstring)."""
    pack = _packer.pack
    parts = [_array_header(len(elements))]
    for el in elements:
        if type(el) is Batch:
            codec, packed = encode_values(el.values)
            parts.append(b"\x94\x00")  # fixarray(4), 0
            parts.append(pack(codec))
            parts.append(packed)
            parts.append(pack(el.timestamps))
        else:
            parts.append(pack(el))
    return b"".join(parts)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def decode_buffer(data: bytes | memoryview) -> list[Any]:
    """The elements of an encoded buffer; CodecError for bytes that are not one."""
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:
        raise CodecError(f"undecodable buffer: {e}") from None
    if type(items) is not list:
        raise CodecError("a buffer is not an array")
    out: list[Any] = []
    for it in items:
        if type(it) is not list or not it:
            raise CodecError("malformed buffer element")
        kind = it[0]
        if kind == 0:
            if len(it) != 4:
                raise CodecError("malformed batch element")
            values = it[2]
            if it[1] == CODEC_PICKLE:
                try:
                    values = pickle.loads(values)
                except Exception as e:
                    raise CodecError(f"cannot unpickle records: {e!r}") from None
            if type(values) is not list:
                raise CodecError("batch values are not a list")
            ts = it[3]
            if ts is not None and (type(ts) is not list or len(ts) != len(values)):
                raise CodecError("batch timestamps do not match its values")
            out.append(Batch(values, ts))
        elif kind == WATERMARK and len(it) == 2 and type(it[1]) is int:
            out.append((WATERMARK, it[1]))
        elif kind == STATUS and len(it) == 2 and type(it[1]) is bool:
            out.append((STATUS, it[1]))
        elif kind == END_OF_PARTITION and len(it) == 1:
            out.append(EOP)
        else:
            raise CodecError(f"unknown buffer element {kind!r}")
    return out


def frame(ftype: int, payload: bytes) -> bytes:
    """``u32 length | u8 type | payload``."""
    return _LEN_TYPE.pack(len(payload) + 1, ftype) + payload


def credit_frame(n: int) -> bytes:
    return _LEN_TYPE.pack(5, CREDIT) + _U32.pack(n)


def request_frame(job_id: str, execution_id: str, edge: int, subpartition: int,
                  credit: int) -> bytes:
    return frame(REQUEST, _packer.pack({"job": job_id, "exec": execution_id, "edge": edge,
                                        "sub": subpartition, "credit": credit}))


def parse_request(payload: bytes) -> tuple[str, str, int, int, int]:
    try:
        d = msgpack.unpackb(payload, raw=False)
        return (str(d["job"]), str(d["exec"]), int(d["edge"]), int(d["sub"]),
                int(d["credit"]))
    except Exception as e:
        raise CodecError(f"bad partition request: {e!r}") from None


def parse_credit(payload: bytes) -> int:
    if len(payload) != 4:
        raise CodecError("bad credit frame")
    return int(_U32.unpack(payload)[0])


class FrameReader:
    """Splits a byte stream into ``(type, payload)`` frames. A frame longer than
    ``max_frame`` raises CodecError before it is buffered."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = 256 << 20) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            (length,) = _LEN.unpack_from(buf, pos)
            if length < 1 or length > self.max_frame:
                raise CodecError(f"bad frame length {length}")
            if n - pos - 4 < length:
                break
            out.append((buf[pos + 4], bytes(buf[pos + 5:pos + 4 + length])))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return out
