"""Sources and sinks as a job describes them, with PyFlink's names. Describing does no I/O:
a connector here is a plain, picklable description that goes into the job graph; the
subtask that runs it opens it (``connector_runtime``; Kafka I/O is plugged in by the
runtime that has the log clients, through ``register_source_reader`` /
``register_sink_writer``).

* Generators: :class:`SourceFunction` (``run(ctx)`` calling ``ctx.collect(v)``,
  ``ctx.collect_with_timestamp(v, ts)``, ``ctx.emit_watermark(Watermark(ts))``;
  ``cancel()``) and :class:`ParallelSourceFunction`; :class:`NumberSequenceSource`.
* Files: :class:`FileSource` (text lines; ``.gz`` files are decompressed), :class:`FileSink`
  (row format into a directory of part files).
* Sockets: :class:`SocketTextStreamSource` (``env.socket_text_stream``).
* Kafka: :class:`KafkaSource` / :class:`KafkaSink` builders, and the older
  :class:`FlinkKafkaConsumer` / :class:`FlinkKafkaProducer` that the course's code uses.
* Tests and notebooks: :class:`CollectSink` (``DataStream.execute_and_collect``).
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from moldau.clients.stream.functions import Function
from moldau.clients.stream.time import to_millis

__all__ = [
    "BasePathBucketAssigner",
    "CollectSink",
    "DateTimeBucketAssigner",
    "DeliveryGuarantee",
    "DeserializationSchema",
    "Encoder",
    "FileSink",
    "FileSource",
    "FlinkKafkaConsumer",
    "FlinkKafkaProducer",
    "KafkaOffsetResetStrategy",
    "KafkaOffsetsInitializer",
    "KafkaRecordSerializationSchema",
    "KafkaSink",
    "KafkaSource",
    "NumberSequenceSource",
    "OutputFileConfig",
    "ParallelSourceFunction",
    "PrintSinkFunction",
    "RollingPolicy",
    "SerializationSchema",
    "SimpleStringSchema",
    "SocketTextStreamSource",
    "SourceFunction",
    "StreamFormat",
]


# --- serialization schemas ------------------------------------------------------------------


class DeserializationSchema:
    """Bytes of a record value -> the element (``deserialize``)."""

    def deserialize(self, message: bytes) -> Any:
        raise NotImplementedError


class SerializationSchema:
    """The element -> bytes of a record value (``serialize``)."""

    def serialize(self, element: Any) -> bytes:
        raise NotImplementedError


class SimpleStringSchema(DeserializationSchema, SerializationSchema):
    """Strings as UTF-8 (or ``charset``) bytes, both ways."""

    def __init__(self, charset: str = "UTF-8") -> None:
        self.charset = charset

    def deserialize(self, message: bytes) -> str:
        return bytes(message).decode(self.charset)

    def serialize(self, element: Any) -> bytes:
        return str(element).encode(self.charset)

    def __repr__(self) -> str:
        return "SimpleStringSchema()"


def _check_schema(schema: Any, method: str, what: str) -> Any:
    if not callable(getattr(schema, method, None)) and not callable(schema):
        raise TypeError(f"{what} expects a schema with a {method}() method (e.g. "
                        f"SimpleStringSchema()) or a function; got {schema!r:.60}")
    return schema


# --- generator sources -------------------------------------------------------------------------


class SourceFunction(Function):
    """A generator source: ``run(ctx)`` emits until the input ends (return) or ``cancel()``
    is called. Non-parallel: it runs as one subtask (use :class:`ParallelSourceFunction`
    to run one copy per subtask; ``self.get_runtime_context()`` tells which).

    ``ctx``: ``collect(value)``, ``collect_with_timestamp(value, ts)``,
    ``emit_watermark(Watermark(ts))``, ``mark_as_temporarily_idle()``,
    ``get_checkpoint_lock()`` (a lock, for Java-style code)."""

    def run(self, ctx: Any) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        pass


class ParallelSourceFunction(SourceFunction):
    """A :class:`SourceFunction` of which every parallel subtask runs a copy."""


class CollectionSource:
    """``env.from_collection`` (non-parallel; its position is checkpointed)."""

    def __init__(self, items: Sequence[Any], type_info: Any = None) -> None:
        self.items = list(items)
        self.type_info = type_info

    def __repr__(self) -> str:
        return f"CollectionSource({len(self.items)} elements)"


class NumberSequenceSource:
    """The numbers ``start..end`` (both included), split among the subtasks
    (``env.generate_sequence`` / ``from_sequence``)."""

    def __init__(self, start: int, end: int) -> None:
        if not isinstance(start, int) or not isinstance(end, int):
            raise TypeError("a number sequence needs int bounds")
        if end < start:
            raise ValueError(f"the sequence end {end} is before its start {start}")
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"NumberSequenceSource({self.start}, {self.end})"


# --- files ------------------------------------------------------------------------------------


class StreamFormat:
    """How a file becomes records: ``StreamFormat.text_line_format()``, one record per
    line (without the line end)."""

    def __init__(self, kind: str, charset: str = "UTF-8") -> None:
        self.kind = kind
        self.charset = charset

    @staticmethod
    def text_line_format(charset_name: str = "UTF-8") -> StreamFormat:
        return StreamFormat("text", charset_name)


class FileSource:
    """Reads the lines of files (a file or a directory of files; ``.gz`` files are
    decompressed). Bounded, unless ``monitor_continuously(interval)`` makes it watch the
    paths for new files."""

    def __init__(self, paths: Sequence[str], stream_format: StreamFormat,
                 monitor_interval_ms: int | None = None) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.format = stream_format
        self.monitor_interval_ms = monitor_interval_ms

    @staticmethod
    def for_record_stream_format(stream_format: StreamFormat, *paths: str
                                 ) -> FileSourceBuilder:
        if not isinstance(stream_format, StreamFormat):
            raise TypeError("for_record_stream_format() expects a StreamFormat, e.g. "
                            "StreamFormat.text_line_format()")
        if not paths:
            raise ValueError("a FileSource needs at least one path")
        return FileSourceBuilder(stream_format, [_strip_file_scheme(p) for p in paths])

    @property
    def bounded(self) -> bool:
        return self.monitor_interval_ms is None

    def __repr__(self) -> str:
        return f"FileSource({', '.join(self.paths)})"


def _strip_file_scheme(path: Any) -> str:
    p = str(os.fspath(path))
    return p[len("file://"):] if p.startswith("file://") else p


class FileSourceBuilder:
    def __init__(self, fmt: StreamFormat, paths: list[str]) -> None:
        self._format = fmt
        self._paths = paths
        self._monitor: int | None = None

    def monitor_continuously(self, discovery_interval: Any) -> FileSourceBuilder:
        ms = to_millis(discovery_interval, "the discovery interval")
        if ms <= 0:
            raise ValueError("the discovery interval must be positive")
        self._monitor = ms
        return self

    def process_static_file_set(self) -> FileSourceBuilder:
        self._monitor = None
        return self

    def build(self) -> FileSource:
        return FileSource(self._paths, self._format, self._monitor)


class Encoder:
    """How a FileSink writes one element: ``Encoder.simple_string_encoder()`` writes
    ``str(element)`` and a newline."""

    def __init__(self, charset: str = "UTF-8", fn: Callable[[Any], bytes] | None = None
                 ) -> None:
        self.charset = charset
        self.fn = fn

    @staticmethod
    def simple_string_encoder(charset_name: str = "UTF-8") -> Encoder:
        return Encoder(charset_name)

    def encode(self, element: Any) -> bytes:
        if self.fn is not None:
            return self.fn(element)
        return (str(element) + "\n").encode(self.charset)


class OutputFileConfig:
    """Part file names: ``<prefix>-<uid>-<subtask>-<counter><suffix>``."""

    def __init__(self, part_prefix: str = "part", part_suffix: str = "") -> None:
        self.part_prefix = part_prefix
        self.part_suffix = part_suffix

    @staticmethod
    def builder() -> OutputFileConfigBuilder:
        return OutputFileConfigBuilder()


class OutputFileConfigBuilder:
    def __init__(self) -> None:
        self._prefix = "part"
        self._suffix = ""

    def with_part_prefix(self, prefix: str) -> OutputFileConfigBuilder:
        self._prefix = prefix
        return self

    def with_part_suffix(self, suffix: str) -> OutputFileConfigBuilder:
        self._suffix = suffix
        return self

    def build(self) -> OutputFileConfig:
        return OutputFileConfig(self._prefix, self._suffix)


class DateTimeBucketAssigner:
    """Buckets (subdirectories) by the wall-clock time of writing, ``yyyy-MM-dd--HH`` by
    default (Flink's default)."""

    def __init__(self, format_str: str = "yyyy-MM-dd--HH") -> None:
        self.format_str = format_str
        self._py = (format_str.replace("yyyy", "%Y").replace("MM", "%m")
                    .replace("dd", "%d").replace("HH", "%H").replace("mm", "%M")
                    .replace("ss", "%S"))

    def bucket_id(self, element: Any, now_ms: int) -> str:
        import datetime

        return str(datetime.datetime.fromtimestamp(now_ms / 1000).strftime(self._py))


class BasePathBucketAssigner:
    """All part files directly in the base directory."""

    def bucket_id(self, element: Any, now_ms: int) -> str:
        return ""


class RollingPolicy:
    """When a part file is closed and a new one started: at ``part_size`` bytes, after
    ``rollover_interval`` ms, and always at a checkpoint and at the end of input."""

    def __init__(self, part_size: int = 128 << 20, rollover_interval: int = 60_000) -> None:
        self.part_size = part_size
        self.rollover_interval = rollover_interval

    @staticmethod
    def default_rolling_policy(part_size: int = 128 << 20, rollover_interval: int = 60_000,
                               inactivity_interval: int = 60_000) -> RollingPolicy:
        return RollingPolicy(part_size, rollover_interval)

    @staticmethod
    def on_checkpoint_rolling_policy() -> RollingPolicy:
        return RollingPolicy(1 << 62, 1 << 62)


class FileSink:
    """Writes elements as lines into part files under ``base_path``: finished files are
    ``<bucket>/<prefix>-<uid>-<subtask>-<n><suffix>``; a file being written is hidden as
    ``.<name>.inprogress`` and renamed when it rolls."""

    def __init__(self, base_path: str, encoder: Encoder, bucket_assigner: Any,
                 rolling_policy: RollingPolicy, output_file_config: OutputFileConfig) -> None:
        self.base_path = base_path
        self.encoder = encoder
        self.bucket_assigner = bucket_assigner
        self.rolling_policy = rolling_policy
        self.output_file_config = output_file_config

    @staticmethod
    def for_row_format(base_path: str, encoder: Encoder) -> FileSinkBuilder:
        if not isinstance(encoder, Encoder):
            raise TypeError("for_row_format() expects an Encoder, e.g. "
                            "Encoder.simple_string_encoder()")
        return FileSinkBuilder(_strip_file_scheme(base_path), encoder)

    def __repr__(self) -> str:
        return f"FileSink({self.base_path})"


class FileSinkBuilder:
    def __init__(self, base_path: str, encoder: Encoder) -> None:
        self._base = base_path
        self._encoder = encoder
        self._bucket: Any = DateTimeBucketAssigner()
        self._rolling = RollingPolicy()
        self._config = OutputFileConfig()

    def with_bucket_assigner(self, assigner: Any) -> FileSinkBuilder:
        if not callable(getattr(assigner, "bucket_id", None)):
            raise TypeError("a bucket assigner needs a bucket_id(element, now_ms) method")
        self._bucket = assigner
        return self

    def with_rolling_policy(self, policy: RollingPolicy) -> FileSinkBuilder:
        self._rolling = policy
        return self

    def with_output_file_config(self, config: OutputFileConfig) -> FileSinkBuilder:
        self._config = config
        return self

    def build(self) -> FileSink:
        return FileSink(self._base, self._encoder, self._bucket, self._rolling, self._config)


# --- sockets ----------------------------------------------------------------------------------


class SocketTextStreamSource:
    """Lines (split at ``delimiter``) read from a TCP server (``nc -lk 9999``); non-parallel.
    ``max_retry``: reconnect attempts after the connection ends (0: none; -1: forever)."""

    def __init__(self, host: str, port: int, delimiter: str = "\n", max_retry: int = 0) -> None:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port!r}")
        self.host = host
        self.port = port
        self.delimiter = delimiter
        self.max_retry = max_retry

    def __repr__(self) -> str:
        return f"SocketTextStreamSource({self.host}:{self.port})"


