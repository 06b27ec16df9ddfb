"""The core of a task (one parallel subtask of a job vertex), without any I/O.

:class:`OperatorChain` runs a vertex's chain of operators for one subtask: it merges the
watermarks of its input channels (:class:`WatermarkValve`), passes batches, watermarks and
timer firings down the chain, and hands what leaves the chain's last operator to a
:class:`ChainOutput`. :class:`OutputPartitioner` splits an outgoing batch among the target
subtasks of one edge. The local executor connects chains by direct calls; a TaskManager
connects the same objects with network channels.

Input channels of a subtask: for a source vertex, channel 0 is its reader; otherwise, one
channel per (input edge, connected upstream subtask), numbered by the runtime.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from moldau.clients.stream.jobgraph import JobEdge, JobVertex, Partitioning, connected_targets
from moldau.clients.stream.keygroups import assign_to_key_group
from moldau.clients.stream.operators import Batch, OperatorInfo, StreamOperator
from moldau.clients.stream.watermark import MAX_WATERMARK, MIN_WATERMARK

__all__ = ["ChainOutput", "OperatorChain", "OutputPartitioner", "WatermarkValve"]


class WatermarkValve:
    """Combines the watermarks of several input channels (Flink's
    ``StatusWatermarkValve``): the output watermark is the minimum over active, aligned
    channels and never goes back; an idle channel doesn't hold time back; when every
    channel is idle the output is idle. A channel that becomes active again only counts
    once its watermark caught up with the output (it is "aligned"). An ended channel no
    longer counts at all (so an idle channel next to ended ones makes the output idle
    instead of letting it jump to the end of time); when all have ended the output is
    ``MAX_WATERMARK``. Each method returns ``(status, watermark)``: an idle/active change to
    forward (or None), and a new output watermark (or None)."""

    __slots__ = ("aligned", "ended", "idle", "last_output", "output_idle", "wm")

    def __init__(self, num_channels: int) -> None:
        self.wm = [MIN_WATERMARK] * num_channels
        self.idle = [False] * num_channels
        self.aligned = [True] * num_channels
        self.ended = [False] * num_channels
        self.last_output = MIN_WATERMARK
        self.output_idle = False

    def _min_aligned(self) -> int | None:
        best: int | None = None
        for w, a, e in zip(self.wm, self.aligned, self.ended, strict=True):
            if a and not e and (best is None or w < best):
                best = w
        if best is None and all(self.ended):
            best = MAX_WATERMARK
        if best is not None and best > self.last_output:
            self.last_output = best
            return best
        return None

    def _all_quiet(self) -> bool:
        """Every channel is idle or ended, and not all have ended."""
        return not all(self.ended) and all(
            i or e for i, e in zip(self.idle, self.ended, strict=True))

    def _go_idle(self) -> tuple[bool | None, int | None]:
        # all idle: advance to the highest watermark of the live channels, then go idle
        top = max(w for w, e in zip(self.wm, self.ended, strict=True) if not e)
        new = None
        if top > self.last_output:
            self.last_output = new = top
        if self.output_idle:
            return None, new
        self.output_idle = True
        return True, new

    def input_watermark(self, channel: int, watermark: int) -> tuple[bool | None, int | None]:
        if self.idle[channel] or self.ended[channel]:
            return None, None  # Flink ignores watermarks of idle channels
        if watermark > self.wm[channel]:
            self.wm[channel] = watermark
            if not self.aligned[channel] and watermark >= self.last_output:
                self.aligned[channel] = True
            return None, self._min_aligned()
        return None, None

    def input_status(self, channel: int, idle: bool) -> tuple[bool | None, int | None]:
        if idle == self.idle[channel] or self.ended[channel]:
            return None, None
        self.idle[channel] = idle
        if idle:
            self.aligned[channel] = False
            if self._all_quiet():
                return self._go_idle()
            return None, self._min_aligned()
        if self.wm[channel] >= self.last_output:
            self.aligned[channel] = True
        if self.output_idle:
            self.output_idle = False
            return False, None
        return None, None

    def end_channel(self, channel: int) -> tuple[bool | None, int | None]:
        """A channel ended (after its final watermark)."""
        self.ended[channel] = True
        self.idle[channel] = False
        if all(self.ended):
            status = False if self.output_idle else None
            self.output_idle = False
            return status, self._min_aligned()
        if self._all_quiet():
            return self._go_idle()
        return None, self._min_aligned()


class ChainOutput(Protocol):
    """Where a chain's results go (the network, or the next chain locally)."""

    def emit(self, tag: str | None, batch: Batch) -> None:
        """Records of the main output (tag None) or of side output ``tag``."""

    def emit_watermark(self, watermark: int) -> None: ...

    def emit_watermark_status(self, idle: bool) -> None: ...


