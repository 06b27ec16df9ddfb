"""Pure parts of the clients, without a broker: the metadata cache and the consumer's
lazily decoded fetch answers."""

from __future__ import annotations

from moldau.clients.cluster import ClusterClient, parse_metadata
from moldau.clients.consumer import _Fetched, _tp_args
from moldau.clients.protocol import ErrorCode
from moldau.clients.protocol.messages import MetadataResponse
from moldau.clients.records import encode_values, iter_batches
from moldau.clients.records.batch import (
    ATTR_CONTROL,
    build_batch,
    set_base_offset,
)
from moldau.clients.types import TopicPartition


def _part(p: int, leader: int, epoch: int = 0, err: int = 0) -> dict[str, object]:
    return {"partition": p, "error_code": err, "leader": leader, "leader_epoch": epoch,
            "replicas": [1, 2], "isr": [leader] if leader >= 0 else [],
            "offline_replicas": []}


def _resp(topics: list[dict[str, object]], brokers: list[list[object]] | None = None
          ) -> MetadataResponse:
    return MetadataResponse(
        brokers=brokers if brokers is not None else [[1, "h1", 9092, None],
                                                     [2, "h2", 9093, "r2"]],
        controller_id=2, topics=topics, cluster_id="c1")


def test_parse_metadata() -> None:
    brokers, topics, errors = parse_metadata(_resp([
        {"name": "a", "error_code": 0, "internal": False,
         "partitions": [_part(1, 2, 3), _part(0, 1), _part(2, -1, err=5)]},
        {"name": "gone", "error_code": 3, "internal": False, "partitions": []},
        {"name": "__consumer_offsets", "error_code": 0, "internal": True,
         "partitions": [_part(0, 1)]},
    ]))
    assert brokers[2].address == "h2:9093" and brokers[2].rack == "r2"
    assert brokers[1].rack is None
    a = topics["a"]
    assert sorted(a.partitions) == [0, 1, 2]
    assert a.available == (0, 1)  # partition 2 has no leader
    assert a.partitions[1].leader_epoch == 3 and a.partitions[1].replicas == (1, 2)
    assert [p.partition for p in a.describe().partitions] == [0, 1, 2]
    assert topics["__consumer_offsets"].internal
    assert errors == {"gone": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert "gone" not in topics


def test_cache_merges_partial_answers_and_notifies() -> None:
    c = ClusterClient("h1:9092,h2:9093")
    seen: list[int] = []
    c.add_listener(lambda cl: seen.append(cl.version))
    c._apply(_resp([{"name": "a", "error_code": 0, "partitions": [_part(0, 1)]},
                    {"name": "b", "error_code": 0, "partitions": [_part(0, 2)]}]), None)
    assert set(c.topics) == {"a", "b"} and c.controller_id == 2 and c.cluster_id == "c1"
    assert c.leader_for(("a", 0)) == 1 and c.leader_for(("b", 0)) == 2
    # an answer about "a" only replaces "a"; "b" stays as it was
    c._apply(_resp([{"name": "a", "error_code": 0,
                     "partitions": [_part(0, 2, 1), _part(1, -1)]}]), ["a"])
    assert c.partitions_for("a") == [0, 1]
    assert c.leader_for(("a", 0)) == 2 and c.leader_epoch(("a", 0)) == 1
    assert c.leader_for(("a", 1)) is None
    assert c.leader_for(TopicPartition("b", 0)) == 2
    # a topic asked for and answered with an error leaves the cache
    c._apply(_resp([{"name": "b", "error_code": 3, "partitions": []}]), ["b"])
    assert c.partitions_for("b") is None
    assert c.topic_errors["b"] is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    # an all-topics answer replaces everything
    c._apply(_resp([{"name": "z", "error_code": 0, "partitions": [_part(0, 1)]}]), None)
    assert set(c.topics) == {"z"} and c.topic_errors == {}
    assert seen == [1, 2, 3, 4]


def test_bootstrap_addresses_parse() -> None:
    c = ClusterClient(["h1:1", "h2"])
    assert [n.address for n in c._bootstrap] == ["h1:1", "h2:9092"]
    c = ClusterClient("[::1]:5,h3:7")
    assert [(n.host, n.port) for n in c._bootstrap] == [("::1", 5), ("h3", 7)]


def _log(*batches: bytes, base: int = 0) -> bytes:
    buf = bytearray(b"".join(batches))
    offset = base
    for pos, h in list(iter_batches(buf)):
        set_base_offset(buf, pos, offset)
        offset += h.record_count
    return bytes(buf)


def test_fetched_answer_skips_below_the_fetch_offset_and_control_batches() -> None:
    control = build_batch([[0, 0, None, b"marker", None]], base_timestamp=1, max_timestamp=1,
                          attributes=ATTR_CONTROL)
    buf = _log(encode_values([b"%d" % i for i in range(10)], timestamp=5), control,
               encode_values([b"x", b"y"], timestamp=6), base=100)
    batches = list(iter_batches(buf))
    tp = TopicPartition("t", 3)
    f = _Fetched(tp, 7, buf, batches, min_offset=104)
    assert f.next_offset == 113 and f.size == len(buf)
    first = f.take(3)
    assert [(r.offset, r.value) for r in first] == [(104, b"4"), (105, b"5"), (106, b"6")]
    assert all(r.topic == "t" and r.partition == 3 and r.timestamp == 5 for r in first)
    rest = f.take(100)
    assert [r.offset for r in rest] == [107, 108, 109, 111, 112]  # 110 is the control batch
    assert f.exhausted and f.take(5) == []


def test_fetched_answer_whole_batch_fast_path() -> None:
    buf = _log(encode_values([b"a", b"b"], timestamp=1), encode_values([b"c"], timestamp=2))
    f = _Fetched(TopicPartition("t", 0), 0, buf, list(iter_batches(buf)), 0)
    assert [r.value for r in f.take(10)] == [b"a", b"b", b"c"]
    f = _Fetched(TopicPartition("t", 0), 0, buf, list(iter_batches(buf)), 0)
    assert [r.value for r in f.take(1)] == [b"a"]
    assert [r.value for r in f.take(1)] == [b"b"]
    assert not f.exhausted
    assert [r.value for r in f.take(1)] == [b"c"]
    assert f.exhausted


def test_partition_arguments_in_either_form() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert _tp_args((a, b)) == [a, b]
    assert _tp_args(([a, b],)) == [a, b]
    assert _tp_args((("t", 0),)) == [a]
    assert _tp_args(({("t", 1)},)) == [b]
    assert _tp_args(()) == []
