"""``moldau local demo``: the course's console exchange, done by the client library.

Creates the topic (3 partitions, replication factor 1) if it is missing, sends a few lines
with a producer, reads the topic from the beginning with a consumer until every line sent
has come back, and prints them in the order they were read.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from moldau.clients.cli.base import CliError

DEMO_LINES = (
    "Hello, moldau!",
    "The Vltava flows through Prague.",
    "A topic is split into partitions; each partition is an ordered log.",
    "Every record gets an offset in its partition.",
    "A consumer reads from the beginning, or from where it left off.",
    "Two terminals can exchange messages in real time.",
)
READ_BACK_TIMEOUT_S = 30.0


async def run_demo(bootstrap_servers: str, topic: str) -> None:
    import asyncio

    from moldau.clients.admin import Admin
    from moldau.clients.consumer import Consumer
    from moldau.clients.producer import Producer
    from moldau.clients.protocol import ErrorCode, MoldauError
    from moldau.clients.types import NewTopic, TopicPartition

    admin = Admin(bootstrap_servers)
    await admin.start()
    try:
        created = False
        if topic not in await admin.list_topics():
            try:
                await admin.create_topics([NewTopic(topic, 3, 1)])
                created = True
            except MoldauError as e:
                if e.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                    raise
        print(f"created topic {topic} (3 partitions, replication factor 1)" if created
              else f"topic {topic} exists")
    finally:
        await admin.close()

    run_id = time.strftime("%H:%M:%S")
    lines = [f"[{run_id}] {line}".encode() for line in DEMO_LINES]
    producer = Producer(bootstrap_servers, acks="all", client_id="moldau-demo")
    await producer.start()
    try:
        # keyless records spread over the partitions; one key per line shows keyed routing
        futures = [await producer.send(topic, line, key=f"line-{i}".encode())
                   for i, line in enumerate(lines)]
        await producer.flush()
        sent = [await f for f in futures]
    finally:
        await producer.stop()
    print(f"sent {len(sent)} lines to topic {topic}:")
    for md, line in zip(sent, lines, strict=True):
        print(f"  partition {md.partition} offset {md.offset:<5} {line.decode()}")
    sys.stdout.flush()

    wanted = {(md.partition, md.offset) for md in sent}
    consumer = Consumer(bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                        client_id="moldau-demo")
    await consumer.start()
    got: list[Any] = []
    try:
        # every partition written to is read, even if this client's metadata lags
        parts = sorted(await consumer.partitions_for(topic) | {md.partition for md in sent})
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        res = consumer.seek_to_beginning(tps)
        if asyncio.iscoroutine(res):
            await res
        try:
            async with asyncio.timeout(READ_BACK_TIMEOUT_S):
                earlier = await _read_back(consumer, wanted, got)
        except TimeoutError:
            raise CliError(f"read back only {len(got)} of {len(sent)} lines within "
                           f"{READ_BACK_TIMEOUT_S:.0f} s") from None
    finally:
        await consumer.stop()
    more = f" (and {earlier} records of earlier runs)" if earlier else ""
    print(f"read back from the beginning of topic {topic}{more}:")
    for r in got:
        value = r.value.decode(errors="replace") if r.value is not None else "null"
        print(f"  partition {r.partition} offset {r.offset:<5} {value}")


async def _read_back(consumer: Any, wanted: set[tuple[int, int]], got: list[Any]) -> int:
    """Poll until every (partition, offset) in ``wanted`` was read, appending those records
    to ``got``; return how many other records (of earlier runs) went by."""
    earlier = 0
    while wanted:
        for r in await consumer.poll(timeout_ms=500, max_records=1000):
            if (r.partition, r.offset) in wanted:
                wanted.discard((r.partition, r.offset))
                got.append(r)
            else:
                earlier += 1
    return earlier


def print_next_steps(zookeeper: str, bootstrap: str, topic: str, dir_flag: str) -> None:
    first = bootstrap.split(",")[0]
    print(f"""
Try it in two terminals:
  moldau console-producer --broker-list {bootstrap} --topic {topic}
  moldau console-consumer --bootstrap-server {first} --topic {topic} --from-beginning
Topics:
  moldau topics --list --zookeeper {zookeeper}
  moldau topics --describe --topic {topic} --bootstrap-server {bootstrap}
  moldau topics --create --zookeeper {zookeeper} --replication-factor 1 --partitions 3 \\
      --topic mytopic
The cluster keeps running: 'moldau local status{dir_flag}', 'moldau local stop{dir_flag}'.""")