class OperatorChain:
    """One subtask of a job vertex: its operators, input watermark valve and timers.

    Use: ``OperatorChain(vertex, info, output, num_channels)``, optionally
    ``restore(snapshots)``, ``open()``; then ``process_batch`` / ``process_watermark`` /
    ``process_watermark_status`` / ``end_of_input`` per input channel and
    ``advance_processing_time(now)`` whenever ``next_processing_time()`` is reached;
    ``snapshot_state()`` between calls; ``close()`` at the end. After the last channel
    ended, ``finished`` is True and every pending output has been emitted (including the
    final ``MAX_WATERMARK``)."""

    def __init__(self, vertex: JobVertex | None, info: OperatorInfo, output: ChainOutput,
                 num_channels: int, operators: Sequence[StreamOperator] | None = None,
                 operator_ids: Sequence[str] | None = None) -> None:
        if operators is None:
            assert vertex is not None
            operators = [spec.create() for spec in vertex.operators]
            operator_ids = [spec.id for spec in vertex.operators]
        self.ops = list(operators)
        self.op_ids = list(operator_ids) if operator_ids is not None else [
            str(i) for i in range(len(self.ops))]
        self.info = info
        self.output = output
        self.valve = WatermarkValve(max(1, num_channels))
        self.ended = [False] * max(1, num_channels)
        self.finished = False
        for op in self.ops:
            op.setup(info)

    @property
    def head(self) -> StreamOperator:
        return self.ops[0]

    def restore(self, snapshots: Mapping[str, Sequence[bytes]]) -> list[str]:
        """Restore each operator from the snapshots of all subtasks of the same operator id
        in an earlier run; returns the ids that had no state here."""
        missing = []
        for op, oid in zip(self.ops, self.op_ids, strict=False):
            snaps = snapshots.get(oid)
            if snaps:
                op.restore_state(list(snaps))
            else:
                missing.append(oid)
        return missing

    def open(self) -> None:
        for op in self.ops:
            op.open()

    def close(self) -> None:
        err: BaseException | None = None
        for op in self.ops:
            try:
                op.close()
            except BaseException as e:
                err = err or e
        if err is not None:
            raise err

    def snapshot_state(self) -> dict[str, bytes]:
        """Operator id -> its snapshot (see ``StreamOperator.snapshot_state``)."""
        return {oid: op.snapshot_state() for op, oid in zip(self.ops, self.op_ids, strict=False)}

    # inputs -----------------------------------------------------------------------------------

    def process_batch(self, channel: int, batch: Batch) -> None:
        if self.valve.idle[channel]:
            self._valve(self.valve.input_status(channel, False))
        if batch:
            self._push(0, batch)

    def process_watermark(self, channel: int, watermark: int) -> None:
        self._valve(self.valve.input_watermark(channel, watermark))

    def process_watermark_status(self, channel: int, idle: bool) -> None:
        self._valve(self.valve.input_status(channel, idle))

    def end_of_input(self, channel: int) -> None:
        if self.ended[channel]:
            return
        self.ended[channel] = True
        self._valve(self.valve.end_channel(channel))
        if all(self.ended):
            self.finished = True
            for i, op in enumerate(self.ops):
                out = op.end_input()
                if out:
                    self._push(i + 1, out)
                self._drain(i)

    def next_processing_time(self) -> int | None:
        best: int | None = None
        for op in self.ops:
            t = op.next_processing_time()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def advance_processing_time(self, now: int) -> None:
        for i, op in enumerate(self.ops):
            t = op.next_processing_time()
            if t is not None and t <= now:
                out = op.on_processing_time(now)
                if out:
                    self._push(i + 1, out)
                self._drain(i)

    # internals --------------------------------------------------------------------------------

    def _valve(self, result: tuple[bool | None, int | None]) -> None:
        status, wm = result
        if status is not None:
            self._status(0, status)
        if wm is not None:
            self._watermark(0, wm)

    def _push(self, i: int, batch: Batch) -> None:
        ops = self.ops
        if i >= len(ops):
            self.output.emit(None, batch)
            return
        op = ops[i]
        out = op.process_batch(batch)
        if out:
            self._push(i + 1, out)
        if op.side_outputs or op.out_watermark is not None or op.out_idle is not None:
            self._drain(i)

    def _drain(self, i: int) -> None:
        op = self.ops[i]
        if op.side_outputs:
            sides, op.side_outputs = op.side_outputs, {}
            if i == len(self.ops) - 1:
                for tag, b in sides.items():
                    if b:
                        self.output.emit(tag, b)
        if op.out_idle is not None:
            idle, op.out_idle = op.out_idle, None
            self._status(i + 1, idle)
        if op.out_watermark is not None:
            wm, op.out_watermark = op.out_watermark, None
            self._watermark(i + 1, wm)

    def _watermark(self, i: int, wm: int) -> None:
        if i >= len(self.ops):
            self.output.emit_watermark(wm)
            return
        op = self.ops[i]
        out = op.process_watermark(wm)
        if out:
            self._push(i + 1, out)
        self._drain(i)

    def _status(self, i: int, idle: bool) -> None:
        if i >= len(self.ops):
            self.output.emit_watermark_status(idle)
            return
        op = self.ops[i]
        op.process_watermark_status(idle)
        self._drain(i)


