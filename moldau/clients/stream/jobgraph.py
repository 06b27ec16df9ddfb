"""The JobGraph: what ``env.execute()`` hands to an executor (local, or the JobManager).

A :class:`JobGraph` is a DAG of :class:`JobVertex` (vertices in topological order) joined
by :class:`JobEdge`. A vertex is a *chain* of operators that run in one task per parallel
subtask, passing batches by function call; an edge says how records of the source
vertex's subtasks are distributed to the target vertex's subtasks (:class:`Partitioning`).
As in Flink's ``StreamingJobGraphGenerator``, an operator is chained to its single
consumer when the edge is FORWARD, parallelism and max parallelism are equal, the
consumer has no other input, the operator has no other output, and chaining isn't
disabled. So only a chain's last operator emits outside its vertex, and every edge leaves
from it (``side_output_tag`` names a side output of it; None is the main output).

Operators are stored as ``payload``: the cloudpickled, not yet opened operator object with
its user functions (lambdas and closures included). The structure is plain data, so the
JobManager can read, plan and show a graph without unpickling (or importing) user code;
only a subtask calls :meth:`OperatorSpec.create`.

Serialized form (``to_bytes``): msgpack map ``{"format": "moldau-jobgraph/1", "job_id",
"name", "config", "vertices": [{"id", "name", "parallelism", "max_parallelism",
"operators": [{"id", "uid", "name", "kind", "description", "payload"}]}], "edges":
[{"source", "target", "partitioning", "key_selector", "side_output_tag"}],
"user_artifacts": {relative path: bytes}}``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import pickle
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from moldau.clients.stream.operators import StreamOperator
    from moldau.clients.stream.transformations import StreamNode

__all__ = [
    "GraphError",
    "JobEdge",
    "JobGraph",
    "JobVertex",
    "OperatorSpec",
    "Partitioning",
    "connected_sources",
    "connected_targets",
    "generate_job_graph",
]

FORMAT = "moldau-jobgraph/1"


class GraphError(ValueError):
    """A job graph that can't be built or run as described (a mistake in the job)."""


class Partitioning(enum.StrEnum):
    """How records cross an edge (Flink's ship strategies)."""

    FORWARD = "FORWARD"      # subtask i -> subtask i (equal parallelism)
    HASH = "HASH"            # by key group of the key (key_by)
    REBALANCE = "REBALANCE"  # round-robin over all targets
    RESCALE = "RESCALE"      # round-robin over a local subset of targets
    BROADCAST = "BROADCAST"  # every record to every target
    SHUFFLE = "SHUFFLE"      # a random target per record
    GLOBAL = "GLOBAL"        # everything to target 0


