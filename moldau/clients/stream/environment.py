"""``StreamExecutionEnvironment``: where a job starts (sources, configuration) and how it
runs (``execute``).

``execute()`` turns the dataflow into a :class:`JobGraph` and hands it to the *executor*:
a function ``(JobGraph) -> JobExecutionResult`` installed with :func:`set_executor`. The
``moldau run`` command installs one that uploads the graph to the JobManager (and sets
context configuration such as the default parallelism with
:func:`set_context_configuration`); with none installed, the job runs right here in this
process on the local executor, so ``python job.py`` works like PyFlink's local mode.

Configuration uses Flink's keys (``parallelism.default``, ``pipeline.max-parallelism``,
``execution.checkpointing.interval``, ...); it travels in ``JobGraph.config``.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from moldau.clients.stream.connectors import (
    CollectionSource,
    CollectSink,
    FileSource,
    FlinkKafkaConsumer,
    KafkaSource,
    NumberSequenceSource,
    ParallelSourceFunction,
    SocketTextStreamSource,
    SourceFunction,
    StreamFormat,
)
from moldau.clients.stream.datastream import DataStream, _check_parallelism
from moldau.clients.stream.jobgraph import GraphError, JobGraph, generate_job_graph
from moldau.clients.stream.operators import (
    SourceOperator,
    StreamOperator,
    TimestampsAndWatermarksOperator,
)
from moldau.clients.stream.time import TimeCharacteristic, to_millis
from moldau.clients.stream.transformations import InputRef, StreamNode
from moldau.clients.stream.typeinfo import TypeInformation, infer_type
from moldau.clients.stream.watermark import WatermarkStrategy

__all__ = [
    "CheckpointConfig",
    "CheckpointingMode",
    "ExecutionConfig",
    "ExternalizedCheckpointCleanup",
    "JobExecutionResult",
    "RestartStrategies",
    "RuntimeExecutionMode",
    "StreamExecutionEnvironment",
    "get_executor",
    "set_context_configuration",
    "set_executor",
]

Executor = Callable[[JobGraph], "JobExecutionResult"]
_executor: Executor | None = None
_context_config: dict[str, Any] = {}


def set_executor(executor: Executor | None) -> None:
    """Install the function ``execute()`` hands job graphs to (None: run locally)."""
    global _executor
    _executor = executor


def get_executor() -> Executor | None:
    return _executor


def set_context_configuration(config: dict[str, Any] | None) -> None:
    """Configuration every environment created from now on starts with (what ``moldau run
    -p 4`` sets); the job's own calls (``env.set_parallelism``) override it."""
    global _context_config
    _context_config = dict(config or {})


class JobExecutionResult:
    """What ``execute()`` returns (Flink's ``JobExecutionResult``). ``collected`` maps a
    CollectSink's id to its records, when the executor can deliver them."""

    def __init__(self, job_id: str, job_name: str, net_runtime_ms: int,
                 accumulators: dict[str, Any] | None = None,
                 collected: dict[str, list[Any]] | None = None) -> None:
        self.job_id = job_id
        self.job_name = job_name
        self.net_runtime_ms = net_runtime_ms
        self.accumulators = dict(accumulators or {})
        self.collected = dict(collected or {})

    def get_job_id(self) -> str:
        return self.job_id

    def get_job_name(self) -> str:
        return self.job_name

    def get_net_runtime(self) -> int:
        return self.net_runtime_ms

    def get_accumulator_result(self, accumulator_name: str) -> Any:
        return self.accumulators.get(accumulator_name)

    def get_all_accumulator_results(self) -> dict[str, Any]:
        return dict(self.accumulators)

    def is_job_execution_result(self) -> bool:
        return True

    def __repr__(self) -> str:
        return (f"JobExecutionResult(job_id={self.job_id!r}, job_name={self.job_name!r}, "
                f"net_runtime={self.net_runtime_ms} ms)")


class CheckpointingMode(enum.Enum):
    EXACTLY_ONCE = "EXACTLY_ONCE"
    AT_LEAST_ONCE = "AT_LEAST_ONCE"


class ExternalizedCheckpointCleanup(enum.Enum):
    RETAIN_ON_CANCELLATION = "RETAIN_ON_CANCELLATION"
    DELETE_ON_CANCELLATION = "DELETE_ON_CANCELLATION"
    NO_EXTERNALIZED_CHECKPOINTS = "NO_EXTERNALIZED_CHECKPOINTS"