class OutputPartitioner:
    """Splits a batch among the target subtasks of one edge, for upstream subtask
    ``subtask_index``: ``partition(batch) -> [(target index, batch)]``. HASH sends a
    record to the subtask owning its key's key group (``target_max_parallelism`` is the
    target vertex's); REBALANCE and RESCALE go round-robin record by record."""

    def __init__(self, edge: JobEdge, subtask_index: int, up_parallelism: int,
                 down_parallelism: int, target_max_parallelism: int,
                 key_selector: Any = None, seed: int | None = None) -> None:
        self.partitioning = edge.partitioning
        self.targets = connected_targets(edge.partitioning, subtask_index, up_parallelism,
                                         down_parallelism)
        self.n = down_parallelism
        self.maxp = target_max_parallelism
        if edge.partitioning is Partitioning.HASH:
            from moldau.clients.stream.functions import method_of

            ks = key_selector if key_selector is not None else edge.create_key_selector()
            self._key = method_of(ks, "get_key", "not a key selector")
        self._next = subtask_index % max(1, len(self.targets))
        self._rng = random.Random(seed if seed is not None else subtask_index)

    def partition(self, batch: Batch) -> list[tuple[int, Batch]]:
        p = self.partitioning
        if p is Partitioning.FORWARD or p is Partitioning.GLOBAL or len(self.targets) == 1:
            return [(self.targets[0], batch)]
        if p is Partitioning.BROADCAST:
            return [(t, batch) for t in self.targets]
        values, tss = batch.values, batch.timestamps
        if p is Partitioning.HASH:
            key, maxp, n = self._key, self.maxp, self.n
            groups: dict[int, list[int]] = {}
            for i, v in enumerate(values):
                t = assign_to_key_group(key(v), maxp) * n // maxp
                g = groups.get(t)
                if g is None:
                    groups[t] = [i]
                else:
                    g.append(i)
            if len(groups) == 1:
                return [(next(iter(groups)), batch)]
            return [(t, Batch([values[i] for i in idx],
                              [tss[i] for i in idx] if tss is not None else None))
                    for t, idx in groups.items()]
        targets = self.targets
        k = len(targets)
        if p is Partitioning.SHUFFLE:
            rnd = self._rng.randrange
            sgroups: dict[int, list[int]] = {}
            for i in range(len(values)):
                sgroups.setdefault(targets[rnd(k)], []).append(i)
            return [(t, Batch([values[i] for i in idx],
                              [tss[i] for i in idx] if tss is not None else None))
                    for t, idx in sgroups.items()]
        # REBALANCE / RESCALE: record j goes to targets[(start + j) % k]
        start = self._next
        self._next = (start + len(values)) % k
        out = []
        for o in range(min(k, len(values))):
            out.append((targets[(start + o) % k],
                        Batch(values[o::k], tss[o::k] if tss is not None else None)))
        return out
