"""Topic administration over the wire: create (validation errors), delete, add partitions,
describe and alter configs, auto-creation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import Processes
from test_broker_helpers import (
    batch,
    connect,
    create_topic,
    fetch_all,
    metadata,
    produce,
    values_of,
)

from moldau.clients.metadata.client import MetadataClient
from moldau.clients.metadata.layout import topic_config_path, topic_creation_ops, topic_path
from moldau.clients.protocol import ErrorCode
from moldau.clients.protocol.messages import (
    AlterConfigsRequest,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DescribeConfigsRequest,
)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x" * 250, "spaces no", "ü"])
async def test_invalid_topic_names(cluster: Processes, name: str) -> None:
    conn = await connect(cluster.daemons[1].address)
    res = await create_topic(conn, name)
    assert res["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION, res
    assert res["error_message"]
    await conn.close()


async def test_create_topic_errors(cluster: Processes) -> None:
    conn = await connect(cluster.daemons[1].address)
    res = await create_topic(conn, "zero", partitions=0)
    assert res["error_code"] == ErrorCode.INVALID_PARTITIONS
    res = await create_topic(conn, "two", rf=2)
    assert res["error_code"] == ErrorCode.INVALID_REPLICATION_FACTOR
    assert res["error_message"] == "Replication factor: 2 larger than available brokers: 1."
    res = await create_topic(conn, "zero-rf", rf=0)
    assert res["error_code"] == ErrorCode.INVALID_REPLICATION_FACTOR
    res = await create_topic(conn, "cfg", configs={"retention.ms": "soon"})
    assert res["error_code"] == ErrorCode.INVALID_CONFIG and "retention.ms" in \
        res["error_message"]
    res = await create_topic(conn, "cfg", configs={"no.such.key": "1"})
    assert res["error_code"] == ErrorCode.INVALID_CONFIG and "no.such.key" in \
        res["error_message"]
    # validate_only checks everything and creates nothing
    res = await create_topic(conn, "dry", partitions=4, validate_only=True)
    assert res["error_code"] == 0
    md = await metadata(conn, ["dry"])
    assert md.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (await create_topic(conn, "once"))["error_code"] == 0
    res = await create_topic(conn, "once")
    assert res["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS
    assert res["error_message"] == "Topic 'once' already exists."
    # -1 means the broker defaults (num.partitions=1, default.replication.factor=1)
    assert (await create_topic(conn, "defaults", partitions=-1, rf=-1))["error_code"] == 0
    md = await metadata(conn, ["defaults"])
    assert len(md.topics[0]["partitions"]) == 1
    # several topics in one request, one bad: the others are created
    resp = await conn.request(CreateTopicsRequest(topics=[
        {"name": "good1", "num_partitions": 1, "replication_factor": 1},
        {"name": "bad!", "num_partitions": 1, "replication_factor": 1},
        {"name": "good2", "num_partitions": 2, "replication_factor": 1},
        {"name": "dup", "num_partitions": 1, "replication_factor": 1},
        {"name": "dup", "num_partitions": 1, "replication_factor": 1},
    ]))
    codes = [(t["name"], t["error_code"]) for t in resp.topics]
    assert codes == [("good1", 0), ("bad!", ErrorCode.INVALID_TOPIC_EXCEPTION), ("good2", 0),
                     ("dup", ErrorCode.INVALID_REQUEST), ("dup", ErrorCode.INVALID_REQUEST)]
    await conn.close()


async def test_replication_factor_up_to_the_live_brokers(procs: Processes) -> None:
    md = procs.metadata()
    procs.broker(1, md.address)
    procs.broker(2, md.address)
    conn = await connect(procs.daemons[1].address)
    assert (await create_topic(conn, "replicated", rf=2))["error_code"] == 0
    res = await create_topic(conn, "too-many", rf=3)
    assert res["error_code"] == ErrorCode.INVALID_REPLICATION_FACTOR
    await conn.close()


async def test_delete_topic(cluster: Processes, tmp_path: Path) -> None:
    conn = await connect(cluster.daemons[1].address)
    await create_topic(conn, "doomed", partitions=2)
    await produce(conn, "doomed", 0, batch([b"bye"]))
    log_dir = tmp_path / "broker-1"
    assert (log_dir / "doomed-0").is_dir()
    resp = await conn.request(DeleteTopicsRequest(topics=["doomed", "never-was"]))
    codes = {t["name"]: t["error_code"] for t in resp.topics}
    assert codes == {"doomed": 0, "never-was": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    md = await metadata(conn, ["doomed"])
    assert md.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (await produce(conn, "doomed", 0, batch([b"x"])))[1] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert not (log_dir / "doomed-0").exists()
    # the name can be used again, starting from offset 0
    assert (await create_topic(conn, "doomed"))["error_code"] == 0
    assert (await produce(conn, "doomed", 0, batch([b"again"])))[2] == 0
    await conn.close()


async def test_create_partitions(cluster: Processes) -> None:
    conn = await connect(cluster.daemons[1].address)
    await create_topic(conn, "grow", partitions=1)
    resp = await conn.request(CreatePartitionsRequest(topics=[{"name": "grow", "count": 3}]))
    assert resp.topics[0]["error_code"] == 0
    md = await metadata(conn, ["grow"])
    assert [p["partition"] for p in md.topics[0]["partitions"]] == [0, 1, 2]
    assert (await produce(conn, "grow", 2, batch([b"new"])))[1] == 0
    for count in (2, 3):
        resp = await conn.request(CreatePartitionsRequest(
            topics=[{"name": "grow", "count": count}]))
        assert resp.topics[0]["error_code"] == ErrorCode.INVALID_PARTITIONS
    resp = await conn.request(CreatePartitionsRequest(topics=[{"name": "nope", "count": 3}]))
    assert resp.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await conn.close()


async def test_describe_and_alter_configs(cluster: Processes) -> None:
    conn = await connect(cluster.daemons[1].address)
    await create_topic(conn, "conf", configs={"retention.ms": "60000"})

    async def describe(name: str) -> dict[str, str]:
        resp = await conn.request(DescribeConfigsRequest(
            resources=[{"type": "topic", "name": name}]))
        r = resp.results[0]
        assert r["error_code"] == 0, r
        return dict(r["configs"])

    cfg = await describe("conf")
    assert cfg["retention.ms"] == "60000"
    assert cfg["segment.bytes"] == str(1024 ** 3)  # a default, shown too
    assert cfg["flush.policy"] == "durable"
    resp = await conn.request(AlterConfigsRequest(resources=[
        {"type": "topic", "name": "conf", "set": {"segment.bytes": "1048576"},
         "delete": ["retention.ms"]}]))
    assert resp.results[0]["error_code"] == 0, resp.results
    cfg = await describe("conf")
    assert cfg["segment.bytes"] == "1048576"
    assert cfg["retention.ms"] == str(7 * 24 * 3600 * 1000)
    resp = await conn.request(AlterConfigsRequest(resources=[
        {"type": "topic", "name": "conf", "set": {"segment.bytes": "-3"}},
        {"type": "topic", "name": "missing", "set": {"retention.ms": "1"}},
        {"type": "broker", "name": "1", "set": {"num.partitions": "3"}}]))
    r0, r1, r2 = resp.results
    assert r0["error_code"] == ErrorCode.INVALID_CONFIG and "segment.bytes" in \
        r0["error_message"]
    assert r1["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert r2["error_code"] == ErrorCode.INVALID_REQUEST
    assert (await describe("conf"))["segment.bytes"] == "1048576"
    resp = await conn.request(DescribeConfigsRequest(resources=[
        {"type": "broker", "name": "1"}, {"type": "topic", "name": "missing"}]))
    broker, missing = resp.results
    assert broker["error_code"] == 0 and broker["configs"]["broker.id"] == "1"
    assert broker["configs"]["auto.create.topics.enable"] == "false"
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await conn.close()


async def test_produce_to_missing_topic(cluster: Processes) -> None:
    conn = await connect(cluster.daemons[1].address)
    entry = await produce(conn, "ghost", 0, batch([b"boo"]))
    assert entry[1] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    md = await metadata(conn, ["ghost"])
    assert md.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await create_topic(conn, "one-partition")
    entry = await produce(conn, "one-partition", 1, batch([b"boo"]))
    assert entry[1] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await conn.close()


async def test_auto_create_topics(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address, extra=["--override", "auto.create.topics.enable=true",
                                           "--override", "num.partitions=2"])
    conn = await connect(b.address)
    entry = await produce(conn, "auto", 1, batch([b"hello"]))
    assert entry[1] == 0 and entry[2] == 0
    meta = await metadata(conn, ["auto"])
    assert len(meta.topics[0]["partitions"]) == 2
    assert values_of(await fetch_all(conn, "auto", 1)) == [(0, b"hello")]
    meta = await metadata(conn, ["by-metadata"], auto_create=True)
    assert meta.topics[0]["error_code"] == 0 and len(meta.topics[0]["partitions"]) == 2
    # without allow_auto_topic_creation, Metadata does not create
    meta = await metadata(conn, ["not-asked"], auto_create=False)
    assert meta.topics[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    # invalid names are never auto-created
    assert (await produce(conn, "bad/name", 0, batch([b"x"])))[1] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    await conn.close()


async def test_topic_recreated_behind_the_brokers_back_starts_empty(cluster: Processes) -> None:
    conn = await connect(cluster.daemons[1].address)
    await create_topic(conn, "phoenix")
    for _ in range(3):
        await produce(conn, "phoenix", 0, batch([b"old"]))
    client = MetadataClient(cluster.daemons[0].address)
    await client.start()
    try:
        # delete and create again back to back, as another tool might
        await client.delete(topic_path("phoenix"), recursive=True)
        await client.delete(topic_config_path("phoenix"))
        await client.multi(topic_creation_ops("phoenix", {0: (1,)}, {}))
    finally:
        await client.close()
    for _ in range(50):
        entry = await produce(conn, "phoenix", 0, batch([b"new"]))
        if entry[1] == 0:
            break
        await asyncio.sleep(0.1)
    assert entry[1] == 0
    got = [v for _, v in values_of(await fetch_all(conn, "phoenix", 0))]
    assert b"old" not in got and got[-1] == b"new"
    await conn.close()


async def test_stale_config_node_does_not_block_creation(cluster: Processes) -> None:
    client = MetadataClient(cluster.daemons[0].address)
    await client.start()
    try:
        await client.create(topic_config_path("leftover"), b'{"version":1,"config":{}}')
    finally:
        await client.close()
    conn = await connect(cluster.daemons[1].address)
    res = await create_topic(conn, "leftover", configs={"retention.ms": "1000"})
    assert res["error_code"] == 0, res
    assert (await produce(conn, "leftover", 0, batch([b"ok"])))[1] == 0
    await conn.close()
