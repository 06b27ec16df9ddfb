"""Clients facing a broker that dies: retries deliver, nothing acknowledged is lost, and a
full buffer blocks then fails."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from harness import Processes

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import BufferFullError, Producer
from moldau.clients.protocol import MoldauError
from moldau.clients.records import Record
from moldau.clients.types import NewTopic, RecordMetadata, TopicPartition


@pytest.mark.timeout(90)
async def test_broker_restart_mid_stream_loses_no_acknowledged_record(procs: Processes
                                                                       ) -> None:
    md = procs.metadata()
    broker = procs.broker(1, md.address)
    servers = broker.address
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("durable", 2)])

    acked: dict[int, RecordMetadata] = {}
    failed: list[BaseException] = []
    live: list[Record] = []  # read by a consumer that keeps polling through the restart
    consumer = Consumer(bootstrap_servers=servers, auto_offset_reset="earliest",
                        fetch_max_wait_ms=200, request_timeout_ms=5000)
    await consumer.start()
    consumer.assign([TopicPartition("durable", 0), TopicPartition("durable", 1)])

    async def consume() -> None:
        while True:
            live.extend(await consumer.poll(timeout_ms=500))

    reading = asyncio.create_task(consume())
    async with Producer(servers, acks=1, linger_ms=2, retry_backoff_ms=50,
                        delivery_timeout_ms=60000, request_timeout_ms=5000) as producer:

        def on_done(i: int, fut: asyncio.Future[RecordMetadata]) -> None:
            if fut.exception() is None:
                acked[i] = fut.result()
            else:
                failed.append(fut.exception())  # type: ignore[arg-type]

        async def produce(start: int, n: int) -> None:
            for i in range(start, start + n):
                fut = await producer.send("durable", b"%d" % i, partition=i % 2)
                fut.add_done_callback(lambda f, i=i: on_done(i, f))
                if i % 50 == 0:
                    await asyncio.sleep(0.005)

        await produce(0, 1000)
        await producer.flush()
        assert len(acked) == 1000
        sending = asyncio.create_task(produce(1000, 2000))
        await asyncio.sleep(0.1)
        broker.kill()  # SIGKILL mid-stream
        await asyncio.sleep(0.5)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: procs.broker(1, md.address, port=broker.port))
        await sending
        await producer.flush()
    assert failed == []
    assert len(acked) == 3000

    try:
        ends = await consumer.end_offsets(consumer.assignment())
        deadline = time.monotonic() + 30
        while len(live) < sum(ends.values()):
            assert time.monotonic() < deadline, f"consumed {len(live)} of {ends}"
            await asyncio.sleep(0.05)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await consumer.stop()
    for p in (0, 1):
        got = [r for r in live if r.partition == p]
        assert [r.offset for r in got] == list(range(ends[TopicPartition("durable", p)]))
        values = [int(r.value) for r in got]  # type: ignore[arg-type]
        # retries after a lost answer may duplicate, never drop or reorder
        assert list(dict.fromkeys(values)) == [i for i in range(3000) if i % 2 == p]
        by_offset = {r.offset: r.value for r in got}
        for i, meta in acked.items():
            if i % 2 == p:
                assert by_offset[meta.offset] == b"%d" % i


async def test_full_buffer_blocks_then_raises(cluster: Processes) -> None:
    _md, broker = cluster.daemons
    servers = broker.address
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("stuck", 1)])
    async with Producer(servers, buffer_memory=4096, max_block_ms=400, linger_ms=0,
                        delivery_timeout_ms=3000, request_timeout_ms=1000) as producer:
        await producer.send_and_wait("stuck", b"warm-up")
        broker.kill()
        futs = []
        start = time.monotonic()
        with pytest.raises(BufferFullError):
            for _ in range(200):
                futs.append(await producer.send("stuck", b"x" * 100))
        assert 0.3 < time.monotonic() - start < 5
        assert 10 < len(futs) < 60
        # with the broker gone the buffered records fail after the delivery timeout
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert all(isinstance(r, MoldauError) and r.retriable for r in results)
        with pytest.raises(MoldauError):
            await producer.send("stuck", b"y" * 5000)  # larger than the whole buffer
