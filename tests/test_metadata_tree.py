"""The metadata service's pure and file-level parts: DataTree, TxnLog, snapshots, watches and
session deadlines, without sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moldau.broker.metadata import snapshot
from moldau.broker.metadata.sessions import SessionTracker
from moldau.broker.metadata.store import MetadataStore
from moldau.broker.metadata.tree import DataTree, Txn, path_error
from moldau.broker.metadata.txnlog import TxnLog, log_name
from moldau.broker.metadata.watches import WatchManager
from moldau.clients.protocol import ErrorCode, Message
from moldau.clients.protocol.messages import MdWatchEvent, WatchEventType

E = ErrorCode
W = WatchEventType


class Txns:
    """Builds consecutive transactions, as a leader would."""

    def __init__(self) -> None:
        self.zxid = 0
        self.time = 1_700_000_000_000

    def __call__(self, op: str, session: int = 0, **args: Any) -> Txn:
        self.zxid += 1
        self.time += 7
        return Txn(self.zxid, self.time, session, op, args)


def test_create_set_delete_and_stats() -> None:
    t, tx = DataTree(), Txns()
    r = t.apply(tx("create", path="/a", data=b"1"))
    assert (r.error, r.path) == (E.NONE, "/a")
    assert r.events == [(W.NODE_CREATED, "/a"), (W.NODE_CHILDREN_CHANGED, "/")]
    a = t.get("/a")
    assert a is not None and a.stat()["czxid"] == 1 and a.stat()["version"] == 0
    assert t.get("/").stat()["cversion"] == 1 and t.get("/").stat()["pzxid"] == 1  # type: ignore[union-attr]
    assert t.apply(tx("create", path="/a")).error == E.NODE_EXISTS
    assert t.apply(tx("create", path="/x/y")).error == E.NO_NODE
    r = t.apply(tx("set_data", path="/a", data=b"22", version=0))
    assert r.error == E.NONE and r.stat is not None
    assert r.stat["version"] == 1 and r.stat["mzxid"] == 4 and r.stat["data_length"] == 2
    assert t.apply(tx("set_data", path="/a", data=b"3", version=0)).error == E.BAD_VERSION
    t.apply(tx("create", path="/a/b"))
    assert t.apply(tx("delete", path="/a", version=-1)).error == E.NOT_EMPTY
    assert t.apply(tx("delete", path="/a/b", version=5)).error == E.BAD_VERSION
    assert t.apply(tx("delete", path="/a/b", version=0)).error == E.NONE
    assert t.get("/a").stat()["cversion"] == 2  # type: ignore[union-attr]
    assert t.apply(tx("delete", path="/")).error == E.BAD_ARGUMENTS
    assert t.last_zxid == tx.zxid


def test_sequential_suffix_is_parent_cversion() -> None:
    t, tx = DataTree(), Txns()
    t.apply(tx("create", path="/q"))
    assert t.apply(tx("create", path="/q/n-", sequential=True)).path == "/q/n-0000000000"
    assert t.apply(tx("create", path="/q/n-", sequential=True)).path == "/q/n-0000000001"
    t.apply(tx("delete", path="/q/n-0000000000", version=-1))
    assert t.apply(tx("create", path="/q/", sequential=True)).path == "/q/0000000003"
    assert t.children("/q") == ["0000000003", "n-0000000001"]


def test_ephemerals_belong_to_sessions() -> None:
    t, tx = DataTree(), Txns()
    assert t.apply(tx("create", 5, path="/e", ephemeral=True)).error == E.SESSION_EXPIRED
    t.apply(tx("create_session", session_id=5, timeout_ms=1000))
    assert t.apply(tx("create", 5, path="/e", ephemeral=True)).error == E.NONE
    assert t.get("/e").ephemeral_owner == 5  # type: ignore[union-attr]
    assert t.apply(tx("create", 5, path="/e/c")).error == E.NO_CHILDREN_FOR_EPHEMERALS
    t.apply(tx("create", 5, path="/p"))
    t.apply(tx("create", 5, path="/p/e", ephemeral=True))
    r = t.apply(tx("close_session", session_id=5))
    assert r.error == E.NONE
    assert t.get("/e") is None and t.get("/p/e") is None and t.get("/p") is not None
    assert (W.NODE_DELETED, "/e") in r.events and (W.NODE_CHILDREN_CHANGED, "/p") in r.events
    assert t.sessions == {} and t.ephemerals == {}


def test_multi_is_all_or_nothing() -> None:
    t, tx = DataTree(), Txns()
    t.apply(tx("create", path="/a", data=b"x"))
    before = t.snapshot()
    r = t.apply(tx("multi", ops=[
        {"op": "create", "path": "/b"},
        {"op": "set", "path": "/a", "data": b"y", "version": 0},
        {"op": "delete", "path": "/a", "version": 1},
        {"op": "create", "path": "/a"},
        {"op": "create", "path": "/b"},  # fails: the first op created it
    ]))
    assert r.error == E.NODE_EXISTS and r.events == []
    assert [x["error_code"] for x in r.results or []] == [0, 0, 0, 0, int(E.NODE_EXISTS)]
    after = t.snapshot()
    assert after["nodes"] == before["nodes"]
    r = t.apply(tx("multi", ops=[
        {"op": "check", "path": "/a", "version": 0},
        {"op": "create", "path": "/a/s", "sequential": True},
        {"op": "set", "path": "/a", "data": b"z", "version": 0},
    ]))
    assert r.error == E.NONE
    assert r.results is not None and r.results[1]["path"] == "/a/s0000000000"
    assert r.results[2]["stat"]["version"] == 1
    assert t.get("/a").data == b"z"  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/.",
                                  "/a\x00b", "/a\nb", 17, None])
def test_bad_paths(path: object) -> None:
    assert path_error(path) is not None
    t, tx = DataTree(), Txns()
    assert t.apply(tx("create", path=path)).error == E.BAD_ARGUMENTS


@pytest.mark.parametrize("path", ["/", "/a", "/a/b-c.d_e", "/..a", "/a/...", "/ü/日本"])
def test_good_paths(path: str) -> None:
    assert path_error(path) is None


# ---------------------------------------------------------------- determinism (property)

_PATHS = ["/a", "/b", "/a/b", "/a/c", "/b/x", "/a/b/c", "/e"]
_SESSIONS = [0, 1, 2, 3]

_op = st.one_of(
    st.builds(lambda p, d, e, s, sid: ("create", sid, {"path": p, "data": d, "ephemeral": e,
                                                       "sequential": s}),
              st.sampled_from(_PATHS), st.binary(max_size=4), st.booleans(), st.booleans(),
              st.sampled_from(_SESSIONS)),
    st.builds(lambda p, v: ("delete", 0, {"path": p, "version": v}),
              st.sampled_from(_PATHS), st.sampled_from([-1, 0, 1])),
    st.builds(lambda p, d, v: ("set_data", 0, {"path": p, "data": d, "version": v}),
              st.sampled_from(_PATHS), st.binary(max_size=4), st.sampled_from([-1, 0, 1, 2])),
    st.builds(lambda s, t: ("create_session", 0, {"session_id": s, "timeout_ms": t}),
              st.sampled_from(_SESSIONS[1:]), st.integers(100, 10000)),
    st.builds(lambda s: ("close_session", 0, {"session_id": s}), st.sampled_from(_SESSIONS[1:])),
)
_multi_op = st.one_of(
    st.builds(lambda p, e, s: {"op": "create", "path": p, "data": b"m", "ephemeral": e,
                               "sequential": s},
              st.sampled_from(_PATHS), st.booleans(), st.booleans()),
    st.builds(lambda p, v: {"op": "delete", "path": p, "version": v},
              st.sampled_from(_PATHS), st.sampled_from([-1, 0])),
    st.builds(lambda p, v: {"op": "set", "path": p, "data": b"s", "version": v},
              st.sampled_from(_PATHS), st.sampled_from([-1, 0, 1])),
    st.builds(lambda p, v: {"op": "check", "path": p, "version": v},
              st.sampled_from(_PATHS), st.sampled_from([-1, 0])),
)
_any_op = st.one_of(_op, st.builds(lambda ops, sid: ("multi", sid, {"ops": ops}),
                                   st.lists(_multi_op, min_size=1, max_size=4),
                                   st.sampled_from(_SESSIONS)))


def _image(t: DataTree) -> tuple[Any, ...]:
    return (t.snapshot(), sorted((s, sorted(p)) for s, p in t.ephemerals.items()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_any_op, max_size=60), st.integers(0, 60))
def test_replay_and_snapshot_restore_yield_the_same_tree(
        ops: list[tuple[str, int, dict[str, Any]]], cut: int) -> None:
    tx = Txns()
    txns = [tx(op, sid, **args) for op, sid, args in ops]
    live = DataTree()
    results = [live.apply(t) for t in txns]
    # the log is msgpack: replaying decoded records gives the same tree and results
    replayed = DataTree()
    again = [replayed.apply(Txn.decode(t.encode())) for t in txns]
    assert _image(replayed) == _image(live)
    assert [(r.error, r.path, r.stat, r.events) for r in again] == [
        (r.error, r.path, r.stat, r.events) for r in results]
    # a snapshot after any prefix, restored, then the rest replayed: the same tree
    cut = min(cut, len(txns))
    prefix = DataTree()
    for t in txns[:cut]:
        prefix.apply(t)
    restored = DataTree.restore(snapshot.decode_snapshot(snapshot.encode_snapshot(
        prefix.snapshot())))
    assert _image(restored) == _image(prefix)
    for t in txns[cut:]:
        restored.apply(t)
    assert _image(restored) == _image(live)
    # structural invariants
    for path, node in live.walk():
        if path != "/":
            parent, _, name = path.rpartition("/")
            assert name in live.nodes[parent or "/"].children
        assert all(f"{path.rstrip('/')}/{c}" in live.nodes for c in node.children)
        if node.ephemeral_owner:
            assert not node.children and node.ephemeral_owner in live.sessions


# ---------------------------------------------------------------- txn log and snapshots


def _log_txns(n: int) -> list[Txn]:
    tx = Txns()
    return [tx("create", path=f"/n{i}", data=b"d" * i) for i in range(n)]


async def test_txnlog_appends_flushes_and_recovers(tmp_path: Path) -> None:
    log = TxnLog(tmp_path)
    assert log.recover(0) == []
    txns = _log_txns(20)
    seqs = [log.append(t) for t in txns[:10]]
    assert await log.flush() == seqs[-1]
    log.roll()
    for t in txns[10:]:
        log.append(t)
    await log.close()
    assert [p.name for _, p in TxnLog(tmp_path)._scan()] == [log_name(1), log_name(11)]
    again = TxnLog(tmp_path)
    assert again.recover(0) == txns
    assert again.last_zxid == 20
    await again.close()
    third = TxnLog(tmp_path)
    assert third.recover(15) == txns[15:]
    await third.close()


@pytest.mark.parametrize("damage", ["garbage", "half_record", "bad_crc"])
async def test_txnlog_truncates_a_torn_tail(tmp_path: Path, damage: str) -> None:
    log = TxnLog(tmp_path)
    log.recover(0)
    txns = _log_txns(8)
    for t in txns:
        log.append(t)
    await log.close()
    path = tmp_path / log_name(1)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(good + b"\x00\x00\x01\x00garbage-garbage")
    elif damage == "half_record":
        path.write_bytes(good[:-3])
    else:
        data = bytearray(good)
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    # a later file after the damage cannot hold acknowledged records: it goes too
    (tmp_path / log_name(9)).write_bytes(good[:40])
    again = TxnLog(tmp_path)
    got = again.recover(0)
    expect = txns if damage == "garbage" else txns[:-1]
    assert got == expect
    assert not (tmp_path / log_name(9)).exists()
    # appending after the truncation point yields a readable log
    extra = Txn(len(expect) + 1, 0, 0, "create", {"path": "/z"})
    again.append(extra)
    await again.close()
    final = TxnLog(tmp_path)
    assert final.recover(0) == [*expect, extra]
    await final.close()


@pytest.mark.parametrize("cut", [3, 6, 7, 12, 1])
async def test_txnlog_truncate_from_cuts_the_tail_across_files(tmp_path: Path,
                                                               cut: int) -> None:
    """A quorum follower drops a deposed leader's entries from ``cut`` on, then appends
    the new leader's; a restart reads exactly that."""
    log = TxnLog(tmp_path)
    log.recover(0)
    txns = _log_txns(12)
    for t in txns[:6]:
        log.append(t)
    await log.flush()  # a flush in between: the cut must also undo durable records
    log.roll()
    for t in txns[6:]:
        log.append(t)
    log.truncate_from(cut)
    assert log.last_zxid == cut - 1
    new = [Txn(z, 5, 0, "create", {"path": f"/new{z}"}, term=2) for z in range(cut, cut + 3)]
    for t in new:
        log.append(t)
    await log.close()
    again = TxnLog(tmp_path)
    assert again.recover(0) == [*txns[:cut - 1], *new]
    await again.close()


