"""The metadata service survives kill -9: txn log replay, snapshots, torn tails, and sessions
that outlive a restart."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from harness import DaemonProcess, Processes
from test_metadata_service import MD_ARGS, spawn_ephemeral_client, until

from moldau.clients.metadata import MetadataClient, Stat, WatchEvent, WatchEventType


async def dump(c: MetadataClient, path: str = "/") -> dict[str, tuple[bytes, Stat]]:
    """Every node under ``path`` with its data and stat."""
    out = {path: await c.get(path)}
    for kid in await c.children(path):
        out.update(await dump(c, f"{path.rstrip('/')}/{kid}"))
    return out


def restart(procs: Processes, md: DaemonProcess, extra: list[str] | None = None
            ) -> DaemonProcess:
    """SIGKILL ``md`` and start a new process on the same port and data directory."""
    md.kill()
    return procs.metadata(port=md.port, extra=extra if extra is not None else MD_ARGS)


async def test_kill9_restart_restores_persistent_nodes_and_expires_dead_sessions(
        procs: Processes, tmp_path: Path) -> None:
    md = procs.metadata(extra=MD_ARGS)
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    async with MetadataClient(md.address) as c:
        await c.ensure_path("/brokers/topics")
        for i in range(30):
            await c.create(f"/brokers/topics/t{i}", rng.randbytes(rng.randrange(100)))
            for _ in range(rng.randrange(3)):
                await c.set(f"/brokers/topics/t{i}", rng.randbytes(8))
        await c.delete("/brokers/topics/t3")
        await c.create("/seq/n-", sequential=True, make_parents=True)
        before = await dump(c)
    client = await asyncio.to_thread(spawn_ephemeral_client, procs, tmp_path, md.address,
                                     "/brokers/ids/1", 2500)
    client.kill()  # its session does not come back
    md = await asyncio.to_thread(restart, procs, md)
    async with MetadataClient(md.address) as c:
        # the dead client's session got a fresh timeout at the restart: still there now
        assert await c.exists("/brokers/ids/1") is not None
        after = await dump(c)
        assert set(after) == set(before) | {"/brokers/ids", "/brokers/ids/1"}
        for path, (data, stat) in before.items():
            if path != "/brokers":  # it gained the ids child since
                assert after[path] == (data, stat), path
        gone = asyncio.Event()
        await c.exists("/brokers/ids/1", watch=lambda ev: gone.set())
        async with asyncio.timeout(6):
            await gone.wait()
        assert await c.children("/brokers/ids") == []
        assert await c.create("/seq/n-", sequential=True) == "/seq/n-0000000001"


async def test_a_running_client_resumes_its_session_across_a_quick_restart(
        procs: Processes) -> None:
    md = procs.metadata(extra=MD_ARGS)
    zk = MetadataClient(md.address, session_timeout_ms=3000)
    await zk.start()
    sid = zk.session_id
    await zk.create("/live", b"me", ephemeral=True)
    await zk.create("/w", b"0")
    events: list[WatchEvent] = []
    assert await zk.exists("/w", watch=events.append) is not None
    assert await zk.children("/", watch=events.append) == ["live", "w"]
    md.kill()
    await until(lambda: not zk.connected)
    # issued while disconnected: waits for the reconnection, then answers
    pending = asyncio.ensure_future(zk.get("/live"))
    md = await asyncio.to_thread(procs.metadata, "metadata", md.port, MD_ARGS)
    assert (await asyncio.wait_for(pending, 5))[0] == b"me"
    assert zk.connected and zk.session_id == sid and not zk.expired.is_set()
    await asyncio.sleep(3.5)  # longer than the session timeout: only pings kept it alive
    async with MetadataClient(md.address) as other:
        stat = await other.exists("/live")
        assert stat is not None and stat.ephemeral_owner == sid
        # the watches were registered again on the new connection
        await other.set("/w", b"1")
        await until(lambda: len(events) == 1)
        await other.create("/x")
        await until(lambda: len(events) == 2)
        assert events == [WatchEvent(WatchEventType.NODE_DATA_CHANGED, "/w"),
                          WatchEvent(WatchEventType.NODE_CHILDREN_CHANGED, "/")]
    await zk.close()


async def test_watch_on_a_node_changed_during_the_outage_fires_on_reconnect(
        procs: Processes) -> None:
    md = procs.metadata(extra=MD_ARGS)
    async with MetadataClient(md.address) as c:
        await c.create("/cfg", b"old")
    zk = MetadataClient(md.address, session_timeout_ms=5000)
    await zk.start()
    events: list[WatchEvent] = []
    await zk.get("/cfg", watch=events.append)
    await zk.exists("/later", watch=events.append)
    port = md.port
    md.kill()
    await until(lambda: not zk.connected)
    # change the tree while the watcher is away: the same data on a port it does not know
    md = await asyncio.to_thread(procs.metadata, "metadata", 0, MD_ARGS)
    async with MetadataClient(md.address) as c:
        await c.set("/cfg", b"new")
        await c.create("/later")
    assert not zk.connected and not events
    md.kill()
    md = await asyncio.to_thread(procs.metadata, "metadata", port, MD_ARGS)
    await until(lambda: zk.connected, timeout=5)
    await until(lambda: len(events) == 2)
    assert sorted(events) == sorted([WatchEvent(WatchEventType.NODE_DATA_CHANGED, "/cfg"),
                                     WatchEvent(WatchEventType.NODE_CREATED, "/later")])
    await zk.close()


async def test_snapshot_and_log_replay(procs: Processes) -> None:
    args = [*MD_ARGS, "--snapshot-every", "50"]
    md = procs.metadata(extra=args)
    data_dir = md.log_path.parent.parent / "metadata"
    async with MetadataClient(md.address) as c:
        await c.create("/t")
        for i in range(120):
            await c.create(f"/t/n{i}", str(i).encode())
        for i in range(0, 120, 3):
            await c.set(f"/t/n{i}", b"changed")
        for i in range(0, 120, 7):
            await c.delete(f"/t/n{i}")
        before = await dump(c)
    snaps = sorted(p.name for p in data_dir.glob("snapshot.*"))
    logs = sorted(p.name for p in data_dir.glob("log.*"))
    assert len(snaps) == 2, snaps  # 200+ transactions, every 50: only the newest two kept
    assert "log.0000000000000001" not in logs and len(logs) <= 3, logs
    md = await asyncio.to_thread(restart, procs, md, args)
    async with MetadataClient(md.address) as c:
        after = await dump(c)
        assert after == before
        await c.set("/t/n1", b"after restart")
    assert await asyncio.to_thread(md.stop) == 0
    md = await asyncio.to_thread(procs.metadata, "metadata", md.port, args)
    async with MetadataClient(md.address) as c:
        assert (await c.get("/t/n1"))[0] == b"after restart"
        assert len(await c.children("/t")) == len(before) - 2


async def test_torn_tail_of_the_txn_log_is_truncated(procs: Processes) -> None:
    md = procs.metadata(extra=MD_ARGS)
    data_dir = md.log_path.parent.parent / "metadata"
    async with MetadataClient(md.address) as c:
        for i in range(20):
            await c.create(f"/n{i}", f"v{i}".encode())
        before = await dump(c)
    md.kill()
    newest = max(data_dir.glob("log.*"))
    size = newest.stat().st_size
    with newest.open("ab") as f:
        f.write(b"\x00\x00\x00\x40torn record: the crash cut it short" + bytes(range(17)))
    md = await asyncio.to_thread(procs.metadata, "metadata", md.port, MD_ARGS)
    assert newest.stat().st_size == size  # the garbage is gone
    assert "truncating" in md.tail()
    async with MetadataClient(md.address) as c:
        assert await dump(c) == before
        await c.create("/after", b"ok")
    md = await asyncio.to_thread(restart, procs, md)
    async with MetadataClient(md.address) as c:
        assert (await c.get("/after"))[0] == b"ok"
        assert len(await c.children("/")) == 21


async def test_acknowledged_writes_survive_kill9_under_concurrency(procs: Processes) -> None:
    """Group commit: many concurrent writers; every acknowledged create is on disk."""
    md = procs.metadata(extra=MD_ARGS)
    acked: list[str] = []
    async with MetadataClient(md.address) as c:
        await c.create("/c")

        async def writer(w: int) -> None:
            for i in range(40):
                p = await c.create(f"/c/w{w}-", str(i).encode(), sequential=True)
                acked.append(p)

        t0 = time.monotonic()
        await asyncio.gather(*(writer(w) for w in range(8)))
        print(f"320 concurrent creates in {time.monotonic() - t0:.2f}s")
    md = await asyncio.to_thread(restart, procs, md)
    async with MetadataClient(md.address) as c:
        kids = await c.children("/c")
    assert sorted(p.rsplit("/", 1)[1] for p in acked) == kids
