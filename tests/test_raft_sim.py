"""Raft's pure core under deterministic simulation, plus scripted scenarios for the rules that
random schedules reach only rarely.

``RAFT_SIM_RUNS`` scales the number of schedules (default 150 of 3 nodes and 60 of 5);
``RAFT_SIM_SEED`` picks the first seed (default: random, printed). A failure names the seed
that reproduces it: ``Simulation(seed, nodes).run()``.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from raft_sim import INF, Faults, Op, Simulation, Violation, linearizable

from moldau.broker.metadata.raft import (
    AppendLog,
    AppendRequest,
    AppendResponse,
    Apply,
    Entry,
    NotLeader,
    RaftConfig,
    RaftNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadReady,
    Role,
    SaveState,
    Send,
    SnapshotRequest,
    TruncateLog,
    VoteRequest,
    VoteResponse,
)

RUNS = int(os.environ.get("RAFT_SIM_RUNS", "150"))


def _first_seed() -> int:
    return int(os.environ.get("RAFT_SIM_SEED", random.randrange(2**32)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("nodes", "runs"), [(3, RUNS), (5, max(1, RUNS * 2 // 5))])
def test_random_schedules_keep_raft_safe_and_linearizable(nodes: int, runs: int) -> None:
    first = _first_seed()
    print(f"first seed {first}, {runs} schedules of {nodes} nodes")
    t0 = time.monotonic()
    totals: dict[str, int] = {}
    for seed in range(first, first + runs):
        sim = Simulation(seed, nodes=nodes)
        try:
            sim.run()
        except Exception as e:
            raise AssertionError(f"seed {seed} ({nodes} nodes, faults {sim.faults}, "
                                 f"{sim.config}): {e!r}") from e
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
        totals["history"] = totals.get("history", 0) + len(sim.history)
    print(f"{runs} schedules in {time.monotonic() - t0:.1f}s: {totals}")
    # the schedules really exercised the faults and the client paths
    assert totals["crashes"] > runs and totals["partitions"] > runs
    assert totals["elections"] > runs and totals["snapshots"] > 0
    assert totals["writes"] > 10 * runs and totals["reads"] > 10 * runs


def test_the_checker_catches_stale_follower_reads() -> None:
    """The same simulation with followers answering reads from their own state (not
    linearizable) must be caught in most schedules."""
    first = _first_seed()
    caught = 0
    for seed in range(first, first + 20):
        try:
            Simulation(seed, faults=Faults(local_follower_reads=True)).run()
        except Violation:
            caught += 1
    print(f"first seed {first}: {caught}/20 caught")
    assert caught >= 10


# ---------------------------------------------------------------- the checker itself


def test_linearizable_register_histories() -> None:
    # w1 then a read of 1: fine; a read of the old value after w2 completed: not
    assert linearizable([Op("w", 1, 0, 1), Op("r", 1, 2, 3)])
    assert not linearizable([Op("w", 1, 0, 1), Op("w", 2, 2, 3), Op("r", 1, 4, 5)])
    # concurrent write and read: either value
    assert linearizable([Op("w", 1, 0, 1), Op("w", 2, 2, 5), Op("r", 1, 3, 4)])
    assert linearizable([Op("w", 1, 0, 1), Op("w", 2, 2, 5), Op("r", 2, 3, 4)])
    # a read cannot see a value and then an older one after it
    assert not linearizable([Op("w", 1, 0, 1), Op("w", 2, 2, 9), Op("r", 2, 3, 4),
                             Op("r", 1, 5, 6)])
    # a write whose outcome is unknown may take effect late, or never
    assert linearizable([Op("w", 1, 0, INF), Op("r", None, 1, 2), Op("r", 1, 3, 4)])
    assert linearizable([Op("w", 1, 0, INF), Op("r", None, 1, 2)])
    assert not linearizable([Op("w", 1, 5, INF), Op("r", 1, 1, 2)])  # read before invoked
    assert not linearizable([Op("r", 7, 0, 1)])  # nobody wrote 7


# ---------------------------------------------------------------- scripted scenarios

CFG = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1)


def node(nid: int = 1, peers: tuple[int, ...] = (1, 2, 3), **kw: object) -> RaftNode:
    return RaftNode(nid, peers, CFG, random.Random(nid), 0.0, **kw)  # type: ignore[arg-type]


def sends(fx: list[object]) -> list[object]:
    return [e.msg for e in fx if isinstance(e, Send)]


def elect(n: RaftNode, now: float = 5.0) -> list[object]:
    """Make ``n`` leader with the votes of every other node."""
    fx: list[object] = list(n.tick(now))  # pre-vote
    for p in n.others:
        req = next(m for m in sends(fx) if isinstance(m, VoteRequest) and m.dst == p)
        fx += n.on_message(VoteResponse(p, n.id, req.term, True, req.pre_vote), now)
    reqs = [m for m in sends(fx) if isinstance(m, VoteRequest) and not m.pre_vote]
    for p in n.others:
        req = next(m for m in reqs if m.dst == p)
        fx += n.on_message(VoteResponse(p, n.id, req.term, True, False), now)
    assert n.is_leader
    return fx


def test_a_vote_is_saved_before_it_is_granted() -> None:
    n = node(2)
    fx = n.on_message(VoteRequest(1, 2, 1, 0, 0), 0.0)
    kinds = [type(e).__name__ for e in fx]
    grant = next(i for i, e in enumerate(fx) if isinstance(e, Send)
                 and isinstance(e.msg, VoteResponse) and e.msg.granted)
    assert any(isinstance(e, SaveState) and e.vote == 1 and e.term == 1 for e in fx[:grant]), kinds
    # the same term, another candidate: refused, even after a restart from the saved state
    again = node(2, term=1, vote=1)
    out = sends(again.on_message(VoteRequest(3, 2, 1, 0, 0), 0.0))
    assert out == [VoteResponse(2, 3, 1, False, False)]


def test_pre_vote_does_not_bump_terms() -> None:
    n = node(1)
    fx = n.tick(5.0)
    assert n.role == Role.PRE_CANDIDATE and n.term == 0
    assert not any(isinstance(e, SaveState) for e in fx)
    assert {m.term for m in sends(fx)} == {1}
    voter = node(2)
    out = voter.on_message(VoteRequest(1, 2, 1, 0, 0, pre_vote=True), 5.0)
    assert voter.term == 0 and not any(isinstance(e, SaveState) for e in out)
    assert sends(out) == [VoteResponse(2, 1, 1, True, True)]


def test_a_node_that_hears_from_its_leader_ignores_vote_requests() -> None:
    f = node(2)
    f.on_message(AppendRequest(1, 2, 3, 0, 0, (), 0), 1.0)
    assert f.leader == 1 and f.term == 3
    assert f.on_message(VoteRequest(3, 2, 4, 10, 3), 1.5) == []
    assert f.term == 3
    # once the leader has been silent for an election timeout, it listens again
    out = sends(f.on_message(VoteRequest(3, 2, 4, 10, 3), 2.6))
    assert out == [VoteResponse(2, 3, 4, True, False)] and f.term == 4


def test_entries_of_earlier_terms_are_not_committed_by_counting() -> None:
    """Figure 8 of the Raft paper: a new leader holding an entry of an earlier term on a
    majority must not commit it before an entry of its own term."""
    old = (Entry(1, 1, "a"), Entry(2, 2, "b"))
    n = node(1, term=3, entries=old)
    elect(n)
    assert n.term == 4 and n.last_index == 3 and n.entry(3).payload is None  # the no-op
    fx = n.on_message(AppendResponse(2, 1, 4, True, 2), 5.0)
    assert n.commit == 0 and not any(isinstance(e, Apply) for e in fx)
    fx = n.on_message(AppendResponse(2, 1, 4, True, 3), 5.0)
    assert n.commit == 3
    applied = [e for eff in fx if isinstance(eff, Apply) for e in eff.entries]
    assert [e.index for e in applied] == [1, 2, 3]


def test_a_follower_commits_only_what_it_knows_matches() -> None:
    # entries 2 and 3 of a deposed leader's term, unknown to the current leader
    f = node(2, term=2, entries=(Entry(1, 1, "a"), Entry(2, 2, "x"), Entry(3, 2, "y")))
    fx = f.on_message(AppendRequest(1, 2, 3, 1, 1, (), 3), 1.0)
    assert f.commit == 1  # not 3: only index 1 is known to match the leader's log
    assert sends(fx) == [AppendResponse(2, 1, 3, True, 1)]
    fx = f.on_message(AppendRequest(1, 2, 3, 1, 1, (Entry(2, 3, "b"),), 3), 1.0)
    assert fx[0] == TruncateLog(2) and fx[1] == AppendLog((Entry(2, 3, "b"),))
    assert f.last_index == 2 and f.commit == 2
    # a delayed duplicate of an older request does not truncate what matches
    fx = f.on_message(AppendRequest(1, 2, 3, 0, 0, (Entry(1, 1, "a"),), 0), 1.1)
    assert f.last_index == 2 and not any(isinstance(e, TruncateLog) for e in fx)


def test_refused_append_backs_off_to_the_hint() -> None:
    n = node(1, term=1, entries=tuple(Entry(i, 1, i) for i in range(1, 11)))
    elect(n)
    # follower 2 only has 3 entries: it hints 4
    fx = n.on_message(AppendResponse(2, 1, n.term, False, 4), 5.0)
    req = next(m for m in sends(fx) if isinstance(m, AppendRequest) and m.dst == 2)
    assert req.prev_index == 3 and [e.index for e in req.entries][:1] == [4]


def test_lagging_follower_gets_a_snapshot_then_entries() -> None:
    n = node(1, term=1, snapshot_index=50, snapshot_term=1,
             entries=tuple(Entry(i, 1, i) for i in range(51, 56)))
    elect(n)
    fx = n.on_message(AppendResponse(2, 1, n.term, False, 1), 5.0)
    snap = [m for m in sends(fx) if isinstance(m, SnapshotRequest)]
    assert snap == [SnapshotRequest(1, 2, n.term, 50, 1)]
    fx = n.on_message(AppendResponse(2, 1, n.term, True, 50), 5.0)
    req = next(m for m in sends(fx) if isinstance(m, AppendRequest) and m.dst == 2)
    assert req.prev_index == 50 and req.entries[0].index == 51


def test_read_index_waits_for_a_quorum_round_and_a_commit_in_the_term() -> None:
    n = node(1, term=1, entries=(Entry(1, 1, "a"),))
    elect(n)
    assert n.read_index(7, 5.0) == []  # nothing of term 2 committed yet: the read waits
    fx = n.on_message(AppendResponse(2, 1, n.term, True, 2), 5.0)
    assert n.commit == 2 and not any(isinstance(e, ReadReady) for e in fx)
    seq = n.read_seq
    # an answer to a heartbeat sent before the read does not confirm it
    assert not any(isinstance(e, ReadReady)
                   for e in n.on_message(AppendResponse(3, 1, n.term, True, 2, seq - 1), 5.0))
    fx = n.on_message(AppendResponse(3, 1, n.term, True, 2, seq), 5.0)
    assert ReadReady(7, 2) in fx
    # a follower's read goes to the leader and back
    f = node(2)
    f.on_message(AppendRequest(1, 2, n.term, 0, 0, (), 0), 5.0)
    ask = sends(f.read_index(9, 5.0))
    assert ask == [ReadIndexRequest(2, 1, n.term, 9)]
    n.on_message(ask[0], 5.0)  # type: ignore[arg-type]
    fx = n.on_message(AppendResponse(2, 1, n.term, True, 2, n.read_seq), 5.0)
    answer = [m for m in sends(fx) if isinstance(m, ReadIndexResponse)]
    assert answer == [ReadIndexResponse(1, 2, n.term, 9, 2)]
    assert f.on_message(answer[0], 5.0) == [ReadReady(9, 2)]


def test_leader_without_a_quorum_steps_down_and_refuses_proposals() -> None:
    n = node(1)
    elect(n)
    n.propose(["x"], 5.0)
    n.tick(5.0 + CFG.election_timeout + 0.01)  # the votes still count as contact
    assert n.is_leader
    n.tick(5.0 + 2 * CFG.election_timeout + 0.02)  # nobody answered for a whole timeout
    assert n.role == Role.FOLLOWER
    with pytest.raises(NotLeader):
        n.propose(["y"], 7.0)


def test_single_node_group_commits_alone() -> None:
    n = node(1, peers=(1,))
    fx = n.tick(5.0)
    assert n.is_leader
    index, fx = n.propose(["x"], 5.0)
    assert index == 2 and n.commit == 2
    assert [e.payload for a in fx if isinstance(a, Apply) for e in a.entries] == ["x"]
    assert n.read_index(1, 5.0) == [ReadReady(1, 2)]
