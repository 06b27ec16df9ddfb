"""The admin client against a real metadata node and broker."""

from __future__ import annotations

import pytest
from harness import Processes

from moldau.clients.admin import Admin
from moldau.clients.cluster import ClusterClient
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.types import NewTopic


def bootstrap(cluster: Processes) -> str:
    return cluster.daemons[1].address


async def test_create_list_describe_delete(cluster: Processes) -> None:
    async with Admin(bootstrap(cluster)) as admin:
        assert await admin.list_topics() == []
        await admin.create_topics([NewTopic("b-topic", 3), NewTopic("a-topic", 1, 1,
                                                                     {"retention.ms": "60000"})])
        assert await admin.list_topics() == ["a-topic", "b-topic"]
        (desc,) = await admin.describe_topics(["b-topic"])
        assert desc.name == "b-topic" and not desc.internal
        assert [p.partition for p in desc.partitions] == [0, 1, 2]
        for p in desc.partitions:
            assert p.leader == 1 and p.replicas == (1,) and p.isr == (1,)
            assert p.leader_epoch >= 0 and p.offline_replicas == ()
        everything = await admin.describe_topics()
        assert [d.name for d in everything] == ["a-topic", "b-topic"]
        assert (await admin.describe_configs("a-topic"))["retention.ms"] == "60000"
        with pytest.raises(MoldauError) as e:
            await admin.describe_topics(["nope"])
        assert e.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

        await admin.delete_topics(["a-topic"])
        assert await admin.list_topics() == ["b-topic"]
        with pytest.raises(MoldauError) as e:
            await admin.delete_topics(["a-topic"])
        assert e.value.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_create_errors_carry_the_brokers_code(cluster: Processes) -> None:
    async with Admin(bootstrap(cluster)) as admin:
        await admin.create_topics([NewTopic("exists")])
        with pytest.raises(MoldauError) as e:
            await admin.create_topics([NewTopic("exists")])
        assert e.value.code is ErrorCode.TOPIC_ALREADY_EXISTS
        assert "exists" in str(e.value)

        with pytest.raises(MoldauError) as e:
            await admin.create_topics([NewTopic("bad name!")])
        assert e.value.code is ErrorCode.INVALID_TOPIC_EXCEPTION

        with pytest.raises(MoldauError) as e:
            await admin.create_topics([NewTopic("too-many-replicas", 1, 3)])
        assert e.value.code is ErrorCode.INVALID_REPLICATION_FACTOR

        with pytest.raises(MoldauError) as e:
            await admin.create_topics([NewTopic("no-partitions", 0)])
        assert e.value.code is ErrorCode.INVALID_PARTITIONS

        results = await admin.create_topics_results([NewTopic("ok-one"), NewTopic("exists")])
        assert results["ok-one"] is None
        assert results["exists"] is not None
        assert results["exists"].code is ErrorCode.TOPIC_ALREADY_EXISTS

        # validate_only checks without creating
        await admin.create_topics([NewTopic("dry-run", 2)], validate_only=True)
        assert "dry-run" not in await admin.list_topics()
        assert sorted(await admin.list_topics()) == ["exists", "ok-one"]


async def test_configs_partitions_and_cluster(cluster: Processes) -> None:
    async with Admin(bootstrap(cluster)) as admin:
        await admin.create_topics([NewTopic("cfg", 1, 1, {"retention.ms": "1000",
                                                          "segment.bytes": "1048576"})])
        await admin.alter_configs("cfg", {"retention.ms": "2000"}, ["segment.bytes"])
        configs = await admin.describe_configs("cfg")
        assert configs["retention.ms"] == "2000"
        assert configs.get("segment.bytes") != "1048576"

        await admin.create_partitions("cfg", 4)
        (desc,) = await admin.describe_topics(["cfg"])
        assert len(desc.partitions) == 4
        with pytest.raises(MoldauError) as e:
            await admin.create_partitions("cfg", 2)
        assert e.value.code is ErrorCode.INVALID_PARTITIONS

        brokers, controller, cluster_id = await admin.describe_cluster()
        assert [b.node_id for b in brokers] == [1]
        assert brokers[0].address == bootstrap(cluster)
        assert controller in (1, -1)  # -1: no controller elected (yet)
        assert isinstance(cluster_id, str) and cluster_id


async def test_cluster_client_metadata_cache(cluster: Processes) -> None:
    servers = bootstrap(cluster)
    async with Admin(servers) as admin:
        await admin.create_topics([NewTopic("cached", 2)])
    # a bad address first in the list: bootstrap moves on to the next one
    client = ClusterClient(f"127.0.0.1:1,{servers}", reconnect_backoff_ms=10)
    await client.start()
    try:
        assert client.partitions_for("cached") is None  # not tracked yet
        await client.refresh(["cached"])
        assert client.partitions_for("cached") == [0, 1]
        assert client.leader_for(("cached", 1)) == 1
        assert client.leader_for(("cached", 5)) is None
        assert client.brokers[1].port == cluster.daemons[1].port
        v = client.version
        client.track(["cached"])
        assert await client.wait_for_update(5.0)
        assert client.version > v
        await client.refresh(["missing"])
        assert client.topic_errors["missing"] is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert client.partitions_for("missing") is None
        await client.refresh(None)
        assert set(client.topics) == {"cached"}
    finally:
        await client.stop()


async def test_bootstrap_failure_is_reported(procs: Processes) -> None:
    from harness import free_port

    client = ClusterClient(f"127.0.0.1:{free_port()}", request_timeout_ms=500)
    with pytest.raises(MoldauError) as e:
        await client.start()
    assert e.value.code is ErrorCode.NETWORK_EXCEPTION
    assert "bootstrap" in str(e.value)
