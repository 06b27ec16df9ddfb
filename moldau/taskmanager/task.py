"""A :class:`Task`: one deployed subtask running in a slot process.

The task wraps the runtime-neutral :class:`OperatorChain` with the network: an
:class:`InputGate` over its input channels (or its source reader on channel 0) and a
:class:`RecordWriterOutput` that partitions what the chain emits into the result
partitions of its out edges. Everything happens on the slot process's event loop, per
*buffer* (up to ~1000 records): take a buffer, push it through the chain, give its credit
back, fire due processing-time timers, yield. There is no per-record await.

Backpressure: before taking the next input the task waits until every subpartition it
writes to has room (``RecordWriterOutput.wait_available``).

Partial buffers are flushed every ``execution.buffer-timeout`` ms (default 100; 0 flushes
after every input buffer), and also whenever the task has caught up with its input (no
buffer waiting, a source that returned less than a full batch): at low rates records
leave at once instead of waiting for the timeout, at high rates buffers still fill up
(``moldau.network.flush-on-idle``, default true). At the end of input every channel
gets its end of partition. A task is FINISHED once every consumer processed that end, so a finished
task's slot process can go away without losing records in flight.

Connectors that need the event loop (the Kafka reader and writer) expose optional async
hooks the task calls: a reader's ``start_async()``, ``poll_async(max_records, timeout)``
and ``stop_async()``; a writer's ``start_async()``, ``pending`` (true when
``drain_async()`` has work: records to hand to a client, a flush to wait for) and
``stop_async()``.

States reported: RUNNING (after the chain opened), then FINISHED, CANCELED or FAILED
(with the traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from moldau.clients.stream.connector_runtime import (
    END_OF_INPUT,
    ReaderIdle,
    ReaderWatermark,
)
from moldau.clients.stream.jobgraph import JobGraph
from moldau.clients.stream.operators import Batch, OperatorInfo, SinkOperator, SourceOperator
from moldau.clients.stream.task import OperatorChain, OutputPartitioner
from moldau.taskmanager.network.codec import END_OF_PARTITION, STATUS, WATERMARK, decode_buffer
from moldau.taskmanager.network.input_gate import (
    InputGate,
    LocalInputChannel,
    RemoteInputChannel,
)
from moldau.taskmanager.network.partition_manager import PartitionManager
from moldau.taskmanager.network.result_partition import ChannelWriter, ResultPartition

log = logging.getLogger(__name__)

RUNNING = "RUNNING"
FINISHED = "FINISHED"
CANCELED = "CANCELED"
FAILED = "FAILED"
TERMINAL = frozenset({FINISHED, CANCELED, FAILED})

ReportFn = Callable[["Task", str, "str | None"], None]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_bytes(value: Any, default: int) -> int:
    """``65536``, ``"64kb"``, ``"32 KiB"``, ``"1m"`` -> bytes."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    s = str(value).strip().lower().replace(" ", "")
    for suffix, mult in (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("kb", 1 << 10),
                         ("mb", 1 << 20), ("gb", 1 << 30), ("k", 1 << 10), ("m", 1 << 20),
                         ("g", 1 << 30), ("b", 1)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s)


@dataclass(frozen=True)
class NetworkSettings:
    """The data plane's knobs, from the job's configuration."""

    buffer_timeout_ms: int = 100
    batch_size: int = 1000
    segment_bytes: int = 64 << 10
    credits: int = 4
    queue_capacity: int = 4
    request_timeout_s: float = 60.0
    lost_grace_s: float = 12.0
    flush_on_idle: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> NetworkSettings:
        return cls(
            buffer_timeout_ms=int(cfg.get("execution.buffer-timeout", 100)),
            batch_size=max(1, int(cfg.get("moldau.network.batch-size", 1000))),
            segment_bytes=max(1024, parse_bytes(cfg.get("taskmanager.memory.segment-size"),
                                                64 << 10)),
            credits=max(1, int(cfg.get("taskmanager.network.memory.buffers-per-channel", 4))),
            queue_capacity=max(1, int(cfg.get(
                "taskmanager.network.memory.max-buffers-per-channel", 4))),
            request_timeout_s=int(cfg.get("moldau.network.request-timeout-ms", 60000)) / 1000,
            lost_grace_s=int(cfg.get("moldau.network.partition-lost-grace-ms", 12000)) / 1000,
            flush_on_idle=str(cfg.get("moldau.network.flush-on-idle", True)).lower()
            not in ("false", "0", "no"),
        )


