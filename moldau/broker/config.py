"""Broker configuration: Kafka's ``server.properties`` keys, parsed into a pydantic model.

Sources, later ones winning: the properties file (``--config`` or the positional path),
the command-line flags (``--broker-id``, ``--listeners``, ``--log-dirs``, ``--zookeeper``),
then each ``--override key=value``. Unknown keys are reported and ignored (a stock Kafka
``server.properties`` carries many tuning keys moldau has no use for); a known key with a
bad value is an error that names the key.

The ``log.*`` keys are the defaults of every topic's log config: ``topic_defaults()`` maps
them to the topic-level names (``log.segment.bytes`` -> ``segment.bytes``, ...) over which a
topic's own ``/config/topics/<t>`` overrides are merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PORT = 9092
DEFAULT_METADATA_PORT = 2181
FLUSH_POLICIES = ("durable", "pagecache")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line naming the key."""


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java ``.properties`` text: ``key=value``, ``key: value`` or ``key value``;
    ``#``/``!`` comments; a trailing backslash continues the line; ``\\`` escapes."""
    out: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        # an odd number of trailing backslashes continues the line
        stripped = line.rstrip("\r\n")
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2 == 1:
            pending += stripped[:-1]
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        key_chars: list[str] = []
        i = 0
        n = len(line)
        while i < n:
            c = line[i]
            if c == "\\" and i + 1 < n:
                key_chars.append(_unescape(line[i + 1]))
                i += 2
                continue
            if c in "=: \t\f":
                break
            key_chars.append(c)
            i += 1
        # skip whitespace, at most one separator, whitespace
        while i < n and line[i] in " \t\f":
            i += 1
        if i < n and line[i] in "=:":
            i += 1
            while i < n and line[i] in " \t\f":
                i += 1
        value = _unescape_all(line[i:]).rstrip()
        key = "".join(key_chars)
        if key:
            out[key] = value
    return out


