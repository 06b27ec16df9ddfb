"""Record batches: the unit that producers send, brokers store and consumers read.

On-disk and on-wire format (big-endian), field for field Kafka's v2 batch header, 61 bytes:

    offset  size  field
    0       8     base_offset            i64   first offset in the batch (assigned by the broker)
    8       4     batch_length           i32   bytes after this field (= total size - 12)
    12      4     partition_leader_epoch i32   stamped by the leader, outside the CRC
    16      1     magic                  i8    MAGIC (77): msgpack records payload
    17      4     crc                    u32   CRC32C of bytes [21:] (attributes .. end)
    21      2     attributes             i16   bits 0-2 compression codec, bit 3 timestamp type
                                               (0 create time, 1 log-append time), bit 4
                                               transactional, bit 5 control
    23      4     last_offset_delta      i32   record_count - 1 unless compaction removed records
    27      8     base_timestamp         i64   first timestamp (ms)
    35      8     max_timestamp          i64   largest timestamp (ms)
    43      8     producer_id            i64   -1 when not idempotent
    51      2     producer_epoch         i16
    53      4     base_sequence          i32
    57      4     record_count           i32
    61      ...   payload                      msgpack array of records, compressed per codec

Each record in the payload is ``[offset_delta, timestamp_delta, key, value, headers]``,
with key/value ``bytes | None`` and headers ``None`` or a list of ``[str, bytes]``.

Invariant: the base offset and the leader epoch lie outside the CRC, so a broker assigns
offsets and stamps epochs by rewriting the header without recomputing the checksum, and
otherwise stores and serves the batch as opaque bytes.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import crc32c as _crc32c
import lz4.frame as _lz4
import msgpack

MAGIC = 77
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length: what precedes the counted length
CRC_START = 21
_LENGTH = struct.Struct(">qi")
_OFFSET = struct.Struct(">q")
_EPOCH = struct.Struct(">i")
_MAX_TS = struct.Struct(">q")

ATTR_COMPRESSION_MASK = 0x07
ATTR_LOG_APPEND_TIME = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

Header = tuple[str, bytes]


class Compression(IntEnum):
    NONE = 0
    GZIP = 1
    LZ4 = 3

    @classmethod
    def parse(cls, name: str | int | None) -> Compression:
        if name is None:
            return cls.NONE
        if isinstance(name, int):
            return cls(name)
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown compression type {name!r} (choose none, gzip or lz4)"
            ) from None


class CorruptRecordError(ValueError):
    """A batch failed validation: bad length, magic, CRC or payload."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch including the 12 leading bytes."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & ATTR_COMPRESSION_MASK)


class Record(NamedTuple):
    """One record as a consumer sees it (a tuple: cheap to make on the consume hot path)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the fixed header at ``buf[pos:]``; raise CorruptRecordError if it is not one."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptRecordError("truncated batch header")
    h = BatchHeader(*HEADER.unpack_from(buf, pos))
    if h.magic != MAGIC:
        raise CorruptRecordError(f"bad magic {h.magic}")
    if h.batch_length < HEADER_SIZE - LOG_OVERHEAD or h.record_count < 0:
        raise CorruptRecordError(f"bad batch length {h.batch_length}")
    if h.last_offset_delta < 0:
        raise CorruptRecordError("negative last offset delta")
    return h


def batch_size_at(buf: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """Size of the batch starting at ``pos`` from its length field, or None if under 12 bytes."""
    if len(buf) - pos < LOG_OVERHEAD:
        return None
    _, length = _LENGTH.unpack_from(buf, pos)
    return int(length) + LOG_OVERHEAD


def compute_crc(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    return int(_crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size]))


def validate_batch(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Check header, length and CRC of the batch at ``pos``; return its header."""
    h = parse_header(buf, pos)
    if len(buf) - pos < h.size:
        raise CorruptRecordError("truncated batch")
    if compute_crc(buf, pos, h.size) != h.crc:
        raise CorruptRecordError("CRC mismatch")
    return h


