"""Wire-level helpers the broker tests share: talk to a broker with ``rpc.Connection`` and the
message classes, without the client library."""

from __future__ import annotations

import struct
import time
from typing import Any

from moldau.clients.protocol.messages import (
    CreateTopicsRequest,
    FetchRequest,
    ListOffsetsRequest,
    MetadataRequest,
    ProduceRequest,
)
from moldau.clients.records import decode_all, encode_values, iter_batches
from moldau.clients.rpc import Connection

# a fast session timeout so a SIGKILLed broker's registration goes quickly on restart
FAST_SESSION = ["--override", "zookeeper.session.timeout.ms=1500"]


async def connect(address: str) -> Connection:
    host, _, port = address.rpartition(":")
    conn = Connection(host, int(port), client_id="test")
    await conn.connect()
    return conn


async def create_topic(conn: Connection, name: str, partitions: int = 1, rf: int = 1,
                       configs: dict[str, str] | None = None,
                       validate_only: bool = False) -> dict[str, Any]:
    resp = await conn.request(CreateTopicsRequest(
        topics=[{"name": name, "num_partitions": partitions, "replication_factor": rf,
                 "assignments": None, "configs": configs or {}}],
        timeout_ms=10000, validate_only=validate_only))
    assert len(resp.topics) == 1
    return dict(resp.topics[0])


def batch(values: list[bytes], ts: int | None = None) -> bytes:
    return encode_values(values, timestamp=int(time.time() * 1000) if ts is None else ts)


async def produce(conn: Connection, topic: str, partition: int, records: bytes,
                  acks: int = 1) -> list[Any]:
    """Produce one batch run; return the partition's response entry
    ``[partition, error_code, base_offset, log_append_time, log_start_offset, message]``."""
    resp = await conn.request(ProduceRequest(acks=acks, timeout_ms=10000,
                                             topics=[[topic, [[partition, records]]]]))
    return list(resp.topics[0][1][0])


async def fetch(conn: Connection, topic: str, partition: int, offset: int, *,
                max_wait_ms: int = 0, min_bytes: int = 1, max_bytes: int = 50_000_000,
                partition_max_bytes: int = 10_000_000, timeout: float = 30.0) -> list[Any]:
    """Fetch one partition; return ``[partition, error_code, high_watermark,
    last_stable_offset, log_start_offset, records]``."""
    resp = await conn.request(FetchRequest(
        max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
        topics=[[topic, [[partition, offset, partition_max_bytes, -1]]]]), timeout=timeout)
    return list(resp.topics[0][1][0])


async def fetch_all(conn: Connection, topic: str, partition: int, start: int = 0) -> bytes:
    """Every batch from ``start`` up to the high watermark, concatenated."""
    out = bytearray()
    offset = start
    while True:
        entry = await fetch(conn, topic, partition, offset)
        assert entry[1] == 0, entry[:5]
        data = entry[5]
        if not data:
            return bytes(out)
        last = None
        for pos, h in iter_batches(data):
            out += data[pos:pos + h.size]
            last = h
        assert last is not None
        offset = last.next_offset
        if offset >= entry[2]:
            return bytes(out)


def values_of(data: bytes) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.value) for r in decode_all(data)]


async def list_offset(conn: Connection, topic: str, partition: int, ts: int) -> list[Any]:
    resp = await conn.request(ListOffsetsRequest(topics=[[topic, [[partition, ts]]]]))
    return list(resp.topics[0][1][0])


async def metadata(conn: Connection, topics: list[str] | None = None,
                   auto_create: bool = False) -> Any:
    return await conn.request(MetadataRequest(topics=topics,
                                              allow_auto_topic_creation=auto_create))


def without_offsets(data: bytes) -> list[bytes]:
    """The batches of ``data`` with base offset and leader epoch zeroed (the two header
    fields the broker rewrites; both outside the CRC)."""
    out = []
    for pos, h in iter_batches(data):
        b = bytearray(data[pos:pos + h.size])
        struct.pack_into(">q", b, 0, 0)
        struct.pack_into(">i", b, 12, 0)
        out.append(bytes(b))
    return out