@dataclass(frozen=True)
class TaskDeployment:
    """What the JobManager says about one subtask (see ``SubmitTasksRequest``)."""

    execution_id: str
    vertex_id: str
    subtask: int
    attempt: int
    # per input channel: (edge index, producer subtask, producer execution id, host, port)
    inputs: list[tuple[int, int, str, str, int]]
    # per out edge: (edge index, [(consumer subtask, host, port)])
    outputs: list[tuple[int, list[tuple[int, str, int]]]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskDeployment:
        return cls(str(d["execution_id"]), str(d["vertex_id"]), int(d["subtask"]),
                   int(d.get("attempt", 0)),
                   [(int(a), int(b), str(c), str(h), int(p)) for a, b, c, h, p in d["inputs"]],
                   [(int(e), [(int(s), str(h), int(p)) for s, h, p in cs])
                    for e, cs in d["outputs"]])


class RecordWriterOutput:
    """The chain's output: partitions batches onto the channel writers of each out edge
    (Flink's ``RecordWriter``). Counts records once per emit, whatever the fan-out."""

    def __init__(self) -> None:
        # (side output tag, partitioner, target subtask -> writer)
        self.edges: list[tuple[str | None, OutputPartitioner, dict[int, ChannelWriter]]] = []
        self.partitions: list[ResultPartition] = []
        self.writers: list[ChannelWriter] = []
        self.records_out = 0

    def add_edge(self, tag: str | None, partitioner: OutputPartitioner,
                 partition: ResultPartition, settings: NetworkSettings) -> None:
        writers = {t: ChannelWriter(sp, settings.batch_size, settings.segment_bytes)
                   for t, sp in partition.subpartitions.items()}
        self.edges.append((tag, partitioner, writers))
        self.partitions.append(partition)
        self.writers.extend(writers.values())

    # ChainOutput ---------------------------------------------------------------------------

    def emit(self, tag: str | None, batch: Batch) -> None:
        self.records_out += len(batch.values)
        for etag, part, writers in self.edges:
            if etag != tag:
                continue
            for t, b in part.partition(batch):
                writers[t].add_batch(b)

    def emit_watermark(self, watermark: int) -> None:
        ev = (WATERMARK, watermark)
        for w in self.writers:
            w.add_event(ev)

    def emit_watermark_status(self, idle: bool) -> None:
        ev = (STATUS, idle)
        for w in self.writers:
            w.add_event(ev)

    # flow ----------------------------------------------------------------------------------

    @property
    def backlogged(self) -> bool:
        return any(p.backlogged for p in self.partitions)

    async def wait_available(self) -> None:
        for p in self.partitions:
            if p.backlogged:
                await p.wait_available()

    def flush(self) -> None:
        for w in self.writers:
            if w.pending:
                w.flush()

    def finish(self) -> None:
        for w in self.writers:
            w.finish()

    async def wait_released(self) -> None:
        for p in self.partitions:
            await p.wait_released()

    @property
    def bytes_out(self) -> int:
        return sum(p.bytes_out for p in self.partitions)


class _LoopEvent(threading.Event):
    """A threading.Event (what source readers signal from their threads) that also wakes
    the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.async_event = asyncio.Event()

    def set(self) -> None:
        super().set()
        try:
            self.loop.call_soon_threadsafe(self.async_event.set)
        except RuntimeError:
            pass  # the loop is closed

    async def wait_async(self, timeout: float) -> None:
        if not self.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.async_event.wait()
        self.clear()
        self.async_event.clear()


class TaskCanceled(Exception):
    pass


class Task:
    """One subtask: build with everything it needs, then ``await run()`` (never raises;
    the outcome goes to ``report``). ``cancel()`` stops it."""

    def __init__(self, job_id: str, graph: JobGraph, deployment: TaskDeployment, *,
                 partitions: PartitionManager, data_address: tuple[str, int],
                 stdout: TextIO | None, report: ReportFn,
                 config: dict[str, Any]) -> None:
        self.job_id = job_id
        self.graph = graph
        self.d = deployment
        self.vertex = graph.vertex(deployment.vertex_id)
        self.partitions = partitions
        self.data_address = data_address
        self.stdout = stdout
        self.report = report
        self.config = config
        self.settings = NetworkSettings.from_config(config)
        self.state = "DEPLOYING"
        self.error: str | None = None
        self.name = f"{self.vertex.name} ({deployment.subtask + 1}/{self.vertex.parallelism})"
        self.output = RecordWriterOutput()
        self.gate = InputGate()
        self.chain: OperatorChain | None = None
        self.records_in = 0
        self.canceled = False
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._reader: Any = None
        self._async_writers: list[Any] = []
        self._build_partitions()

    @property
    def execution_id(self) -> str:
        return self.d.execution_id

    def metrics(self) -> list[int]:
        return [self.records_in, self.output.records_out, self.gate.bytes_in,
                self.output.bytes_out]

    def _build_partitions(self) -> None:
        """Register this task's result partitions (before any task of the deployment
        starts, so local consumers find them)."""
        g = self.graph
        s = self.settings
        for edge_index, consumers in self.d.outputs:
            edge = g.edges[edge_index]
            target = g.vertex(edge.target)
            part = ResultPartition(self.job_id, self.d.execution_id, edge_index,
                                   sorted(c[0] for c in consumers), s.queue_capacity)
            partitioner = OutputPartitioner(edge, self.d.subtask, self.vertex.parallelism,
                                            target.parallelism, target.max_parallelism)
            missing = set(partitioner.targets) - set(part.subpartitions)
            if missing:
                raise ValueError(f"deployment of {self.name} lacks consumers {sorted(missing)} "
                                 f"of edge {edge_index}")
            self.output.add_edge(edge.side_output_tag, partitioner, part, s)
            self.partitions.register(part)

    def _build_inputs(self) -> None:
        g = self.graph
        s = self.settings
        expected = g.input_channels(self.d.vertex_id, self.d.subtask)
        if [(e, u) for e, u, _x, _h, _p in self.d.inputs] != expected:
            raise ValueError(f"deployment of {self.name}: its inputs do not match the job "
                             "graph's input channels")
        for i, (edge_index, up, exec_id, host, port) in enumerate(self.d.inputs):
            up_vertex = g.vertex(g.edges[edge_index].source)
            if (host, port) == self.data_address:
                ch: Any = LocalInputChannel(self.gate, i, self.partitions, self.job_id, exec_id,
                                            edge_index, self.d.subtask, s.credits,
                                            s.request_timeout_s)
            else:
                ch = RemoteInputChannel(
                    self.gate, i, host, port, self.job_id, exec_id, edge_index, self.d.subtask,
                    s.credits, f"{up_vertex.name} ({up + 1}/{up_vertex.parallelism})",
                    s.lost_grace_s, s.request_timeout_s)
            self.gate.channels.append(ch)

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=self.name)
        return self._task

    def cancel(self) -> None:
        self.canceled = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.report(self, state, error)

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._cleanup(failed=True)
            self._set_state(CANCELED)
            return
        except BaseException as e:
            await self._cleanup(failed=True)
            if self.canceled:
                self._set_state(CANCELED)
            else:
                text = "".join(traceback.format_exception(e))
                log.warning("task %s failed:\n%s", self.name, text)
                self._set_state(FAILED, text)
            if not isinstance(e, Exception):
                raise
            return
        self._set_state(FINISHED)

    async def _run(self) -> None:
        v = self.vertex
        cfg = self.config
        info = OperatorInfo(
            task_name=v.name, subtask_index=self.d.subtask, parallelism=v.parallelism,
            max_parallelism=v.max_parallelism, attempt=self.d.attempt,
            job_parameters=dict(cfg.get("pipeline.global-job-parameters") or {}),
            config=cfg, clock=wall_clock_ms, stdout=self.stdout, collect=None,
            watermark_per_batch=False,
            fire_processing_timers_at_end=bool(
                cfg.get("moldau.end-of-input.fire-processing-timers", True)),
            batch_size=self.settings.batch_size)
        self._build_inputs()
        n_ch = 1 if v.is_source else max(1, len(self.d.inputs))
        chain = self.chain = OperatorChain(v, info, self.output, n_ch)
        chain.open()
        for op in chain.ops:
            if isinstance(op, SinkOperator):
                w = op._rt_writer
                if hasattr(w, "drain_async"):
                    if hasattr(w, "start_async"):
                        await w.start_async()
                    self._async_writers.append(w)
        if v.is_source:
            head = chain.head
            assert isinstance(head, SourceOperator)
            notify = _LoopEvent(asyncio.get_running_loop())
            reader = self._reader = head.create_reader(notify)
            reader.open()
            if hasattr(reader, "start_async"):
                await reader.start_async()
        else:
            notify = None
            await self.gate.start()
        self._set_state(RUNNING)
        bt = self.settings.buffer_timeout_ms
        if bt > 0 and self.output.writers:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(bt / 1000))
        if v.is_source:
            assert notify is not None
            await self._run_source(notify)
        else:
            await self._run_inputs()
        # the end: drain async sinks, close the operators, end every partition, and wait
        # until the consumers have it all
        await self._drain_writers()
        if self._flusher is not None:
            self._flusher.cancel()
        chain.close()
        self.chain = None
        await self._stop_async()
        self.output.finish()
        await self.output.wait_released()
        self.gate.close()
        for p in self.output.partitions:
            self.partitions.unregister(p)

    async def _flush_loop(self, interval: float) -> None:
        out = self.output
        while True:
            await asyncio.sleep(interval)
            out.flush()

    async def _drain_writers(self) -> None:
        for w in self._async_writers:
            if w.pending:
                await w.drain_async()

    def _timers(self) -> int | None:
        chain = self.chain
        assert chain is not None
        nt = chain.next_processing_time()
        if nt is not None:
            now = wall_clock_ms()
            if nt <= now:
                chain.advance_processing_time(now)
                nt = chain.next_processing_time()
        return nt

    async def _run_source(self, notify: _LoopEvent) -> None:
        chain = self.chain
        assert chain is not None
        reader = self._reader
        out = self.output
        max_records = self.settings.batch_size
        poll_async = getattr(reader, "poll_async", None)
        flush_each = self.settings.buffer_timeout_ms == 0
        flush_idle = self.settings.flush_on_idle
        writers = self._async_writers
        while True:
            if out.backlogged:
                await out.wait_available()
            if poll_async is not None:
                nt = chain.next_processing_time()
                timeout = 0.1 if nt is None else min(0.1, max(0.0, (nt - wall_clock_ms())
                                                               / 1000))
                events = await poll_async(max_records, timeout)
            else:
                events = reader.poll(max_records)
            ended = False
            n = 0
            for ev in events:
                t = type(ev)
                if t is Batch:
                    n += len(ev.values)
                    chain.process_batch(0, ev)
                elif ev is END_OF_INPUT:
                    chain.end_of_input(0)
                    ended = True
                    break
                elif t is ReaderWatermark:
                    chain.process_watermark(0, ev.timestamp)
                elif t is ReaderIdle:
                    chain.process_watermark_status(0, ev.idle)
            if writers:
                await self._drain_writers()
            nt = self._timers()
            if flush_each or (flush_idle and n < max_records):
                out.flush()  # caught up with the source
            if ended:
                return
            if not events and poll_async is None:
                timeout = 0.1 if nt is None else min(0.1, max(0.0, (nt - wall_clock_ms())
                                                               / 1000))
                await notify.wait_async(timeout)
            else:
                await asyncio.sleep(0)

    async def _run_inputs(self) -> None:
        chain = self.chain
        assert chain is not None
        gate = self.gate
        out = self.output
        flush_each = self.settings.buffer_timeout_ms == 0
        flush_idle = self.settings.flush_on_idle
        writers = self._async_writers
        while not chain.finished:
            if gate.error is not None:
                raise ConnectionError(gate.error)
            if out.backlogged:
                await out.wait_available()
            item = gate.poll()
            if item is None:
                if flush_idle:
                    out.flush()  # caught up with the input
                nt = self._timers()
                await gate.wait(None if nt is None else (nt - wall_clock_ms()) / 1000)
                continue
            ch, buf = item
            elements = decode_buffer(buf) if type(buf) is bytes else buf
            ended = False
            for el in elements:
                if type(el) is Batch:
                    self.records_in += len(el.values)
                    chain.process_batch(ch, el)
                else:
                    kind = el[0]
                    if kind == WATERMARK:
                        chain.process_watermark(ch, el[1])
                    elif kind == STATUS:
                        chain.process_watermark_status(ch, el[1])
                    elif kind == END_OF_PARTITION:
                        chain.end_of_input(ch)
                        gate.channel_finished(ch)
                        ended = True
            if not ended:
                gate.release(ch)
            if writers:
                await self._drain_writers()
            self._timers()
            if flush_each:
                out.flush()
            await asyncio.sleep(0)

    async def _stop_async(self) -> None:
        for obj in (self._reader, *self._async_writers):
            stop = getattr(obj, "stop_async", None)
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await stop()

    async def _cleanup(self, failed: bool) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.gate.close()
        for p in self.output.partitions:
            p.release_all()
            self.partitions.unregister(p)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
        if self.chain is not None:
            with contextlib.suppress(Exception):
                self.chain.close()
            self.chain = None
        with contextlib.suppress(Exception):
            await self._stop_async()