def iter_batches(
    buf: bytes | bytearray | memoryview, validate: bool = True
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` of each whole batch in ``buf``.

    A partial batch at the end (as a size-limited fetch returns) is silently skipped; a
    corrupt batch raises CorruptRecordError.
    """
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        size = batch_size_at(buf, pos)
        assert size is not None
        if end - pos < size:
            if size < HEADER_SIZE:
                raise CorruptRecordError(f"bad batch length {size - LOG_OVERHEAD}")
            return
        h = validate_batch(buf, pos) if validate else parse_header(buf, pos)
        yield pos, h
        pos += h.size


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Assign offsets in place: rewrite the base offset (outside the CRC)."""
    _OFFSET.pack_into(buf, pos, base_offset)


def set_leader_epoch(buf: bytearray | memoryview, pos: int, epoch: int) -> None:
    """Stamp the partition leader epoch in place (outside the CRC)."""
    _EPOCH.pack_into(buf, pos + 12, epoch)


def _compress(codec: Compression, data: bytes) -> bytes:
    if codec is Compression.NONE:
        return data
    if codec is Compression.LZ4:
        return bytes(_lz4.compress(data))
    return gzip.compress(data, compresslevel=1)


def _decompress(codec: Compression, data: bytes | memoryview) -> bytes:
    try:
        if codec is Compression.NONE:
            return bytes(data)
        if codec is Compression.LZ4:
            return bytes(_lz4.decompress(data))
        return gzip.decompress(data)
    except Exception as e:  # the codecs raise assorted types on garbage
        raise CorruptRecordError(f"cannot decompress {codec.name} payload: {e}") from None


def build_batch(
    records: Sequence[Sequence[object]],
    *,
    base_timestamp: int,
    max_timestamp: int,
    compression: Compression = Compression.NONE,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
    attributes: int = 0,
) -> bytes:
    """Encode already-shaped records ``[offset_delta, ts_delta, key, value, headers]``."""
    if not records:
        raise ValueError("a batch needs at least one record")
    payload = _compress(compression, msgpack.packb(records, use_bin_type=True))
    attrs = (attributes & ~ATTR_COMPRESSION_MASK) | int(compression)
    count = len(records)
    last_delta = int(records[-1][0])  # type: ignore[call-overload]
    batch_length = HEADER_SIZE - LOG_OVERHEAD + len(payload)
    out = bytearray(HEADER_SIZE + len(payload))
    HEADER.pack_into(
        out, 0, base_offset, batch_length, -1, MAGIC, 0, attrs, last_delta,
        base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, count,
    )
    out[HEADER_SIZE:] = payload
    struct.pack_into(">I", out, 17, _crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


def encode_values(
    values: Sequence[bytes | None],
    *,
    timestamp: int,
    key: bytes | None = None,
    compression: Compression = Compression.NONE,
) -> bytes:
    """The bulk path: one batch of values sharing a timestamp and key, no headers."""
    records = [[i, 0, key, v, None] for i, v in enumerate(values)]
    return build_batch(
        records, base_timestamp=timestamp, max_timestamp=timestamp, compression=compression
    )


class BatchBuilder:
    """Accumulates records for one partition; ``build()`` returns the encoded batch."""

    __slots__ = ("_base_ts", "_bytes", "_max_ts", "_records", "compression")

    def __init__(self, compression: Compression = Compression.NONE) -> None:
        self.compression = compression
        self._records: list[list[object]] = []
        self._base_ts = 0
        self._max_ts = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def estimated_size(self) -> int:
        return HEADER_SIZE + self._bytes

    def append(
        self,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header] | None = None,
    ) -> int:
        """Add a record; return its offset delta within the batch."""
        n = len(self._records)
        if n == 0:
            self._base_ts = timestamp
            self._max_ts = timestamp
        elif timestamp > self._max_ts:
            self._max_ts = timestamp
        hdrs = [list(h) for h in headers] if headers else None
        self._records.append([n, timestamp - self._base_ts, key, value, hdrs])
        self._bytes += 8 + (len(key) if key else 0) + (len(value) if value else 0)
        return n

    def build(self, producer_id: int = NO_PRODUCER_ID, producer_epoch: int = -1,
              base_sequence: int = NO_SEQUENCE) -> bytes:
        return build_batch(
            self._records, base_timestamp=self._base_ts, max_timestamp=self._max_ts,
            compression=self.compression, producer_id=producer_id,
            producer_epoch=producer_epoch, base_sequence=base_sequence,
        )


def decode_records(buf: bytes | bytearray | memoryview, pos: int = 0,
                   header: BatchHeader | None = None, topic: str = "",
                   partition: int = -1) -> list[Record]:
    """Decode the records of the batch at ``pos`` (its CRC already validated by the caller)."""
    h = header or parse_header(buf, pos)
    raw = memoryview(buf)[pos + HEADER_SIZE : pos + h.size]
    payload = _decompress(h.compression, raw)
    try:
        items = msgpack.unpackb(payload, use_list=True, raw=False)
    except Exception as e:
        raise CorruptRecordError(f"bad records payload: {e}") from None
    if not isinstance(items, list):
        raise CorruptRecordError("records payload is not an array")
    base = h.base_offset
    bts = h.base_timestamp
    if h.attributes & ATTR_LOG_APPEND_TIME:
        ts_fixed: int | None = h.max_timestamp
    else:
        ts_fixed = None
    try:
        if ts_fixed is None:
            return [
                Record(topic, partition, base + od, bts + td, key, value,
                       tuple(map(tuple, hdrs)) if hdrs else ())
                for od, td, key, value, hdrs in items
            ]
        return [
            Record(topic, partition, base + od, ts_fixed, key, value,
                   tuple(map(tuple, hdrs)) if hdrs else ())
            for od, _td, key, value, hdrs in items
        ]
    except (TypeError, ValueError) as e:
        raise CorruptRecordError(f"malformed record: {e}") from None


def decode_all(buf: bytes | bytearray | memoryview, start_offset: int = 0, topic: str = "",
               partition: int = -1) -> list[Record]:
    """Every record with offset >= ``start_offset`` in a run of batches (as Fetch returns)."""
    out: list[Record] = []
    for pos, h in iter_batches(buf):
        if h.last_offset < start_offset or h.attributes & ATTR_CONTROL:
            continue
        recs = decode_records(buf, pos, h, topic, partition)
        if h.base_offset < start_offset:
            recs = [r for r in recs if r.offset >= start_offset]
        out.extend(recs)
    return out


def set_log_append_time(buf: bytearray, pos: int, timestamp: int) -> None:
    """Switch a batch to log-append time (changes attributes, so the CRC is recomputed)."""
    h = parse_header(buf, pos)
    struct.pack_into(">h", buf, pos + 21, h.attributes | ATTR_LOG_APPEND_TIME)
    _MAX_TS.pack_into(buf, pos + 35, timestamp)
    struct.pack_into(">I", buf, pos + 17, compute_crc(buf, pos, h.size))
