"""A deterministic simulation of a Raft group of pure ``RaftNode``s (shared by the tests).

One seeded ``random.Random`` decides everything: message delays (and so reordering), drops,
duplicates, partitions, crashes and restarts, ticks, and what the clients do. Each node has
a durable store (term, vote, snapshot, log) and a queue of writes not yet flushed; the node's
non-write effects wait for the writes before them (the rule ``raft.py`` states), a flush makes
a random prefix of the queue durable, and a crash loses the rest together with the effects that
waited for it.

The invariants are checked as the simulation runs (election safety, leader completeness,
state machine safety, in-order apply) and at the end (log matching, liveness after healing,
and linearizability of the clients' register history, checked by ``linearizable``).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moldau.broker.metadata.raft import (
    WRITE_EFFECTS,
    AppendLog,
    Apply,
    Effect,
    Entry,
    InstallSnapshot,
    Message,
    RaftConfig,
    RaftNode,
    ReadFailed,
    ReadReady,
    Role,
    RoleChange,
    SaveState,
    Send,
    SnapshotRequest,
    TruncateLog,
)

INF = float("inf")


class Violation(AssertionError):
    pass


# ---------------------------------------------------------------- linearizability


@dataclass(slots=True)
class Op:
    """One client operation on the register: ``kind`` "w" (write ``value``) or "r" (read
    that returned ``value``). ``inv``/``resp`` are positions in the global event order;
    ``resp`` INF for an operation whose outcome is unknown."""

    kind: str
    value: Any
    inv: int
    resp: float = INF


def linearizable(ops: list[Op], initial: Any = None) -> bool:
    """Wing & Gong's search (with Lowe's memo of visited (linearized set, state) pairs) for
    an order of the operations that respects real time and register semantics. Operations
    with an unknown outcome may take effect at any time after their invocation, or never.
    """
    read_values = {o.value for o in ops if o.kind == "r" and o.resp != INF}
    # a pending write nobody read can always be left out: it may never have happened
    ops = [o for o in ops if o.resp != INF or (o.kind == "w" and o.value in read_values)]
    ops.sort(key=lambda o: o.inv)
    completed = 0
    for i, o in enumerate(ops):
        if o.resp != INF:
            completed |= 1 << i
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = [(0, initial)]
    while stack:
        done, value = stack.pop()
        if done & completed == completed:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        horizon = min(o.resp for i, o in enumerate(ops) if not done >> i & 1)
        for i, o in enumerate(ops):
            if done >> i & 1:
                continue
            if o.inv > horizon:
                break
            if o.kind == "w":
                stack.append((done | 1 << i, o.value))
            elif o.value == value:
                stack.append((done | 1 << i, value))
    return False


# ---------------------------------------------------------------- nodes


@dataclass(slots=True)
class Durable:
    term: int = 0
    vote: int | None = None
    snap_index: int = 0
    snap_term: int = 0
    snap_value: Any = None
    log: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class _ResetState:
    """The state machine part of an InstallSnapshot, ordered with the Apply effects."""

    index: int
    value: Any


class SimNode:
    def __init__(self, sim: Simulation, node_id: int) -> None:
        self.sim = sim
        self.id = node_id
        self.durable = Durable()
        self.raft: RaftNode | None = None
        self.value: Any = None  # the register
        self.applied = 0
        self.pending: list[Any] = []  # write effects not yet durable
        self.written = 0  # write effects emitted since the start (this incarnation)
        self.flushed = 0
        self.gated: list[tuple[int, Any]] = []  # (writes it waits for, effect)
        self.flush_scheduled = False
        self.incarnation = 0
        self.reads: list[tuple[int, int]] = []  # (ctx, index) ready once applied >= index

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def start(self) -> None:
        d = self.durable
        self.incarnation += 1
        self.raft = RaftNode(self.id, self.sim.ids, self.sim.config,
                             random.Random(self.sim.rng.random()), self.sim.now, term=d.term,
                             vote=d.vote, snapshot_index=d.snap_index, snapshot_term=d.snap_term,
                             entries=list(d.log))
        self.value, self.applied = d.snap_value, d.snap_index
        self.pending, self.gated, self.reads = [], [], []
        self.written = self.flushed = 0
        self.flush_scheduled = False

    def crash(self) -> None:
        self.raft = None
        self.pending, self.gated, self.reads = [], [], []

    def run(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, RoleChange) and e.role == Role.LEADER:
                self.sim.check_new_leader(self, e.term)
            if isinstance(e, WRITE_EFFECTS):
                self.pending.append(e)
                self.written += 1
                if isinstance(e, InstallSnapshot):
                    self._gate(_ResetState(e.index, e.data))
                if not self.flush_scheduled:
                    self.flush_scheduled = True
                    inc = self.incarnation
                    self.sim.at(self.sim.rng.uniform(0.0002, self.sim.faults.max_flush_delay),
                                lambda inc=inc: self.flush(inc))
            else:
                self._gate(e)

    def _gate(self, e: Any) -> None:
        if self.gated or self.flushed < self.written:
            self.gated.append((self.written, e))
        else:
            self.execute(e)

    def flush(self, incarnation: int) -> None:
        if incarnation != self.incarnation or not self.alive:
            return
        self.flush_scheduled = False
        if not self.pending:
            return
        # a flush may cover only part of what is queued (a crash can fall in between)
        k = self.sim.rng.randint(1, len(self.pending))
        batch, self.pending = self.pending[:k], self.pending[k:]
        d = self.durable
        for w in batch:
            match w:
                case SaveState():
                    d.term, d.vote = w.term, w.vote
                case TruncateLog():
                    d.log = [x for x in d.log if x.index < w.from_index]
                case AppendLog():
                    last = d.log[-1].index if d.log else d.snap_index
                    assert w.entries[0].index == last + 1, (w.entries[0].index, last)
                    d.log.extend(w.entries)
                case InstallSnapshot():
                    d.snap_index, d.snap_term, d.snap_value = w.index, w.term, w.data
                    d.log = []
        self.flushed += k
        while self.gated and self.gated[0][0] <= self.flushed:
            _, e = self.gated.pop(0)
            self.execute(e)
            if not self.alive:
                return
        if self.pending:
            self.flush_scheduled = True
            inc = self.incarnation
            self.sim.at(self.sim.rng.uniform(0.0002, self.sim.faults.max_flush_delay),
                                lambda inc=inc: self.flush(inc))

    def execute(self, e: Any) -> None:
        assert self.raft is not None
        match e:
            case Send(msg=msg):
                if isinstance(msg, SnapshotRequest):
                    d = self.durable
                    assert d.snap_index >= msg.index
                    msg = SnapshotRequest(msg.src, msg.dst, msg.term, d.snap_index, d.snap_term,
                                          d.snap_value)
                self.sim.send(msg)
            case Apply(entries=entries):
                for entry in entries:
                    self.apply(entry)
            case _ResetState():
                self.sim.stats["snapshots"] += 1
                self.value, self.applied = e.value, e.index
                self.check_reads()
            case ReadReady(ctx=ctx, index=index):
                self.reads.append((ctx, index))
                self.check_reads()
            case ReadFailed(ctx=ctx):
                self.sim.read_failed(self, ctx)
            case RoleChange():
                pass

    def apply(self, entry: Entry) -> None:
        if entry.index != self.applied + 1:
            raise Violation(f"node {self.id} applied {entry.index} after {self.applied}")
        self.sim.check_apply(self, entry)
        if entry.payload is not None:
            self.value = entry.payload[1]
        self.applied = entry.index
        self.sim.applied_here(self, entry)
        self.check_reads()
        # snapshot and compact now and then, so that snapshots get installed too
        assert self.raft is not None
        d = self.durable
        if self.applied - d.snap_index >= self.sim.snapshot_every:
            term = self.raft.term_at(self.applied)
            assert term is not None
            d.snap_index, d.snap_term, d.snap_value = self.applied, term, self.value
            d.log = [x for x in d.log if x.index > self.applied]
            self.raft.compact(self.applied)

    def check_reads(self) -> None:
        ready = [(c, i) for c, i in self.reads if i <= self.applied]
        if ready:
            self.reads = [(c, i) for c, i in self.reads if i > self.applied]
            for ctx, _ in ready:
                self.sim.read_done(self, ctx, self.value)


# ---------------------------------------------------------------- the simulation


@dataclass(slots=True)
class _Client:
    cid: int
    busy: bool = False
    op: Op | None = None
    target: int = 0
    ctx: int = 0
    deadline_token: int = 0


@dataclass
class Faults:
    drop: float = 0.05
    duplicate: float = 0.03
    min_delay: float = 0.0005
    max_delay: float = 0.015
    partition_rate: float = 0.8  # partitions started per simulated second
    crash_rate: float = 0.6  # crashes per simulated second
    max_flush_delay: float = 0.004  # a slow disk widens the window a crash can fall in
    max_restart_delay: float = 0.6
    local_follower_reads: bool = False  # a deliberately wrong read path, to test the checker

    @classmethod
    def random(cls, rng: random.Random) -> Faults:
        """One of a few profiles: lossy network, partitions, crash storms on slow disks."""
        kind = rng.randrange(4)
        if kind == 0:
            return cls(drop=0.1, duplicate=0.05, partition_rate=1.5, crash_rate=0.3)
        if kind == 1:
            return cls(drop=0.02, partition_rate=0.3, crash_rate=4.0, max_flush_delay=0.03,
                       max_restart_delay=0.08)
        if kind == 2:  # election storms: slow links, many duplicates, quick restarts
            return cls(drop=0.05, duplicate=0.3, max_delay=0.08, partition_rate=0.5,
                       crash_rate=3.0, max_flush_delay=0.02, max_restart_delay=0.05)
        return cls()


class Simulation:
    def __init__(self, seed: int, nodes: int = 3, faults: Faults | None = None,
                 clients: int = 3, snapshot_every: int = 8) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults.random(self.rng)
        # pre-vote and check-quorum only protect liveness: safety must hold without them
        self.config = RaftConfig(election_timeout=0.15, heartbeat_interval=0.03, max_batch=4,
                                 max_inflight=16, pre_vote=self.rng.random() < 0.7,
                                 check_quorum=self.rng.random() < 0.7)
        self.ids = list(range(1, nodes + 1))
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.events = itertools.count()  # the real-time order of client events
        self.nodes = {i: SimNode(self, i) for i in self.ids}
        self.cut: set[tuple[int, int]] = set()
        self.snapshot_every = snapshot_every
        self.leaders: dict[int, int] = {}  # term -> leader
        self.committed: dict[int, tuple[int, Any]] = {}  # index -> (term, payload)
        self.history: list[Op] = []
        self.clients = [_Client(c) for c in range(clients)]
        self.proposals: dict[tuple[int, int], tuple[int, _Client, Op]] = {}
        self.next_value = itertools.count(1)
        self.next_ctx = itertools.count(1)
        self.faulty = True
        self.stats = {"elections": 0, "crashes": 0, "partitions": 0, "snapshots": 0,
                      "writes": 0, "reads": 0}

    # ------------------------------------------------------------ scheduling

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), fn))

    def run_until(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t:
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
        self.now = t

    # ------------------------------------------------------------ network

    def connected(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut

    def send(self, msg: Message) -> None:
        f = self.faults
        if not self.connected(msg.src, msg.dst):
            return
        if self.faulty and self.rng.random() < f.drop:
            return
        copies = 2 if self.faulty and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self.at(self.rng.uniform(f.min_delay, f.max_delay), lambda m=msg: self.deliver(m))

    def deliver(self, msg: Message) -> None:
        node = self.nodes[msg.dst]
        if node.raft is None or not self.connected(msg.src, msg.dst):
            return
        node.run(node.raft.on_message(msg, self.now))

    # ------------------------------------------------------------ invariants

    def check_new_leader(self, node: SimNode, term: int) -> None:
        """Election safety and leader completeness, when a node becomes leader."""
        self.stats["elections"] += 1
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            raise Violation(f"two leaders in term {term}: {other} and {node.id}")
        raft = node.raft
        assert raft is not None
        for index, (t, payload) in self.committed.items():
            if index <= raft.snap_index:
                continue
            if raft.term_at(index) != t or raft.entry(index).payload != payload:
                raise Violation(f"leader {node.id} of term {term} lacks committed entry "
                                f"{index} (term {t})")

    def check_apply(self, node: SimNode, entry: Entry) -> None:
        """State machine safety: every node applies the same entry at an index."""
        known = self.committed.setdefault(entry.index, (entry.term, entry.payload))
        if known != (entry.term, entry.payload):
            raise Violation(f"node {node.id} applied {entry} at {entry.index}, another node "
                            f"applied {known}")

    def check_log_matching(self) -> None:
        live = [n.raft for n in self.nodes.values() if n.raft is not None]
        for a, b in itertools.combinations(live, 2):
            lo = max(a.snap_index, b.snap_index) + 1
            hi = min(a.last_index, b.last_index)
            top = 0
            for i in range(hi, lo - 1, -1):
                if a.term_at(i) == b.term_at(i):
                    top = i
                    break
            for i in range(lo, top + 1):
                if a.entry(i) != b.entry(i):
                    raise Violation(f"logs of {a.id} and {b.id} agree at {top} but differ at {i}")

    # ------------------------------------------------------------ clients

    def client_step(self, c: _Client) -> None:
        if not self.faulty or c.busy:
            return
        live = [n for n in self.nodes.values() if n.alive]
        if not live:
            self.at(0.02, lambda: self.client_step(c))
            return
        leaders = [n for n in live if n.raft is not None and n.raft.is_leader]
        node = self.rng.choice(leaders if leaders and self.rng.random() < 0.7 else live)
        assert node.raft is not None
        c.target = node.id
        c.deadline_token += 1
        token = c.deadline_token
        if self.rng.random() < 0.5:
            if not node.raft.is_leader:
                self.at(0.01, lambda: self.client_step(c))
                return
            value = next(self.next_value)
            c.ctx = 0  # a late answer to an abandoned read must not match this write
            op = Op("w", value, next(self.events))
            index, fx = node.raft.propose([("w", value)], self.now)
            self.proposals[(node.id, index)] = (node.raft.term, c, op)
            self.stats["writes"] += 1
        else:
            op = Op("r", None, next(self.events))
            c.ctx = next(self.next_ctx)
            if self.faults.local_follower_reads and not node.raft.is_leader:
                fx = [ReadReady(c.ctx, 0)]
            else:
                fx = node.raft.read_index(c.ctx, self.now)
            self.stats["reads"] += 1
        c.busy, c.op = True, op
        self.history.append(op)
        self.at(0.5, lambda: self.client_timeout(c, token))
        node.run(fx)

    def _finish(self, c: _Client, keep: bool) -> None:
        if not keep and c.op is not None:
            self.history.remove(c.op)
        c.busy, c.op = False, None
        c.deadline_token += 1
        self.at(self.rng.uniform(0.0, 0.03), lambda: self.client_step(c))

    def client_timeout(self, c: _Client, token: int) -> None:
        if c.deadline_token != token or not c.busy:
            return
        op = c.op
        # a write may still take effect (its outcome stays unknown); a read had no effect
        self._finish(c, keep=op is not None and op.kind == "w")

    def applied_here(self, node: SimNode, entry: Entry) -> None:
        p = self.proposals.pop((node.id, entry.index), None)
        if p is None:
            return
        term, c, op = p
        if c.op is not op:
            return  # the client gave up on it: outcome stays unknown
        if entry.term == term:
            op.resp = next(self.events)
            self._finish(c, keep=True)
        else:
            self._finish(c, keep=False)  # another entry took its place: it never happened

    def read_done(self, node: SimNode, ctx: int, value: Any) -> None:
        for c in self.clients:
            if (c.busy and c.ctx == ctx and c.target == node.id and c.op is not None
                    and c.op.kind == "r"):
                c.op.value = value
                c.op.resp = next(self.events)
                self._finish(c, keep=True)

    def read_failed(self, node: SimNode, ctx: int) -> None:
        for c in self.clients:
            if (c.busy and c.ctx == ctx and c.target == node.id and c.op is not None
                    and c.op.kind == "r"):
                self._finish(c, keep=False)

    # ------------------------------------------------------------ faults

    def tick(self, node: SimNode) -> None:
        if node.raft is not None:
            node.run(node.raft.tick(self.now))
        self.at(0.01 * self.rng.uniform(0.8, 1.2), lambda: self.tick(node))

    def chaos(self) -> None:
        if not self.faulty:
            return
        f = self.faults
        r = self.rng.random() * (f.partition_rate + f.crash_rate)
        if r < f.partition_rate:
            self.partition()
        else:
            self.crash()
        self.at(self.rng.expovariate(f.partition_rate + f.crash_rate), self.chaos)

    def partition(self) -> None:
        self.stats["partitions"] += 1
        ids = list(self.ids)
        self.rng.shuffle(ids)
        kind = self.rng.random()
        cut: set[tuple[int, int]] = set()
        if kind < 0.4:  # split in two
            k = self.rng.randint(1, len(ids) - 1)
            left, right = ids[:k], ids[k:]
            cut = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
        elif kind < 0.7:  # isolate one node
            x = ids[0]
            cut = {(x, y) for y in ids[1:]} | {(y, x) for y in ids[1:]}
        else:  # one-way link losses
            for _ in range(self.rng.randint(1, len(ids))):
                a, b = self.rng.sample(ids, 2)
                cut.add((a, b))
        self.cut |= cut
        self.at(self.rng.uniform(0.05, 0.8), lambda: self.cut.difference_update(cut))

    def crash(self) -> None:
        live = [n for n in self.nodes.values() if n.alive]
        if not live:
            return
        node = self.rng.choice(live)
        self.stats["crashes"] += 1
        node.crash()
        self.at(self.rng.uniform(0.005, self.faults.max_restart_delay), lambda: self.restart(node))

    def restart(self, node: SimNode) -> None:
        if not node.alive:
            node.start()

    # ------------------------------------------------------------ the run

    def run(self, faulty_for: float = 3.0, settle: float = 2.0) -> None:
        for n in self.nodes.values():
            n.start()
            self.at(self.rng.uniform(0, 0.01), lambda n=n: self.tick(n))
        for c in self.clients:
            self.at(self.rng.uniform(0, 0.1), lambda c=c: self.client_step(c))
        self.at(self.rng.uniform(0.1, 0.5), self.chaos)
        end = faulty_for
        while self.now < end:
            self.run_until(min(end, self.now + 0.5))
            self.check_log_matching()
        # heal: no more faults, every node back; clients stop; then it must converge
        self.faulty = False
        self.cut.clear()
        for n in self.nodes.values():
            if not n.alive:
                n.start()
        self.run_until(self.now + settle)
        self.check_log_matching()
        self.final_round()
        if not linearizable(self.history):
            raise Violation(f"history not linearizable ({len(self.history)} ops)")

    def final_round(self) -> None:
        """Liveness: a write and a read-index read after healing succeed, and every node
        ends with the same state."""
        leaders = [n for n in self.nodes.values() if n.raft is not None and n.raft.is_leader]
        if len(leaders) != 1:
            raise Violation(f"no single leader after healing: {[n.id for n in leaders]}")
        leader = leaders[0]
        assert leader.raft is not None
        value = next(self.next_value)
        op = Op("w", value, next(self.events))
        self.history.append(op)
        index, fx = leader.raft.propose([("w", value)], self.now)
        leader.run(fx)
        self.run_until(self.now + 1.0)
        if leader.applied < index or leader.raft.term_at(index) is None:
            raise Violation("the final write did not commit")
        op.resp = next(self.events)
        c = _Client(-1, busy=True, ctx=next(self.next_ctx), target=leader.id)
        read = c.op = Op("r", None, next(self.events))
        self.clients.append(c)
        self.history.append(read)
        leader.run(leader.raft.read_index(c.ctx, self.now))
        self.run_until(self.now + 1.0)
        if read.resp == INF or read.value != value:
            raise Violation(f"final read returned {read.value!r}, wanted {value!r}")
        states = {(n.applied, n.value) for n in self.nodes.values()}
        if len(states) != 1:
            raise Violation(f"nodes did not converge: {states}")