class RuntimeExecutionMode(enum.Enum):
    STREAMING = "STREAMING"
    BATCH = "BATCH"
    AUTOMATIC = "AUTOMATIC"


class RestartStrategies:
    """Restart strategies as configuration (``env.set_restart_strategy(...)``)."""

    @staticmethod
    def no_restart() -> dict[str, Any]:
        return {"restart-strategy": "none"}

    @staticmethod
    def fall_back_restart() -> dict[str, Any]:
        return {"restart-strategy": "fallback"}

    @staticmethod
    def fixed_delay_restart(restart_attempts: int, delay_between_attempts: Any
                            ) -> dict[str, Any]:
        return {"restart-strategy": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": int(restart_attempts),
                "restart-strategy.fixed-delay.delay": to_millis(delay_between_attempts)}

    @staticmethod
    def failure_rate_restart(failure_rate: int, failure_interval: Any,
                             delay_interval: Any) -> dict[str, Any]:
        return {"restart-strategy": "failure-rate",
                "restart-strategy.failure-rate.max-failures-per-interval": int(failure_rate),
                "restart-strategy.failure-rate.failure-rate-interval":
                    to_millis(failure_interval),
                "restart-strategy.failure-rate.delay": to_millis(delay_interval)}


class ExecutionConfig:
    """``env.get_config()``."""

    def __init__(self, env: StreamExecutionEnvironment) -> None:
        self._env = env

    def set_auto_watermark_interval(self, interval: Any) -> ExecutionConfig:
        ms = to_millis(interval, "the auto watermark interval")
        if ms < 0:
            raise ValueError("the auto watermark interval can't be negative")
        self._env._config["pipeline.auto-watermark-interval"] = ms
        return self

    def get_auto_watermark_interval(self) -> int:
        return int(self._env._config.get("pipeline.auto-watermark-interval", 200))

    def set_global_job_parameters(self, params: Any) -> ExecutionConfig:
        if hasattr(params, "to_map"):
            params = params.to_map()
        if not isinstance(params, dict):
            raise TypeError("global job parameters must be a dict or a ParameterTool")
        self._env._config["pipeline.global-job-parameters"] = {
            str(k): str(v) for k, v in params.items()}
        return self

    def get_global_job_parameters(self) -> dict[str, str]:
        return dict(self._env._config.get("pipeline.global-job-parameters", {}))

    def set_parallelism(self, parallelism: int) -> ExecutionConfig:
        self._env.set_parallelism(parallelism)
        return self

    def get_parallelism(self) -> int:
        return self._env.get_parallelism()

    def set_max_parallelism(self, max_parallelism: int) -> ExecutionConfig:
        self._env.set_max_parallelism(max_parallelism)
        return self

    def get_max_parallelism(self) -> int:
        return self._env.get_max_parallelism()


