"""The logical dataflow a job script builds, before it becomes a JobGraph.

Every operator call on a stream (``map``, ``key_by(...).sum(1)``, ``print()``) appends a
:class:`StreamNode` to its environment; its inputs are :class:`InputRef` s naming the
upstream node, how records are partitioned on the way (None: Flink's default, FORWARD at
equal parallelism else REBALANCE), the key selector of a HASH partitioning, and the side
output the records come from. ``union`` and the partitioning calls (``shuffle`` etc.) make
no node: they only change the refs the next operator gets, as Flink's virtual nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moldau.clients.stream.jobgraph import Partitioning
from moldau.clients.stream.operators import StreamOperator

__all__ = ["InputRef", "StreamNode"]


@dataclass(eq=False)
class StreamNode:
    id: int
    operator: StreamOperator
    name: str
    inputs: list[InputRef] = field(default_factory=list)
    uid: str | None = None
    parallelism: int | None = None
    max_parallelism: int | None = None
    # "always": may chain to its input; "head": starts a chain; "never": chains to nothing
    chaining: str = "always"
    slot_sharing_group: str | None = None
    type_info: Any = None
    # run with the parallelism of this node (a source's watermark assigner)
    follows: StreamNode | None = None


@dataclass(frozen=True, eq=False)
class InputRef:
    node: StreamNode
    partitioning: Partitioning | None = None
    key_selector: Any = None
    side_tag: str | None = None
