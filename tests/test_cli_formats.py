"""The console tools' pure parts: Kafka's line reader and message formatter, the
``--describe`` lines, ``--topic`` matching, and ``key=value`` properties."""

from __future__ import annotations

import pytest

from moldau.clients.cli.base import CliError, parse_properties, split_servers
from moldau.clients.cli.console_consumer import Formatter
from moldau.clients.cli.console_producer import LineReader
from moldau.clients.cli.topics import TopicView, _select, format_topic
from moldau.clients.records import Record
from moldau.clients.types import PartitionInfo, TopicDescription


def test_line_reader_plain_keys_headers_and_null_marker() -> None:
    assert LineReader({}).parse(b"a:b") == (None, None, b"a:b")
    r = LineReader({"parse.key": "true", "key.separator": ":"})
    assert r.parse(b"k:v:w") == (None, b"k", b"v:w")
    assert r.parse(b":v") == (None, b"", b"v")
    with pytest.raises(CliError, match="No key separator found on line number 3"):
        r.parse(b"nokey")
    lenient = LineReader({"parse.key": "true", "ignore.error": "true"})
    assert lenient.parse(b"nokey") == (None, None, b"nokey")
    h = LineReader({"parse.headers": "true", "parse.key": "true"})
    assert h.parse(b"h1:v1,h2:v2\tkey\tvalue") == ([("h1", b"v1"), ("h2", b"v2")], b"key",
                                                   b"value")
    n = LineReader({"parse.key": "true", "null.marker": "NULL"})
    assert n.parse(b"NULL\tNULL") == (None, None, None)


def _rec(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
         ) -> Record:
    return Record("t", 2, 41, 1700000000123, key, value, headers or [])


def test_formatter_matches_kafkas_default_message_formatter() -> None:
    plain = Formatter({})
    assert plain.render([_rec(b"k", b"v1"), _rec(None, None), _rec(None, b"v3")]) == \
        b"v1\nnull\nv3\n"
    f = Formatter({"print.key": "true", "print.timestamp": "true", "print.partition": "true",
                   "print.offset": "true", "key.separator": ":"})
    assert f.format(_rec(b"k", b"v")) == b"CreateTime:1700000000123:Partition:2:Offset:41:k:v\n"
    assert f.format(_rec(None, b"v")) == b"CreateTime:1700000000123:Partition:2:Offset:41:null:v\n"
    hk = Formatter({"print.headers": "true", "print.key": "true", "print.value": "false"})
    assert hk.format(_rec(b"k", b"v", [("a", b"1"), ("b", b"2")])) == b"a:1,b:2\tk\n"
    assert hk.format(_rec(b"k", b"v")) == b"NO_HEADERS\tk\n"
    assert Formatter({"key.separator": "\\t", "print.key": "true"}).format(
        _rec(b"k", b"v")) == b"k\tv\n"


def test_describe_lines_are_kafkas() -> None:
    d = TopicDescription("T", False, (
        PartitionInfo(1, 2, 0, (2, 3), (2,), ()),
        PartitionInfo(0, -1, 0, (1,), (), (1,)),
    ))
    lines = format_topic(TopicView(d, {"segment.bytes": "1024", "cleanup.policy": "delete"}))
    assert lines == [
        "Topic: T\tTopicId: -\tPartitionCount: 2\tReplicationFactor: 2\t"
        "Configs: cleanup.policy=delete,segment.bytes=1024",
        "\tTopic: T\tPartition: 0\tLeader: none\tReplicas: 1\tIsr: \tOffline: 1",
        "\tTopic: T\tPartition: 1\tLeader: 2\tReplicas: 2,3\tIsr: 2",
    ]
    assert format_topic(TopicView(d), under_replicated=True, header=False) == lines[1:]
    assert format_topic(TopicView(d), unavailable=True, header=False) == [lines[1]]


def test_topic_selection_exact_then_regex() -> None:
    names = {"a.b": False, "axb": False, "other": False}
    assert _select(names, "a.b") == ["a.b"]
    assert _select(names, "a.*") == ["a.b", "axb"]
    assert _select(names, "axb,other") == ["axb", "other"]
    assert _select(names, "[") == []
    assert _select(names, None) == ["a.b", "axb", "other"]


def test_properties_and_server_lists() -> None:
    assert parse_properties(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(CliError, match="expected key=value"):
        parse_properties(["novalue"])
    assert split_servers("h1:9092,h2, h3:1/chroot", 2181) == ["h1:9092", "h2:2181", "h3:1"]
    with pytest.raises(CliError):
        split_servers("h1:notaport", 9092)
