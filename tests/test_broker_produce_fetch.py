"""Produce, fetch, list offsets and metadata against a real broker over the wire."""

from __future__ import annotations

import asyncio
import time

from harness import Processes
from test_broker_helpers import (
    batch,
    connect,
    create_topic,
    fetch,
    fetch_all,
    list_offset,
    metadata,
    produce,
    values_of,
    without_offsets,
)

from moldau.clients.protocol import Api, ErrorCode
from moldau.clients.protocol.messages import (
    ApiVersionsRequest,
    FetchRequest,
    ProduceRequest,
)
from moldau.clients.records import BatchBuilder, Compression, iter_batches


def broker_address(cluster: Processes) -> str:
    return cluster.daemons[1].address


async def test_produce_then_fetch_is_byte_identical(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    assert (await create_topic(conn, "events"))["error_code"] == 0
    sent = []
    b = BatchBuilder()
    b.append(1000, b"k1", b"v1", [("h", b"x")])
    b.append(1001, None, b"v2")
    sent.append(b.build())
    sent.append(batch([f"value-{i}".encode() for i in range(100)]))
    b = BatchBuilder(Compression.LZ4)
    for i in range(50):
        b.append(2000 + i, str(i).encode(), b"z" * 200)
    sent.append(b.build())
    offsets = []
    for data in sent:
        entry = await produce(conn, "events", 0, data)
        assert entry[1] == ErrorCode.NONE, entry
        offsets.append(entry[2])
    assert offsets == [0, 2, 102]
    got = await fetch_all(conn, "events", 0)
    assert without_offsets(got) == [without_offsets(s)[0] for s in sent]
    assert [h.base_offset for _, h in iter_batches(got)] == [0, 2, 102]
    recs = values_of(got)
    assert [o for o, _ in recs] == list(range(152))
    assert recs[0][1] == b"v1" and recs[2][1] == b"value-0"
    await conn.close()


async def test_several_batches_in_one_request(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    await create_topic(conn, "multi")
    run = batch([b"a", b"b"]) + batch([b"c"]) + batch([b"d", b"e", b"f"])
    entry = await produce(conn, "multi", 0, run)
    assert entry[1] == 0 and entry[2] == 0
    entry = await produce(conn, "multi", 0, batch([b"g"]))
    assert entry[2] == 6
    assert [v for _, v in values_of(await fetch_all(conn, "multi", 0))] == [
        b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    await conn.close()


async def test_acks_zero_gets_no_response_and_appends(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    await create_topic(conn, "fire")
    for i in range(5):
        await conn.send_only(ProduceRequest(acks=0, timeout_ms=1000,
                                            topics=[["fire", [[0, batch([b"%d" % i])]]]]))
    # acks=1 after them on the same connection: appended after all five, in order
    entry = await produce(conn, "fire", 0, batch([b"last"]), acks=1)
    assert entry[1] == 0 and entry[2] == 5
    # acks=-1 takes the same path with one replica
    entry = await produce(conn, "fire", 0, batch([b"all"]), acks=-1)
    assert entry[1] == 0 and entry[2] == 6
    assert conn.in_flight == 0
    vals = [v for _, v in values_of(await fetch_all(conn, "fire", 0))]
    assert vals == [b"0", b"1", b"2", b"3", b"4", b"last", b"all"]
    entry = await produce(conn, "fire", 0, batch([b"x"]), acks=2)
    assert entry[1] == ErrorCode.INVALID_REQUIRED_ACKS
    await conn.close()


async def test_pipelined_produce_requests_keep_order(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    await create_topic(conn, "order")
    n = 300
    tasks = [asyncio.create_task(conn.request(ProduceRequest(
        acks=1, timeout_ms=10000, topics=[["order", [[0, batch([b"%d" % i] * 3)]]]])))
        for i in range(n)]
    resps = await asyncio.gather(*tasks)
    bases = [r.topics[0][1][0][2] for r in resps]
    assert bases == [3 * i for i in range(n)]
    vals = [v for _, v in values_of(await fetch_all(conn, "order", 0))]
    assert vals == [b"%d" % i for i in range(n) for _ in range(3)]
    await conn.close()


async def test_fetch_long_poll_wakes_on_produce(cluster: Processes) -> None:
    addr = broker_address(cluster)
    consumer = await connect(addr)
    producer = await connect(addr)
    await create_topic(consumer, "poll")
    # nothing there: the fetch waits its max_wait_ms, then answers empty
    t0 = time.monotonic()
    entry = await fetch(consumer, "poll", 0, 0, max_wait_ms=300)
    waited = time.monotonic() - t0
    assert entry[1] == 0 and entry[5] == b"" and waited >= 0.25
    # a long poll is answered as soon as a produce arrives
    t0 = time.monotonic()
    pending = asyncio.create_task(fetch(consumer, "poll", 0, 0, max_wait_ms=20000))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await produce(producer, "poll", 0, batch([b"wake up"]))
    entry = await asyncio.wait_for(pending, 5)
    assert time.monotonic() - t0 < 5
    assert values_of(entry[5]) == [(0, b"wake up")]
    # min_bytes: one small batch is not enough, the next produce is
    pending = asyncio.create_task(fetch(consumer, "poll", 0, 1, max_wait_ms=20000,
                                        min_bytes=2000))
    await produce(producer, "poll", 0, batch([b"small"]))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await produce(producer, "poll", 0, batch([b"x" * 3000]))
    entry = await asyncio.wait_for(pending, 5)
    assert [v for _, v in values_of(entry[5])] == [b"small", b"x" * 3000]
    await consumer.close()
    await producer.close()


async def test_fetch_sizes_and_errors(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    await create_topic(conn, "sizes", partitions=2)
    big = batch([b"y" * 1000] * 5)
    for _ in range(4):
        await produce(conn, "sizes", 0, big)
        await produce(conn, "sizes", 1, big)
    # a partition limit below one batch still returns one whole batch
    entry = await fetch(conn, "sizes", 0, 0, partition_max_bytes=10)
    assert [h.base_offset for _, h in iter_batches(entry[5])] == [0]
    assert len(entry[5]) == len(big)
    # the request's max_bytes bounds the whole response (past the first batch)
    resp = await conn.request(FetchRequest(
        max_wait_ms=0, min_bytes=1, max_bytes=len(big) * 2 + 10,
        topics=[["sizes", [[0, 0, 10_000_000, -1], [1, 0, 10_000_000, -1]]]]))
    p0, p1 = resp.topics[0][1]
    assert len(p0[5]) == 2 * len(big) and p1[5] == b""
    # a fetch in the middle of a batch returns that batch (the consumer skips ahead)
    entry = await fetch(conn, "sizes", 0, 7)
    assert next(iter_batches(entry[5]))[1].base_offset == 5
    assert entry[2] == 20  # high watermark
    # errors, answered at once even with a long max wait
    t0 = time.monotonic()
    assert (await fetch(conn, "sizes", 0, 21, max_wait_ms=5000))[1] == \
        ErrorCode.OFFSET_OUT_OF_RANGE
    assert (await fetch(conn, "sizes", 0, -1))[1] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert (await fetch(conn, "sizes", 5, 0, max_wait_ms=5000))[1] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (await fetch(conn, "nope", 0, 0, max_wait_ms=5000))[1] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert time.monotonic() - t0 < 3
    # at the log end: empty, no error
    entry = await fetch(conn, "sizes", 0, 20)
    assert entry[1] == 0 and entry[5] == b""
    await conn.close()


async def test_list_offsets(cluster: Processes) -> None:
    conn = await connect(broker_address(cluster))
    await create_topic(conn, "times")
    assert (await list_offset(conn, "times", 0, -2))[1:] == [0, -1, 0]
    assert (await list_offset(conn, "times", 0, -1))[1:] == [0, -1, 0]
    await produce(conn, "times", 0, batch([b"a", b"b"], ts=1000))
    await produce(conn, "times", 0, batch([b"c", b"d"], ts=2000))
    await produce(conn, "times", 0, batch([b"e"], ts=3000))
    assert (await list_offset(conn, "times", 0, -2))[3] == 0
    assert (await list_offset(conn, "times", 0, -1))[3] == 5
    assert (await list_offset(conn, "times", 0, 500))[2:] == [1000, 0]
    assert (await list_offset(conn, "times", 0, 1500))[2:] == [2000, 2]
    assert (await list_offset(conn, "times", 0, 2000))[2:] == [2000, 2]
    assert (await list_offset(conn, "times", 0, 3000))[2:] == [3000, 4]
    assert (await list_offset(conn, "times", 0, 3001))[2:] == [-1, -1]
    assert (await list_offset(conn, "missing", 0, -1))[1] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await conn.close()


async def test_metadata_and_api_versions(cluster: Processes) -> None:
    addr = broker_address(cluster)
    conn = await connect(addr)
    await create_topic(conn, "meta", partitions=3)
    md = await metadata(conn)
    host, port = addr.rsplit(":", 1)
    assert md.brokers == [[1, host, int(port), None]]
    assert md.controller_id == 1  # a lone broker is its own controller
    assert md.cluster_id
    (topic,) = [t for t in md.topics if t["name"] == "meta"]
    assert topic["error_code"] == 0 and not topic["internal"]
    assert [p["partition"] for p in topic["partitions"]] == [0, 1, 2]
    for p in topic["partitions"]:
        assert (p["error_code"], p["leader"], p["leader_epoch"], p["replicas"], p["isr"],
                p["offline_replicas"]) == (0, 1, 0, [1], [1], [])
    md = await metadata(conn, ["meta", "absent", "bad/name"])
    codes = {t["name"]: t["error_code"] for t in md.topics}
    assert codes == {"meta": 0, "absent": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                     "bad/name": ErrorCode.INVALID_TOPIC_EXCEPTION}
    # asking with allow_auto_topic_creation does not create when the broker forbids it
    md = await metadata(conn, ["absent"], auto_create=True)
    assert md.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    versions = await conn.request(ApiVersionsRequest())
    apis = {a[0] for a in versions.api_keys}
    assert {Api.PRODUCE, Api.FETCH, Api.LIST_OFFSETS, Api.METADATA, Api.CREATE_TOPICS,
            Api.API_VERSIONS} <= apis
    assert Api.MD_CREATE not in apis
    await conn.close()
