"""Replication benchmark: LinkedIn's 2014 Kafka scenarios on a 3-broker cluster on this machine.

Starts one metadata node and three brokers, then, with 100-byte values on one partition per
topic (bulk path, 1,000-record batches, up to 8 batches in flight):

- one producer, replication factor 1, acks=1 (the reference figure);
- one producer, replication factor 3, acks=1 ("async replication");
- one producer, replication factor 3, acks=all, min.insync.replicas=2 ("sync replication",
  idempotent producer);
- three producers at once (three processes), replication factor 3, acks=1, each to its own
  partition of one 3-partition topic;
- one consumer reading the replication-factor-3 topic from the beginning.

Usage: python bench/replication.py [--records N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import VALUE, free_port, spawn, stop

BATCH = 1000
IN_FLIGHT = 8


async def produce(bootstrap: str, topic: str, n: int, acks: int | str,
                  partition: int = 0) -> float:
    from moldau.clients.producer import Producer

    values = [VALUE] * BATCH
    async with Producer(bootstrap, acks=acks, linger_ms=5) as p:
        await p.partitions_for(topic)
        window: list[asyncio.Future[object]] = []
        t = time.perf_counter()
        for _ in range(n // BATCH):
            window.append(await p.enqueue_batch(topic, values, partition=partition))  # type: ignore[arg-type]
            if len(window) >= IN_FLIGHT:
                await window.pop(0)
        await asyncio.gather(*window)
        return time.perf_counter() - t


def _producer_process(bootstrap: str, topic: str, n: int, partition: int,
                      start: mp.synchronize.Event, out: mp.Queue[float]) -> None:
    import uvloop

    start.wait()
    out.put(uvloop.run(produce(bootstrap, topic, n, 1, partition)))


async def consume(bootstrap: str, topic: str, n: int) -> float:
    from moldau.clients.consumer import Consumer
    from moldau.clients.types import TopicPartition

    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got = 0
        t = time.perf_counter()
        while got < n:
            got += len(await c.poll(timeout_ms=2000))
        return time.perf_counter() - t


def report(name: str, n: int, secs: float, ref: float | None = None) -> float:
    rps = n / secs
    extra = f"  ({rps / ref:.2f}x the RF 1 figure)" if ref else ""
    print(f"  {name:<52} {rps:>11,.0f} rec/s {rps * len(VALUE) / 1e6:>7.1f} MB/s{extra}",
          flush=True)
    return rps


async def create_topics(bootstrap: str) -> None:
    from moldau.clients.admin import Admin
    from moldau.clients.types import NewTopic

    async with Admin(bootstrap) as admin:
        await admin.create_topics([
            NewTopic("rf1", 1, 1), NewTopic("rf3-async", 1, 3),
            NewTopic("rf3-sync", 1, 3, configs={"min.insync.replicas": "2"}),
            NewTopic("rf3-three", 3, 3),
        ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="200,000 records")
    a = ap.parse_args()
    # a SIGTERM (e.g. from `timeout`) unwinds through the finally that stops the daemons
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = 200_000 if a.quick else a.records
    tmp = Path(tempfile.mkdtemp(prefix="moldau-repl-"))
    procs = []
    try:
        mdp = free_port()
        procs.append(spawn([sys.executable, "-m", "moldau.broker.metadata", "--host",
                            "127.0.0.1", "--port", str(mdp), "--data-dir", str(tmp / "md")],
                           tmp / "md.log", b"ready on"))
        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports, 1):
            procs.append(spawn([sys.executable, "-m", "moldau.broker", "--broker-id", str(i),
                                "--listeners", f"127.0.0.1:{port}", "--log-dirs",
                                str(tmp / f"b{i}"), "--zookeeper", f"127.0.0.1:{mdp}"],
                               tmp / f"b{i}.log", b"ready on"))
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
        import uvloop

        uvloop.run(create_topics(bootstrap))
        print(f"{n:,} records of {len(VALUE)} bytes, 3 brokers, 1 metadata node, "
              f"bulk path ({BATCH:,}-record batches, {IN_FLIGHT} in flight)\n")
        ref = report("1 producer, RF 1, acks=1 (reference)", n,
                     uvloop.run(produce(bootstrap, "rf1", n, 1)))
        report("1 producer, RF 3, acks=1 (async replication)", n,
               uvloop.run(produce(bootstrap, "rf3-async", n, 1)), ref)
        report("1 producer, RF 3, acks=all, min.insync=2 (sync)", n,
               uvloop.run(produce(bootstrap, "rf3-sync", n, "all")), ref)
        ctx = mp.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        workers = [ctx.Process(target=_producer_process,
                               args=(bootstrap, "rf3-three", n // 3, i, start, out))
                   for i in range(3)]
        for w in workers:
            w.start()
        time.sleep(2)  # let them import and connect
        start.set()
        secs = max(out.get(timeout=600) for _ in workers)
        for w in workers:
            w.join(10)
        report("3 producers (processes), RF 3, acks=1", 3 * (n // 3), secs, ref)
        report("1 consumer, RF 3 topic from the beginning", n,
               uvloop.run(consume(bootstrap, "rf3-async", n)))
        print("\nLinkedIn 2014 (6 machines, 3 brokers, JVM): 821,557 rec/s RF 1; 786,980 "
              "async RF 3; 421,823 sync RF 3; 2,024,032 three producers; 940,521 consume.")
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
