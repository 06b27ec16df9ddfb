"""A metadata quorum of three real daemons on loopback: leader failover under SIGKILL,
sessions and ephemeral nodes that outlive their node, catch-up by log and by snapshot, a
frozen (SIGSTOPped) node, a minority that refuses writes, and a register history under
random kills/freezes that must stay linearizable."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess, Processes, free_port
from raft_sim import INF, Op, linearizable

from moldau.broker.metadata.config import load_config
from moldau.clients.metadata import MetadataClient, Stat
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import MdConnectRequest
from moldau.clients.rpc import Connection

# fast elections and expiry keep the tests short
MD_ARGS = ["--tick-ms", "50", "--min-session-timeout-ms", "300", "--election-timeout-ms",
           "300", "--heartbeat-ms", "50", "--request-timeout-ms", "3000"]


class Quorum:
    """``n`` metadata nodes with fixed client and peer ports, so a node can come back."""

    def __init__(self, procs: Processes, n: int = 3, extra: list[str] | None = None,
                 via_cli: bool = False) -> None:
        self.procs = procs
        # ``moldau metadata --id N --peers ...`` execs the same daemon
        self.command = ([sys.executable, "-m", "moldau.clients.cli", "metadata"] if via_cli
                        else [sys.executable, "-m", "moldau.broker.metadata"])
        self.ids = list(range(1, n + 1))
        self.client_ports = {i: free_port() for i in self.ids}
        self.peer_ports = {i: free_port() for i in self.ids}
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.peer_ports.items())
        self.extra = [*MD_ARGS, *(extra or [])]
        self.nodes: dict[int, DaemonProcess] = {}

    def data_dir(self, i: int) -> Path:
        return self.procs.root / f"md{i}"

    def start(self, i: int) -> DaemonProcess:
        self.nodes[i] = self.procs.spawn(f"md{i}", [
            *self.command, "--id", str(i), "--peers",
            self.peers, "--host", "127.0.0.1", "--port", str(self.client_ports[i]),
            "--data-dir", str(self.data_dir(i)), *self.extra])
        return self.nodes[i]

    def start_all(self) -> Quorum:
        for i in self.ids:
            self.start(i)
        return self

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.client_ports[i]}"

    @property
    def connect_string(self) -> str:
        return ",".join(self.address(i) for i in self.ids)

    def log(self, i: int) -> str:
        return self.nodes[i].log_path.read_text(errors="replace")

    async def leader(self, among: list[int] | None = None, timeout: float = 10.0) -> int:
        """The id of the leader that the nodes ``among`` (default: all running) agree on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for i in among or [i for i, d in self.nodes.items() if d.alive()]:
                seen.add(await leader_seen_by(self.client_ports[i]))
            if len(seen) == 1 and None not in seen:
                return seen.pop()  # type: ignore[return-value]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no agreed leader within {timeout}s")


async def leader_seen_by(port: int) -> int | None:
    """Ask a node who leads (resuming a session that never existed creates nothing)."""
    conn = Connection("127.0.0.1", port)
    try:
        await conn.connect(timeout=1.0)
        resp = await conn.request(MdConnectRequest(timeout_ms=1000, session_id=1), timeout=3.0)
        return int(resp.leader) if resp.leader else None
    except (OSError, TimeoutError, ConnectionError, MoldauError):
        return None
    finally:
        await conn.close()


async def dump(c: MetadataClient, path: str = "/") -> dict[str, tuple[bytes, Stat]]:
    out = {path: await c.get(path)}
    for kid in await c.children(path):
        out.update(await dump(c, f"{path.rstrip('/')}/{kid}"))
    return out


async def node_view(q: Quorum, i: int) -> dict[str, tuple[bytes, Stat]]:
    """Node ``i``'s own tree (after a sync), through a client bound to it alone."""
    async with MetadataClient(q.address(i), session_timeout_ms=3000) as c:
        await c.sync()
        view = await dump(c)
    # the inspecting client's own session is not part of the data
    return view


