"""A partition log's configuration: Kafka's topic-level config keys (``segment.bytes``, ...).

``LogConfig.from_mapping({"segment.bytes": "1048576"})`` builds one from the strings a topic's
config overrides are stored as; ``to_mapping()`` gives them back (``from_mapping(c.to_mapping())
== c``). A bad value raises ``ValueError`` whose message names the key.

Durability (``flush.policy``), moldau's own key:
- ``durable`` (default): a produce is acknowledged only after an fdatasync that covers it;
  ``PartitionLog.flush()`` waits for one, and concurrent appends share it (group commit).
- ``pagecache``: Kafka's way: acknowledge from the page cache, fsync when a segment rolls,
  every ``flush.ms`` (run by the LogManager) and every ``flush.messages`` messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moldau.clients.records.batch import HEADER_SIZE

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DAY_MS = 24 * 3600 * 1000
# positions in a segment are u32 in the offset index, and Kafka caps segment.bytes at i32
MAX_SEGMENT_BYTES = 2**31 - 1


class LogConfig(BaseModel):
    """A topic's log settings; field aliases are Kafka's topic config keys."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    segment_bytes: int = Field(1 * GiB, alias="segment.bytes", ge=HEADER_SIZE,
                               le=MAX_SEGMENT_BYTES)
    segment_ms: int = Field(7 * DAY_MS, alias="segment.ms", ge=1)
    retention_ms: int = Field(7 * DAY_MS, alias="retention.ms", ge=-1)
    retention_bytes: int = Field(-1, alias="retention.bytes", ge=-1)
    index_interval_bytes: int = Field(4096, alias="index.interval.bytes", ge=0)
    segment_index_bytes: int = Field(10 * MiB, alias="segment.index.bytes", ge=12)
    # None: every acknowledged append is on disk under the durable policy; under pagecache,
    # N forces a flush once N messages are unflushed (1 = as strict as durable)
    flush_messages: int | None = Field(None, alias="flush.messages", ge=1)
    # None: no timed flush (Kafka's default); the pagecache policy then relies on rolls,
    # flush.messages and clean shutdown
    flush_ms: int | None = Field(None, alias="flush.ms", ge=0)
    max_message_bytes: int = Field(1 * MiB + 12, alias="max.message.bytes", ge=0)
    message_timestamp_type: Literal["CreateTime", "LogAppendTime"] = Field(
        "CreateTime", alias="message.timestamp.type")
    cleanup_policy: str = Field("delete", alias="cleanup.policy")
    flush_policy: Literal["durable", "pagecache"] = Field("durable", alias="flush.policy")
    # replication settings Kafka keeps among the topic configs too: the in-sync replicas an
    # acks=all produce needs, and whether an out-of-sync replica may become leader
    min_insync_replicas: int = Field(1, alias="min.insync.replicas", ge=1)
    unclean_leader_election_enable: bool = Field(False, alias="unclean.leader.election.enable")

    @field_validator("cleanup_policy")
    @classmethod
    def _cleanup(cls, v: str) -> str:
        parts = sorted({p.strip().lower() for p in v.split(",") if p.strip()})
        if not parts or any(p not in ("compact", "delete") for p in parts):
            raise ValueError("must be delete, compact or compact,delete")
        return ",".join(parts)

    @field_validator("flush_policy", mode="before")
    @classmethod
    def _policy(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("unclean_leader_election_enable", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        return v

    @field_validator("message_timestamp_type", mode="before")
    @classmethod
    def _ts_type(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"createtime": "CreateTime", "logappendtime": "LogAppendTime"}.get(
                v.strip().lower(), v)
        return v

    # ------------------------------------------------------------------ derived values

    @property
    def durable(self) -> bool:
        """Acknowledgements wait for fdatasync (always under durable, or flush.messages=1)."""
        return self.flush_policy == "durable" or self.flush_messages == 1

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def delete_enabled(self) -> bool:
        """Retention deletes segments (``delete`` is in the cleanup policy)."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def max_index_entries(self) -> int:
        return self.segment_index_bytes // 8

    # ------------------------------------------------------------------ string mapping

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | int | None],
                     base: LogConfig | None = None) -> LogConfig:
        """Build from Kafka topic config strings, over ``base``'s values if given.

        An empty string or None means "unset" (the base or default value applies). Unknown
        keys and bad values raise ValueError naming the key.
        """
        merged: dict[str, Any] = dict(base.to_mapping()) if base is not None else {}
        for key, value in values.items():
            key = key.strip()
            if key not in KNOWN_KEYS:
                raise ValueError(f"unknown log config key {key!r}")
            if value is None or (isinstance(value, str) and value.strip() == ""):
                merged.pop(key, None)
                continue
            merged[key] = value.strip() if isinstance(value, str) else value
        try:
            return cls.model_validate(merged)
        except ValidationError as e:
            err = e.errors()[0]
            loc = str(err["loc"][0]) if err["loc"] else ""
            field = cls.model_fields.get(loc)
            key = field.alias if field is not None and field.alias else loc
            msg = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"invalid value for {key}: {merged.get(key)!r} ({msg})") from None

    def with_overrides(self, values: Mapping[str, str | int | None]) -> LogConfig:
        """This config with a topic's overrides applied."""
        return LogConfig.from_mapping(values, base=self)

    def to_mapping(self) -> dict[str, str]:
        """Every key that has a value, as strings (None values are left out)."""
        return {k: str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in self.model_dump(by_alias=True).items() if v is not None}


KNOWN_KEYS: frozenset[str] = frozenset(
    f.alias for f in LogConfig.model_fields.values() if f.alias is not None
)
