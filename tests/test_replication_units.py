"""The pure parts of replication, without sockets: the controller's election rule, the
leader epoch cache, the producer state that drops duplicates, and batch stamping."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from moldau.broker.controller import Decision, decide
from moldau.broker.leader_epoch_cache import CHECKPOINT_FILE, LeaderEpochCache
from moldau.broker.producer_state import ProducerStateManager, add_seq
from moldau.clients.metadata.layout import PartitionState
from moldau.clients.producer import stamp_producer
from moldau.clients.protocol import ErrorCode
from moldau.clients.records import BatchBuilder, parse_header, validate_batch

R = (1, 2, 3)


def st(leader: int, epoch: int, *isr: int) -> PartitionState:
    return PartitionState(leader, epoch, tuple(isr))


# ---------------------------------------------------------------- decide


def test_nothing_to_do_when_all_is_well() -> None:
    assert decide(st(1, 4, 1, 2, 3), R, {1, 2, 3}) is None


def test_dead_follower_leaves_the_isr_without_an_epoch_bump() -> None:
    assert decide(st(1, 4, 1, 2, 3), R, {1, 3}) == Decision(1, 4, (1, 3))


def test_dead_leader_replaced_by_first_live_isr_member_in_assignment_order() -> None:
    assert decide(st(1, 4, 3, 2, 1), R, {2, 3}) == Decision(2, 5, (2, 3))
    # not in the ISR: not eligible, even if first in the assignment
    assert decide(st(1, 4, 1, 3), R, {2, 3}) == Decision(3, 5, (3,))


def test_no_live_isr_member_goes_offline_and_keeps_the_isr() -> None:
    assert decide(st(1, 4, 1), R, {2, 3}) == Decision(-1, 5, (1,))
    assert decide(st(-1, 5, 1), R, {2, 3}) is None  # already offline: no new epoch
    assert decide(st(-1, 5, 1), R, {1, 2, 3}) == Decision(1, 6, (1,))  # 1 is back


def test_unclean_election_only_when_enabled() -> None:
    assert decide(st(-1, 5, 1), R, {2, 3}, unclean=True) == Decision(2, 6, (2,))


def test_restarted_broker_leads_only_if_nobody_else_can() -> None:
    assert decide(st(1, 4, 1, 2), R, {1, 2, 3}, restarted={1}) == Decision(2, 5, (2,))
    assert decide(st(1, 4, 1), R, {1, 2, 3}, restarted={1}) == Decision(1, 5, (1,))
    # a restarted follower leaves the ISR until it caught up again
    assert decide(st(2, 4, 1, 2), R, {1, 2, 3}, restarted={1}) == Decision(2, 4, (2,))


def test_controlled_shutdown_moves_leadership_and_keeps_the_last_one() -> None:
    assert decide(st(1, 4, 1, 2, 3), R, {1, 2, 3}, leaving={1}) == Decision(2, 5, (2, 3))
    assert decide(st(2, 4, 1, 2, 3), R, {1, 2, 3}, leaving={1}) == Decision(2, 4, (2, 3))
    assert decide(st(1, 4, 1), R, {1, 2, 3}, leaving={1}) is None


def test_preferred_replica_gets_leadership_back_when_in_sync() -> None:
    assert decide(st(2, 4, 1, 2, 3), R, {1, 2, 3}, preferred=True) == Decision(1, 5, (1, 2, 3))
    assert decide(st(2, 4, 2, 3), R, {1, 2, 3}, preferred=True) is None


def test_decide_invariants_randomized() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(3000):
        replicas = tuple(rng.sample(range(1, 6), rng.randint(1, 4)))
        isr = tuple(r for r in replicas if rng.random() < 0.6) or replicas[:1]
        leader = rng.choice([*isr, -1])
        state = PartitionState(leader, rng.randint(0, 9), isr)
        live = {b for b in range(1, 6) if rng.random() < 0.6}
        unclean = rng.random() < 0.3
        d = decide(state, replicas, live, unclean=unclean)
        if d is None:
            continue
        assert d.leader_epoch >= state.leader_epoch
        if d.leader != state.leader:
            assert d.leader_epoch == state.leader_epoch + 1
        if d.leader >= 0:
            assert d.leader in live and d.leader in d.isr
            if not unclean:
                assert d.leader in isr  # clean: only an in-sync replica leads
            assert set(d.isr) <= live
        else:
            assert d.isr == isr  # offline keeps who may lead again


# ---------------------------------------------------------------- leader epoch cache


def test_epoch_cache_end_offsets_follow_kafka() -> None:
    c = LeaderEpochCache(None)
    c.assign(0, 0)
    c.assign(2, 10)
    c.assign(4, 25)
    assert c.entries() == [(0, 0), (2, 10), (4, 25)]
    assert c.end_offset_for(4, 30) == (4, 30)  # the latest ends at the log end
    assert c.end_offset_for(2, 30) == (2, 25)
    assert c.end_offset_for(3, 30) == (2, 25)  # unknown epoch: the largest below it
    assert c.end_offset_for(5, 30) == (-1, -1)  # above every known one
    c2 = LeaderEpochCache(None)
    c2.assign(3, 7)
    assert c2.end_offset_for(1, 9) == (1, 7)  # below every known one: the first start


def test_epoch_cache_replaces_empty_epochs_and_truncates(tmp_path: Path) -> None:
    c = LeaderEpochCache(tmp_path)
    c.assign(0, 0)
    c.assign(1, 5)
    c.assign(2, 5)  # epoch 1 wrote nothing
    assert c.entries() == [(0, 0), (2, 5)]
    assert not c.assign(1, 9)  # older epochs are ignored
    c.truncate_from_end(5)
    assert c.entries() == [(0, 0)]
    c.assign(3, 8)
    c.truncate_from_start(6)
    assert c.entries() == [(0, 6), (3, 8)]
    assert (tmp_path / CHECKPOINT_FILE).read_text() == "0\n2\n0 6\n3 8\n"
    again = LeaderEpochCache(tmp_path)
    assert again.load() and again.entries() == [(0, 6), (3, 8)]
    (tmp_path / CHECKPOINT_FILE).write_text("0\n2\n0 6\n")
    assert not LeaderEpochCache(tmp_path).load()  # count mismatch: rebuild instead


# ---------------------------------------------------------------- producer state


def header(pid: int, seq: int, n: int, epoch: int = 0, base: int = 0):  # type: ignore[no-untyped-def]
    b = BatchBuilder()
    for i in range(n):
        b.append(1000, None, b"%d" % i)
    data = bytearray(b.build(producer_id=pid, producer_epoch=epoch, base_sequence=seq))
    data[0:8] = base.to_bytes(8, "big")
    return parse_header(bytes(data))


def test_producer_state_dedupes_and_orders() -> None:
    ps = ProducerStateManager()
    a, b = header(7, 0, 3), header(7, 3, 2)
    assert ps.check_run([a, b]) == ([], 0, None)
    ps.on_append([(a, 100), (b, 103)])
    assert ps.check_run([a]).duplicates == [100]
    assert ps.check_run([a, b]).duplicates == [100, 103]
    c = header(7, 5, 1)
    assert ps.check_run([b, c]).duplicates == [103]  # a duplicate prefix, then new
    assert ps.check_run([header(7, 9, 1)]).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    # new batches before a repeated one: refused whole (a producer never sends that)
    assert ps.check_run([c, b]).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert ps.check_run([header(9, 0, 1), b]).error == ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    assert ps.check_run([header(7, 5, 1, epoch=1)]).error == \
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER  # a new epoch starts at 0
    assert ps.check_run([header(7, 0, 1, epoch=1)]).error == 0
    ps.on_append([(header(7, 0, 1, epoch=1), 200)])
    assert ps.check_run([header(7, 1, 1, epoch=0)]).error == ErrorCode.INVALID_PRODUCER_EPOCH
    # an unknown producer starts anywhere (its state may have aged out of the log tail)
    assert ps.check_run([header(8, 41, 1)]).error == 0
    # plain batches are not checked at all
    assert ps.check_run([header(-1, -1, 1)]) == ([], 0, None)


def test_producer_state_keeps_five_batches_and_wraps_sequences() -> None:
    ps = ProducerStateManager()
    seq = 2**31 - 3
    for i in range(7):
        h = header(1, seq, 2, base=i * 2)
        assert ps.check_run([h]).error == 0 or i == 0
        ps.on_append([(h, i * 2)])
        seq = add_seq(seq, 2)
    assert seq == 2**31 - 3 + 14 - 2**31
    entry = ps.producers[1]
    assert len(entry.batches) == 5 and entry.batches[0].base_offset == 4


# ---------------------------------------------------------------- stamping


def test_stamp_sets_the_producer_fields_and_keeps_the_batch_valid() -> None:
    b = BatchBuilder()
    b.append(1, b"k", b"v")
    stamped = stamp_producer(b.build(), 42, 0, 17)
    h = validate_batch(stamped)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (42, 0, 17)
    with pytest.raises(ValueError):
        validate_batch(stamped[:-1] + b"x")