# --- Kafka ------------------------------------------------------------------------------------


class KafkaOffsetResetStrategy(enum.Enum):
    EARLIEST = "earliest"
    LATEST = "latest"
    NONE = "none"


class KafkaOffsetsInitializer:
    """Where a Kafka source starts (or, for ``set_bounded``, stops) in each partition."""

    def __init__(self, kind: str, value: Any = None) -> None:
        self.kind = kind  # earliest | latest | committed | timestamp | offsets
        self.value = value

    @staticmethod
    def earliest() -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer("earliest")

    @staticmethod
    def latest() -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer("latest")

    @staticmethod
    def committed_offsets(offset_reset_strategy: KafkaOffsetResetStrategy =
                          KafkaOffsetResetStrategy.NONE) -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer("committed", offset_reset_strategy.value)

    @staticmethod
    def timestamp(timestamp: int) -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer("timestamp", int(timestamp))

    @staticmethod
    def offsets(offsets: dict[Any, int]) -> KafkaOffsetsInitializer:
        """Explicit offsets per (topic, partition)."""
        return KafkaOffsetsInitializer("offsets", {tuple(k): int(v) for k, v in offsets.items()})

    def __repr__(self) -> str:
        return f"KafkaOffsetsInitializer.{self.kind}({'' if self.value is None else self.value})"