def connected_targets(partitioning: Partitioning, index: int, up_parallelism: int,
                      down_parallelism: int) -> list[int]:
    """The target subtasks upstream subtask ``index`` sends to."""
    if partitioning is Partitioning.FORWARD:
        return [index]
    if partitioning is Partitioning.GLOBAL:
        return [0]
    if partitioning is Partitioning.RESCALE:
        if down_parallelism >= up_parallelism:
            return [j for j in range(down_parallelism)
                    if j * up_parallelism // down_parallelism == index]
        return [index * down_parallelism // up_parallelism]
    return list(range(down_parallelism))


def connected_sources(partitioning: Partitioning, index: int, up_parallelism: int,
                      down_parallelism: int) -> list[int]:
    """The upstream subtasks target subtask ``index`` receives from (its input channels)."""
    return [i for i in range(up_parallelism)
            if index in connected_targets(partitioning, i, up_parallelism, down_parallelism)]


@dataclass
class OperatorSpec:
    """One operator of a chain."""

    id: str
    uid: str | None
    name: str
    kind: str
    description: str
    payload: bytes

    def create(self) -> StreamOperator:
        """A fresh operator instance (each subtask makes its own)."""
        return pickle.loads(self.payload)  # type: ignore[no-any-return]


@dataclass
class JobVertex:
    """A chain of operators run by ``parallelism`` subtasks."""

    id: str
    name: str
    parallelism: int
    max_parallelism: int
    operators: list[OperatorSpec]

    @property
    def uid(self) -> str | None:
        """The uid of the chain's first operator (None if not set)."""
        return self.operators[0].uid if self.operators else None

    @property
    def kind(self) -> str:
        """The kind of the chain's first operator ("source", "map", "window", ...)."""
        return self.operators[0].kind if self.operators else ""

    @property
    def is_source(self) -> bool:
        return bool(self.operators) and self.operators[0].kind == "source"

    @property
    def is_sink(self) -> bool:
        return bool(self.operators) and self.operators[-1].kind == "sink"


@dataclass
class JobEdge:
    """Records from ``source``'s last operator (its main output, or the side output
    ``side_output_tag``) to ``target``'s first operator."""

    source: str
    target: str
    partitioning: Partitioning
    key_selector: bytes | None = None
    side_output_tag: str | None = None

    def create_key_selector(self) -> Any:
        return pickle.loads(self.key_selector) if self.key_selector is not None else None


@dataclass
class JobGraph:
    job_id: str
    name: str
    config: dict[str, Any]
    vertices: list[JobVertex]
    edges: list[JobEdge]
    user_artifacts: dict[str, bytes] = field(default_factory=dict)

    # navigation -----------------------------------------------------------------------------

    def vertex(self, vertex_id: str) -> JobVertex:
        for v in self.vertices:
            if v.id == vertex_id:
                return v
        raise KeyError(vertex_id)

    def inputs_of(self, vertex_id: str) -> list[JobEdge]:
        return [e for e in self.edges if e.target == vertex_id]

    def outputs_of(self, vertex_id: str) -> list[JobEdge]:
        return [e for e in self.edges if e.source == vertex_id]

    def input_channels(self, vertex_id: str, subtask_index: int) -> list[tuple[int, int]]:
        """The input channels of one subtask, in channel-number order: ``(edge index in
        self.edges, upstream subtask index)``. A source vertex has none (its channel 0 is
        its reader)."""
        v = self.vertex(vertex_id)
        out: list[tuple[int, int]] = []
        for ei, e in enumerate(self.edges):
            if e.target != vertex_id:
                continue
            up = self.vertex(e.source)
            out.extend((ei, u) for u in connected_sources(e.partitioning, subtask_index,
                                                          up.parallelism, v.parallelism))
        return out

    @property
    def checkpoint_interval(self) -> int | None:
        v = self.config.get("execution.checkpointing.interval")
        return int(v) if v is not None else None

    @property
    def max_parallelism(self) -> int:
        return int(self.config.get("pipeline.max-parallelism", 128))

    def num_tasks(self) -> int:
        return sum(v.parallelism for v in self.vertices)

    # serialization --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return msgpack.packb({  # type: ignore[no-any-return]
            "format": FORMAT,
            "job_id": self.job_id,
            "name": self.name,
            "config": self.config,
            "vertices": [{
                "id": v.id, "name": v.name, "parallelism": v.parallelism,
                "max_parallelism": v.max_parallelism,
                "operators": [{"id": o.id, "uid": o.uid, "name": o.name, "kind": o.kind,
                               "description": o.description, "payload": o.payload}
                              for o in v.operators],
            } for v in self.vertices],
            "edges": [{"source": e.source, "target": e.target,
                       "partitioning": e.partitioning.value, "key_selector": e.key_selector,
                       "side_output_tag": e.side_output_tag} for e in self.edges],
            "user_artifacts": self.user_artifacts,
        }, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> JobGraph:
        """Parse a serialized graph; user code stays pickled. Raises GraphError."""
        try:
            d = msgpack.unpackb(data, raw=False)
        except Exception as e:
            raise GraphError(f"not a job graph: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise GraphError("not a job graph (unknown format)")
        try:
            vertices = [JobVertex(v["id"], v["name"], int(v["parallelism"]),
                                  int(v["max_parallelism"]),
                                  [OperatorSpec(o["id"], o["uid"], o["name"], o["kind"],
                                                o["description"], o["payload"])
                                   for o in v["operators"]]) for v in d["vertices"]]
            edges = [JobEdge(e["source"], e["target"], Partitioning(e["partitioning"]),
                             e["key_selector"], e["side_output_tag"]) for e in d["edges"]]
            g = cls(d["job_id"], d["name"], dict(d["config"]), vertices, edges,
                    dict(d.get("user_artifacts") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise GraphError(f"malformed job graph: {e!r}") from None
        g.validate()
        return g

    def validate(self) -> None:
        """Structural checks (ids, edges, parallelism); raises GraphError."""
        ids = [v.id for v in self.vertices]
        if len(set(ids)) != len(ids):
            raise GraphError("duplicate vertex ids")
        pos = {vid: i for i, vid in enumerate(ids)}
        for v in self.vertices:
            if not v.operators:
                raise GraphError(f"vertex {v.name!r} has no operators")
            if not 1 <= v.parallelism <= v.max_parallelism:
                raise GraphError(f"vertex {v.name!r}: parallelism {v.parallelism} is not in "
                                 f"1..{v.max_parallelism} (its max parallelism)")
        for e in self.edges:
            if e.source not in pos or e.target not in pos:
                raise GraphError(f"edge {e.source} -> {e.target} names an unknown vertex")
            if pos[e.source] >= pos[e.target]:
                raise GraphError("vertices are not in topological order")
            if e.partitioning is Partitioning.HASH and e.key_selector is None:
                raise GraphError("a HASH edge needs a key selector")
            if e.partitioning is Partitioning.FORWARD and (
                    self.vertex(e.source).parallelism != self.vertex(e.target).parallelism):
                raise GraphError("a FORWARD edge needs equal parallelism on both sides")

    # showing --------------------------------------------------------------------------------

    def describe(self) -> str:
        """The graph as text (``moldau info``)."""
        lines = [f"Job {self.name!r} ({self.job_id})"]
        ci = self.checkpoint_interval
        lines.append(f"  max parallelism {self.max_parallelism}, checkpoints "
                     + (f"every {ci} ms" if ci else "off"))
        for v in self.vertices:
            lines.append(f"  [{v.id[:8]}] {v.name}  (parallelism {v.parallelism})")
            for o in v.operators:
                lines.append(f"      - {o.description}")
            for e in self.inputs_of(v.id):
                src = self.vertex(e.source)
                side = f" side output {e.side_output_tag!r}" if e.side_output_tag else ""
                lines.append(f"      <- {e.partitioning.value} from [{src.id[:8]}] "
                             f"{src.name}{side}")
        return "\n".join(lines)

    def to_json_plan(self) -> dict[str, Any]:
        """Flink's ``/jobs/<id>/plan`` shape: ``{"jid", "name", "type", "nodes": [{"id",
        "parallelism", "operator", "operator_strategy", "description", "inputs": [{"num",
        "id", "ship_strategy", "exchange"}], "optimizer_properties"}]}``."""
        nodes = []
        for v in self.vertices:
            inputs = [{"num": i, "id": e.source, "ship_strategy": e.partitioning.value,
                       "exchange": "pipelined_bounded",
                       **({"side_output": e.side_output_tag} if e.side_output_tag else {})}
                      for i, e in enumerate(self.inputs_of(v.id))]
            node: dict[str, Any] = {
                "id": v.id, "parallelism": v.parallelism, "operator": "",
                "operator_strategy": "", "description": "<br/>".join(
                    _html(o.description) for o in v.operators),
                "optimizer_properties": {},
            }
            if inputs:
                node["inputs"] = inputs
            nodes.append(node)
        return {"jid": self.job_id, "name": self.name, "type": "STREAMING", "nodes": nodes}

    def to_json(self) -> str:
        return json.dumps(self.to_json_plan(), indent=2)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- generation ---------------------------------------------------------------------------------


def _hash(*parts: Any) -> str:
    return hashlib.md5(repr(parts).encode(), usedforsecurity=False).hexdigest()


def generate_job_graph(nodes: Sequence[StreamNode], *, job_name: str, default_parallelism: int,
                       max_parallelism: int | None, chaining: bool, config: dict[str, Any],
                       job_id: str | None = None) -> JobGraph:
    """Build the JobGraph of the stream nodes a job created (in creation order, which is
    topological). Resolves default parallelism, picks partitionings, chains, pickles the
    operators; raises GraphError for jobs that can't run as written."""
    import cloudpickle

    from moldau.clients.stream.keygroups import (
        UPPER_BOUND_MAX_PARALLELISM,
        compute_default_max_parallelism,
    )

    if not nodes:
        raise GraphError("No operators defined in streaming topology. Cannot execute.")

    # parallelism ----------------------------------------------------------------------------
    par: dict[int, int] = {}
    for n in nodes:
        if n.follows is not None:
            par[n.id] = par[n.follows.id]
            continue
        p = n.parallelism if n.parallelism is not None else default_parallelism
        if n.operator.non_parallel:
            if n.parallelism is not None and n.parallelism != 1:
                raise GraphError(f"The parallelism of non parallel operator '{n.name}' must be "
                                 f"1, not {n.parallelism}.")
            p = 1
        par[n.id] = p
    job_maxp = max_parallelism or compute_default_max_parallelism(max(par.values()))
    maxp: dict[int, int] = {}
    for n in nodes:
        mp = (maxp[n.follows.id] if n.follows is not None else n.max_parallelism or job_maxp)
        if not 1 <= mp <= UPPER_BOUND_MAX_PARALLELISM:
            raise GraphError(f"max parallelism of '{n.name}' must be in 1..32768, got {mp}")
        if par[n.id] > mp:
            raise GraphError(f"The parallelism {par[n.id]} of operator '{n.name}' is larger "
                             f"than its max parallelism {mp}: lower the parallelism or raise "
                             "the max parallelism (set_max_parallelism)")
        maxp[n.id] = mp

    # operator ids ---------------------------------------------------------------------------
    op_id: dict[int, str] = {}
    seen_uids: dict[str, str] = {}
    for i, n in enumerate(nodes):
        if n.uid is not None:
            if n.uid in seen_uids:
                raise GraphError(f'Hash collision on user-specified ID "{n.uid}". Most likely '
                                 "cause is a non-unique ID. Please check that all IDs "
                                 "specified via `uid(String)` are unique.")
            seen_uids[n.uid] = n.name
            op_id[n.id] = _hash("uid", n.uid)
        else:
            op_id[n.id] = _hash("auto", i, n.operator.kind,
                                tuple(op_id[r.node.id] for r in n.inputs))

    # stream edges -----------------------------------------------------------------------------
    @dataclass
    class _Edge:
        src: StreamNode
        dst: StreamNode
        part: Partitioning
        key: Any
        tag: str | None
        explicit: bool

    edges: list[_Edge] = []
    for n in nodes:
        for r in n.inputs:
            up, down = par[r.node.id], par[n.id]
            part = r.partitioning
            explicit = part is not None
            if part is None:
                part = Partitioning.FORWARD if up == down else Partitioning.REBALANCE
            if part is Partitioning.FORWARD and up != down:
                raise GraphError(
                    "Forward partitioning does not allow change of parallelism. Upstream "
                    f"operation: {r.node.name} parallelism: {up}, downstream operation: "
                    f"{n.name} parallelism: {down} You must use another partitioning "
                    "strategy, such as broadcast, rebalance, shuffle or global.")
            edges.append(_Edge(r.node, n, part, r.key_selector, r.side_tag, explicit))
    out_deg: dict[int, int] = {n.id: 0 for n in nodes}
    in_deg: dict[int, int] = {n.id: 0 for n in nodes}
    for e in edges:
        out_deg[e.src.id] += 1
        in_deg[e.dst.id] += 1

    def chainable(e: _Edge) -> bool:
        return (chaining and e.part is Partitioning.FORWARD and e.tag is None
                and par[e.src.id] == par[e.dst.id] and maxp[e.src.id] == maxp[e.dst.id]
                and in_deg[e.dst.id] == 1 and out_deg[e.src.id] == 1
                and e.src.chaining != "never" and e.dst.chaining == "always")

    chained_next: dict[int, StreamNode] = {}
    chained_in: set[int] = set()
    for e in edges:
        if chainable(e):
            chained_next[e.src.id] = e.dst
            chained_in.add(e.dst.id)

    # vertices ---------------------------------------------------------------------------------
    vertex_of: dict[int, str] = {}
    vertices: list[JobVertex] = []
    for n in nodes:
        if n.id in chained_in:
            continue
        chain = [n]
        while chain[-1].id in chained_next:
            chain.append(chained_next[chain[-1].id])
        specs = []
        for c in chain:
            c.operator.name = c.name
            try:
                payload = cloudpickle.dumps(c.operator, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                raise GraphError(f"the functions of operator '{c.name}' can't be serialized "
                                 f"for the cluster: {e}") from None
            specs.append(OperatorSpec(op_id[c.id], c.uid, c.name, c.operator.kind,
                                      c.operator.describe(), payload))
        vid = op_id[n.id]
        for c in chain:
            vertex_of[c.id] = vid
        vertices.append(JobVertex(vid, " -> ".join(c.name for c in chain), par[n.id],
                                  maxp[n.id], specs))

    job_edges: list[JobEdge] = []
    for edge in edges:
        if chainable(edge):
            continue
        ks = None
        if edge.part is Partitioning.HASH:
            try:
                ks = cloudpickle.dumps(edge.key, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as ex:
                raise GraphError(f"the key selector of '{edge.dst.name}' can't be serialized: "
                                 f"{ex}") from None
        job_edges.append(JobEdge(vertex_of[edge.src.id], vertex_of[edge.dst.id], edge.part, ks,
                                 edge.tag))

    cfg = dict(config)
    cfg["pipeline.max-parallelism"] = job_maxp
    cfg["parallelism.default"] = default_parallelism
    for k, v in cfg.items():
        try:
            msgpack.packb(v, use_bin_type=True)
        except (TypeError, ValueError):
            raise GraphError(f"configuration {k!r} = {v!r:.60} is not plain data (str, number, "
                             "bool, list, dict)") from None
    graph = JobGraph(job_id or uuid.uuid4().hex, job_name, cfg, vertices, job_edges)
    graph.validate()
    return graph
