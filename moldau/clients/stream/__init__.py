"""moldau's stream processing API: what a job script imports.

    from moldau.clients.stream import (StreamExecutionEnvironment, Time,
                                       SlidingProcessingTimeWindows)

    env = StreamExecutionEnvironment.get_execution_environment()
    counts = (env.from_collection(["a b", "b c"])
              .flat_map(lambda line: [(w, 1) for w in line.split()])
              .key_by(lambda t: t[0])
              .sum(1))
    counts.print()
    env.execute("word count")

The names follow PyFlink (``pyflink.datastream``, ``pyflink.common``), so a Flink user finds
``key_by``, ``window``, ``TumblingEventTimeWindows.of(...)``, ``WatermarkStrategy`` and
``KafkaSource.builder()`` where they expect them. Modules: ``environment`` (the entry point
and executors), ``datastream`` (the API), ``functions``, ``state``, ``time``,
``watermark``, ``window``, ``keygroups``, ``connectors``, ``typeinfo``; the runtime layer
shared with the TaskManager: ``jobgraph``, ``operators``, ``task``, ``connector_runtime``,
``local_executor``.
"""

from moldau.clients.stream.connectors import (
    BasePathBucketAssigner,
    CollectSink,
    DateTimeBucketAssigner,
    DeliveryGuarantee,
    DeserializationSchema,
    Encoder,
    FileSink,
    FileSource,
    FlinkKafkaConsumer,
    FlinkKafkaProducer,
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    NumberSequenceSource,
    OutputFileConfig,
    ParallelSourceFunction,
    RollingPolicy,
    SerializationSchema,
    SimpleStringSchema,
    SocketTextStreamSource,
    SourceFunction,
    StreamFormat,
)
from moldau.clients.stream.datastream import (
    AllWindowedStream,
    DataStream,
    DataStreamSink,
    KeyedStream,
    WindowedStream,
)
from moldau.clients.stream.environment import (
    CheckpointConfig,
    CheckpointingMode,
    ExecutionConfig,
    ExternalizedCheckpointCleanup,
    JobExecutionResult,
    RestartStrategies,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
    get_executor,
    set_context_configuration,
    set_executor,
)
from moldau.clients.stream.functions import (
    AggregateFunction,
    AllWindowFunction,
    Collector,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    OutputTag,
    ProcessAllWindowFunction,
    ProcessFunction,
    ProcessWindowFunction,
    ReduceFunction,
    RuntimeContext,
    SinkFunction,
    TimerService,
    WindowFunction,
)
from moldau.clients.stream.jobgraph import (
    GraphError,
    JobEdge,
    JobGraph,
    JobVertex,
    Partitioning,
)
from moldau.clients.stream.state import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from moldau.clients.stream.time import Duration, Time, TimeCharacteristic, TimeDomain
from moldau.clients.stream.typeinfo import Row, RowKind, TypeInformation, Types
from moldau.clients.stream.utils import ParameterTool
from moldau.clients.stream.watermark import (
    TimestampAssigner,
    Watermark,
    WatermarkGenerator,
    WatermarkOutput,
    WatermarkStrategy,
)
from moldau.clients.stream.window import (
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    ProcessingTimeSessionWindows,
    ProcessingTimeTrigger,
    PurgingTrigger,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)

__all__ = [
    "AggregateFunction", "AggregatingStateDescriptor", "AllWindowFunction",
    "AllWindowedStream", "BasePathBucketAssigner", "CheckpointConfig", "CheckpointingMode",
    "CollectSink", "Collector", "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger", "CountEvictor", "CountTrigger", "DataStream",
    "DataStreamSink", "DateTimeBucketAssigner", "DeliveryGuarantee", "DeserializationSchema",
    "Duration", "Encoder", "EventTimeSessionWindows", "EventTimeTrigger", "ExecutionConfig",
    "ExternalizedCheckpointCleanup", "FileSink", "FileSource", "FilterFunction",
    "FlatMapFunction", "FlinkKafkaConsumer", "FlinkKafkaProducer", "Function",
    "GlobalWindows", "GraphError", "JobEdge", "JobExecutionResult", "JobGraph", "JobVertex",
    "KafkaOffsetResetStrategy", "KafkaOffsetsInitializer", "KafkaRecordSerializationSchema",
    "KafkaSink", "KafkaSource", "KeySelector", "KeyedProcessFunction", "KeyedStream",
    "ListStateDescriptor", "MapFunction", "MapStateDescriptor", "NumberSequenceSource",
    "OutputFileConfig", "OutputTag", "ParallelSourceFunction", "ParameterTool",
    "Partitioning", "ProcessAllWindowFunction", "ProcessFunction", "ProcessWindowFunction",
    "ProcessingTimeSessionWindows", "ProcessingTimeTrigger", "PurgingTrigger",
    "ReduceFunction", "ReducingStateDescriptor", "RestartStrategies", "RollingPolicy", "Row",
    "RowKind", "RuntimeContext", "RuntimeExecutionMode", "SerializationSchema",
    "SimpleStringSchema", "SinkFunction", "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows", "SocketTextStreamSource", "SourceFunction",
    "StreamExecutionEnvironment", "StreamFormat", "Time", "TimeCharacteristic", "TimeDomain",
    "TimeWindow", "TimerService", "TimestampAssigner", "Trigger", "TriggerResult",
    "TumblingEventTimeWindows", "TumblingProcessingTimeWindows", "TypeInformation", "Types",
    "ValueStateDescriptor", "Watermark", "WatermarkGenerator", "WatermarkOutput",
    "WatermarkStrategy", "WindowFunction", "WindowedStream", "get_executor",
    "set_context_configuration", "set_executor",
]
