"""A replicated cluster of three brokers: assignment, acks=all, followers' logs, the high
watermark, and the leader dropping duplicates of an idempotent producer's batches."""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import Processes
from test_replication_helpers import Cluster, full_isr, log_bytes, wait_for

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.protocol import ErrorCode
from moldau.clients.protocol.messages import (
    FetchRequest,
    InitProducerIdRequest,
    ProduceRequest,
)
from moldau.clients.records import BatchBuilder, decode_all
from moldau.clients.rpc import Connection
from moldau.clients.types import NewTopic, TopicPartition


async def consume_all(bootstrap: str, topic: str, partitions: int, expected: int,
                      timeout: float = 20.0) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                        fetch_max_wait_ms=100) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        n = 0
        while n < expected:
            assert time.monotonic() < deadline, f"read {n} of {expected}"
            for r in await consumer.poll(timeout_ms=200):
                out[r.partition].append(r.value)
                n += 1
    return out


@pytest.mark.timeout(60)
async def test_rf3_topic_acks_all_and_identical_follower_logs(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("rep", 3, 3, {"min.insync.replicas": "2"})])
        d = await wait_for(admin, "rep", full_isr, what="full ISR")
        for p in d.partitions:
            assert sorted(p.replicas) == [1, 2, 3]  # three distinct brokers
            assert p.leader == p.replicas[0]
        assert sorted(p.leader for p in d.partitions) == [1, 2, 3]  # leaders spread
        configs = await admin.describe_configs("rep")
        assert configs["min.insync.replicas"] == "2"

    async with Producer(cluster.bootstrap, acks="all", linger_ms=2) as producer:
        futs = [await producer.send("rep", b"v%d" % i, partition=i % 3) for i in range(3000)]
        metas = await asyncio.gather(*futs)
    assert all(m.offset >= 0 for m in metas)
    got = await consume_all(cluster.bootstrap, "rep", 3, 3000)
    for p in range(3):
        assert got[p] == [b"v%d" % i for i in range(p, 3000, 3)]

    # every replica's log becomes the leader's, byte for byte (offsets and epochs included)
    deadline = time.monotonic() + 10
    for p in range(3):
        while True:
            logs = [log_bytes(cluster.log_dir(b), "rep", p) for b in (1, 2, 3)]
            if logs[0] and logs[0] == logs[1] == logs[2]:
                break
            assert time.monotonic() < deadline, f"rep-{p}: logs differ: {[len(x) for x in logs]}"
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_duplicate_batch_is_dropped_by_the_leader(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("dedup", 1, 3)])
        d = await wait_for(admin, "dedup", full_isr, what="full ISR")
    leader = d.partitions[0].leader
    conn = Connection("127.0.0.1", cluster.ports[leader])
    await conn.connect()
    init = await conn.request(InitProducerIdRequest())
    assert init.error_code == 0 and init.producer_id >= 0
    pid = init.producer_id

    def batch(seq: int, values: list[bytes]) -> bytes:
        b = BatchBuilder()
        for v in values:
            b.append(1000, None, v)
        return b.build(producer_id=pid, producer_epoch=0, base_sequence=seq)

    async def produce(data: bytes) -> list[object]:
        resp = await conn.request(ProduceRequest(acks=-1, timeout_ms=5000,
                                                 topics=[["dedup", [[0, data]]]]))
        return resp.topics[0][1][0]

    first = batch(0, [b"a", b"b"])
    second = batch(2, [b"c"])
    e1 = await produce(first)
    e2 = await produce(second)
    assert (e1[1], e1[2], e2[1], e2[2]) == (0, 0, 0, 2)
    # the same bytes again (a retry whose answer was lost): the original offsets, no append
    again = await produce(first)
    assert (again[1], again[2]) == (0, 0)
    assert (await produce(second))[2] == 2
    # a gap in the sequence is refused
    gap = await produce(batch(10, [b"x"]))
    assert gap[1] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    # the next sequence is fine
    e3 = await produce(batch(3, [b"d"]))
    assert (e3[1], e3[2]) == (0, 3)
    resp = await conn.request(FetchRequest(max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                                           topics=[["dedup", [[0, 0, 1 << 20, -1]]]]))
    values = [r.value for r in decode_all(resp.topics[0][1][0][5])]
    assert values == [b"a", b"b", b"c", b"d"]
    await conn.close()


@pytest.mark.timeout(60)
async def test_consumers_never_see_records_above_the_high_watermark(procs: Processes) -> None:
    """With the followers gone, an acks=all produce cannot commit: the leader appends the
    batch but its high watermark stays, so a consumer sees nothing of it."""
    cluster = await Cluster(procs, extra=["replica.lag.time.max.ms=60000"]).start()
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("hw", 1, 3, replica_assignment={0: [1, 2, 3]})])
        await wait_for(admin, "hw", full_isr, what="full ISR")
    async with Producer(cluster.bootstrap, acks="all") as producer:
        await producer.send_and_wait("hw", b"committed", partition=0)
    # within the followers' session timeout (and the long lag time) the ISR stays as it
    # is, so the next batch cannot commit
    cluster.kill(2)
    cluster.kill(3)
    conn = Connection("127.0.0.1", cluster.ports[1])
    await conn.connect()
    b = BatchBuilder()
    b.append(1000, None, b"uncommitted")
    produce = asyncio.ensure_future(conn.request(ProduceRequest(
        acks=-1, timeout_ms=1000, topics=[["hw", [[0, b.build()]]]])))
    await asyncio.sleep(0.3)
    resp = await conn.request(FetchRequest(max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                                           topics=[["hw", [[0, 0, 1 << 20, -1]]]]))
    entry = resp.topics[0][1][0]
    assert entry[1] == 0 and entry[2] == 1  # high watermark: only the committed record
    assert [r.value for r in decode_all(entry[5])] == [b"committed"]
    answer = (await produce).topics[0][1][0]
    assert answer[1] == ErrorCode.REQUEST_TIMED_OUT
    await conn.close()


async def test_topic_deletion_disabled_has_kafkas_error(procs: Processes) -> None:
    cluster = await Cluster(procs, n=1, extra=["delete.topic.enable=false"]).start()
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("kept", 1, 1)])
        errors = await admin.delete_topics_results(["kept"])
        assert errors["kept"] is not None
        assert errors["kept"].code == ErrorCode.TOPIC_DELETION_DISABLED
