"""Runs a JobGraph in this process, on one thread: ``python job.py`` without a cluster,
and the reference the tests compare the cluster against.

Every vertex gets its ``parallelism`` subtasks, each an :class:`OperatorChain` made from the
graph's pickled operators (so a job that runs here can be shipped to a cluster), with its
key groups, its watermark valve over its input channels, and records partitioned between
subtasks exactly as the edges say. Chains call each other directly: when a call returns,
every record it caused has been processed downstream, so the state between two steps is a
consistent snapshot without barriers (:meth:`LocalJob.snapshot`).

Sources: bounded readers are pulled ``batch size`` records at a time, round-robin over the
source subtasks; generator and socket sources run on their own threads and hand records
over in batches. Periodic watermarks are emitted after every source batch, which makes the
event-time results of a run deterministic. Processing time is the wall clock (or the
``clock`` given), and pending processing-time timers fire at the end of input (config
``moldau.end-of-input.fire-processing-timers``, default true: a bounded job shows its
processing-time windows). When every source has ended, ``MAX_WATERMARK`` flushes all
event-time windows and the job finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from moldau.clients.stream.connector_runtime import (
    END_OF_INPUT,
    ReaderIdle,
    ReaderWatermark,
    SourceReader,
)
from moldau.clients.stream.environment import JobExecutionResult
from moldau.clients.stream.jobgraph import GraphError, JobGraph
from moldau.clients.stream.operators import Batch, OperatorInfo, SourceOperator
from moldau.clients.stream.task import OperatorChain, OutputPartitioner

__all__ = ["LocalExecutor", "LocalJob"]

Savepoint = dict[str, list[bytes]]


def _wall_clock() -> int:
    return time.time_ns() // 1_000_000


class _Subtask:
    __slots__ = ("chain", "ended_out", "index", "outputs", "reader", "vertex_id")

    def __init__(self, vertex_id: str, index: int) -> None:
        self.vertex_id = vertex_id
        self.index = index
        self.chain: OperatorChain = None  # type: ignore[assignment]
        self.reader: SourceReader | None = None
        self.outputs: list[tuple[str | None, OutputPartitioner, list[tuple[_Subtask, int]]]] = []
        self.ended_out = False


class _Output:
    """A subtask's ChainOutput: partitions and calls the target chains directly."""

    __slots__ = ("job", "sub")

    def __init__(self, job: LocalJob, sub: _Subtask) -> None:
        self.job = job
        self.sub = sub

    def emit(self, tag: str | None, batch: Batch) -> None:
        for etag, part, targets in self.sub.outputs:
            if etag != tag:
                continue
            chans = dict((t.index, (t, ch)) for t, ch in targets)
            for idx, b in part.partition(batch):
                t, ch = chans[idx]
                t.chain.process_batch(ch, b)

    def emit_watermark(self, watermark: int) -> None:
        for _tag, _part, targets in self.sub.outputs:
            for t, ch in targets:
                t.chain.process_watermark(ch, watermark)

    def emit_watermark_status(self, idle: bool) -> None:
        for _tag, _part, targets in self.sub.outputs:
            for t, ch in targets:
                t.chain.process_watermark_status(ch, idle)


