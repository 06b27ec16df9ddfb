"""Leader election choices: an offline partition stays offline until an in-sync replica
returns unless ``unclean.leader.election.enable`` lets another replica lead (losing what it
never copied, which the returning old leader then truncates), and leadership goes back to
the preferred replica once it is in sync again (``auto.leader.rebalance.enable``)."""

from __future__ import annotations

import asyncio

import pytest
from harness import Processes
from test_replication_failover import identical_logs, read_back
from test_replication_helpers import Cluster, describe, full_isr, wait_for

from moldau.clients.admin import Admin
from moldau.clients.producer import Producer
from moldau.clients.types import NewTopic


@pytest.mark.timeout(90)
async def test_offline_until_unclean_election_is_allowed(procs: Processes) -> None:
    cluster = await Cluster(procs, n=2).start()
    topic = "unclean"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 2, replica_assignment={0: [1, 2]})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            for i in range(10):
                await producer.send_and_wait(topic, b"both-%d" % i)
        cluster.kill(2)
        await wait_for(admin, topic, lambda d: d.partitions[0].isr == (1,), what="ISR [1]")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            for i in range(10):
                await producer.send_and_wait(topic, b"only-1-%d" % i)
        cluster.kill(1)
        await cluster.start_broker(2)
        # 2 is live but out of sync: once 1's session is gone the partition is offline,
        # and stays so; its ISR remembers 1
        await wait_for(admin, topic, lambda d: d.partitions[0].leader == -1, what="offline")
        await asyncio.sleep(1.0)
        d = await describe(admin, topic)
        assert (d.partitions[0].leader, d.partitions[0].isr) == (-1, (1,))
        await admin.alter_configs(topic, {"unclean.leader.election.enable": "true"})
        await wait_for(admin, topic, lambda d: d.partitions[0].leader == 2
                       and d.partitions[0].isr == (2,), what="unclean election of 2")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            await producer.send_and_wait(topic, b"after-unclean")
        # the old leader returns, drops what 2 never had, and follows
        await cluster.start_broker(1)
        await wait_for(admin, topic, full_isr, timeout=20, what="1 back in sync")
    got = [v for _, v in (await read_back(cluster.bootstrap, topic, 1))[0]]
    assert got == [b"both-%d" % i for i in range(10)] + [b"after-unclean"]
    await identical_logs(cluster, topic, 1)


@pytest.mark.timeout(90)
async def test_leadership_returns_to_the_preferred_replica(procs: Processes) -> None:
    cluster = await Cluster(procs, extra=["leader.imbalance.check.interval.seconds=1"]).start()
    topic = "preferred"
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 3, replica_assignment={0: [2, 3, 1]})])
        await wait_for(admin, topic, full_isr, what="full ISR")
        assert (await describe(admin, topic)).partitions[0].leader == 2
        cluster.kill(2)
        await wait_for(admin, topic, lambda d: d.partitions[0].leader == 3, what="3 leads")
        async with Producer(cluster.bootstrap, acks="all") as producer:
            await producer.send_and_wait(topic, b"while-2-was-away")
        await cluster.start_broker(2)
        await wait_for(admin, topic, lambda d: d.partitions[0].leader == 2 and full_isr(d),
                       timeout=20, what="2 leads again")