async def test_txnlog_reset_starts_after_a_snapshot(tmp_path: Path) -> None:
    log = TxnLog(tmp_path)
    log.recover(0)
    for t in _log_txns(5):
        log.append(t)
    log.reset(40)
    nxt = Txn(41, 0, 0, "noop", {}, term=3)
    log.append(nxt)
    await log.close()
    assert [p.name for _, p in TxnLog(tmp_path)._scan()] == [log_name(41)]
    again = TxnLog(tmp_path)
    assert again.recover(40) == [nxt]
    await again.close()


def test_txn_term_and_noop() -> None:
    t = Txn(7, 1, 2, "noop", {}, term=4)
    assert Txn.decode(t.encode()) == t
    # a single node's records (term 0) keep their five-item format
    assert msgpack.unpackb(Txn(7, 1, 2, "noop", {}).encode()) == [7, 1, 2, "noop", {}]
    tree = DataTree()
    r = tree.apply(t)
    assert r.error == ErrorCode.NONE and tree.last_zxid == 7 and tree.last_term == 4
    assert len(tree) == 1
    assert DataTree.restore(tree.snapshot()).last_term == 4


async def test_store_snapshots_rolls_and_purges(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path, snapshot_every=10)
    await store.start()
    txns = _log_txns(45)
    for t in txns:
        store.append(t)
        await store.flush()
        store.apply(t)
        await asyncio.sleep(0)
    await store.close()
    snaps = snapshot.list_snapshots(tmp_path)
    assert [z for z, _ in snaps] == [30, 40]
    logs = sorted(p.name for p in tmp_path.glob("log.*"))  # noqa: ASYNC240
    assert log_name(1) not in logs and len(logs) <= 3
    again = MetadataStore(tmp_path, snapshot_every=10)
    await again.start()
    assert again.tree.snapshot() == store.tree.snapshot()
    await again.close()
    # a corrupt newest snapshot: the older one plus the log rebuild the same tree
    newest = snaps[-1][1]
    newest.write_bytes(newest.read_bytes()[:-5])
    third = MetadataStore(tmp_path, snapshot_every=1000)
    await third.start()
    assert third.tree.snapshot() == store.tree.snapshot()
    await third.close()