class KafkaSource:
    """Reads topics of the log as a parallel source; each partition is a split (its offset
    is checkpointed). Build with ``KafkaSource.builder()``."""

    def __init__(self, bootstrap_servers: str, topics: list[str], topic_pattern: str | None,
                 group_id: str | None, starting_offsets: KafkaOffsetsInitializer,
                 stopping_offsets: KafkaOffsetsInitializer | None, deserializer: Any,
                 properties: dict[str, str], client_id_prefix: str | None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.topic_pattern = topic_pattern
        self.group_id = group_id
        self.starting_offsets = starting_offsets
        self.stopping_offsets = stopping_offsets
        self.deserializer = deserializer
        self.properties = properties
        self.client_id_prefix = client_id_prefix

    @staticmethod
    def builder() -> KafkaSourceBuilder:
        return KafkaSourceBuilder()

    @property
    def bounded(self) -> bool:
        return self.stopping_offsets is not None

    def __repr__(self) -> str:
        return (f"KafkaSource(topics={self.topics or self.topic_pattern}, "
                f"servers={self.bootstrap_servers})")


class KafkaSourceBuilder:
    def __init__(self) -> None:
        self._servers: str | None = None
        self._topics: list[str] = []
        self._pattern: str | None = None
        self._group: str | None = None
        self._start = KafkaOffsetsInitializer.earliest()
        self._stop: KafkaOffsetsInitializer | None = None
        self._deser: Any = None
        self._props: dict[str, str] = {}
        self._client_id_prefix: str | None = None

    def set_bootstrap_servers(self, bootstrap_servers: str) -> KafkaSourceBuilder:
        self._servers = bootstrap_servers
        return self

    def set_topics(self, *topics: str) -> KafkaSourceBuilder:
        flat: list[str] = []
        for t in topics:
            flat.extend([t] if isinstance(t, str) else list(t))
        self._topics = flat
        return self

    def set_topic_pattern(self, topic_pattern: str) -> KafkaSourceBuilder:
        self._pattern = topic_pattern
        return self

    def set_group_id(self, group_id: str) -> KafkaSourceBuilder:
        self._group = group_id
        return self

    def set_client_id_prefix(self, prefix: str) -> KafkaSourceBuilder:
        self._client_id_prefix = prefix
        return self

    def set_starting_offsets(self, initializer: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        if not isinstance(initializer, KafkaOffsetsInitializer):
            raise TypeError("set_starting_offsets() expects a KafkaOffsetsInitializer")
        self._start = initializer
        return self

    def set_bounded(self, stopping_offsets: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        if not isinstance(stopping_offsets, KafkaOffsetsInitializer):
            raise TypeError("set_bounded() expects a KafkaOffsetsInitializer")
        self._stop = stopping_offsets
        return self

    def set_unbounded(self, stopping_offsets: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        return self.set_bounded(stopping_offsets)

    def set_value_only_deserializer(self, schema: Any) -> KafkaSourceBuilder:
        self._deser = _check_schema(schema, "deserialize", "set_value_only_deserializer()")
        return self

    def set_deserializer(self, schema: Any) -> KafkaSourceBuilder:
        return self.set_value_only_deserializer(schema)

    def set_property(self, key: str, value: str) -> KafkaSourceBuilder:
        self._props[key] = str(value)
        return self

    def set_properties(self, props: dict[str, str]) -> KafkaSourceBuilder:
        self._props.update({k: str(v) for k, v in props.items()})
        return self

    def build(self) -> KafkaSource:
        servers = self._servers or self._props.get("bootstrap.servers")
        if not servers:
            raise ValueError("KafkaSource: set_bootstrap_servers(...) is required")
        if not self._topics and not self._pattern:
            raise ValueError("KafkaSource: set_topics(...) or set_topic_pattern(...) is "
                             "required")
        if self._deser is None:
            raise ValueError("KafkaSource: a deserializer is required, e.g. "
                             "set_value_only_deserializer(SimpleStringSchema())")
        group = self._group or self._props.get("group.id")
        if self._start.kind == "committed" and not group:
            raise ValueError("KafkaSource: starting from committed offsets needs a group id")
        return KafkaSource(servers, list(self._topics), self._pattern, group, self._start,
                           self._stop, self._deser, dict(self._props), self._client_id_prefix)


class DeliveryGuarantee(enum.Enum):
    NONE = "none"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


class KafkaRecordSerializationSchema:
    """Element -> (topic, key bytes, value bytes). Build with ``.builder()``."""

    def __init__(self, topic: str | None, topic_selector: Callable[[Any], str] | None,
                 value_schema: Any, key_schema: Any) -> None:
        self.topic = topic
        self.topic_selector = topic_selector
        self.value_schema = value_schema
        self.key_schema = key_schema

    @staticmethod
    def builder() -> KafkaRecordSerializationSchemaBuilder:
        return KafkaRecordSerializationSchemaBuilder()

    def serialize(self, element: Any) -> tuple[str, bytes | None, bytes]:
        topic = self.topic if self.topic_selector is None else self.topic_selector(element)
        ser = getattr(self.value_schema, "serialize", self.value_schema)
        key = None
        if self.key_schema is not None:
            kser = getattr(self.key_schema, "serialize", self.key_schema)
            key = kser(element)
        return topic, key, ser(element)  # type: ignore[return-value]


class KafkaRecordSerializationSchemaBuilder:
    def __init__(self) -> None:
        self._topic: str | None = None
        self._selector: Callable[[Any], str] | None = None
        self._value: Any = None
        self._key: Any = None

    def set_topic(self, topic: str) -> KafkaRecordSerializationSchemaBuilder:
        self._topic = topic
        return self

    def set_topic_selector(self, selector: Callable[[Any], str]
                           ) -> KafkaRecordSerializationSchemaBuilder:
        self._selector = getattr(selector, "apply", selector)
        return self

    def set_value_serialization_schema(self, schema: Any
                                       ) -> KafkaRecordSerializationSchemaBuilder:
        self._value = _check_schema(schema, "serialize", "set_value_serialization_schema()")
        return self

    def set_key_serialization_schema(self, schema: Any) -> KafkaRecordSerializationSchemaBuilder:
        self._key = _check_schema(schema, "serialize", "set_key_serialization_schema()")
        return self

    def build(self) -> KafkaRecordSerializationSchema:
        if self._topic is None and self._selector is None:
            raise ValueError("KafkaRecordSerializationSchema: set_topic(...) is required")
        if self._value is None:
            raise ValueError("KafkaRecordSerializationSchema: "
                             "set_value_serialization_schema(...) is required")
        return KafkaRecordSerializationSchema(self._topic, self._selector, self._value,
                                              self._key)


class KafkaSink:
    """Writes elements as records to the log. Build with ``KafkaSink.builder()``."""

    def __init__(self, bootstrap_servers: str, record_serializer: KafkaRecordSerializationSchema,
                 delivery_guarantee: DeliveryGuarantee, properties: dict[str, str],
                 transactional_id_prefix: str | None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.record_serializer = record_serializer
        self.delivery_guarantee = delivery_guarantee
        self.properties = properties
        self.transactional_id_prefix = transactional_id_prefix

    @staticmethod
    def builder() -> KafkaSinkBuilder:
        return KafkaSinkBuilder()

    def __repr__(self) -> str:
        return (f"KafkaSink(topic={self.record_serializer.topic}, "
                f"servers={self.bootstrap_servers})")


class KafkaSinkBuilder:
    def __init__(self) -> None:
        self._servers: str | None = None
        self._serializer: KafkaRecordSerializationSchema | None = None
        self._guarantee = DeliveryGuarantee.AT_LEAST_ONCE
        self._props: dict[str, str] = {}
        self._txn: str | None = None

    def set_bootstrap_servers(self, bootstrap_servers: str) -> KafkaSinkBuilder:
        self._servers = bootstrap_servers
        return self

    def set_record_serializer(self, serializer: KafkaRecordSerializationSchema
                              ) -> KafkaSinkBuilder:
        if not isinstance(serializer, KafkaRecordSerializationSchema):
            raise TypeError("set_record_serializer() expects a KafkaRecordSerializationSchema "
                            "(KafkaRecordSerializationSchema.builder()...build())")
        self._serializer = serializer
        return self

    def set_delivery_guarantee(self, guarantee: DeliveryGuarantee) -> KafkaSinkBuilder:
        if not isinstance(guarantee, DeliveryGuarantee):
            raise TypeError("set_delivery_guarantee() expects a DeliveryGuarantee")
        self._guarantee = guarantee
        return self

    def set_transactional_id_prefix(self, prefix: str) -> KafkaSinkBuilder:
        self._txn = prefix
        return self

    def set_property(self, key: str, value: str) -> KafkaSinkBuilder:
        self._props[key] = str(value)
        return self

    def build(self) -> KafkaSink:
        servers = self._servers or self._props.get("bootstrap.servers")
        if not servers:
            raise ValueError("KafkaSink: set_bootstrap_servers(...) is required")
        if self._serializer is None:
            raise ValueError("KafkaSink: set_record_serializer(...) is required")
        return KafkaSink(servers, self._serializer, self._guarantee, dict(self._props),
                         self._txn)


class FlinkKafkaConsumer:
    """The older Kafka source: ``FlinkKafkaConsumer("twitterText", SimpleStringSchema(),
    {"bootstrap.servers": "...", "group.id": "..."})``, added with ``env.add_source``.
    Starts from the group's committed offsets (earliest if none), as Flink's default."""

    def __init__(self, topics: str | Sequence[str], deserialization_schema: Any,
                 properties: dict[str, str] | None = None) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.deserializer = _check_schema(deserialization_schema, "deserialize",
                                          "FlinkKafkaConsumer")
        self.properties = {k: str(v) for k, v in (properties or {}).items()}
        if "bootstrap.servers" not in self.properties:
            raise ValueError("FlinkKafkaConsumer: the properties need 'bootstrap.servers'")
        self.starting_offsets = KafkaOffsetsInitializer.committed_offsets(
            KafkaOffsetResetStrategy.EARLIEST)
        self.watermark_strategy: Any = None
        self.commit_offsets_on_checkpoints = True

    def set_start_from_earliest(self) -> FlinkKafkaConsumer:
        self.starting_offsets = KafkaOffsetsInitializer.earliest()
        return self

    def set_start_from_latest(self) -> FlinkKafkaConsumer:
        self.starting_offsets = KafkaOffsetsInitializer.latest()
        return self

    def set_start_from_group_offsets(self) -> FlinkKafkaConsumer:
        self.starting_offsets = KafkaOffsetsInitializer.committed_offsets(
            KafkaOffsetResetStrategy.EARLIEST)
        return self

    def set_start_from_timestamp(self, startup_offsets_timestamp: int) -> FlinkKafkaConsumer:
        self.starting_offsets = KafkaOffsetsInitializer.timestamp(startup_offsets_timestamp)
        return self

    def set_commit_offsets_on_checkpoints(self, commit: bool) -> FlinkKafkaConsumer:
        self.commit_offsets_on_checkpoints = bool(commit)
        return self

    def assign_timestamps_and_watermarks(self, watermark_strategy: Any) -> FlinkKafkaConsumer:
        """Per-partition watermarks, as Flink's consumer does."""
        from moldau.clients.stream.watermark import WatermarkStrategy

        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError("assign_timestamps_and_watermarks() expects a WatermarkStrategy")
        self.watermark_strategy = watermark_strategy
        return self

    def to_source(self) -> KafkaSource:
        """The same reading as a :class:`KafkaSource` description."""
        props = self.properties
        return KafkaSource(props["bootstrap.servers"], list(self.topics), None,
                           props.get("group.id"), self.starting_offsets, None,
                           self.deserializer, dict(props), None)

    def __repr__(self) -> str:
        return f"FlinkKafkaConsumer({', '.join(self.topics)})"


class FlinkKafkaProducer:
    """The older Kafka sink, both signatures: PyFlink's ``FlinkKafkaProducer(topic,
    serialization_schema, producer_config)`` and the course's Java
    ``FlinkKafkaProducer(broker_list, topic, serialization_schema)``."""

    def __init__(self, a: str, b: Any, c: Any = None, *, semantic: Any = None) -> None:
        if isinstance(c, dict) or c is None:
            topic, schema, props = a, b, {k: str(v) for k, v in (c or {}).items()}
        else:
            props, topic, schema = {"bootstrap.servers": a}, b, c
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"FlinkKafkaProducer: the topic must be a string, got {topic!r:.60}")
        if "bootstrap.servers" not in props:
            raise ValueError("FlinkKafkaProducer: the producer config needs "
                             "'bootstrap.servers'")
        self.topic = topic
        self.serializer = _check_schema(schema, "serialize", "FlinkKafkaProducer")
        self.properties = props
        self.semantic = semantic

    def to_sink(self) -> KafkaSink:
        """The same writing as a :class:`KafkaSink` description."""
        ser = KafkaRecordSerializationSchema(self.topic, None, self.serializer, None)
        return KafkaSink(self.properties["bootstrap.servers"], ser,
                         DeliveryGuarantee.AT_LEAST_ONCE, dict(self.properties), None)

    def __repr__(self) -> str:
        return f"FlinkKafkaProducer({self.topic})"


# --- sinks for people and tests ---------------------------------------------------------------


class PrintSinkFunction:
    """``print()``: ``str(element)`` per line on the subtask's stdout (stderr with
    ``to_error``), prefixed like Flink: ``<identifier>:<subtask+1>> `` when parallel,
    ``<identifier>> `` when not, nothing without identifier and parallelism 1."""

    def __init__(self, sink_identifier: str | None = None, to_error: bool = False) -> None:
        self.sink_identifier = sink_identifier
        self.to_error = to_error

    def __repr__(self) -> str:
        return "PrintSinkFunction()"


class CollectSink:
    """Gathers what reaches it. After ``env.execute()`` with the local executor,
    ``sink.results`` (``get_results()``) holds every element, in arrival order per
    subtask and subtasks one after another."""

    def __init__(self) -> None:
        self.collect_id = uuid.uuid4().hex
        self.results: list[Any] = []
        self.delivered = False

    def get_results(self) -> list[Any]:
        return list(self.results)

    def __getstate__(self) -> dict[str, Any]:
        return {"collect_id": self.collect_id, "results": [], "delivered": False}

    def __repr__(self) -> str:
        return "CollectSink()"


def iter_paths(paths: Iterable[str]) -> list[str]:
    """The files named by ``paths`` (directories expand to their files, sorted; hidden
    files and in-progress part files skipped)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
                for f in sorted(files):
                    if not f.startswith((".", "_")):
                        out.append(os.path.join(root, f))
        else:
            out.append(p)
    return out
