"""Broker configuration: server.properties parsing, precedence, validation, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moldau.broker.__main__ import load
from moldau.broker.config import ConfigError, build_config, parse_listener, parse_properties
from moldau.broker.log import LogConfig

KAFKA_STYLE = """\
# The id of the broker. This must be set to a unique integer for each broker.
broker.id=3
listeners=PLAINTEXT://127.0.0.1:19092
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kafka-logs
num.partitions=2
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
zookeeper.connect=10.0.0.1:2181,10.0.0.2:2181,\\
  10.0.0.3:2181
zookeeper.connection.timeout.ms=6000
group.initial.rebalance.delay.ms=0
"""


def test_stock_server_properties(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text(KAFKA_STYLE)
    cfg, unknown, _ = load([str(path)])
    assert cfg.broker_id == 3
    assert cfg.listener == ("127.0.0.1", 19092)
    assert cfg.log_dir_list == ["/tmp/kafka-logs"]
    assert cfg.num_partitions == 2
    assert cfg.zookeeper_connect == "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"
    assert cfg.auto_create_topics_enable is False
    assert "num.io.threads" in unknown and "broker.id" not in unknown
    defaults = cfg.topic_defaults()
    assert defaults["retention.ms"] == str(168 * 3600 * 1000)
    assert defaults["segment.bytes"] == "1073741824"
    # every topic default the broker derives is a key the log understands
    LogConfig.from_mapping(defaults)


def test_precedence_file_flags_overrides(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text(KAFKA_STYLE)
    cfg, _, _ = load(["--config", str(path), "--broker-id", "7", "--listeners", "h:1",
                      "--override", "broker.id=9", "--override",
                      "auto.create.topics.enable=true"])
    assert cfg.broker_id == 9
    assert cfg.listener == ("h", 1)
    assert cfg.auto_create_topics_enable is True


def test_properties_syntax() -> None:
    props = parse_properties("a = 1\nb:2\nc 3\n  ! comment\n#x=y\nd=multi \\\n   line\n"
                             "e\\=f=g\nempty=\n")
    assert props == {"a": "1", "b": "2", "c": "3", "d": "multi line", "e=f": "g",
                     "empty": ""}


@pytest.mark.parametrize("value,expected", [
    ("PLAINTEXT://127.0.0.1:9092", ("127.0.0.1", 9092)),
    ("localhost:0", ("localhost", 0)),
    ("PLAINTEXT://:9093", ("", 9093)),
    ("[::1]:9094", ("::1", 9094)),
    ("host", ("host", 9092)),
])
def test_listeners(value: str, expected: tuple[str, int]) -> None:
    assert parse_listener(value) == expected


@pytest.mark.parametrize("key,value,needle", [
    ("num.partitions", "zero", "num.partitions"),
    ("num.partitions", "0", "num.partitions"),
    ("log.flush.policy", "sometimes", "log.flush.policy"),
    ("listeners", "SASL_SSL://h:1", "listeners"),
    ("socket.request.max.bytes", "-5", "socket.request.max.bytes"),
    ("auto.create.topics.enable", "perhaps", "auto.create.topics.enable"),
])
def test_bad_values_name_the_key(key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config([{"broker.id": "1", key: value}])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_broker_id_required() -> None:
    with pytest.raises(ConfigError, match=r"broker\.id"):
        build_config([{"listeners": "h:1"}])


def test_bad_value_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "moldau.broker", "--broker-id", "1",
                        "--log-dirs", str(tmp_path), "--zookeeper", "127.0.0.1:1",
                        "--override", "num.partitions=lots"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "num.partitions" in lines[0]
    # a bad log default is caught too
    p = subprocess.run([sys.executable, "-m", "moldau.broker", "--broker-id", "1",
                        "--log-dirs", str(tmp_path), "--zookeeper", "127.0.0.1:1",
                        "--override", "log.message.timestamp.type=Sometimes"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "log.message.timestamp.type" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_help_says_auto_create_is_off() -> None:
    p = subprocess.run([sys.executable, "-m", "moldau.broker", "--help"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    assert "auto.create.topics.enable" in p.stdout and "default false" in p.stdout
