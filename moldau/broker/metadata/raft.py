"""Raft consensus as a pure state machine: messages and clock readings in, effects out.

``RaftNode`` does no I/O, reads no clock and draws randomness only from the ``random.Random``
it is given, so the same inputs give the same outputs: the asyncio shell (``raft_sink``) and
the deterministic simulation in the tests drive the very same code.

Every call (``tick``, ``on_message``, ``propose``, ``read_index``) returns a list of effects
that the caller must carry out **in order**:

- write effects (``SaveState``, ``TruncateLog``, ``AppendLog``, ``InstallSnapshot``) change
  persistent state; the caller may buffer them but
- every other effect (``Send``, ``Apply``, ``ReadReady``, ``ReadFailed``, ``RoleChange``) may
  only be carried out once **every write effect returned before it (by this or an earlier
  call) is durable**. This one rule gives Raft's "persist before you answer": a vote is on
  disk before it is granted, entries before they are acknowledged, and a leader's own entries
  before anyone can count them as replicated (so the leader may count itself at once).

A crash loses the writes that were not yet durable together with every effect that waited
for them; the node is rebuilt from what is durable (``RaftNode(..., term=, vote=,
snapshot_index=, snapshot_term=, entries=)``).

Beyond the paper's core (elections, log replication, commitment, snapshots): pre-vote (a node
asks whether it could win before it bumps its term, so a node that was cut off does not
disrupt the cluster when it returns), check-quorum (a leader that has not heard from a
majority for an election timeout steps down), leader stickiness (a node that heard from a
live leader within the minimum election timeout ignores vote requests), and ReadIndex reads
(a read is served once the leader confirmed, with a heartbeat round started after the read,
that it was still the leader at its commit index).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry; ``payload`` is opaque to Raft (None: the no-op a new leader appends)."""

    index: int
    term: int
    payload: Any


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """``term`` is the candidate's next term for a pre-vote (its own term is not bumped)."""

    src: int
    dst: int
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """A granted pre-vote carries the term asked for, a refusal the voter's own term."""

    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Entries after ``prev_index``; doubles as the heartbeat. ``read_seq`` numbers the
    leader's ReadIndex rounds; the answer echoes it."""

    src: int
    dst: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """``success``: the follower's log matches the leader's up to ``index``. A refusal's
    ``index`` is where the leader should try next (a hint, never below 1)."""

    src: int
    dst: int
    term: int
    success: bool
    index: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """The state machine as of ``index`` (whose entry has ``last_term``). The core leaves
    ``data`` None; the I/O shell fills in its newest durable snapshot (at least as new) and
    sets ``index``/``last_term`` to that snapshot's."""

    src: int
    dst: int
    term: int
    index: int
    last_term: int
    data: Any = None


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its read ``ctx``."""

    src: int
    dst: int
    term: int
    ctx: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """``index`` -1: the node asked is not (or no longer) the leader."""

    src: int
    dst: int
    term: int
    ctx: int
    index: int


Message = (VoteRequest | VoteResponse | AppendRequest | AppendResponse | SnapshotRequest
           | ReadIndexRequest | ReadIndexResponse)


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SaveState:
    """Write effect: persist the current term and vote."""

    term: int
    vote: int | None


@dataclass(frozen=True, slots=True)
class TruncateLog:
    """Write effect: delete every log entry with index >= ``from_index`` (never a committed
    one)."""

    from_index: int


@dataclass(frozen=True, slots=True)
class AppendLog:
    """Write effect: append ``entries`` (contiguous, right after the last logged entry)."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Write effect: persist the snapshot, drop the whole log, and reset the state machine to
    ``data`` (the state as of ``index``, whose entry has ``term``)."""

    index: int
    term: int
    data: Any


@dataclass(frozen=True, slots=True)
class Send:
    msg: Message


@dataclass(frozen=True, slots=True)
class Apply:
    """Committed entries, to apply to the state machine in order."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class ReadReady:
    """Read ``ctx`` may be served once the state machine has applied ``index``."""

    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """Read ``ctx`` cannot be confirmed by this leader (or no leader is known): retry."""

    ctx: int


