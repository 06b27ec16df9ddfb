"""The Kafka connectors' runtime (reader and writer) against a real broker, driven the way
a task drives them, without a JobManager."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from harness import Processes

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.stream.connector_runtime import (
    END_OF_INPUT,
    ReaderIdle,
    SourceReaderContext,
    create_reader,
    create_writer,
)
from moldau.clients.stream.connectors import (
    FlinkKafkaConsumer,
    FlinkKafkaProducer,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    SimpleStringSchema,
)
from moldau.clients.stream.kafka_runtime import KafkaSinkWriter, KafkaSourceReader
from moldau.clients.stream.operators import Batch, OperatorInfo
from moldau.clients.types import NewTopic

BASE = 1_700_000_000_000


def source(servers: str, topic: str, start: KafkaOffsetsInitializer,
           stop: KafkaOffsetsInitializer | None = None) -> KafkaSource:
    b = (KafkaSource.builder().set_bootstrap_servers(servers).set_topics(topic)
         .set_group_id("g").set_starting_offsets(start)
         .set_value_only_deserializer(SimpleStringSchema()))
    if stop is not None:
        b.set_bounded(stop)
    return b.build()


def reader(src: Any, subtask: int = 0, parallelism: int = 1,
           restored: list[Any] | None = None) -> KafkaSourceReader:
    ctx = SourceReaderContext(OperatorInfo(subtask_index=subtask, parallelism=parallelism))
    r = create_reader(src, ctx, restored)
    assert isinstance(r, KafkaSourceReader)
    return r


async def drain(r: KafkaSourceReader, until_end: bool = True, quiet: float = 1.0
                ) -> tuple[list[Batch], list[Any]]:
    """Batches and other events until END_OF_INPUT (or ``quiet`` seconds of nothing)."""
    batches: list[Batch] = []
    events: list[Any] = []
    deadline = time.monotonic() + 20
    last = time.monotonic()
    while time.monotonic() < deadline:
        got = await r.poll_async(1000, 0.1)
        for ev in got:
            if type(ev) is Batch:
                batches.append(ev)
                last = time.monotonic()
            else:
                events.append(ev)
        if END_OF_INPUT in events:
            return batches, events
        if not until_end and time.monotonic() - last > quiet:
            return batches, events
    raise AssertionError("the reader did not end")


def values(batches: list[Batch]) -> list[str]:
    return [v for b in batches for v in b.values]


@pytest.fixture
async def servers(procs: Processes) -> str:
    md = procs.metadata()
    servers = procs.broker(1, md.address).address
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("t3", 3, 1), NewTopic("t1", 1, 1),
                                   NewTopic("out", 2, 1)])
    async with Producer(servers, acks="all") as p:
        futs = [await p.send("t3", f"v{i}".encode(), partition=i % 3,
                             timestamp_ms=BASE + i) for i in range(30)]
        futs += [await p.send("t1", f"w{i}".encode(), timestamp_ms=BASE + 1000 * i)
                 for i in range(10)]
        await asyncio.gather(*futs)
    return servers


@pytest.mark.timeout(60)
async def test_partitions_are_dealt_round_robin_and_read_to_the_bounded_end(
        servers: str) -> None:
    src = source(servers, "t3", KafkaOffsetsInitializer.earliest(),
                 KafkaOffsetsInitializer.latest())
    r0, r1 = reader(src, 0, 2), reader(src, 1, 2)
    await r0.start_async()
    await r1.start_async()
    try:
        assert r0.splits == [("t3", 0), ("t3", 2)] and r1.splits == [("t3", 1)]
        # records written after the start are beyond the bounded end
        async with Producer(servers, acks="all") as p:
            await (await p.send("t3", b"late", partition=1))
        b0, _ = await drain(r0)
        b1, ev1 = await drain(r1)
        assert sorted(values(b0)) == sorted(f"v{i}" for i in range(30) if i % 3 != 1)
        assert values(b1) == [f"v{i}" for i in range(30) if i % 3 == 1]
        assert ev1[-1] is END_OF_INPUT
        for b in b0 + b1:
            # a batch is one partition (a split: per-partition watermarks) with the
            # records' own timestamps
            assert b.split in r0.splits + r1.splits
            assert b.timestamps == [BASE + int(v[1:]) for v in b.values]
            assert all(int(v[1:]) % 3 == b.split[1] for v in b.values)
        assert r1.snapshot_state() == [["t3", 1, 10]]
    finally:
        await r0.stop_async()
        await r1.stop_async()


@pytest.mark.timeout(60)
async def test_starting_offsets_and_restored_positions(servers: str) -> None:
    async def read(init: KafkaOffsetsInitializer, restored: list[Any] | None = None
                   ) -> list[str]:
        r = reader(source(servers, "t1", init, KafkaOffsetsInitializer.latest()),
                   restored=restored)
        await r.start_async()
        try:
            return values((await drain(r))[0])
        finally:
            await r.stop_async()

    everything = [f"w{i}" for i in range(10)]
    assert await read(KafkaOffsetsInitializer.earliest()) == everything
    assert await read(KafkaOffsetsInitializer.latest()) == []
    assert await read(KafkaOffsetsInitializer.timestamp(BASE + 6500)) == everything[7:]
    assert await read(KafkaOffsetsInitializer.offsets({("t1", 0): 4})) == everything[4:]
    # committed offsets: no consumer groups yet, so the reset strategy (earliest) rules
    assert await read(KafkaOffsetsInitializer.committed_offsets()) == everything
    # a restored reader resumes where its snapshot was
    assert await read(KafkaOffsetsInitializer.earliest(), [["t1", 0, 8]]) == everything[8:]


@pytest.mark.timeout(60)
async def test_a_subtask_without_partitions_is_idle_or_ends(servers: str) -> None:
    unbounded = reader(source(servers, "t1", KafkaOffsetsInitializer.earliest()), 1, 2)
    await unbounded.start_async()
    try:
        assert unbounded.splits == []
        first = await unbounded.poll_async(1000, 0.05)
        assert len(first) == 1 and isinstance(first[0], ReaderIdle) and first[0].idle
        assert await unbounded.poll_async(1000, 0.05) == []
    finally:
        await unbounded.stop_async()
    bounded = reader(source(servers, "t1", KafkaOffsetsInitializer.earliest(),
                            KafkaOffsetsInitializer.latest()), 1, 2)
    await bounded.start_async()
    try:
        assert await bounded.poll_async(1000, 0.05) == [END_OF_INPUT]
    finally:
        await bounded.stop_async()


@pytest.mark.timeout(60)
async def test_flink_kafka_consumer_reads_like_a_kafka_source(servers: str) -> None:
    fkc = FlinkKafkaConsumer("t1", SimpleStringSchema(), {"bootstrap.servers": servers})
    r = reader(fkc)
    await r.start_async()
    try:
        batches, _ = await drain(r, until_end=False)
        assert values(batches) == [f"w{i}" for i in range(10)]
    finally:
        await r.stop_async()
    with pytest.raises(RuntimeError, match="runs on the cluster"):
        r.poll(10)


@pytest.mark.timeout(60)
async def test_writer_sends_keys_values_and_timestamps_at_least_once(servers: str) -> None:
    keyed = (KafkaSink.builder().set_bootstrap_servers(servers).set_record_serializer(
        KafkaRecordSerializationSchema.builder().set_topic("out")
        .set_value_serialization_schema(SimpleStringSchema())
        .set_key_serialization_schema(lambda v: v.split(":")[0].encode()).build()).build())
    keyless = FlinkKafkaProducer("out", SimpleStringSchema(), {"bootstrap.servers": servers})
    w1 = create_writer(keyed, None)
    w2 = create_writer(keyless, None)
    assert isinstance(w1, KafkaSinkWriter) and isinstance(w2, KafkaSinkWriter)
    await w1.start_async()
    await w2.start_async()
    try:
        w1.write_batch(Batch([f"k{i % 3}:{i}" for i in range(20)],
                             [BASE + i for i in range(20)]))
        w2.write_batch(Batch([f"bulk{i}" for i in range(100)]))  # one keyless run
        w2.write_batch(Batch(["x", "y"], [BASE + 7, BASE + 8]))
        for w in (w1, w2):
            assert w.pending
            w.flush(end_of_input=True)
            await w.drain_async()
            assert not w.pending and not w.inflight
    finally:
        await w1.stop_async()
        await w2.stop_async()
    async with Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as c:
        c.assign([("out", 0), ("out", 1)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 122 and time.monotonic() < deadline:
            got += await c.poll(timeout_ms=500)
    assert len(got) == 122
    by_value = {r.value.decode(): r for r in got}
    for i in range(20):
        rec = by_value[f"k{i % 3}:{i}"]
        assert rec.key == f"k{i % 3}".encode() and rec.timestamp == BASE + i
    # one key, one partition
    for k in range(3):
        assert len({by_value[f"k{k}:{i}"].partition for i in range(k, 20, 3)}) == 1
    assert by_value["x"].timestamp == BASE + 7 and by_value["x"].key is None
    assert all(f"bulk{i}" in by_value for i in range(100))
