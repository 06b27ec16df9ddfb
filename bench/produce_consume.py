"""Produce/consume benchmark: moldau beside NATS JetStream and Redis Streams, in one run.

Starts its own metadata node and broker (and nats-server / redis-server when installed:
`apt-get install nats-server redis-server`, `pip install nats-py redis`), then measures with
100-byte values:

- produce records/s and MB/s, acks=1, one partition: the bulk path (`send_batch`, 1,000
  records per call) and the per-record path (`send`); the bulk path to 6 partitions;
- consume records/s from the beginning;
- end-to-end latency p50/p99 at a steady 10,000 records/s;
- the broker's RSS idle, peak, and with 100 partitions.

Usage: python bench/produce_consume.py [--records N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALUE = b"x" * 100
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(args: list[str], log: Path, ready: bytes | None,
          timeout: float = 20) -> subprocess.Popen[bytes]:
    f = open(log, "ab")  # noqa: SIM115 - owned by the child
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    f.close()
    deadline = time.monotonic() + timeout
    while ready is not None and time.monotonic() < deadline:
        if ready in log.read_bytes():
            return p
        if p.poll() is not None:
            raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def line(name: str, n: int, secs: float, extra: str = "") -> dict[str, float]:
    rps = n / secs
    print(f"  {name:<46} {rps:>12,.0f} rec/s {rps * len(VALUE) / 1e6:>8.1f} MB/s  {extra}",
          flush=True)
    return {"rps": rps}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# --------------------------------------------------------------------------------- moldau


async def bench_moldau(bootstrap: str, broker_pid: int, n: int) -> None:
    from moldau.clients.admin import Admin
    from moldau.clients.consumer import Consumer
    from moldau.clients.producer import Producer
    from moldau.clients.types import NewTopic, TopicPartition

    async with Admin(bootstrap) as admin:
        await admin.create_topics([NewTopic("b1", 1, 1), NewTopic("b6", 6, 1),
                                   NewTopic("bs", 1, 1), NewTopic("lat", 1, 1)])
    idle = rss_mb(broker_pid)
    print("moldau (acks=1, durable: acked after fdatasync by group commit)")
    async with Producer(bootstrap, acks=1, linger_ms=5, batch_size=128 * 1024) as p:
        values = [VALUE] * BATCH
        t = time.perf_counter()
        futs = [asyncio.ensure_future(p.send_batch("b1", values, partition=0))
                for _ in range(n // BATCH)]
        await asyncio.gather(*futs)
        line("produce bulk path, 1 partition", n, time.perf_counter() - t)

        t = time.perf_counter()
        futs = [asyncio.ensure_future(p.send_batch("b6", values, partition=i % 6))
                for i in range(n // BATCH)]
        await asyncio.gather(*futs)
        line("produce bulk path, 6 partitions", n, time.perf_counter() - t)

        m = max(n // 4, 10_000)
        t = time.perf_counter()
        last = None
        for _ in range(m):
            last = await p.send("bs", VALUE)
        await p.flush()
        assert last is not None
        await last
        line("produce per-record send(), 1 partition", m, time.perf_counter() - t)

    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("b1", 0)])
        await c.seek_to_beginning(TopicPartition("b1", 0))
        got = 0
        t = time.perf_counter()
        while got < n:
            got += len(await c.poll(timeout_ms=2000))
        line("consume from the beginning, 1 partition", got, time.perf_counter() - t)

    # end-to-end latency at a steady rate: timestamp in the value, read by a live consumer
    rate, secs = 10_000, 5
    lat: list[float] = []
    async with Consumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100) as c, \
            Producer(bootstrap, acks=1, linger_ms=0) as p:
        c.assign([TopicPartition("lat", 0)])
        await c.seek_to_end(TopicPartition("lat", 0))

        async def consume() -> None:
            while len(lat) < rate * secs:
                for r in await c.poll(timeout_ms=1000):
                    lat.append(time.perf_counter() - float(r.value[:20]))  # type: ignore[index]

        task = asyncio.create_task(consume())
        start = time.perf_counter()
        for i in range(rate * secs):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await p.send("lat", f"{time.perf_counter():<20.9f}".encode() + VALUE[20:])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await task
        task.cancel()
    if lat:
        print(f"  end-to-end latency at {rate:,}/s: p50 {pct(lat, .5) * 1e3:.2f} ms, "
              f"p99 {pct(lat, .99) * 1e3:.2f} ms ({len(lat):,} records)")
    peak = rss_mb(broker_pid, "VmHWM")
    async with Admin(bootstrap) as admin:
        await admin.create_topics([NewTopic("many", 100, 1)])
    await asyncio.sleep(2)
    print(f"  broker RSS: idle {idle:.0f} MB, peak under load {peak:.0f} MB, "
          f"now with 100 more partitions {rss_mb(broker_pid):.0f} MB")


# --------------------------------------------------------------------------------- NATS


async def bench_nats(tmp: Path, n: int) -> None:
    exe = shutil.which("nats-server")
    try:
        import nats
    except ImportError:
        nats = None
    if not exe or nats is None:
        print("NATS JetStream: skipped (apt-get install nats-server; pip install nats-py)")
        return
    port = free_port()
    proc = spawn([exe, "-js", "-sd", str(tmp / "nats"), "-a", "127.0.0.1", "-p", str(port)],
                 tmp / "nats.log", b"Server is ready")
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        await js.add_stream(name="bench", subjects=["bench"], storage="file")
        print("NATS JetStream (file storage, nats-py async publish)")
        m = max(n // 5, 10_000)
        t = time.perf_counter()
        window = 1000
        for i in range(0, m, window):
            futs = [await js.publish_async("bench", VALUE) for _ in range(min(window, m - i))]
            await asyncio.gather(*futs)
        line("produce, async publish (windows of 1,000)", m, time.perf_counter() - t)
        from nats.js.api import AckPolicy, ConsumerConfig
        sub = await js.pull_subscribe("bench", durable="b",
                                      config=ConsumerConfig(ack_policy=AckPolicy.ALL))
        got = 0
        t = time.perf_counter()
        while got < m:
            try:
                msgs = await sub.fetch(1000, timeout=5)
            except TimeoutError:
                break
            got += len(msgs)
            await msgs[-1].ack()  # AckAll: acknowledges the whole batch
        line("consume, pull fetch of 1,000", got, time.perf_counter() - t)
        await nc.close()
    finally:
        stop(proc)


# --------------------------------------------------------------------------------- Redis


def bench_redis(tmp: Path, n: int) -> None:
    exe = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        redis = None
    if not exe or redis is None:
        print("Redis Streams: skipped (apt-get install redis-server; pip install redis)")
        return
    port = free_port()
    proc = spawn([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
                  "--appendonly", "yes", "--save", ""], tmp / "redis.log",
                 b"Ready to accept connections")
    try:
        r = redis.Redis(port=port)
        print("Redis Streams (AOF appendfsync everysec, redis-py pipelines of 1,000)")
        m = max(n // 2, 10_000)
        t = time.perf_counter()
        for i in range(0, m, BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(BATCH, m - i)):
                pipe.xadd("bench", {"v": VALUE})
            pipe.execute()
        line("produce, pipelined XADD", m, time.perf_counter() - t)
        got, last = 0, "-"
        t = time.perf_counter()
        while got < m:
            rows = r.xrange("bench", min=last, count=BATCH)
            if last != "-":
                rows = rows[1:]
            if not rows:
                break
            got += len(rows)
            last = rows[-1][0]
        line("consume, XRANGE of 1,000", got, time.perf_counter() - t)
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 records")
    a = ap.parse_args()
    # a SIGTERM (e.g. from `timeout`) unwinds through the finally that stops the daemons
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = 100_000 if a.quick else a.records
    tmp = Path(tempfile.mkdtemp(prefix="moldau-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mdp, bp = free_port(), free_port()
        procs.append(spawn([sys.executable, "-m", "moldau.broker.metadata", "--host",
                            "127.0.0.1", "--port", str(mdp), "--data-dir", str(tmp / "md")],
                           tmp / "md.log", b"ready on"))
        procs.append(spawn([sys.executable, "-m", "moldau.broker", "--broker-id", "1",
                            "--listeners", f"127.0.0.1:{bp}", "--log-dirs", str(tmp / "b1"),
                            "--zookeeper", f"127.0.0.1:{mdp}"], tmp / "b1.log", b"ready on"))
        print(f"{n:,} records of {len(VALUE)} bytes; {os.cpu_count()} cores\n")
        import uvloop
        uvloop.run(bench_moldau(f"127.0.0.1:{bp}", procs[1].pid, n))
        uvloop.run(bench_nats(tmp, n))
        bench_redis(tmp, n)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