class LocalJob:
    """One local run of a job graph that can be stepped and snapshotted.

    ``LocalJob(graph).run()`` runs to the end; ``step()`` does one round (a batch from each
    source subtask, then due timers) and returns False once finished; ``snapshot()``
    between steps returns a savepoint (operator id -> snapshot of each subtask) that
    ``LocalJob(graph, restore=savepoint)`` resumes from, at any parallelism up to the max
    parallelism."""

    def __init__(self, graph: JobGraph, *, batch_size: int | None = None,
                 clock: Callable[[], int] | None = None, stdout: TextIO | None = None,
                 restore: Savepoint | None = None,
                 allow_non_restored_state: bool = False) -> None:
        self.graph = graph
        cfg = graph.config
        self.batch_size = int(batch_size or cfg.get("moldau.local.batch-size", 1024))
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.clock = clock or _wall_clock
        self.stdout = stdout
        self.collected: dict[str, list[Any]] = {}
        self.notify = threading.Event()
        self.subtasks: dict[str, list[_Subtask]] = {}
        self.sources: list[_Subtask] = []
        self.finished = False
        self._started_at = 0.0
        self._build(restore, allow_non_restored_state)

    def _collect(self, collect_id: str, values: list[Any]) -> None:
        self.collected.setdefault(collect_id, []).extend(values)

    def _build(self, restore: Savepoint | None, allow_non_restored: bool) -> None:
        g = self.graph
        cfg = g.config
        fire_at_end = bool(cfg.get("moldau.end-of-input.fire-processing-timers", True))
        params = dict(cfg.get("pipeline.global-job-parameters") or {})
        for v in g.vertices:
            self.subtasks[v.id] = [_Subtask(v.id, i) for i in range(v.parallelism)]
        # input channels of each target subtask: (edge index, upstream subtask) -> channel
        channels: dict[tuple[str, int], dict[tuple[int, int], int]] = {}
        for v in g.vertices:
            for i in range(v.parallelism):
                channels[(v.id, i)] = {c: n for n, c in enumerate(g.input_channels(v.id, i))}
        restored_ids: set[str] = set()
        for v in g.vertices:
            for sub in self.subtasks[v.id]:
                info = OperatorInfo(
                    task_name=v.name, subtask_index=sub.index, parallelism=v.parallelism,
                    max_parallelism=v.max_parallelism, job_parameters=params, config=cfg,
                    clock=self.clock, stdout=self.stdout, collect=self._collect,
                    watermark_per_batch=True, fire_processing_timers_at_end=fire_at_end,
                    batch_size=self.batch_size)
                n_ch = len(channels[(v.id, sub.index)]) if not v.is_source else 1
                sub.chain = OperatorChain(v, info, _Output(self, sub), max(1, n_ch))
                if restore:
                    sub.chain.restore(restore)
                    restored_ids.update(oid for oid in sub.chain.op_ids if oid in restore)
                if v.is_source:
                    self.sources.append(sub)
        if restore and not allow_non_restored:
            unknown = set(restore) - restored_ids
            if unknown:
                raise GraphError(
                    "Failed to rollback to checkpoint/savepoint: cannot map the state of "
                    f"operator(s) {', '.join(sorted(unknown))} to the new program, because "
                    "the operator is not available in it. Allow non-restored state to skip "
                    "this state.")
        for ei, e in enumerate(g.edges):
            src_v, dst_v = g.vertex(e.source), g.vertex(e.target)
            key_selector = e.create_key_selector()
            for sub in self.subtasks[src_v.id]:
                part = OutputPartitioner(e, sub.index, src_v.parallelism, dst_v.parallelism,
                                         dst_v.max_parallelism, key_selector)
                targets = [(self.subtasks[dst_v.id][t], channels[(dst_v.id, t)][(ei, sub.index)])
                           for t in part.targets]
                sub.outputs.append((e.side_output_tag, part, targets))

    # running ----------------------------------------------------------------------------------

    def open(self) -> None:
        self._started_at = time.monotonic()
        # downstream first, so every operator is open before a record can reach it
        for v in reversed(self.graph.vertices):
            for sub in self.subtasks[v.id]:
                sub.chain.open()
        for sub in self.sources:
            head = sub.chain.head
            assert isinstance(head, SourceOperator)
            sub.reader = head.create_reader(self.notify)
            sub.reader.open()

    def _end(self, sub: _Subtask) -> None:
        """``sub``'s chain finished: its outputs end too (recursively downstream)."""
        if sub.ended_out:
            return
        sub.ended_out = True
        for _tag, _part, targets in sub.outputs:
            for t, ch in targets:
                t.chain.end_of_input(ch)
                if t.chain.finished:
                    self._end(t)

    def step(self) -> bool:
        """One round; False when the job has finished."""
        if self.finished:
            return False
        progressed = False
        for sub in list(self.sources):
            reader = sub.reader
            assert reader is not None
            events = reader.poll(self.batch_size)
            if events:
                progressed = True
            chain = sub.chain
            for ev in events:
                t = type(ev)
                if t is Batch:
                    chain.process_batch(0, ev)
                elif ev is END_OF_INPUT:
                    chain.end_of_input(0)
                    self.sources.remove(sub)
                    self._end(sub)
                    break
                elif t is ReaderWatermark:
                    chain.process_watermark(0, ev.timestamp)
                elif t is ReaderIdle:
                    chain.process_watermark_status(0, ev.idle)
        next_timer = self._fire_timers()
        if not self.sources:
            self.finished = True
            return False
        if not progressed and all(s.reader is not None and s.reader.blocking
                                  for s in self.sources):
            wait = 0.1
            if next_timer is not None:
                wait = max(0.0, min(wait, (next_timer - self.clock()) / 1000))
            self.notify.wait(wait)
            self.notify.clear()
        return True

    def _fire_timers(self) -> int | None:
        now = self.clock()
        nxt: int | None = None
        for subs in self.subtasks.values():
            for sub in subs:
                chain = sub.chain
                if chain.finished:
                    continue
                t = chain.next_processing_time()
                if t is not None and t <= now:
                    chain.advance_processing_time(now)
                    t = chain.next_processing_time()
                if t is not None and (nxt is None or t < nxt):
                    nxt = t
        return nxt

    def run(self, max_steps: int | None = None) -> bool:
        """Open (if needed) and step until finished (True) or ``max_steps`` (False)."""
        if not self._started_at:
            self.open()
        n = 0
        while self.step():
            n += 1
            if max_steps is not None and n >= max_steps:
                return False
        return True

    def snapshot(self) -> Savepoint:
        """Operator id -> [snapshot of subtask 0, 1, ...]."""
        out: Savepoint = {}
        for v in self.graph.vertices:
            for sub in self.subtasks[v.id]:
                for oid, data in sub.chain.snapshot_state().items():
                    out.setdefault(oid, []).append(data)
        return out

    def close(self) -> None:
        """Stop sources and close every operator (first error wins)."""
        err: BaseException | None = None
        for sub in self.sources:
            if sub.reader is not None:
                try:
                    sub.reader.close()
                except BaseException as e:
                    err = err or e
        for v in self.graph.vertices:
            for sub in self.subtasks[v.id]:
                try:
                    sub.chain.close()
                except BaseException as e:
                    err = err or e
        if err is not None:
            raise err

    def result(self) -> JobExecutionResult:
        runtime = int((time.monotonic() - self._started_at) * 1000) if self._started_at else 0
        return JobExecutionResult(self.graph.job_id, self.graph.name, runtime, {},
                                  self.collected)


class LocalExecutor:
    """The default executor of ``env.execute()``: runs the job to its end in-process."""

    def __init__(self, *, batch_size: int | None = None, clock: Callable[[], int] | None = None,
                 stdout: TextIO | None = None) -> None:
        self.batch_size = batch_size
        self.clock = clock
        self.stdout = stdout

    def execute(self, graph: JobGraph, restore: Savepoint | None = None,
                allow_non_restored_state: bool = False) -> JobExecutionResult:
        # a round trip through bytes: what runs here is exactly what a cluster would get
        graph = JobGraph.from_bytes(graph.to_bytes())
        job = LocalJob(graph, batch_size=self.batch_size, clock=self.clock, stdout=self.stdout,
                       restore=restore, allow_non_restored_state=allow_non_restored_state)
        try:
            job.run()
        finally:
            job.close()
        return job.result()

    __call__ = execute


def run_local(graph: JobGraph, **kwargs: Any) -> JobExecutionResult:
    """Shorthand: ``LocalExecutor(**kwargs).execute(graph)``."""
    return LocalExecutor(**kwargs).execute(graph)


