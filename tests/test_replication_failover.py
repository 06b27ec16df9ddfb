"""Failover of a replicated cluster under load: killed leaders, killed controllers, two of
three brokers gone, a paused (zombie) leader, a rolling restart. The invariant checked every
time: every acknowledged record is read back exactly once, in the order it was sent within
its partition, and the replicas' logs end up byte-identical."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest
from harness import Processes
from test_replication_helpers import Cluster, describe, full_isr, log_bytes, wait_for

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import ProduceRequest
from moldau.clients.records import BatchBuilder
from moldau.clients.rpc import Connection
from moldau.clients.types import NewTopic, RecordMetadata, TopicPartition


class Load:
    """A producer sending ``"<partition>:<n>"`` continuously, n counting up per partition,
    remembering what was acknowledged (and where) and what failed."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, **kw: object) -> None:
        self.topic = topic
        self.partitions = partitions
        self.producer = Producer(bootstrap, acks="all", linger_ms=2, retry_backoff_ms=50,
                                 request_timeout_ms=5000, delivery_timeout_ms=60000,
                                 **kw)  # type: ignore[arg-type]
        self.acked: dict[int, dict[int, int]] = {p: {} for p in range(partitions)}
        self.failed: list[BaseException] = []
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._outstanding = asyncio.Semaphore(300)

    async def start(self) -> Load:
        await self.producer.start()
        self._task = asyncio.create_task(self._run())
        return self

    def acked_count(self) -> int:
        return sum(len(a) for a in self.acked.values())

    def _done(self, p: int, n: int, fut: asyncio.Future[RecordMetadata]) -> None:
        self._outstanding.release()
        if fut.exception() is None:
            self.acked[p][n] = fut.result().offset
        else:
            self.failed.append(fut.exception())  # type: ignore[arg-type]

    async def _run(self) -> None:
        counters = [0] * self.partitions
        i = 0
        while not self._stop.is_set():
            p = i % self.partitions
            n = counters[p]
            counters[p] += 1
            i += 1
            await self._outstanding.acquire()
            fut = await self.producer.send(self.topic, f"{p}:{n}".encode(), partition=p)
            fut.add_done_callback(lambda f, p=p, n=n: self._done(p, n, f))
            self.sent += 1
            if i % 20 == 0:
                await asyncio.sleep(0.002)

    async def wait_acked(self, more: int, timeout: float = 20.0) -> None:
        target = self.acked_count() + more
        deadline = time.monotonic() + timeout
        while self.acked_count() < target:
            assert time.monotonic() < deadline, (
                f"acked {self.acked_count()} < {target}; failures: {self.failed[:3]}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
        await self.producer.flush()
        await self.producer.stop()


async def read_back(bootstrap: str, topic: str, partitions: int,
                    timeout: float = 30.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every committed record of every partition: ``(offset, value)`` in log order."""
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                        fetch_max_wait_ms=100, request_timeout_ms=5000) as consumer:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(len(out[tp.partition]) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"read {[len(v) for v in out.values()]} of {ends}"
            for r in await consumer.poll(timeout_ms=200):
                out[r.partition].append((r.offset, r.value))
    return out


def check_exactly_once(load: Load, got: dict[int, list[tuple[int, bytes]]]) -> None:
    for p, records in got.items():
        ns = []
        for _offset, value in records:
            vp, vn = value.decode().split(":")
            assert int(vp) == p
            ns.append(int(vn))
        # no duplicates, in send order
        assert ns == sorted(set(ns)), f"partition {p}: duplicates or reordering in {ns[:50]}"
        where = {n: off for (off, _), n in zip(records, ns, strict=True)}
        for n, offset in load.acked[p].items():
            assert where.get(n) == offset, f"partition {p}: acked {n} at {offset} is lost"


async def identical_logs(cluster: Cluster, topic: str, partitions: int,
                         timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for p in range(partitions):
        while True:
            logs = [log_bytes(cluster.log_dir(b), topic, p) for b in sorted(cluster.brokers)]
            if all(x == logs[0] for x in logs):
                break
            assert time.monotonic() < deadline, (
                f"{topic}-{p}: logs differ: {[len(x) for x in logs]}")
            await asyncio.sleep(0.1)


async def produce_raw(conn: Connection, topic: str, value: bytes, acks: int = -1,
                      timeout_ms: int = 3000) -> list[object]:
    b = BatchBuilder()
    b.append(int(time.time() * 1000), None, value)
    resp = await conn.request(ProduceRequest(acks=acks, timeout_ms=timeout_ms,
                                             topics=[[topic, [[0, b.build()]]]]),
                              timeout=timeout_ms / 1000 + 10)
    return resp.topics[0][1][0]  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
async def test_leader_killed_under_load_then_rejoins(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    topic = "failover"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3, 3, {"min.insync.replicas": "2"})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        load = await Load(cluster.bootstrap, topic, 3).start()
        assert load.producer.idempotent
        await load.wait_acked(1500)
        victim = (await describe(admin, topic)).partitions[0].leader
        cluster.kill(victim)
        killed_at = time.monotonic()
        d = await wait_for(admin, topic, lambda d: all(
            p.leader not in (-1, victim) for p in d.partitions), timeout=10,
            what="new leaders")
        # the new leader of partition 0 serves within 10 s of the kill
        before = len(load.acked[0])
        while len(load.acked[0]) <= before:
            assert time.monotonic() - killed_at < 10, "no acks from the new leader"
            await asyncio.sleep(0.05)
        assert all(victim not in p.isr for p in d.partitions)
        await load.wait_acked(1500)
        # the old leader comes back, truncates what was never committed, and catches up
        await cluster.start_broker(victim)
        await wait_for(admin, topic, full_isr, timeout=20, what="old leader back in the ISR")
        await load.wait_acked(500)
        await load.stop()
    assert load.failed == []
    check_exactly_once(load, await read_back(cluster.bootstrap, topic, 3))
    await identical_logs(cluster, topic, 3)


@pytest.mark.timeout(120)
async def test_two_of_three_down_with_min_insync_two(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    topic = "minisr"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"},
                                            replica_assignment={0: [1, 2, 3]})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            acked = [await producer.send_and_wait(topic, b"before-%d" % i) for i in range(50)]
        # the leader and one follower die; broker 3 takes over alone
        cluster.kill(1)
        cluster.kill(2)
        await wait_for(admin, topic, lambda d: d.partitions[0].leader == 3
                       and d.partitions[0].isr == (3,), timeout=15, what="3 alone")
        conn = Connection("127.0.0.1", cluster.ports[3])
        await conn.connect()
        entry = await produce_raw(conn, topic, b"refused")
        assert entry[1] == ErrorCode.NOT_ENOUGH_REPLICAS, entry
        # acks=1 still works there (Kafka's semantics), the producer library says why it
        # cannot deliver acks=all
        assert (await produce_raw(conn, topic, b"acks-one", acks=1))[1] == 0
        impatient = Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=1500,
                             retry_backoff_ms=100)
        await impatient.start()
        with pytest.raises(MoldauError) as info:
            await impatient.send_and_wait(topic, b"refused-too")
        assert info.value.code == ErrorCode.NOT_ENOUGH_REPLICAS
        pid = impatient.producer_id
        # nothing acknowledged is lost, and it resumes when one broker returns
        async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=60000,
                            retry_backoff_ms=100) as producer:
            pending = await producer.send(topic, b"after")
            await asyncio.sleep(0.5)
            assert not pending.done()
            await cluster.start_broker(2)
            meta = await asyncio.wait_for(pending, 30)
        # the refused batch surely was not appended: the same producer id goes on, its
        # sequence wound back over the gap
        last = await impatient.send_and_wait(topic, b"last")
        assert impatient.producer_id == pid
        await impatient.stop()
        await conn.close()
    got = (await read_back(f"127.0.0.1:{cluster.ports[3]}", topic, 1))[0]
    values = [v for _, v in got]
    assert values[:50] == [b"before-%d" % i for i in range(50)]
    assert [m.offset for m in acked] == list(range(50))
    assert values[-2:] == [b"after", b"last"]
    assert (got[-2][0], got[-1][0]) == (meta.offset, last.offset)
    assert b"refused" not in values and b"refused-too" not in values


@pytest.mark.timeout(90)
async def test_timed_out_batch_makes_the_producer_take_a_new_id(procs: Processes) -> None:
    """A batch that fails for good after a timeout may or may not be in the log: the
    producer cannot reuse its sequence numbers, so it takes a new producer id and goes on."""
    cluster = await Cluster(procs, extra=["replica.lag.time.max.ms=60000"]).start()
    topic = "ambiguous"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"},
                                            replica_assignment={0: [1, 2, 3]})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        producer = Producer(cluster.bootstrap, acks="all", request_timeout_ms=700,
                            delivery_timeout_ms=1000, retry_backoff_ms=50)
        await producer.start()
        first = await producer.send_and_wait(topic, b"first")
        pid = producer.producer_id
        # the followers die; until their sessions end they stay in the ISR, so the next
        # batch is appended but cannot commit in time
        cluster.kill(2)
        cluster.kill(3)
        with pytest.raises(MoldauError) as info:
            await producer.send_and_wait(topic, b"maybe")
        assert info.value.code == ErrorCode.REQUEST_TIMED_OUT
        await cluster.start_broker(2)
        await wait_for(admin, topic, lambda d: set(d.partitions[0].isr) == {1, 2},
                       timeout=20, what="ISR 1, 2")
        then = await producer.send_and_wait(topic, b"then")
        assert producer.producer_id != pid
        await producer.stop()
    got = (await read_back(cluster.bootstrap, topic, 1))[0]
    values = [v for _, v in got]
    # the timed-out batch was in the leader's log and got committed once the ISR shrank:
    # acknowledged or not, it is there once, before what followed
    assert values == [b"first", b"maybe", b"then"]
    assert (got[0][0], got[-1][0]) == (first.offset, then.offset)


@pytest.mark.timeout(120)
async def test_controller_killed_another_takes_over(procs: Processes) -> None:
    cluster = await Cluster(procs).start()
    topic = "ctl"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3, 3, {"min.insync.replicas": "2"})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        _, controller, _ = await admin.describe_cluster()
        assert controller in (1, 2, 3)
        load = await Load(cluster.bootstrap, topic, 3).start()
        await load.wait_acked(600)
        cluster.kill(controller)
        deadline = time.monotonic() + 15
        while True:
            try:
                brokers, now, _ = await admin.describe_cluster()
                if now not in (-1, controller) and controller not in [b.node_id for b in brokers]:
                    break
            except MoldauError:
                pass
            assert time.monotonic() < deadline, "no new controller"
            await asyncio.sleep(0.1)
        # the new controller moved the dead one's leaderships
        await wait_for(admin, topic, lambda d: all(
            p.leader not in (-1, controller) and controller not in p.isr
            for p in d.partitions), timeout=10, what="leaders moved by the new controller")
        await load.wait_acked(600)
        await load.stop()
    assert load.failed == []
    check_exactly_once(load, await read_back(cluster.bootstrap, topic, 3))


@pytest.mark.timeout(120)
async def test_paused_leader_is_fenced_and_truncates(procs: Processes) -> None:
    """A leader that stops (SIGSTOP: as good as cut off) loses its session; the controller
    elects another. When it resumes it still believes it leads: an acks=all produce sent to
    it must not be acknowledged, and the batch it appended must go when it learns the new
    epoch and truncates."""
    cluster = await Cluster(procs).start()
    topic = "zombie"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"},
                                            replica_assignment={0: [1, 2, 3]})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            for i in range(20):
                await producer.send_and_wait(topic, b"ok-%d" % i)
        conn = Connection("127.0.0.1", cluster.ports[1])
        await conn.connect()
        zombie = cluster.brokers[1]
        os.kill(zombie.pid, signal.SIGSTOP)
        try:
            d = await wait_for(admin, topic, lambda d: d.partitions[0].leader in (2, 3),
                               timeout=15, what="a new leader")
            new_leader = d.partitions[0].leader
            async with Producer(f"127.0.0.1:{cluster.ports[new_leader]}",
                                acks="all") as producer:
                for i in range(20, 30):
                    await producer.send_and_wait(topic, b"ok-%d" % i)
            # queued in the paused broker's socket: it handles it on waking, as leader of
            # an epoch that is over
            answer = asyncio.ensure_future(produce_raw(conn, topic, b"zombie", timeout_ms=4000))
            await asyncio.sleep(0.2)
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        entry = await answer
        assert entry[1] in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT,
                            ErrorCode.NOT_ENOUGH_REPLICAS,
                            ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND), entry
        await conn.close()
        await wait_for(admin, topic, full_isr, timeout=20, what="the old leader back in sync")
    got = (await read_back(cluster.bootstrap, topic, 1))[0]
    assert [v for _, v in got] == [b"ok-%d" % i for i in range(30)]
    await identical_logs(cluster, topic, 1)


@pytest.mark.timeout(150)
async def test_rolling_restart_under_load_loses_nothing(procs: Processes) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    cluster = await Cluster(procs).start()
    topic = "rolling"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3, 3, {"min.insync.replicas": "2"})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        load = await Load(cluster.bootstrap, topic, 3).start()
        await load.wait_acked(500)
        order = [1, 2, 3]
        rng.shuffle(order)
        for b in order:
            assert await cluster.stop(b) == 0  # SIGTERM: controlled shutdown
            await load.wait_acked(300)  # still writable with two of three
            await cluster.start_broker(b)
            await wait_for(admin, topic, full_isr, timeout=20, what=f"broker {b} back in sync")
            await load.wait_acked(300)
        await load.stop()
    assert load.failed == []
    check_exactly_once(load, await read_back(cluster.bootstrap, topic, 3))
    await identical_logs(cluster, topic, 3)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_random_kills_and_restarts_soak(procs: Processes) -> None:
    """One broker at a time is SIGKILLed or SIGTERMed at random and brought back, eight
    times, under continuous idempotent acks=all load."""
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    cluster = await Cluster(procs).start()
    topic = "soak"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 4, 3, {"min.insync.replicas": "2"})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        load = await Load(cluster.bootstrap, topic, 4).start()
        for _ in range(8):
            await load.wait_acked(rng.randint(100, 1000))
            b = rng.choice([1, 2, 3])
            if rng.random() < 0.5:
                cluster.kill(b)
            else:
                await cluster.stop(b)
            await asyncio.sleep(rng.uniform(0, 3))
            await load.wait_acked(200, timeout=30)
            await cluster.start_broker(b)
            await wait_for(admin, topic, full_isr, timeout=30, what=f"broker {b} in sync")
        await load.wait_acked(500)
        await load.stop()
    assert load.failed == []
    check_exactly_once(load, await read_back(cluster.bootstrap, topic, 4))
    await identical_logs(cluster, topic, 4)