@dataclass(frozen=True, slots=True)
class RoleChange:
    role: Role
    term: int
    leader: int | None


Effect = (SaveState | TruncateLog | AppendLog | InstallSnapshot | Send | Apply | ReadReady
          | ReadFailed | RoleChange)
WRITE_EFFECTS = (SaveState, TruncateLog, AppendLog, InstallSnapshot)


class NotLeader(Exception):
    def __init__(self, leader: int | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Times in seconds. The election timeout is drawn anew from ``[t, 2t)`` each time."""

    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    max_batch: int = 256  # entries per AppendRequest
    max_inflight: int = 1024  # entries sent but not acknowledged, per follower
    pre_vote: bool = True
    check_quorum: bool = True


class _Progress:
    """What the leader knows of one follower."""

    __slots__ = ("match", "next", "probing", "read_ack", "snapshot_at")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.probing = True  # until the first success: one request per heartbeat
        self.snapshot_at: float | None = None  # when a snapshot was last sent
        self.read_ack = 0


@dataclass(slots=True)
class _Read:
    seq: int
    ctx: int
    index: int
    origin: int


@dataclass(slots=True)
class _Effects:
    out: list[Effect] = field(default_factory=list)

    def add(self, e: Effect) -> None:
        self.out.append(e)


class RaftNode:
    """One member of a Raft group of the fixed membership ``peers`` (which includes
    ``node_id``)."""

    def __init__(self, node_id: int, peers: list[int] | tuple[int, ...], config: RaftConfig,
                 rng: random.Random, now: float, *, term: int = 0, vote: int | None = None,
                 snapshot_index: int = 0, snapshot_term: int = 0,
                 entries: list[Entry] | tuple[Entry, ...] = ()) -> None:
        if node_id not in peers:
            raise ValueError(f"node {node_id} is not among the peers {sorted(peers)}")
        self.id = node_id
        self.peers = tuple(sorted(set(peers)))
        self.others = tuple(p for p in self.peers if p != node_id)
        self.quorum = len(self.peers) // 2 + 1
        self.config = config
        self.rng = rng
        self.now = now
        self.term = term
        self.voted_for = vote
        self.snap_index = snapshot_index
        self.snap_term = snapshot_term
        self.log: list[Entry] = list(entries)
        for i, e in enumerate(self.log):
            if e.index != snapshot_index + 1 + i:
                raise ValueError(f"log entry {e.index} out of place after {snapshot_index}")
        self.commit = snapshot_index
        self.applied = snapshot_index  # handed out in Apply effects
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.last_leader_contact = float("-inf")
        self.election_deadline = 0.0
        self._reset_election_timer()
        self.votes: set[int] = set()
        self.refusals: set[int] = set()
        self.progress: dict[int, _Progress] = {}
        self.heartbeat_due = 0.0
        self.recent_active: set[int] = set()
        self.quorum_check_due = 0.0
        self.read_seq = 0
        self.pending_reads: list[_Read] = []
        self.waiting_reads: list[tuple[int, int]] = []  # (ctx, origin) until a term commit

    # ------------------------------------------------------------------ log helpers

    @property
    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.snap_index

    @property
    def last_term(self) -> int:
        return self.log[-1].term if self.log else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if beyond the log or compacted away."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self.log[index - self.snap_index - 1].term

    def entry(self, index: int) -> Entry:
        return self.log[index - self.snap_index - 1]

    def entries_from(self, index: int, limit: int) -> tuple[Entry, ...]:
        start = index - self.snap_index - 1
        return tuple(self.log[start:start + limit])

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    def has_leader_contact(self, now: float) -> bool:
        """This node is the leader, or heard from one within the election timeout."""
        if self.role == Role.LEADER:
            return True
        return (self.leader is not None
                and now - self.last_leader_contact < self.config.election_timeout)

    # ------------------------------------------------------------------ inputs

    def tick(self, now: float) -> list[Effect]:
        self.now = now
        fx = _Effects()
        if self.role == Role.LEADER:
            if self.config.check_quorum and now >= self.quorum_check_due:
                active = len(self.recent_active) + 1
                self.recent_active = set()
                self.quorum_check_due = now + self.config.election_timeout
                if active < self.quorum:
                    self._become_follower(fx, self.term, None)
                    return fx.out
            if now >= self.heartbeat_due:
                self._heartbeat(fx)
        elif now >= self.election_deadline:
            self._campaign(fx, pre=self.config.pre_vote)
        return fx.out

    def propose(self, payloads: list[Any], now: float) -> tuple[int, list[Effect]]:
        """Append ``payloads`` as new entries (leader only, else NotLeader); returns the index
        of the first one and the effects."""
        self.now = now
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        fx = _Effects()
        first = self.last_index + 1
        new = tuple(Entry(first + i, self.term, p) for i, p in enumerate(payloads))
        self._append_local(fx, new)
        self._replicate(fx)
        return first, fx.out

    def read_index(self, ctx: int, now: float) -> list[Effect]:
        """Start a linearizable read: a ReadReady(ctx, index) (or ReadFailed) follows, from
        this or a later call."""
        self.now = now
        fx = _Effects()
        if self.role == Role.LEADER:
            self._leader_read(fx, ctx, self.id)
        elif self.leader is not None:
            fx.add(Send(ReadIndexRequest(self.id, self.leader, self.term, ctx)))
        else:
            fx.add(ReadFailed(ctx))
        return fx.out

    def compact(self, index: int) -> None:
        """Forget the entries up to ``index`` (applied, and covered by a durable snapshot)."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise ValueError(f"cannot compact to {index}: applied only {self.applied}")
        term = self.term_at(index)
        assert term is not None
        del self.log[:index - self.snap_index]
        self.snap_index, self.snap_term = index, term

    def on_message(self, msg: Message, now: float) -> list[Effect]:
        self.now = now
        fx = _Effects()
        if msg.dst != self.id or msg.src not in self.peers or msg.src == self.id:
            return fx.out
        if msg.term > self.term:
            if isinstance(msg, VoteRequest):
                if self._in_lease():
                    return fx.out  # a live leader: ignore the would-be disruptor
                if not msg.pre_vote:
                    self._become_follower(fx, msg.term, None)
            elif isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                pass  # carries the term it was asked for, which we do not hold yet
            elif isinstance(msg, (AppendRequest, SnapshotRequest)):
                self._become_follower(fx, msg.term, msg.src)
            else:
                self._become_follower(fx, msg.term, None)
        elif msg.term < self.term:
            # tell a stale leader or pre-candidate about the newer term, ignore the rest
            if isinstance(msg, (AppendRequest, SnapshotRequest)):
                fx.add(Send(AppendResponse(self.id, msg.src, self.term, False, 0,
                                           getattr(msg, "read_seq", 0))))
            elif isinstance(msg, VoteRequest):
                fx.add(Send(VoteResponse(self.id, msg.src, self.term, False, msg.pre_vote)))
            elif isinstance(msg, ReadIndexRequest):
                fx.add(Send(ReadIndexResponse(self.id, msg.src, self.term, msg.ctx, -1)))
            return fx.out
        if self.role == Role.LEADER and msg.term == self.term:
            self.recent_active.add(msg.src)
        match msg:
            case VoteRequest():
                self._on_vote_request(fx, msg)
            case VoteResponse():
                self._on_vote_response(fx, msg)
            case AppendRequest():
                self._on_append(fx, msg)
            case AppendResponse():
                self._on_append_response(fx, msg)
            case SnapshotRequest():
                self._on_snapshot(fx, msg)
            case ReadIndexRequest():
                if self.role == Role.LEADER:
                    self._leader_read(fx, msg.ctx, msg.src)
                else:
                    fx.add(Send(ReadIndexResponse(self.id, msg.src, self.term, msg.ctx, -1)))
            case ReadIndexResponse():
                fx.add(ReadFailed(msg.ctx) if msg.index < 0 else ReadReady(msg.ctx, msg.index))
        return fx.out

    # ------------------------------------------------------------------ roles

    def _reset_election_timer(self) -> None:
        t = self.config.election_timeout
        self.election_deadline = self.now + t + self.rng.random() * t

    def _in_lease(self) -> bool:
        if not self.config.check_quorum:
            return False
        if self.role == Role.LEADER:
            return True
        return (self.leader is not None
                and self.now - self.last_leader_contact < self.config.election_timeout)

    def _become_follower(self, fx: _Effects, term: int, leader: int | None) -> None:
        changed = self.role != Role.FOLLOWER or self.leader != leader or term != self.term
        if term > self.term:
            self.term = term
            self.voted_for = None
            fx.add(SaveState(self.term, None))
        if self.role == Role.LEADER:
            self._fail_reads(fx)
        self.role = Role.FOLLOWER
        self.leader = leader
        self.progress = {}
        self._reset_election_timer()
        if changed:
            fx.add(RoleChange(self.role, self.term, leader))

    def _campaign(self, fx: _Effects, pre: bool) -> None:
        self.votes = {self.id}
        self.refusals = set()
        self.leader = None
        self._reset_election_timer()
        if pre:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.voted_for = self.id
            fx.add(SaveState(self.term, self.id))
            term = self.term
        fx.add(RoleChange(self.role, self.term, None))
        if len(self.votes) >= self.quorum:
            if pre:
                self._campaign(fx, pre=False)
            else:
                self._become_leader(fx)
            return
        for p in self.others:
            fx.add(Send(VoteRequest(self.id, p, term, self.last_index, self.last_term, pre)))

    def _on_vote_request(self, fx: _Effects, msg: VoteRequest) -> None:
        up_to_date = (msg.last_term, msg.last_index) >= (self.last_term, self.last_index)
        if msg.pre_vote:
            grant = msg.term > self.term and up_to_date and not self._in_lease()
            fx.add(Send(VoteResponse(self.id, msg.src, msg.term if grant else self.term,
                                     grant, True)))
            return
        grant = (msg.term == self.term and self.voted_for in (None, msg.src) and up_to_date
                 and self.role != Role.LEADER)
        if grant:
            if self.voted_for is None:
                self.voted_for = msg.src
                fx.add(SaveState(self.term, msg.src))
            self._reset_election_timer()
        fx.add(Send(VoteResponse(self.id, msg.src, self.term, grant, False)))

    def _on_vote_response(self, fx: _Effects, msg: VoteResponse) -> None:
        if msg.pre_vote:
            if self.role != Role.PRE_CANDIDATE:
                return
            if msg.granted and msg.term == self.term + 1:
                self.votes.add(msg.src)
            else:
                self.refusals.add(msg.src)
            if len(self.votes) >= self.quorum:
                self._campaign(fx, pre=False)
            elif len(self.refusals) > len(self.peers) - self.quorum:
                self._become_follower(fx, self.term, None)
            return
        if self.role != Role.CANDIDATE or msg.term != self.term:
            return
        if msg.granted:
            self.votes.add(msg.src)
        else:
            self.refusals.add(msg.src)
        if len(self.votes) >= self.quorum:
            self._become_leader(fx)
        elif len(self.refusals) > len(self.peers) - self.quorum:
            self._become_follower(fx, self.term, None)

    def _become_leader(self, fx: _Effects) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.progress = {p: _Progress(self.last_index + 1) for p in self.others}
        self.recent_active = set()
        self.quorum_check_due = self.now + self.config.election_timeout
        self.pending_reads = []
        self.waiting_reads = []
        fx.add(RoleChange(self.role, self.term, self.id))
        # a no-op of the new term: committing it commits everything before it (§5.4.2)
        self._append_local(fx, (Entry(self.last_index + 1, self.term, None),))
        self._heartbeat(fx)

    # ------------------------------------------------------------------ replication

    def _append_local(self, fx: _Effects, entries: tuple[Entry, ...]) -> None:
        if not entries:
            return
        self.log.extend(entries)
        fx.add(AppendLog(entries))
        self._maybe_commit(fx)  # a group of one commits at once

    def _heartbeat(self, fx: _Effects) -> None:
        self.heartbeat_due = self.now + self.config.heartbeat_interval
        for p, pr in self.progress.items():
            if not pr.probing and pr.next > pr.match + 1:
                pr.next = pr.match + 1  # resend what is unacknowledged: it may have been lost
            self._send_append(fx, p, force=True)

    def _replicate(self, fx: _Effects) -> None:
        for p, pr in self.progress.items():
            if not pr.probing and pr.next <= self.last_index:
                self._send_append(fx, p, force=False)

    def _send_append(self, fx: _Effects, peer: int, force: bool) -> None:
        pr = self.progress[peer]
        if pr.snapshot_at is not None:
            if self.now - pr.snapshot_at < 2 * self.config.election_timeout:
                # waiting for the snapshot's answer; a heartbeat keeps the lease and reads
                fx.add(Send(AppendRequest(self.id, peer, self.term, 0, 0, (), 0,
                                          self.read_seq)))
                return
            pr.snapshot_at = None  # lost: start over
        if pr.next <= self.snap_index:
            pr.snapshot_at = self.now
            fx.add(Send(SnapshotRequest(self.id, peer, self.term, self.snap_index,
                                        self.snap_term)))
            return
        if not force and pr.next - pr.match > self.config.max_inflight:
            return
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        assert prev_term is not None
        entries = self.entries_from(pr.next, self.config.max_batch)
        fx.add(Send(AppendRequest(self.id, peer, self.term, prev, prev_term, entries,
                                  self.commit, self.read_seq)))
        if entries and not pr.probing:
            pr.next = entries[-1].index + 1

    def _on_append(self, fx: _Effects, msg: AppendRequest) -> None:
        if self.role != Role.FOLLOWER or self.leader != msg.src:
            self._become_follower(fx, self.term, msg.src)
        self.last_leader_contact = self.now
        self._reset_election_timer()

        def answer(success: bool, index: int) -> None:
            fx.add(Send(AppendResponse(self.id, msg.src, self.term, success, index,
                                       msg.read_seq)))

        if msg.prev_index < self.commit:
            # what we committed matches every later leader's log (leader completeness)
            answer(True, self.commit)
            return
        local = self.term_at(msg.prev_index)
        if local != msg.prev_term:
            if local is None:
                hint = self.last_index + 1
            else:
                # skip back over the whole conflicting term
                hint = msg.prev_index
                while hint - 1 > self.commit and self.term_at(hint - 1) == local:
                    hint -= 1
            answer(False, max(1, hint))
            return
        for i, e in enumerate(msg.entries):
            t = self.term_at(e.index)
            if t == e.term:
                continue
            if t is not None:
                if e.index <= self.commit:
                    raise AssertionError(f"node {self.id}: conflict at committed index "
                                         f"{e.index}")
                del self.log[e.index - self.snap_index - 1:]
                fx.add(TruncateLog(e.index))
            rest = msg.entries[i:]
            self.log.extend(rest)
            fx.add(AppendLog(rest))
            break
        last_new = msg.prev_index + len(msg.entries)
        if msg.commit > self.commit:
            self._commit_to(fx, min(msg.commit, last_new))
        answer(True, last_new)

    def _on_snapshot(self, fx: _Effects, msg: SnapshotRequest) -> None:
        if self.role != Role.FOLLOWER or self.leader != msg.src:
            self._become_follower(fx, self.term, msg.src)
        self.last_leader_contact = self.now
        self._reset_election_timer()
        if msg.index <= self.commit:
            fx.add(Send(AppendResponse(self.id, msg.src, self.term, True, self.commit)))
            return
        if self.term_at(msg.index) == msg.last_term:
            # we hold that entry: keep the log, it only has to be committed
            self._commit_to(fx, msg.index)
        else:
            self.log = []
            self.snap_index, self.snap_term = msg.index, msg.last_term
            self.commit = self.applied = msg.index
            fx.add(InstallSnapshot(msg.index, msg.last_term, msg.data))
        fx.add(Send(AppendResponse(self.id, msg.src, self.term, True, msg.index)))

    def _on_append_response(self, fx: _Effects, msg: AppendResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress[msg.src]
        if msg.read_seq > pr.read_ack:
            pr.read_ack = msg.read_seq
            self._advance_reads(fx)
        if msg.success:
            if msg.index > pr.match:
                pr.match = msg.index
            pr.next = max(pr.next, pr.match + 1)
            if pr.snapshot_at is not None and pr.match >= self.snap_index:
                pr.snapshot_at = None
            pr.probing = False
            self._maybe_commit(fx)
            if pr.next <= self.last_index:
                self._send_append(fx, msg.src, force=False)
            return
        if pr.snapshot_at is not None:
            return
        # refused: back off to the hint, but never below what is known to match
        pr.next = max(pr.match + 1, min(msg.index, pr.next - 1))
        pr.probing = True
        self._send_append(fx, msg.src, force=True)

    def _maybe_commit(self, fx: _Effects) -> None:
        if self.role != Role.LEADER:
            return
        matches = sorted([self.last_index, *(pr.match for pr in self.progress.values())],
                         reverse=True)
        n = matches[self.quorum - 1]
        if n > self.commit and self.term_at(n) == self.term:
            self._commit_to(fx, n)
            # followers learn the new commit index at once: a write forwarded by a follower
            # is answered only after the follower applied it
            for p, pr in self.progress.items():
                if pr.snapshot_at is None and not pr.probing:
                    prev_term = self.term_at(pr.next - 1)
                    if prev_term is not None and pr.next > self.last_index:
                        fx.add(Send(AppendRequest(self.id, p, self.term, pr.next - 1,
                                                  prev_term, (), self.commit, self.read_seq)))
            if self.waiting_reads:
                waiting, self.waiting_reads = self.waiting_reads, []
                for ctx, origin in waiting:
                    self._leader_read(fx, ctx, origin)

    def _commit_to(self, fx: _Effects, index: int) -> None:
        if index <= self.commit:
            return
        self.commit = index
        if self.commit > self.applied:
            fx.add(Apply(self.entries_from(self.applied + 1, self.commit - self.applied)))
            self.applied = self.commit

    # ------------------------------------------------------------------ reads

    def _leader_read(self, fx: _Effects, ctx: int, origin: int) -> None:
        if self.term_at(self.commit) != self.term:
            # the commit index is only known once an entry of this term is committed
            self.waiting_reads.append((ctx, origin))
            return
        if self.quorum == 1:
            self._read_ready(fx, _Read(0, ctx, self.commit, origin))
            return
        self.read_seq += 1
        self.pending_reads.append(_Read(self.read_seq, ctx, self.commit, origin))
        # only leadership needs confirming: an entry-less request at what each follower is
        # known to hold (resending entries is the heartbeat's job)
        for p, pr in self.progress.items():
            prev_term = self.term_at(pr.match)
            prev = pr.match if prev_term is not None else 0
            fx.add(Send(AppendRequest(self.id, p, self.term, prev, prev_term or 0, (),
                                      min(self.commit, prev), self.read_seq)))

    def _advance_reads(self, fx: _Effects) -> None:
        while self.pending_reads:
            r = self.pending_reads[0]
            acks = 1 + sum(1 for pr in self.progress.values() if pr.read_ack >= r.seq)
            if acks < self.quorum:
                return
            self.pending_reads.pop(0)
            self._read_ready(fx, r)

    def _read_ready(self, fx: _Effects, r: _Read) -> None:
        if r.origin == self.id:
            fx.add(ReadReady(r.ctx, r.index))
        else:
            fx.add(Send(ReadIndexResponse(self.id, r.origin, self.term, r.ctx, r.index)))

    def _fail_reads(self, fx: _Effects) -> None:
        reads = [(r.ctx, r.origin) for r in self.pending_reads] + self.waiting_reads
        self.pending_reads, self.waiting_reads = [], []
        for ctx, origin in reads:
            if origin == self.id:
                fx.add(ReadFailed(ctx))
            else:
                fx.add(Send(ReadIndexResponse(self.id, origin, self.term, ctx, -1)))
