"""Connector descriptions (Kafka builders, the older Flink names) and the plug-in points the
TaskManager uses for Kafka I/O, exercised with an in-memory topic."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from moldau.clients.stream import (
    DeliveryGuarantee,
    Duration,
    FlinkKafkaConsumer,
    FlinkKafkaProducer,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    OutputTag,
    ParameterTool,
    SimpleStringSchema,
    StreamExecutionEnvironment,
    Time,
    TumblingEventTimeWindows,
    WatermarkStrategy,
)
from moldau.clients.stream import connector_runtime as rt
from moldau.clients.stream.operators import Batch


def test_kafka_source_builder() -> None:
    src = (KafkaSource.builder().set_bootstrap_servers("h1:9092,h2:9092")
           .set_topics("twitterText").set_group_id("wc")
           .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets())
           .set_value_only_deserializer(SimpleStringSchema()).build())
    assert src.topics == ["twitterText"] and src.group_id == "wc" and not src.bounded
    assert src.starting_offsets.kind == "committed"
    assert pickle.loads(pickle.dumps(src)).bootstrap_servers == "h1:9092,h2:9092"
    with pytest.raises(ValueError, match="set_bootstrap_servers"):
        KafkaSource.builder().set_topics("t").build()
    with pytest.raises(ValueError, match="deserializer is required"):
        KafkaSource.builder().set_bootstrap_servers("h:1").set_topics("t").build()
    with pytest.raises(ValueError, match="committed offsets needs a group id"):
        (KafkaSource.builder().set_bootstrap_servers("h:1").set_topics("t")
         .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets())
         .set_value_only_deserializer(SimpleStringSchema()).build())
    with pytest.raises(TypeError, match="schema with a deserialize"):
        KafkaSource.builder().set_value_only_deserializer(42)


def test_kafka_sink_builder_and_serialization() -> None:
    sink = (KafkaSink.builder().set_bootstrap_servers("h:9092")
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic("cleansedRides")
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE).build())
    assert sink.record_serializer.serialize("1,START") == ("cleansedRides", None, b"1,START")
    with pytest.raises(ValueError, match="set_topic"):
        KafkaRecordSerializationSchema.builder().set_value_serialization_schema(
            SimpleStringSchema()).build()


def test_flink_kafka_consumer_and_producer_signatures() -> None:
    c = FlinkKafkaConsumer("twitterText", SimpleStringSchema(),
                           {"bootstrap.servers": "h:9092", "group.id": "g"})
    c.set_start_from_earliest()
    assert c.to_source().starting_offsets.kind == "earliest"
    with pytest.raises(ValueError, match=r"bootstrap\.servers"):
        FlinkKafkaConsumer("t", SimpleStringSchema(), {})
    py = FlinkKafkaProducer("topic", SimpleStringSchema(), {"bootstrap.servers": "h:1"})
    java = FlinkKafkaProducer("h:1", "topic", SimpleStringSchema())  # the course's order
    assert py.topic == java.topic == "topic"
    assert py.properties == java.properties == {"bootstrap.servers": "h:1"}
    e = StreamExecutionEnvironment.get_execution_environment()
    e.add_source(c).add_sink(java)
    g = e.get_job_graph()
    assert [v.name for v in g.vertices] == ["Source: Custom Source -> Sink: Kafka Sink"]
    e2 = StreamExecutionEnvironment.get_execution_environment()
    e2.add_source(c).print()
    with pytest.raises(RuntimeError, match="Kafka source runs on the cluster"):
        e2.execute()


class MemoryTopic:
    """An in-memory topic: partition -> [(timestamp, value)]. With ``hold_open``, readers
    without data wait (like a live topic) until every partition was read to its end."""

    def __init__(self, partitions: dict[int, list[tuple[int, str]]],
                 hold_open: bool = False) -> None:
        self.partitions = partitions
        self.hold_open = hold_open
        self.read: dict[int, int] = {p: 0 for p in partitions}

    def drained(self) -> bool:
        return all(self.read[p] >= len(v) for p, v in self.partitions.items())


class MemoryKafkaReader(rt.SourceReader):
    """What a TaskManager would register for KafkaSource, reading MemoryTopic instead of
    the log: every partition is a split with an offset; batches carry the split id."""

    topics: dict[str, MemoryTopic] = {}

    def __init__(self, source: KafkaSource, ctx: rt.SourceReaderContext,
                 restored: list[Any] | None) -> None:
        topic = self.topics[source.topics[0]]
        if restored is not None:
            self.splits = [list(s) for s in restored]
        else:
            self.splits = [[p, 0] for p in sorted(topic.partitions)
                           if p % ctx.parallelism == ctx.subtask_index]
        self.topic = topic
        self.deser = source.deserializer
        self.turn = 0

    def poll(self, max_records: int) -> list[Any]:
        live = [s for s in self.splits if s[1] < len(self.topic.partitions[s[0]])]
        if not live:
            if self.topic.hold_open and not self.topic.drained():
                return []
            return [rt.END_OF_INPUT]
        s = live[self.turn % len(live)]  # interleave partitions, a little at a time
        self.turn += 1
        recs = self.topic.partitions[s[0]][s[1]:s[1] + 2]
        s[1] += len(recs)
        self.topic.read[s[0]] = s[1]
        return [Batch([self.deser.deserialize(v.encode()) for _, v in recs],
                      [ts for ts, _ in recs], split=s[0])]

    def snapshot_state(self) -> list[Any]:
        return [list(s) for s in self.splits]


class MemoryKafkaWriter(rt.SinkWriter):
    written: list[tuple[str, bytes | None, bytes]] = []

    def __init__(self, sink: KafkaSink, op: Any) -> None:
        self.serialize = sink.record_serializer.serialize

    def write_batch(self, batch: Batch) -> None:
        self.written.extend(self.serialize(v) for v in batch.values)


@pytest.fixture
def memory_kafka() -> Any:
    rt.register_source_reader(KafkaSource, MemoryKafkaReader)
    rt.register_sink_writer(KafkaSink, MemoryKafkaWriter)
    MemoryKafkaWriter.written = []
    yield
    rt._READERS.pop(KafkaSource, None)
    rt._WRITERS.pop(KafkaSink, None)


def test_kafka_source_with_per_partition_watermarks(memory_kafka: None) -> None:
    # partition 0 is far ahead of partition 1; each is in order. One watermark generator
    # for the whole subtask would make partition 1's records late; per-partition
    # generators (the minimum over partitions) make none late.
    p0 = [(t, f"p0-{t}") for t in range(0, 40_000, 1000)]
    p1 = [(t, f"p1-{t}") for t in range(0, 20_000, 500)]
    MemoryKafkaReader.topics = {"events": MemoryTopic({0: p0, 1: p1})}
    src = (KafkaSource.builder().set_bootstrap_servers("mem:1").set_topics("events")
           .set_value_only_deserializer(SimpleStringSchema()).build())
    e = StreamExecutionEnvironment.get_execution_environment()
    e.configure({"moldau.local.batch-size": 2})
    late = OutputTag("late")
    w = (e.from_source(src, WatermarkStrategy.for_monotonous_timestamps(), "Kafka Source")
         .map(lambda v: (v[:2], 1))
         .key_by(lambda v: v[0])
         .window(TumblingEventTimeWindows.of(Time.seconds(10)))
         .side_output_late_data(late)
         .sum(1))
    late_records = w.get_side_output(late).map(lambda v: v)
    sink = (KafkaSink.builder().set_bootstrap_servers("mem:1")
            .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic("out")
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build()).build())
    w.map(str).sink_to(sink)
    from moldau.clients.stream import CollectSink

    late_sink = CollectSink()
    late_records.add_sink(late_sink)
    e.execute("kafka")
    assert late_sink.results == []
    got = sorted(v.decode() for _, _, v in MemoryKafkaWriter.written)
    assert got == sorted(["('p0', 10)"] * 4 + ["('p1', 20)"] * 2)
    assert {t for t, _, _ in MemoryKafkaWriter.written} == {"out"}


def test_parameter_tool() -> None:
    p = ParameterTool.from_args(["--input", "/data/rides.gz", "--parallelism", "2", "-v",
                                 "--offset", "-5", "--flag"])
    assert p.get_required("input") == "/data/rides.gz"
    assert p.get_int("parallelism", 1) == 2 and p.get_int("missing", 7) == 7
    assert p.get_int("offset") == -5 and p.has("flag") and p.get_boolean("v")
    with pytest.raises(RuntimeError, match="No data for required key 'output'"):
        p.get_required("output")
    with pytest.raises(ValueError, match="prefix keys"):
        ParameterTool.from_args(["input"])
    e = StreamExecutionEnvironment.get_execution_environment()
    e.get_config().set_global_job_parameters(p)
    assert e.get_config().get_global_job_parameters()["input"] == "/data/rides.gz"


@pytest.mark.parametrize("idleness", [True, False])
def test_idle_partitions_do_not_hold_the_watermark(memory_kafka: None, idleness: bool) -> None:
    from moldau.clients.stream import CollectSink
    from moldau.clients.stream.local_executor import LocalJob

    clock = [0]
    p0 = [(t, f"a{t}") for t in range(0, 30_000, 1000)]
    # subtask 1 owns partition 1, which stays empty but open: without idleness its
    # watermark holds every window back until the end
    MemoryKafkaReader.topics = {"t": MemoryTopic({0: p0, 1: []}, hold_open=True)}
    src = (KafkaSource.builder().set_bootstrap_servers("mem:1").set_topics("t")
           .set_value_only_deserializer(SimpleStringSchema()).build())
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    if idleness:
        strategy = strategy.with_idleness(Duration.of_millis(50))
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(2)
    e.configure({"moldau.local.batch-size": 2})
    sink = CollectSink()
    (e.from_source(src, strategy, "k").map(lambda v: ("k", 1)).key_by(lambda v: v[0])
     .window(TumblingEventTimeWindows.of(Time.seconds(10))).sum(1).add_sink(sink))

    def tick() -> int:  # time passes with every look at the clock
        clock[0] += 5
        return clock[0]

    job = LocalJob(e.get_job_graph(), clock=tick)
    job.open()
    fired_while_running = 0
    while job.step():
        if 25 <= MemoryKafkaReader.topics["t"].read[0] < len(p0):  # before the end
            fired_while_running = max(fired_while_running,
                                      len(job.collected.get(sink.collect_id, [])))
    job.close()
    assert (fired_while_running >= 1) is idleness
    assert sorted(job.collected[sink.collect_id]) == [("k", 10)] * 3