async def retrying(fn: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Call ``fn`` until it succeeds (a write whose outcome was unknown is retried by the
    caller's own idempotent ``fn``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except MoldauError as e:
            if time.monotonic() > deadline or not e.retriable:
                raise
            await asyncio.sleep(0.05)


async def create_idempotent(c: MetadataClient, path: str, data: bytes = b"") -> None:
    try:
        await c.create(path, data)
    except MoldauError as e:
        if e.code != ErrorCode.NODE_EXISTS:
            raise


def test_quorum_configuration_from_flags_and_zookeeper_files(tmp_path: Path) -> None:
    cfg = load_config(["--data-dir", str(tmp_path), "--id", "2", "--peers",
                       "1=h1:2888, 2=h2:2888,3=[::1]:2890"])
    assert cfg.quorum and cfg.id == 2
    assert cfg.peer_map() == {1: ("h1", 2888), 2: ("h2", 2888), 3: ("::1", 2890)}
    single = load_config(["--data-dir", str(tmp_path)])
    assert not single.quorum and single.peer_map() == {}
    (tmp_path / "myid").write_text("3\n")
    conf = tmp_path / "zoo.cfg"
    conf.write_text(f"dataDir={tmp_path}\nclientPort=2181\nserver.1=a:2888:3888\n"
                    "server.2=b:2888:3888\nserver.3=c:2888:3888;2181\n")
    zk = load_config(["--config", str(conf)])
    assert zk.id == 3 and zk.peer_map() == {1: ("a", 2888), 2: ("b", 2888), 3: ("c", 2888)}
    for bad in (["--id", "4", "--peers", "1=a:1,2=b:2,3=c:3"],  # not a member
                ["--id", "1", "--peers", "1=a:1,1=b:2"],  # id twice
                ["--id", "1", "--peers", "1=a"],  # no port
                ["--id", "1", "--peers", "1=a:1,2=b:2", "--election-timeout-ms", "100",
                 "--heartbeat-ms", "80"]):
        with pytest.raises(SystemExit):
            load_config(["--data-dir", str(tmp_path / "x"), *bad])


@pytest.fixture
def quorum(procs: Processes) -> Quorum:
    return Quorum(procs).start_all()


async def test_leader_kill_keeps_sessions_ephemerals_and_acknowledged_writes(
        quorum: Quorum) -> None:
    q = quorum
    leader = await q.leader()
    acked: list[str] = []
    # a client with the full connect string, on a follower, holding an ephemeral node
    zk = MetadataClient(q.connect_string, session_timeout_ms=3000)
    await zk.start()
    sid = zk.session_id
    await zk.create("/brokers/ids/1", b"broker", ephemeral=True, make_parents=True)
    async with MetadataClient(q.connect_string) as w:
        await w.create("/acked")
        for i in range(30):
            await w.create(f"/acked/a{i}", str(i).encode())
            acked.append(f"a{i}")
    killed_at = time.monotonic()
    q.nodes[leader].kill()
    survivors = [i for i in q.ids if i != leader]
    new_leader = await q.leader(survivors)
    elected_in = time.monotonic() - killed_at
    print(f"leader {leader} killed; {new_leader} elected in {elected_in:.2f}s")
    assert new_leader != leader and elected_in < 5
    async with MetadataClient(q.connect_string) as w:
        for i in range(30, 60):
            await retrying(lambda i=i: create_idempotent(w, f"/acked/a{i}", str(i).encode()))
            acked.append(f"a{i}")
        assert sorted(await w.children("/acked")) == sorted(acked)
    # longer than the session timeout: only pings to a surviving node kept the session
    await asyncio.sleep(4.0)
    assert zk.connected and not zk.expired.is_set() and zk.session_id == sid
    async with MetadataClient(q.connect_string) as other:
        stat = await other.exists("/brokers/ids/1")
        assert stat is not None and stat.ephemeral_owner == sid
    await zk.create("/from-the-old-session")
    # the killed node comes back and catches up (from its log and the leader's)
    q.start(leader)
    views = [await node_view(q, i) for i in q.ids]
    assert views[0] == views[1] == views[2]
    assert set(acked) <= {p.rsplit("/", 1)[1] for p in views[0] if p.startswith("/acked/")}
    await zk.close()
    async with MetadataClient(q.connect_string) as c:
        assert await c.exists("/brokers/ids/1") is None  # closing deleted it at once


async def test_writes_succeed_with_any_one_node_down(quorum: Quorum) -> None:
    q = quorum
    async with MetadataClient(q.connect_string, session_timeout_ms=4000) as c:
        await c.create("/round")
        for down in q.ids:
            q.nodes[down].kill()
            for k in range(5):
                await retrying(lambda d=down, k=k: create_idempotent(c, f"/round/{d}-{k}"))
            q.start(down)
            await q.leader()
        assert len(await c.children("/round")) == 15
    views = [await node_view(q, i) for i in q.ids]
    assert views[0] == views[1] == views[2]


async def test_restarted_node_catches_up_through_a_snapshot(procs: Processes) -> None:
    q = Quorum(procs, extra=["--snapshot-every", "20"]).start_all()
    leader = await q.leader()
    follower = next(i for i in q.ids if i != leader)
    async with MetadataClient(",".join(q.address(i) for i in q.ids if i != follower)) as c:
        await c.create("/s")
        q.nodes[follower].kill()
        for i in range(100):  # several snapshots while it is away: its entries are gone
            await c.create(f"/s/n{i}", str(i).encode())
        await c.set("/s", b"last")
    q.start(follower)
    async with MetadataClient(q.address(follower)) as c:
        await c.sync()
        assert (await c.get("/s"))[0] == b"last"
        assert len(await c.children("/s")) == 100
    assert "installing the leader's snapshot" in q.log(follower)
    views = [await node_view(q, i) for i in q.ids]
    assert views[0] == views[1] == views[2]


async def test_a_frozen_leader_is_replaced_and_steps_down_when_it_thaws(
        quorum: Quorum) -> None:
    q = quorum
    leader = await q.leader()
    others = [i for i in q.ids if i != leader]
    async with MetadataClient(",".join(q.address(i) for i in others)) as c:
        await c.create("/before", b"1")
        q.nodes[leader].signal(signal.SIGSTOP)  # alive but silent: a partition
        try:
            new_leader = await q.leader(others)
            assert new_leader != leader
            for i in range(10):
                await retrying(lambda i=i: create_idempotent(c, f"/during-{i}"))
        finally:
            q.nodes[leader].signal(signal.SIGCONT)
        # the old leader learns of the newer term, follows, and catches up
        assert await q.leader() == new_leader
        async with MetadataClient(q.address(leader)) as old:
            await old.sync()
            assert {f"during-{i}" for i in range(10)} <= set(await old.children("/"))
        await c.set("/before", b"2")
    views = [await node_view(q, i) for i in q.ids]
    assert views[0] == views[1] == views[2]


async def test_a_minority_refuses_writes_and_loses_nothing(quorum: Quorum) -> None:
    q = quorum
    survivor = q.ids[0]
    c = MetadataClient(q.address(survivor), session_timeout_ms=2000)
    await c.start()
    for i in range(10):
        await c.create(f"/k{i}")
    for i in q.ids[1:]:
        q.nodes[i].kill()
    t0 = time.monotonic()
    with pytest.raises(MoldauError) as ei:
        await c.create("/minority")
    refused = ei.value.code
    print(f"refused after {time.monotonic() - t0:.1f}s: {ei.value}")
    assert refused in (ErrorCode.NOT_QUORUM_LEADER, ErrorCode.CONNECTION_LOSS)
    with pytest.raises(MoldauError):  # nor does it take new sessions
        async with MetadataClient(q.address(survivor), connect_timeout=1.0):
            pass
    for i in q.ids[1:]:
        q.start(i)
    async with MetadataClient(q.connect_string) as c2:
        await retrying(c2.sync)
        kids = await c2.children("/")
        assert {f"k{i}" for i in range(10)} <= set(kids)
        if refused == ErrorCode.NOT_QUORUM_LEADER:
            assert "minority" not in kids  # refused means not applied
        await c2.create("/majority-again")
    await c.close()


async def test_five_nodes_started_by_the_cli_survive_two_failures(procs: Processes) -> None:
    q = Quorum(procs, n=5, via_cli=True).start_all()
    first = await q.leader()
    async with MetadataClient(q.connect_string, session_timeout_ms=4000) as c:
        await c.create("/five", b"0")
        down = [first, next(i for i in q.ids if i != first)]
        for i in down:
            q.nodes[i].kill()
        for k in range(1, 11):
            await retrying(lambda k=k: c.set("/five", str(k).encode()))
        assert (await c.get("/five"))[0] == b"10"
        q.nodes[next(i for i in q.ids if i not in down)].kill()  # a third: now a minority
        with pytest.raises(MoldauError):
            await c.set("/five", b"lost")
    for i in q.ids:
        if not q.nodes[i].alive():
            q.start(i)
    async with MetadataClient(q.connect_string, session_timeout_ms=4000) as c:
        # once this commits, whatever came before it in the log (the refused write, if a
        # leader had logged it) is decided, so every node's view is final
        await retrying(lambda: create_idempotent(c, "/settled"), timeout=20)
    views = [await node_view(q, i) for i in q.ids]
    assert all(v == views[0] for v in views)
    assert views[0]["/five"][0] in (b"10", b"lost")  # that write's outcome was unknown


@pytest.mark.timeout(180)
async def test_register_history_under_random_faults_is_linearizable(quorum: Quorum) -> None:
    """Several clients set and (sync+)get one register while nodes are killed, restarted
    and frozen at random; the history must be linearizable and nothing acknowledged lost."""
    q = quorum
    seed = random.randrange(2**32)
    print("fault schedule seed", seed)
    rng = random.Random(seed)
    async with MetadataClient(q.connect_string) as c:
        await c.create("/reg", b"0")
    history: list[Op] = []
    events = iter(range(10**9))
    next_value = iter(range(1, 10**9))
    stop = asyncio.Event()

    async def client(k: int) -> None:
        zk = MetadataClient(q.connect_string, session_timeout_ms=4000)
        await retrying(zk.start, timeout=20)
        try:
            while not stop.is_set():
                if rng.random() < 0.5:
                    v = next(next_value)
                    op = Op("w", v, next(events))
                    history.append(op)
                    try:
                        await zk.set("/reg", str(v).encode())
                        op.resp = next(events)
                    except MoldauError as e:
                        if e.code == ErrorCode.NOT_QUORUM_LEADER:
                            history.remove(op)  # refused: it was not applied
                        # else: outcome unknown, the op stays pending
                else:
                    op = Op("r", None, next(events))
                    try:
                        await zk.sync()
                        op.value = int((await zk.get("/reg"))[0])
                        op.resp = next(events)
                        history.append(op)
                    except MoldauError:
                        pass
                await asyncio.sleep(rng.uniform(0, 0.02))
        finally:
            await zk.close()

    async def chaos() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            victim = rng.choice(q.ids)
            if rng.random() < 0.5:
                q.nodes[victim].kill()
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                await asyncio.to_thread(q.start, victim)
            else:
                q.nodes[victim].signal(signal.SIGSTOP)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                q.nodes[victim].signal(signal.SIGCONT)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
        stop.set()

    await asyncio.gather(chaos(), *(client(k) for k in range(3)))
    async with MetadataClient(q.connect_string) as c:
        await retrying(c.sync, timeout=20)
        final = int((await c.get("/reg"))[0])
    history.append(Op("r", final, next(events), next(events)))
    done = [o for o in history if o.resp != INF]
    print(f"seed {seed}: {len(history)} ops, {len(done)} completed, final value {final}")
    assert len([o for o in done if o.kind == "w"]) > 10
    assert linearizable(history, initial=0), f"not linearizable (seed {seed})"
