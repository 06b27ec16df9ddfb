"""Producer and consumer against a real metadata node and broker, over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from harness import Processes

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer, NoOffsetForPartitionError
from moldau.clients.partitioner import key_partition
from moldau.clients.producer import Producer
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.records import Record
from moldau.clients.types import NewTopic, RecordMetadata, TopicPartition


def bootstrap(cluster: Processes) -> str:
    return cluster.daemons[1].address


async def create_topic(servers: str, name: str, partitions: int = 1,
                       configs: dict[str, str] | None = None) -> None:
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic(name, partitions, 1, configs or {})])


async def consume_n(consumer: Consumer, n: int, timeout: float = 15.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"got {len(out)} of {n} records"
        out.extend(await consumer.poll(timeout_ms=int(min(remaining, 1.0) * 1000)))
    return out


@pytest.mark.parametrize("acks", [0, 1, "all"])
async def test_produce_and_consume_back_in_order(cluster: Processes, acks: int | str) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "orders", 3)
    sent: list[tuple[int, bytes | None, bytes, int, list[tuple[str, bytes]]]] = []
    async with Producer(servers, acks=acks, linger_ms=2, batch_size=2048) as producer:
        futures = []
        for i in range(600):
            p = i % 3
            key = None if i % 5 == 0 else b"k%d" % i
            value = b"value-%d" % i
            ts = 1_700_000_000_000 + i
            headers = [("seq", str(i).encode()), ("src", b"test")] if i % 2 else []
            futures.append(await producer.send("orders", value, key=key, partition=p,
                                               timestamp_ms=ts, headers=headers))
            sent.append((p, key, value, ts, headers))
        metas = await asyncio.gather(*futures)
    assert all(isinstance(m, RecordMetadata) and m.topic == "orders" for m in metas)
    if acks != 0:
        # offsets are consecutive per partition, in send order
        for p in range(3):
            offsets = [m.offset for m, s in zip(metas, sent, strict=True) if s[0] == p]
            assert offsets == list(range(200))
        assert [m.timestamp for m in metas] == [s[3] for s in sent]
    else:
        assert {m.offset for m in metas} == {-1}
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("orders", p) for p in range(3)])
        records = await consume_n(consumer, 600)
        assert await consumer.poll(timeout_ms=200) == []
    for p in range(3):
        got = [r for r in records if r.partition == p]
        want = [s for s in sent if s[0] == p]
        assert [r.offset for r in got] == list(range(200))
        assert [(r.key, r.value, r.timestamp, list(r.headers)) for r in got] == [
            (k, v, ts, h) for _, k, v, ts, h in want]


async def test_keyed_records_land_on_the_murmur2_partition(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "keyed", 7)
    keys = [b"user-%d" % i for i in range(200)] + [b"21", b"foobar", b"abc", b""]
    async with Producer(servers) as producer:
        futs = [await producer.send("keyed", b"v", key=k) for k in keys]
        metas = await asyncio.gather(*futs)
    for k, m in zip(keys, metas, strict=True):
        assert m.partition == key_partition(k, 7), k
    # and the consumer finds each key where the producer put it
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        await consumer.subscribe(["keyed"])
        records = await consume_n(consumer, len(keys))
    assert {(r.key, r.partition) for r in records} == {(k, key_partition(k, 7)) for k in keys}


async def test_keyless_records_stick_to_a_partition_per_batch(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "sticky", 4)
    async with Producer(servers, linger_ms=1000, batch_size=1100) as producer:
        futs = [await producer.send("sticky", b"x" * 92) for _ in range(100)]
        metas = await asyncio.gather(*futs)
    # ~10 records fill a batch; consecutive records share a partition until it is full
    runs = [1]
    for a, b in itertools.pairwise(metas):
        if a.partition == b.partition:
            runs[-1] += 1
        else:
            runs.append(1)
    assert len(runs) >= 5 and max(runs) <= 10 and sum(runs) == 100
    assert len({m.partition for m in metas}) > 1


async def test_send_batch_bulk_path(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "bulk", 2)
    async with Producer(servers) as producer:
        await producer.send_and_wait("bulk", b"single", partition=0)
        first = await producer.send_batch("bulk", [b"b%d" % i for i in range(1000)],
                                          partition=0, key=b"same", timestamp_ms=12345)
        assert first == RecordMetadata("bulk", 0, 1, 12345)
        again = await producer.send_batch("bulk", [b"c", None], partition=0)
        assert again.offset == 1001
        keyed = await producer.send_batch("bulk", [b"z"], key=b"21")
        assert keyed.partition == key_partition(b"21", 2)
        with pytest.raises(ValueError):
            await producer.send_batch("bulk", [])
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("bulk", 0)])
        extra = 1 if key_partition(b"21", 2) == 0 else 0
        records = await consume_n(consumer, 1003 + extra)
    assert records[0].value == b"single"
    assert [r.value for r in records[1:1001]] == [b"b%d" % i for i in range(1000)]
    assert {r.key for r in records[1:1001]} == {b"same"}
    assert {r.timestamp for r in records[1:1001]} == {12345}
    assert [r.value for r in records[1001:]] == [b"c", None] + [b"z"] * extra
    assert [r.offset for r in records] == list(range(1003 + extra))


async def test_seek_by_offset_to_beginning_end_and_by_time(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "seek", 1)
    tp = TopicPartition("seek", 0)
    base = 1_600_000_000_000
    async with Producer(servers) as producer:
        for i in range(50):
            await producer.send("seek", b"%d" % i, timestamp_ms=base + 1000 * i)
        await producer.flush()
    async with Consumer(bootstrap_servers=servers) as consumer:  # latest by default
        consumer.assign([tp])
        assert await consumer.position(tp) == 50
        assert await consumer.beginning_offsets([tp]) == {tp: 0}
        assert await consumer.end_offsets([tp]) == {tp: 50}
        assert await consumer.poll(timeout_ms=100) == []

        consumer.seek(tp, 42)
        got = await consume_n(consumer, 8)
        assert [r.offset for r in got] == list(range(42, 50))
        assert await consumer.position(tp) == 50

        await consumer.seek_to_beginning(tp)
        assert await consumer.position(tp) == 0
        got = await consumer.poll(timeout_ms=5000, max_records=5)
        assert [r.value for r in got] == [b"0", b"1", b"2", b"3", b"4"]
        assert await consumer.position(tp) == 5

        found = await consumer.offsets_for_times({tp: base + 20_500})
        assert found == {tp: (21, base + 21_000)}
        assert await consumer.offsets_for_times({tp: base + 10**9}) == {tp: None}
        consumer.seek(tp, found[tp][0])  # type: ignore[index]
        got = await consumer.poll(timeout_ms=5000, max_records=1)
        assert got[0].offset == 21 and got[0].timestamp == base + 21_000

        await consumer.seek_to_end(tp)
        assert await consumer.position(tp) == 50
        assert await consumer.poll(timeout_ms=200) == []


async def test_seek_discards_records_fetched_before_it(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "reseek", 1)
    tp = TopicPartition("reseek", 0)
    async with Producer(servers) as producer:
        for i in range(300):
            await producer.send("reseek", b"%d" % i)
        await producer.flush()
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        first = await consumer.poll(timeout_ms=5000, max_records=10)
        assert [r.offset for r in first] == list(range(10))
        await asyncio.sleep(0.2)  # the rest is prefetched by now
        consumer.seek(tp, 250)
        again = await consume_n(consumer, 50)
        assert [r.offset for r in again] == list(range(250, 300))


async def test_long_poll_returns_as_soon_as_a_record_arrives(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "live", 1)
    tp = TopicPartition("live", 0)
    async with Producer(servers, linger_ms=0) as producer, \
            Consumer(bootstrap_servers=servers, fetch_max_wait_ms=5000) as consumer:
        consumer.assign([tp])
        assert await consumer.position(tp) == 0
        await asyncio.sleep(0.3)  # the consumer's long poll is now parked at the broker

        async def produce_later() -> float:
            await asyncio.sleep(0.2)
            await producer.send_and_wait("live", b"hello")
            return time.monotonic()

        task = asyncio.create_task(produce_later())
        start = time.monotonic()
        records = await consumer.poll(timeout_ms=10000)
        got_at = time.monotonic()
        acked_at = await task
    assert [r.value for r in records] == [b"hello"]
    assert got_at - start < 2.0, f"waited {got_at - start:.2f}s for a record"
    assert got_at - acked_at < 1.0


async def test_producing_to_a_missing_topic_fails_with_unknown_topic(cluster: Processes
                                                                      ) -> None:
    servers = bootstrap(cluster)
    async with Producer(servers, delivery_timeout_ms=1500, max_block_ms=1500) as producer:
        start = time.monotonic()
        with pytest.raises(MoldauError) as e:
            await producer.send_and_wait("no-such-topic", b"x")
        assert e.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert 1.0 < time.monotonic() - start < 10
        # a partition number the topic does not have is refused as well
        await create_topic(servers, "two", 2)
        with pytest.raises(MoldauError) as e:
            await producer.send_and_wait("two", b"x", partition=2)
        assert e.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert (await producer.send_and_wait("two", b"x", partition=1)).partition == 1
        assert await producer.partitions_for("two") == [0, 1]


async def test_a_topic_created_later_is_found_while_sending(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    async with Producer(servers, max_block_ms=10000) as producer:
        send = asyncio.create_task(producer.send_and_wait("late", b"x"))
        await asyncio.sleep(0.5)
        assert not send.done()
        await create_topic(servers, "late", 1)
        meta = await asyncio.wait_for(send, 10)
        assert (meta.topic, meta.partition, meta.offset) == ("late", 0, 0)


async def test_offset_out_of_range_resets_or_raises(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "range", 1)
    tp = TopicPartition("range", 0)
    async with Producer(servers) as producer:
        for i in range(10):
            await producer.send("range", b"%d" % i)
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        got = await consume_n(consumer, 10)
        assert [r.offset for r in got] == list(range(10))
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="none") as consumer:
        consumer.assign([tp])
        with pytest.raises(NoOffsetForPartitionError):
            await consumer.position(tp)
        consumer.seek(tp, 1000)
        with pytest.raises(MoldauError) as e:
            await consumer.poll(timeout_ms=5000)
        assert e.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
        consumer.seek(tp, 7)
        got = await consume_n(consumer, 3)
        assert [r.offset for r in got] == [7, 8, 9]


async def test_subscribe_follows_new_partitions(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "grow", 1)
    async with Consumer("grow", bootstrap_servers=servers, auto_offset_reset="earliest",
                        metadata_max_age_ms=300) as consumer, Producer(servers) as producer:
        assert consumer.assignment() == {TopicPartition("grow", 0)}
        async with Admin(servers) as admin:
            await admin.create_partitions("grow", 3)
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < 3:
            assert time.monotonic() < deadline, consumer.assignment()
            await consumer.poll(timeout_ms=100)
        await producer.send_and_wait("grow", b"new", partition=2)
        got = await consume_n(consumer, 1)
        assert (got[0].partition, got[0].value) == (2, b"new")
    with pytest.raises(RuntimeError):
        await consumer.poll()


async def test_commits_need_the_group_coordinator(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    async with Consumer(bootstrap_servers=servers) as consumer:
        with pytest.raises(MoldauError) as e:
            await consumer.commit()
        assert "group_id" in str(e.value)
    async with Consumer(bootstrap_servers=servers, group_id="g1") as consumer:
        assert consumer.group_id == "g1"
        with pytest.raises(MoldauError) as e:
            await consumer.commit()
        assert "group coordinator" in str(e.value)


async def test_many_records_many_partitions_random(cluster: Processes) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    servers = bootstrap(cluster)
    await create_topic(servers, "rand", 4)
    sent: dict[int, list[bytes]] = {p: [] for p in range(4)}
    async with Producer(servers, linger_ms=rng.choice([0, 1, 5]),
                        batch_size=rng.choice([512, 4096, 16384])) as producer:
        futs = []
        for _ in range(3000):
            value = rng.randbytes(rng.randrange(0, 300))
            key = rng.choice([None, b"a", b"b", rng.randbytes(4)])
            fut = await producer.send("rand", value, key=key)
            futs.append((fut, value))
        for fut, value in futs:
            meta = await fut
            sent[meta.partition].append(value)
    async with Consumer("rand", bootstrap_servers=servers, auto_offset_reset="earliest",
                        max_partition_fetch_bytes=rng.choice([4096, 65536, 1048576])
                        ) as consumer:
        records = await consume_n(consumer, 3000)
    for p in range(4):
        assert [r.value for r in records if r.partition == p] == sent[p]


async def test_two_brokers_each_leading_some_partitions(procs: Processes) -> None:
    md = procs.metadata()
    b1 = procs.broker(1, md.address)
    b2 = procs.broker(2, md.address)
    servers = f"{b1.address},{b2.address}"
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("spread", 6, 1)])
        (desc,) = await admin.describe_topics(["spread"])
    leaders = {p.partition: p.leader for p in desc.partitions}
    assert set(leaders.values()) == {1, 2}
    async with Producer([b2.address], linger_ms=1) as producer:
        futs = [await producer.send("spread", b"%d" % i, partition=i % 6) for i in range(600)]
        metas = await asyncio.gather(*futs)
        assert producer.cluster.connected(1) is not None
        assert producer.cluster.connected(2) is not None
    assert [m.offset for m in metas if m.partition == 0] == list(range(100))
    async with Consumer("spread", bootstrap_servers=b1.address,
                        auto_offset_reset="earliest") as consumer:
        records = await consume_n(consumer, 600)
    for p in range(6):
        assert [r.value for r in records if r.partition == p] == [
            b"%d" % i for i in range(600) if i % 6 == p]


async def test_getmany_pause_resume_and_async_iteration(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    await create_topic(servers, "many", 2)
    async with Producer(servers) as producer:
        for i in range(20):
            await producer.send("many", b"%d" % i, partition=i % 2)
    t0, t1 = TopicPartition("many", 0), TopicPartition("many", 1)
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([t0, t1])
        consumer.pause(t1)
        assert consumer.paused() == {t1}
        got: dict[TopicPartition, list[Record]] = {}
        deadline = time.monotonic() + 10
        while len(got.get(t0, [])) < 10:
            assert time.monotonic() < deadline
            for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                got.setdefault(tp, []).extend(recs)
        assert set(got) == {t0}
        assert [r.value for r in got[t0]] == [b"%d" % i for i in range(0, 20, 2)]
        assert await consumer.poll(timeout_ms=300) == []  # t1 stays paused
        consumer.resume(t1)
        values = []
        async for record in consumer:
            assert record.partition == 1
            values.append(record.value)
            if len(values) == 10:
                break
        assert values == [b"%d" % i for i in range(1, 20, 2)]