def test_snapshot_decoding_rejects_damage() -> None:
    data = snapshot.encode_snapshot(DataTree().snapshot())
    assert snapshot.decode_snapshot(data)["zxid"] == 0
    for bad in (b"", data[:-1], b"X" + data[1:], data[:12] + b"\xff" + data[13:]):
        with pytest.raises(ValueError):
            snapshot.decode_snapshot(bad)


# ---------------------------------------------------------------- watches and sessions


class FakeWatcher:
    def __init__(self) -> None:
        self.got: list[tuple[int, str]] = []

    def push(self, msg: Message) -> None:
        assert isinstance(msg, MdWatchEvent)
        self.got.append((msg.type, msg.path))


def test_watches_fire_once_per_kind() -> None:
    wm, a, b = WatchManager(), FakeWatcher(), FakeWatcher()
    wm.add_data_watch("/x", a)
    wm.add_child_watch("/x", a)
    wm.add_child_watch("/x", b)
    assert wm.trigger([(W.NODE_DATA_CHANGED, "/x")]) == 1
    assert wm.trigger([(W.NODE_DATA_CHANGED, "/x")]) == 0  # one-shot
    wm.add_data_watch("/x", a)
    wm.trigger([(W.NODE_DELETED, "/x"), (W.NODE_CHILDREN_CHANGED, "/")])
    assert a.got == [(W.NODE_DATA_CHANGED, "/x"), (W.NODE_DELETED, "/x")]  # one push each
    assert b.got == [(W.NODE_DELETED, "/x")]
    wm.add_data_watch("/y", a)
    wm.remove_watcher(a)
    assert wm.trigger([(W.NODE_CREATED, "/y")]) == 0 and wm.count() == 0


def test_session_deadlines() -> None:
    now = [100.0]
    tr = SessionTracker(1000, 5000, clock=lambda: now[0])
    assert tr.negotiate(10) == 1000 and tr.negotiate(99999) == 5000 and tr.negotiate(2000) == 2000
    tr.add(1, 1000)
    tr.add(2, 3000)
    now[0] += 0.9
    assert tr.touch(1) and tr.expired() == []
    now[0] += 1.5
    assert tr.expired() == [1]
    assert not tr.touch(1) and not tr.live(1)  # closing: may not be resumed
    now[0] += 10
    assert tr.expired() == [2]
    tr.remove(1)
    tr.remove(2)
    assert len(tr) == 0


async def test_one_process_per_data_directory(tmp_path: Path) -> None:
    first = MetadataStore(tmp_path)
    await first.start()
    second = MetadataStore(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        await second.start()
    await first.close()
    await second.start()
    await second.close()
