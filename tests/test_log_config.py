"""LogConfig: Kafka's topic config keys from and to strings, errors that name the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from moldau.broker.log.config import KNOWN_KEYS, LogConfig


def test_defaults_are_kafkas_and_durable() -> None:
    c = LogConfig()
    assert c.segment_bytes == 1 << 30
    assert c.segment_ms == c.retention_ms == 7 * 24 * 3600 * 1000
    assert c.retention_bytes == -1
    assert c.index_interval_bytes == 4096
    assert c.segment_index_bytes == 10 << 20
    assert c.max_message_bytes == (1 << 20) + 12
    assert c.message_timestamp_type == "CreateTime"
    assert c.cleanup_policy == "delete"
    assert c.flush_policy == "durable" and c.durable
    assert c.flush_messages is None and c.flush_ms is None


def test_from_mapping_and_back() -> None:
    c = LogConfig.from_mapping({
        "segment.bytes": "1048576", "retention.ms": "-1", "flush.policy": "PageCache",
        "message.timestamp.type": "logappendtime", "cleanup.policy": "delete,compact",
        "flush.ms": "1000", "flush.messages": "1",
    })
    assert c.segment_bytes == 1 << 20
    assert c.retention_ms == -1
    assert c.flush_policy == "pagecache"
    assert c.durable  # flush.messages=1 is as strict as the durable policy
    assert c.log_append_time
    assert c.cleanup_policy == "compact,delete" and c.delete_enabled
    assert LogConfig.from_mapping(c.to_mapping()) == c
    assert set(c.to_mapping()) <= KNOWN_KEYS
    assert all(isinstance(v, str) for v in c.to_mapping().values())


def test_overrides_over_defaults_and_empty_means_unset() -> None:
    base = LogConfig.from_mapping({"segment.bytes": "5000", "retention.bytes": "100"})
    c = base.with_overrides({"retention.bytes": "200", "segment.bytes": ""})
    assert c.retention_bytes == 200
    assert c.segment_bytes == 1 << 30  # empty: back to the default
    with pytest.raises(ValidationError):
        c.segment_bytes = 5  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(("key", "value"), [
    ("segment.bytes", "abc"), ("segment.bytes", "10"), ("segment.bytes", str(1 << 32)),
    ("retention.ms", "-2"), ("flush.messages", "0"), ("flush.policy", "sometimes"),
    ("message.timestamp.type", "WallClock"), ("cleanup.policy", "shred"),
    ("max.message.bytes", "-5"), ("index.interval.bytes", "1.5"),
])
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LogConfig.from_mapping({key: value})


def test_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"unknown log config key 'segment\.size'"):
        LogConfig.from_mapping({"segment.size": "5"})