def _unescape(c: str) -> str:
    return {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(c, c)


def _unescape_all(s: str) -> str:
    if "\\" not in s:
        return s
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(_unescape(s[i + 1]))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_listener(value: str) -> tuple[str, int]:
    """``PLAINTEXT://host:port`` or ``host:port`` (the first of a comma-separated list) ->
    ``(host, port)``; an empty host means every interface."""
    first = value.split(",")[0].strip()
    if "://" in first:
        scheme, _, first = first.partition("://")
        if scheme.upper() not in ("PLAINTEXT", "MOLDAU"):
            raise ValueError(f"listener protocol {scheme!r} is not supported (use PLAINTEXT)")
    if not first:
        raise ValueError("empty listener")
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_s = first.rpartition(":")
        if not sep:
            host, port_s = first, ""
    if not port_s:
        port = DEFAULT_PORT
    elif port_s.isdigit() and int(port_s) <= 65535:
        port = int(port_s)
    else:
        raise ValueError(f"bad port in listener {value!r}")
    return host, port


# broker key -> topic key: the broker's log.* settings are every topic's defaults
TOPIC_DEFAULT_KEYS: dict[str, str] = {
    "log.segment.bytes": "segment.bytes",
    "log.retention.bytes": "retention.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "log.flush.policy": "flush.policy",
    "message.max.bytes": "max.message.bytes",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.cleanup.policy": "cleanup.policy",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
}


class BrokerConfig(BaseModel):
    """One broker's configuration; field aliases are Kafka's ``server.properties`` keys."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    broker_id: int = Field(alias="broker.id", ge=0)
    listeners: str = Field(f"PLAINTEXT://127.0.0.1:{DEFAULT_PORT}", alias="listeners")
    advertised_listeners: str | None = Field(None, alias="advertised.listeners")
    broker_rack: str | None = Field(None, alias="broker.rack")
    log_dirs: str = Field("/tmp/moldau-logs", alias="log.dirs")
    zookeeper_connect: str = Field(f"127.0.0.1:{DEFAULT_METADATA_PORT}",
                                   alias="zookeeper.connect")
    # 6 s as in the Kafka releases the course was written for: a broker killed with
    # SIGKILL can re-register under its id that soon after
    zookeeper_session_timeout_ms: int = Field(6000, alias="zookeeper.session.timeout.ms",
                                              ge=500, le=600_000)
    zookeeper_connection_timeout_ms: int | None = Field(
        None, alias="zookeeper.connection.timeout.ms", ge=1)
    num_partitions: int = Field(1, alias="num.partitions", ge=1)
    default_replication_factor: int = Field(1, alias="default.replication.factor", ge=1)
    auto_create_topics_enable: bool = Field(False, alias="auto.create.topics.enable")
    delete_topic_enable: bool = Field(True, alias="delete.topic.enable")
    log_segment_bytes: int | None = Field(None, alias="log.segment.bytes", ge=1)
    log_roll_ms: int | None = Field(None, alias="log.roll.ms", ge=1)
    log_roll_hours: int | None = Field(None, alias="log.roll.hours", ge=1)
    log_retention_ms: int | None = Field(None, alias="log.retention.ms", ge=-1)
    log_retention_minutes: int | None = Field(None, alias="log.retention.minutes", ge=-1)
    log_retention_hours: int | None = Field(None, alias="log.retention.hours", ge=-1)
    log_retention_bytes: int | None = Field(None, alias="log.retention.bytes", ge=-1)
    log_flush_interval_messages: int | None = Field(
        None, alias="log.flush.interval.messages", ge=1)
    log_flush_interval_ms: int | None = Field(None, alias="log.flush.interval.ms", ge=0)
    log_flush_policy: str = Field("durable", alias="log.flush.policy")
    log_message_timestamp_type: str | None = Field(None, alias="log.message.timestamp.type")
    log_cleanup_policy: str | None = Field(None, alias="log.cleanup.policy")
    message_max_bytes: int | None = Field(None, alias="message.max.bytes", ge=0)
    socket_request_max_bytes: int = Field(100 * 1024 * 1024, alias="socket.request.max.bytes",
                                          ge=64)
    # replication (Kafka's names and defaults)
    min_insync_replicas: int = Field(1, alias="min.insync.replicas", ge=1)
    unclean_leader_election_enable: bool = Field(False, alias="unclean.leader.election.enable")
    replica_lag_time_max_ms: int = Field(30000, alias="replica.lag.time.max.ms", ge=1)
    replica_fetch_wait_max_ms: int = Field(500, alias="replica.fetch.wait.max.ms", ge=0)
    replica_fetch_min_bytes: int = Field(1, alias="replica.fetch.min.bytes", ge=0)
    replica_fetch_max_bytes: int = Field(1024 * 1024, alias="replica.fetch.max.bytes", ge=1)
    replica_fetch_response_max_bytes: int = Field(
        10 * 1024 * 1024, alias="replica.fetch.response.max.bytes", ge=1)
    replica_fetch_backoff_ms: int = Field(1000, alias="replica.fetch.backoff.ms", ge=0)
    replica_socket_timeout_ms: int = Field(30000, alias="replica.socket.timeout.ms", ge=1)
    replica_high_watermark_checkpoint_interval_ms: int = Field(
        5000, alias="replica.high.watermark.checkpoint.interval.ms", ge=1)
    auto_leader_rebalance_enable: bool = Field(True, alias="auto.leader.rebalance.enable")
    leader_imbalance_check_interval_seconds: int = Field(
        300, alias="leader.imbalance.check.interval.seconds", ge=1)
    controlled_shutdown_enable: bool = Field(True, alias="controlled.shutdown.enable")

    @field_validator("log_flush_policy")
    @classmethod
    def _flush_policy(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in FLUSH_POLICIES:
            raise ValueError(f"must be one of {', '.join(FLUSH_POLICIES)}")
        return v

    @field_validator("listeners", "advertised_listeners")
    @classmethod
    def _listener(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listener(v)
        return v

    @field_validator("log_dirs")
    @classmethod
    def _dirs(cls, v: str) -> str:
        if not [d for d in v.split(",") if d.strip()]:
            raise ValueError("no log directory given")
        return v

    @field_validator("zookeeper_connect")
    @classmethod
    def _zk(cls, v: str) -> str:
        if not v.split("/", 1)[0].strip():
            raise ValueError("no metadata service address given")
        return v

    # ------------------------------------------------------------------ derived values

    @property
    def listener(self) -> tuple[str, int]:
        return parse_listener(self.listeners)

    @property
    def advertised_listener(self) -> tuple[str, int] | None:
        return parse_listener(self.advertised_listeners) if self.advertised_listeners else None

    @property
    def metadata_connect_timeout(self) -> float:
        """Seconds to wait for the metadata service at start (Kafka: the connection timeout,
        else the session timeout); at least 10 s unless set."""
        if self.zookeeper_connection_timeout_ms is not None:
            return self.zookeeper_connection_timeout_ms / 1000
        return max(10.0, self.zookeeper_session_timeout_ms / 1000)

    @property
    def log_dir_list(self) -> list[str]:
        return [d.strip() for d in self.log_dirs.split(",") if d.strip()]

    def topic_defaults(self) -> dict[str, str]:
        """The topic-level config every topic starts from (only keys set on the broker;
        the log's own defaults fill in the rest)."""
        raw = self.as_mapping()
        out = {topic_key: raw[key] for key, topic_key in TOPIC_DEFAULT_KEYS.items()
               if key in raw}
        if self.log_roll_ms is not None:
            out["segment.ms"] = str(self.log_roll_ms)
        elif self.log_roll_hours is not None:
            out["segment.ms"] = str(self.log_roll_hours * 3_600_000)
        retention = self.retention_ms
        if retention is not None:
            out["retention.ms"] = str(retention)
        return out

    @property
    def retention_ms(self) -> int | None:
        """Kafka's precedence: ms over minutes over hours; -1 (any of them) is forever."""
        if self.log_retention_ms is not None:
            return self.log_retention_ms
        if self.log_retention_minutes is not None:
            m = self.log_retention_minutes
            return -1 if m < 0 else m * 60_000
        if self.log_retention_hours is not None:
            h = self.log_retention_hours
            return -1 if h < 0 else h * 3_600_000
        return None

    def as_mapping(self) -> dict[str, str]:
        """Every key that has a value, as ``server.properties`` would spell it."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(by_alias=True).items():
            if value is None:
                continue
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


KNOWN_KEYS: frozenset[str] = frozenset(
    f.alias for f in BrokerConfig.model_fields.values() if f.alias is not None
)
# spellings Kafka accepts for the same setting
_KEY_ALIASES = {"log.dir": "log.dirs"}


def build_config(sources: Iterable[Mapping[str, str]]) -> tuple[BrokerConfig, list[str]]:
    """Merge ``sources`` (later wins) into a BrokerConfig; return it and the ignored keys.

    Raises ConfigError with one line naming the first bad key.
    """
    merged: dict[str, str] = {}
    for source in sources:
        for key, value in source.items():
            key = key.strip()
            if key in _KEY_ALIASES:
                # the plural form wins when both are given, in any source
                target = _KEY_ALIASES[key]
                if target in merged and key not in merged:
                    continue
                key = target
            merged[key] = value
    unknown = sorted(k for k in merged if k not in KNOWN_KEYS)
    known: dict[str, Any] = {k: v.strip() for k, v in merged.items() if k in KNOWN_KEYS}
    for k, v in list(known.items()):
        if v == "" and k != "listeners":
            del known[k]  # Kafka treats an empty value as unset
    if "broker.id" not in known:
        raise ConfigError("broker.id is required (--broker-id N or broker.id=N)")
    try:
        config = BrokerConfig.model_validate(known)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"][0] if err["loc"] else ""
        field = BrokerConfig.model_fields.get(str(loc))
        key = field.alias if field is not None and field.alias else str(loc)
        value = known.get(key, "")
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid value for {key}: {value!r} ({msg})") from None
    _check_topic_defaults(config)
    return config, unknown


def _check_topic_defaults(config: BrokerConfig) -> None:
    """The log.* keys must make a valid topic config; report a bad one by its broker key."""
    from moldau.broker.log.config import LogConfig

    try:
        LogConfig.from_mapping(config.topic_defaults())
    except ValueError as e:
        msg = str(e)
        names = {**{t: b for b, t in TOPIC_DEFAULT_KEYS.items()},
                 "segment.ms": "log.roll.ms", "retention.ms": "log.retention.ms"}
        for topic_key, broker_key in names.items():
            if f" {topic_key}:" in msg:
                msg = msg.replace(f" {topic_key}:", f" {broker_key}:", 1)
                break
        raise ConfigError(msg) from None


def parse_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --override {item!r}: expected key=value")
    return key.strip(), value
