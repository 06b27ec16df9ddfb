"""The blocking wrappers, used from plain (non-async) test code as a script would."""

from __future__ import annotations

import concurrent.futures

import pytest
from harness import Processes

from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.sync import SyncAdmin, SyncConsumer, SyncProducer
from moldau.clients.types import NewTopic, RecordMetadata, TopicPartition


def test_sync_admin_producer_consumer(cluster: Processes) -> None:
    servers = cluster.daemons[1].address
    with SyncAdmin(servers) as admin:
        admin.create_topics([NewTopic("script", 2)])
        assert admin.list_topics() == ["script"]
        assert len(admin.describe_topics(["script"])[0].partitions) == 2
        with pytest.raises(MoldauError) as e:
            admin.create_topics([NewTopic("script", 2)])
        assert e.value.code is ErrorCode.TOPIC_ALREADY_EXISTS
        brokers, controller, _ = admin.describe_cluster()
        assert [b.node_id for b in brokers] == [1] and controller in (1, -1)

    with SyncProducer(servers, linger_ms=1) as producer:
        fut = producer.send("script", b"one", key=b"k", partition=0, timestamp_ms=5)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(10) == RecordMetadata("script", 0, 0, 5)
        meta = producer.send_and_wait("script", b"two", partition=0,
                                      headers=[("h", b"v")])
        assert meta.offset == 1
        first = producer.send_batch("script", [b"a", b"b", b"c"], partition=1)
        assert (first.partition, first.offset) == (1, 0)
        producer.flush()
        assert producer.partitions_for("script") == [0, 1]

    with SyncConsumer(bootstrap_servers=servers, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("script", 0), TopicPartition("script", 1)])
        assert consumer.assignment() == {TopicPartition("script", 0),
                                         TopicPartition("script", 1)}
        got = []
        for record in consumer:
            got.append(record)
            if len(got) == 5:
                break
        by_partition = {p: [r.value for r in got if r.partition == p] for p in (0, 1)}
        assert by_partition == {0: [b"one", b"two"], 1: [b"a", b"b", b"c"]}
        assert [r.headers for r in got if r.value == b"two"] == [(("h", b"v"),)]
        consumer.seek(("script", 0), 1)
        assert [r.value for r in consumer.poll(5000, max_records=1)] == [b"two"]
        assert consumer.position(("script", 0)) == 2
        assert consumer.end_offsets([("script", 1)]) == {TopicPartition("script", 1): 3}
        consumer.seek_to_beginning(("script", 1))
        assert consumer.position(("script", 1)) == 0


def test_sync_wrappers_close_their_thread_even_unstarted() -> None:
    import threading

    before = threading.active_count()
    p = SyncProducer("127.0.0.1:1")
    c = SyncConsumer("t", bootstrap_servers="127.0.0.1:1")
    a = SyncAdmin("127.0.0.1:1")
    assert threading.active_count() == before + 3
    for x in (p, c, a):
        x.close()
    assert threading.active_count() == before