class CheckpointConfig:
    """``env.get_checkpoint_config()``."""

    def __init__(self, env: StreamExecutionEnvironment) -> None:
        self._c = env._config

    def is_checkpointing_enabled(self) -> bool:
        return self._c.get("execution.checkpointing.interval") is not None

    def set_checkpoint_interval(self, interval: Any) -> CheckpointConfig:
        ms = to_millis(interval, "the checkpoint interval")
        if ms < 10:
            raise ValueError(f"the checkpoint interval must be at least 10 ms, got {ms}")
        self._c["execution.checkpointing.interval"] = ms
        return self

    def get_checkpoint_interval(self) -> int:
        return int(self._c.get("execution.checkpointing.interval", -1))

    def set_checkpointing_mode(self, mode: CheckpointingMode) -> CheckpointConfig:
        self._c["execution.checkpointing.mode"] = CheckpointingMode(mode).value
        return self

    def get_checkpointing_mode(self) -> CheckpointingMode:
        return CheckpointingMode(self._c.get("execution.checkpointing.mode", "EXACTLY_ONCE"))

    def set_checkpoint_timeout(self, timeout: Any) -> CheckpointConfig:
        self._c["execution.checkpointing.timeout"] = to_millis(timeout)
        return self

    def get_checkpoint_timeout(self) -> int:
        return int(self._c.get("execution.checkpointing.timeout", 600_000))

    def set_min_pause_between_checkpoints(self, pause: Any) -> CheckpointConfig:
        self._c["execution.checkpointing.min-pause"] = to_millis(pause)
        return self

    def set_max_concurrent_checkpoints(self, n: int) -> CheckpointConfig:
        self._c["execution.checkpointing.max-concurrent-checkpoints"] = int(n)
        return self

    def set_tolerable_checkpoint_failure_number(self, n: int) -> CheckpointConfig:
        self._c["execution.checkpointing.tolerable-failed-checkpoints"] = int(n)
        return self

    def enable_externalized_checkpoints(self, cleanup: ExternalizedCheckpointCleanup
                                        ) -> CheckpointConfig:
        self._c["execution.checkpointing.externalized-checkpoint-retention"] = (
            ExternalizedCheckpointCleanup(cleanup).value)
        return self

    set_externalized_checkpoint_cleanup = enable_externalized_checkpoints

    def set_checkpoint_storage_dir(self, path: str) -> CheckpointConfig:
        self._c["state.checkpoints.dir"] = str(path)
        return self

    set_checkpoint_storage = set_checkpoint_storage_dir


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class StreamExecutionEnvironment:
    """The context of a streaming job: ``env = StreamExecutionEnvironment
    .get_execution_environment()``, sources from it, then ``env.execute("name")``."""

    def __init__(self, configuration: dict[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = dict(_context_config)
        self._config.update(configuration or {})
        self._nodes: list[StreamNode] = []
        self._next_id = 0
        self._collect_sinks: dict[str, CollectSink] = {}
        p = self._config.get("parallelism.default")
        if p is not None:
            _check_parallelism(int(p))

    @staticmethod
    def get_execution_environment(configuration: dict[str, Any] | None = None
                                  ) -> StreamExecutionEnvironment:
        return StreamExecutionEnvironment(configuration)

    # configuration --------------------------------------------------------------------------

    def set_parallelism(self, parallelism: int) -> StreamExecutionEnvironment:
        """The parallelism of operators that don't set their own (default 1)."""
        p = _check_parallelism(parallelism)
        mp = self._config.get("pipeline.max-parallelism")
        if mp is not None and p > int(mp):
            raise GraphError(f"parallelism {p} is larger than the max parallelism {mp}")
        self._config["parallelism.default"] = p
        return self

    def get_parallelism(self) -> int:
        return int(self._config.get("parallelism.default", 1))

    def set_max_parallelism(self, max_parallelism: int) -> StreamExecutionEnvironment:
        """The number of key groups of keyed state (default 128): the upper bound of the
        parallelism a job can be rescaled to later."""
        mp = _check_parallelism(max_parallelism, "max parallelism")
        if mp < self.get_parallelism():
            raise GraphError(f"max parallelism {mp} is smaller than the parallelism "
                             f"{self.get_parallelism()}")
        self._config["pipeline.max-parallelism"] = mp
        return self

    def get_max_parallelism(self) -> int:
        return int(self._config.get("pipeline.max-parallelism", 128))

    def configure(self, configuration: dict[str, Any]) -> StreamExecutionEnvironment:
        self._config.update(configuration)
        return self

    def get_configuration(self) -> dict[str, Any]:
        return dict(self._config)

    def get_config(self) -> ExecutionConfig:
        return ExecutionConfig(self)

    def enable_checkpointing(self, interval: Any, mode: CheckpointingMode | None = None
                             ) -> StreamExecutionEnvironment:
        """Checkpoint all state every ``interval`` ms (recorded in the job config; the
        cluster takes the checkpoints)."""
        cc = self.get_checkpoint_config()
        cc.set_checkpoint_interval(interval)
        if mode is not None:
            cc.set_checkpointing_mode(mode)
        return self

    def get_checkpoint_config(self) -> CheckpointConfig:
        return CheckpointConfig(self)

    def get_checkpoint_interval(self) -> int:
        return self.get_checkpoint_config().get_checkpoint_interval()

    def get_checkpointing_mode(self) -> CheckpointingMode:
        return self.get_checkpoint_config().get_checkpointing_mode()

    def set_state_backend(self, backend: Any) -> StreamExecutionEnvironment:
        """Accepted for old scripts: state lives in memory and is checkpointed by the
        cluster."""
        self._config["state.backend"] = getattr(backend, "name", "hashmap")
        return self

    def set_restart_strategy(self, restart_strategy: dict[str, Any]
                             ) -> StreamExecutionEnvironment:
        if not isinstance(restart_strategy, dict) or "restart-strategy" not in restart_strategy:
            raise TypeError("set_restart_strategy() expects RestartStrategies.xxx(...)")
        self._config.update(restart_strategy)
        return self

    def get_restart_strategy(self) -> dict[str, Any]:
        return {k: v for k, v in self._config.items() if k.startswith("restart-strategy")}

    def set_stream_time_characteristic(self, characteristic: TimeCharacteristic
                                       ) -> StreamExecutionEnvironment:
        """Accepted for old scripts; decides what ``time_window`` means (event time by
        default, as in Flink 1.12+)."""
        self._config["pipeline.time-characteristic"] = TimeCharacteristic(characteristic).name
        return self

    def get_stream_time_characteristic(self) -> TimeCharacteristic:
        return TimeCharacteristic[self._config.get("pipeline.time-characteristic", "EventTime")]

    def set_runtime_mode(self, mode: RuntimeExecutionMode) -> StreamExecutionEnvironment:
        self._config["execution.runtime-mode"] = RuntimeExecutionMode(mode).value
        return self

    def set_buffer_timeout(self, timeout_millis: int) -> StreamExecutionEnvironment:
        self._config["execution.buffer-timeout"] = int(timeout_millis)
        return self

    def get_buffer_timeout(self) -> int:
        return int(self._config.get("execution.buffer-timeout", 100))

    def disable_operator_chaining(self) -> StreamExecutionEnvironment:
        self._config["pipeline.operator-chaining"] = False
        return self

    def is_chaining_enabled(self) -> bool:
        return bool(self._config.get("pipeline.operator-chaining", True))

    def add_jars(self, *jars_path: str) -> StreamExecutionEnvironment:
        """Accepted for PyFlink scripts: moldau's connectors need no jars."""
        self._config.setdefault("pipeline.jars", []).extend(jars_path)
        return self

    def add_classpaths(self, *classpaths: str) -> StreamExecutionEnvironment:
        self._config.setdefault("pipeline.classpaths", []).extend(classpaths)
        return self

    def add_python_file(self, file_path: str) -> StreamExecutionEnvironment:
        """A file or directory the job's functions import; ``moldau run`` uploads it."""
        self._config.setdefault("python.files", []).append(str(file_path))
        return self

    def set_python_executable(self, python_exec: str) -> StreamExecutionEnvironment:
        self._config["python.executable"] = str(python_exec)
        return self

    # sources ----------------------------------------------------------------------------------

    def _add_node(self, operator: StreamOperator, name: str, inputs: list[InputRef],
                  type_info: TypeInformation | None, follows: StreamNode | None = None
                  ) -> StreamNode:
        for r in inputs:
            if r.node not in self._nodes:
                raise GraphError("this stream belongs to another execution environment, or "
                                 "to a job that was already executed")
        node = StreamNode(self._next_id, operator, name, list(inputs), type_info=type_info,
                          follows=follows)
        self._next_id += 1
        self._nodes.append(node)
        return node

    def _source(self, source: Any, name: str, non_parallel: bool,
                type_info: TypeInformation | None,
                watermark_strategy: WatermarkStrategy | None = None) -> DataStream:
        node = self._add_node(SourceOperator(name, source, non_parallel), name, [], type_info)
        out = node
        if watermark_strategy is not None and (
                not watermark_strategy.is_no_watermarks
                or watermark_strategy.has_timestamp_assigner):
            out = self._add_node(TimestampsAndWatermarksOperator(
                "Timestamps/Watermarks", watermark_strategy, per_split=True),
                "Timestamps/Watermarks", [InputRef(node)], type_info, follows=node)
        return DataStream(self, (InputRef(out),), node, type_info)

    def from_collection(self, collection: Iterable[Any],
                        type_info: TypeInformation | None = None) -> DataStream:
        """The elements of a collection, in order (a non-parallel source)."""
        if isinstance(collection, str | bytes) or not isinstance(collection, Iterable):
            raise TypeError("from_collection() expects a list (or other iterable) of "
                            f"elements, got {type(collection).__name__}")
        items = list(collection)
        if type_info is None and items:
            type_info = infer_type(items[0])
        return self._source(CollectionSource(items, type_info), "Source: Collection Source",
                            True, type_info)

    def from_elements(self, *elements: Any) -> DataStream:
        return self.from_collection(list(elements))

    def generate_sequence(self, from_: int, to: int) -> DataStream:
        """The numbers ``from_..to`` (both included), split among the parallel subtasks."""
        from moldau.clients.stream.typeinfo import Types

        return self._source(NumberSequenceSource(from_, to), "Source: Sequence Source", False,
                            Types.LONG())

    def from_sequence(self, start: int, end: int) -> DataStream:
        return self.generate_sequence(start, end)

    def read_text_file(self, file_path: str, charset_name: str = "UTF-8") -> DataStream:
        """The lines of a file, or of every file in a directory (``.gz`` decompressed)."""
        from moldau.clients.stream.connectors import _strip_file_scheme
        from moldau.clients.stream.typeinfo import Types

        src = FileSource([_strip_file_scheme(file_path)],
                         StreamFormat.text_line_format(charset_name))
        return self._source(src, f"Source: {file_path}", False, Types.STRING())

    def socket_text_stream(self, hostname: str, port: int, delimiter: str = "\n",
                           max_retry: int = 0) -> DataStream:
        """Lines read from a TCP server (a non-parallel source)."""
        from moldau.clients.stream.typeinfo import Types

        return self._source(SocketTextStreamSource(hostname, port, delimiter, max_retry),
                            "Source: Socket Stream", True, Types.STRING())

    def add_source(self, source_func: Any, source_name: str = "Custom Source",
                   type_info: TypeInformation | None = None) -> DataStream:
        """A ``SourceFunction`` (non-parallel), ``ParallelSourceFunction``, or
        ``FlinkKafkaConsumer``."""
        if isinstance(source_func, type):
            raise TypeError(f"add_source() got the class {source_func.__name__}: pass an "
                            "instance")
        if isinstance(source_func, FlinkKafkaConsumer):
            return self._source(source_func, f"Source: {source_name}", False, type_info,
                                source_func.watermark_strategy)
        if not isinstance(source_func, SourceFunction) and not callable(
                getattr(source_func, "run", None)):
            raise TypeError("add_source() expects a SourceFunction (with run(ctx)) or a "
                            f"FlinkKafkaConsumer; got {source_func!r:.60}")
        return self._source(source_func, f"Source: {source_name}",
                            not isinstance(source_func, ParallelSourceFunction), type_info)

    def from_source(self, source: Any, watermark_strategy: WatermarkStrategy,
                    source_name: str, type_info: TypeInformation | None = None) -> DataStream:
        """A unified-API source (``KafkaSource``, ``FileSource``, ``NumberSequenceSource``)
        with its watermark strategy, applied per split (per Kafka partition)."""
        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError("from_source() expects a WatermarkStrategy as second argument "
                            "(WatermarkStrategy.no_watermarks() if none)")
        if not isinstance(source, KafkaSource | FileSource | NumberSequenceSource
                          | CollectionSource | SocketTextStreamSource):
            raise TypeError(f"from_source() expects a source such as KafkaSource or "
                            f"FileSource, got {source!r:.60}")
        non_parallel = isinstance(source, CollectionSource | SocketTextStreamSource)
        return self._source(source, f"Source: {source_name}", non_parallel, type_info,
                            watermark_strategy)

    # running ----------------------------------------------------------------------------------

    def get_job_graph(self, job_name: str | None = None) -> JobGraph:
        """The JobGraph of the dataflow built so far (nothing runs)."""
        name = job_name or self._config.get("pipeline.name") or "Flink Streaming Job"
        mp = self._config.get("pipeline.max-parallelism")
        cfg = {k: v for k, v in self._config.items()}
        return generate_job_graph(self._nodes, job_name=str(name),
                                  default_parallelism=self.get_parallelism(),
                                  max_parallelism=int(mp) if mp is not None else None,
                                  chaining=self.is_chaining_enabled(), config=cfg)

    def to_job_graph(self, job_name: str | None = None) -> JobGraph:
        return self.get_job_graph(job_name)

    def get_execution_plan(self) -> str:
        """The plan as JSON, Flink's ``getExecutionPlan()``."""
        return json.dumps(self.get_job_graph().to_json_plan(), indent=2)

    def execute(self, job_name: str | None = None) -> JobExecutionResult:
        """Run the job: hand its graph to the installed executor, or run it here."""
        graph = self.get_job_graph(job_name)
        executor = _executor
        if executor is None:
            from moldau.clients.stream.local_executor import LocalExecutor

            executor = LocalExecutor().execute
        sinks = dict(self._collect_sinks)
        self._clear()
        result = executor(graph)
        for cid, sink in sinks.items():
            sink.delivered = cid in result.collected
            sink.results = list(result.collected.get(cid, []))
        return result

    def _clear(self) -> None:
        # as Flink: after execute() the environment starts a new, empty topology
        self._nodes = []
        self._collect_sinks = {}

    def close(self) -> None:
        self._clear()

