"""The metadata service over the wire: a real daemon process and the MetadataClient."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from harness import DaemonProcess, Processes

from moldau.clients.metadata import MetadataClient, WatchEvent, WatchEventType
from moldau.clients.protocol import ErrorCode, MoldauError, encode_request
from moldau.clients.protocol.messages import (
    Api,
    ApiVersionsRequest,
    MdConnectRequest,
    MdGetDataRequest,
    MdPingRequest,
)
from moldau.clients.rpc import Connection

# short ticks and timeouts keep the expiry tests fast
MD_ARGS = ["--tick-ms", "50", "--min-session-timeout-ms", "300"]
W = WatchEventType


@pytest.fixture
def md(procs: Processes) -> DaemonProcess:
    return procs.metadata(extra=MD_ARGS)


@pytest.fixture
async def zk(md: DaemonProcess) -> AsyncIterator[MetadataClient]:
    async with MetadataClient(md.address, session_timeout_ms=5000) as c:
        yield c


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def expect_error(code: ErrorCode, coro: object) -> MoldauError:
    with pytest.raises(MoldauError) as ei:
        await coro  # type: ignore[misc]
    assert ei.value.code == code, ei.value
    return ei.value


async def test_create_get_set_delete_with_versions(zk: MetadataClient) -> None:
    assert await zk.create("/app", b"v0") == "/app"
    data, stat = await zk.get("/app")
    assert data == b"v0" and stat.version == 0 and stat.data_length == 2
    assert stat.ephemeral_owner == 0 and stat.czxid == stat.mzxid
    stat1 = await zk.set("/app", b"v1", version=0)
    assert stat1.version == 1 and stat1.mzxid > stat.mzxid and stat1.czxid == stat.czxid
    e = await expect_error(ErrorCode.BAD_VERSION, zk.set("/app", b"v2", version=0))
    assert e.message == "/app"
    assert (await zk.get("/app"))[0] == b"v1"
    await expect_error(ErrorCode.NODE_EXISTS, zk.create("/app"))
    await expect_error(ErrorCode.NO_NODE, zk.create("/missing/child"))
    await expect_error(ErrorCode.NO_NODE, zk.get("/nope"))
    await expect_error(ErrorCode.NO_NODE, zk.set("/nope", b""))
    assert await zk.exists("/nope") is None
    assert await zk.create("/app/a/b/c", b"deep", make_parents=True) == "/app/a/b/c"
    await zk.ensure_path("/app/a/b/c/d/e")
    assert await zk.children("/app/a/b/c/d") == ["e"]
    await expect_error(ErrorCode.NOT_EMPTY, zk.delete("/app"))
    await expect_error(ErrorCode.BAD_VERSION, zk.delete("/app/a/b/c/d/e", version=3))
    await zk.delete("/app/a/b/c/d/e", version=0)
    parent = await zk.exists("/app/a/b/c/d")
    assert parent is not None and parent.num_children == 0 and parent.cversion == 2
    await zk.delete("/app", recursive=True)
    assert await zk.exists("/app") is None
    await expect_error(ErrorCode.NO_NODE, zk.delete("/app"))
    await zk.sync()


async def test_sequential_nodes(zk: MetadataClient) -> None:
    await zk.create("/queue")
    made = [await zk.create("/queue/item-", str(i).encode(), sequential=True)
            for i in range(12)]
    assert made == [f"/queue/item-{i:010d}" for i in range(12)]
    await zk.delete(made[0])
    # the suffix is the parent's cversion, which deletes bump too
    assert await zk.create("/queue/item-", sequential=True) == "/queue/item-0000000013"
    kids = await zk.children("/queue")
    assert kids == sorted(kids) and len(kids) == 12
    ephemeral_seq = await zk.create("/queue/lock-", ephemeral=True, sequential=True)
    assert ephemeral_seq == "/queue/lock-0000000014"


async def test_ephemeral_nodes_go_with_their_session(md: DaemonProcess,
                                                     zk: MetadataClient) -> None:
    await zk.create("/brokers/ids", make_parents=True)
    other = MetadataClient(md.address, session_timeout_ms=5000)
    await other.start()
    await other.create("/brokers/ids/1", b'{"host":"h"}', ephemeral=True)
    stat = await zk.exists("/brokers/ids/1")
    assert stat is not None and stat.ephemeral_owner == other.session_id != 0
    await expect_error(ErrorCode.NO_CHILDREN_FOR_EPHEMERALS,
                       other.create("/brokers/ids/1/x"))
    gone = asyncio.Event()
    assert await zk.exists("/brokers/ids/1", watch=lambda ev: gone.set()) is not None
    await other.close()
    # deleted at once on close, not after the session timeout
    async with asyncio.timeout(2):
        await gone.wait()
    assert await zk.children("/brokers/ids") == []
    await expect_error(ErrorCode.SESSION_EXPIRED, other.get("/"))


async def test_watches_fire_once_for_each_event_type(md: DaemonProcess,
                                                     zk: MetadataClient) -> None:
    writer = MetadataClient(md.address)
    await writer.start()
    got: list[WatchEvent] = []
    # NODE_CREATED through exists on a missing node
    assert await zk.exists("/w", watch=got.append) is None
    await writer.create("/w", b"1")
    await until(lambda: len(got) == 1)
    # NODE_DATA_CHANGED through get, once only
    await zk.get("/w", watch=got.append)
    await writer.set("/w", b"2")
    await writer.set("/w", b"3")
    await until(lambda: len(got) == 2)
    # NODE_CHILDREN_CHANGED through children
    assert await zk.children("/w", watch=got.append) == []
    await writer.create("/w/kid")
    await until(lambda: len(got) == 3)
    # NODE_DELETED to both a data and a child watch of the deleted node
    await zk.get("/w/kid", watch=got.append)
    await zk.children("/w/kid", watch=lambda ev: got.append(ev))
    parent_watch: list[WatchEvent] = []
    await zk.children("/w", watch=parent_watch.append)
    await writer.delete("/w/kid")
    await until(lambda: len(got) == 5 and len(parent_watch) == 1)
    await zk.sync()
    await writer.create("/w/kid2")
    await writer.set("/w", b"4")
    await asyncio.sleep(0.2)
    assert got == [
        WatchEvent(W.NODE_CREATED, "/w"),
        WatchEvent(W.NODE_DATA_CHANGED, "/w"),
        WatchEvent(W.NODE_CHILDREN_CHANGED, "/w"),
        WatchEvent(W.NODE_DELETED, "/w/kid"),
        WatchEvent(W.NODE_DELETED, "/w/kid"),
    ]
    assert parent_watch == [WatchEvent(W.NODE_CHILDREN_CHANGED, "/w")]
    # a get on a missing node leaves no watch
    await expect_error(ErrorCode.NO_NODE, zk.get("/absent", watch=got.append))
    await writer.create("/absent")
    await asyncio.sleep(0.2)
    assert len(got) == 5
    # the same callback on one path fires once; a watcher sees its own changes
    once: list[WatchEvent] = []
    await zk.get("/w", watch=once.append)
    await zk.exists("/w", watch=once.append)
    await zk.set("/w", b"5")
    await until(lambda: len(once) == 1)
    await asyncio.sleep(0.1)
    assert once == [WatchEvent(W.NODE_DATA_CHANGED, "/w")]
    await writer.close()


async def test_multi_is_atomic(zk: MetadataClient) -> None:
    await zk.create("/m", b"x")
    e = await expect_error(ErrorCode.NODE_EXISTS, zk.multi([
        {"op": "create", "path": "/m/a", "data": b"a"},
        {"op": "set", "path": "/m", "data": b"y", "version": 0},
        {"op": "create", "path": "/m"},
    ]))
    assert e.message == "/m"
    assert await zk.exists("/m/a") is None
    assert await zk.get("/m") == (b"x", (await zk.get("/m"))[1])
    assert (await zk.get("/m"))[1].version == 0
    await expect_error(ErrorCode.BAD_VERSION, zk.multi([
        {"op": "check", "path": "/m", "version": 7},
        {"op": "delete", "path": "/m"},
    ]))
    results = await zk.multi([
        {"op": "check", "path": "/m", "version": 0},
        {"op": "create", "path": "/m/a", "data": b"a"},
        {"op": "create", "path": "/m/s-", "sequential": True, "ephemeral": True},
        {"op": "set", "path": "/m", "data": b"z", "version": 0},
        {"op": "delete", "path": "/m/a"},
    ])
    assert [r["error_code"] for r in results] == [0] * 5
    assert results[2]["path"] == "/m/s-0000000001"
    assert results[3]["stat"]["version"] == 1
    assert await zk.children("/m") == ["s-0000000001"]
    assert (await zk.get("/m"))[0] == b"z"
    await expect_error(ErrorCode.BAD_ARGUMENTS, zk.multi([{"op": "rename", "path": "/m"}]))


async def test_bad_paths_are_bad_arguments(zk: MetadataClient) -> None:
    for path in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "/a\x00"]:
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.create(path))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.get(path))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.exists(path))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.children(path))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.set(path, b""))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.delete(path))
        await expect_error(ErrorCode.BAD_ARGUMENTS, zk.multi([{"op": "create", "path": path}]))
    await expect_error(ErrorCode.BAD_ARGUMENTS, zk.delete("/"))
    await expect_error(ErrorCode.BAD_ARGUMENTS, zk.create("/big", b"x" * (1024 * 1024 + 1)))
    await zk.create("/ok")
    # a sequential create may end in '/': the suffix is the whole name
    assert await zk.create("/ok/", sequential=True) == "/ok/0000000000"
    assert await zk.children("/") == ["ok"]


async def test_connect_first_and_api_versions(md: DaemonProcess) -> None:
    conn = Connection(md.host, md.port)
    await conn.connect()
    try:
        versions = await conn.request(ApiVersionsRequest())
        apis = {a for a, _, _ in versions.api_keys}
        assert {int(Api.MD_CONNECT), int(Api.MD_MULTI), int(Api.API_VERSIONS)} <= apis
        assert int(Api.PRODUCE) not in apis
        resp = await conn.request(MdGetDataRequest(path="/"))
        assert resp.error_code == ErrorCode.INVALID_REQUEST
        resp = await conn.request(MdConnectRequest(timeout_ms=999_999_999))
        assert resp.error_code == 0 and resp.timeout_ms == 60000  # clamped to the max
        assert (await conn.request(MdPingRequest())).error_code == 0
        assert (await conn.request(MdGetDataRequest(path="/"))).error_code == 0
        # resuming a session nobody ever had
        other = Connection(md.host, md.port)
        await other.connect()
        resp = await other.request(MdConnectRequest(timeout_ms=1000, session_id=12345))
        assert resp.error_code == ErrorCode.SESSION_EXPIRED
        await other.close()
    finally:
        await conn.close()


async def test_session_expires_when_the_client_stops_pinging(md: DaemonProcess) -> None:
    watcher = MetadataClient(md.address)
    await watcher.start()
    victim = MetadataClient(md.address, session_timeout_ms=400)
    fired: list[str] = []
    victim.on_expired = lambda: fired.append("expired")
    await victim.start()
    assert victim.session_timeout_ms == 400
    await victim.create("/lease", ephemeral=True)
    gone = asyncio.Event()
    await watcher.exists("/lease", watch=lambda ev: gone.set())
    time.sleep(1.0)  # noqa: ASYNC251 - a stalled event loop (a GC pause): no pings go out
    async with asyncio.timeout(5):
        await victim.expired.wait()
        await gone.wait()
    assert fired == ["expired"]
    assert await watcher.exists("/lease") is None
    await expect_error(ErrorCode.SESSION_EXPIRED, victim.create("/x"))
    await victim.close()
    await watcher.close()


_EPHEMERAL_CLIENT = """
import asyncio, sys
from moldau.clients.metadata import MetadataClient

async def main():
    c = MetadataClient(sys.argv[1], session_timeout_ms=int(sys.argv[3]))
    await c.start()
    await c.create(sys.argv[2], b"alive", ephemeral=True, make_parents=True)
    print(f"ephemeral client ready on 127.0.0.1:{c.session_id}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def spawn_ephemeral_client(procs: Processes, tmp_path: Path, address: str, path: str,
                           timeout_ms: int, name: str = "client") -> DaemonProcess:
    script = tmp_path / "ephemeral_client.py"
    script.write_text(_EPHEMERAL_CLIENT)
    return procs.spawn(name, [sys.executable, str(script), address, path, str(timeout_ms)])


async def test_ephemeral_node_of_a_killed_client_goes_after_its_timeout(
        procs: Processes, md: DaemonProcess, zk: MetadataClient, tmp_path: Path) -> None:
    client = await asyncio.to_thread(spawn_ephemeral_client, procs, tmp_path, md.address,
                                     "/brokers/ids/7", 600)
    data, stat = await zk.get("/brokers/ids/7")
    assert data == b"alive" and stat.ephemeral_owner == client.port
    gone = asyncio.Event()
    await zk.exists("/brokers/ids/7", watch=lambda ev: gone.set())
    killed_at = time.monotonic()
    os.kill(client.pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        await gone.wait()
    # not before the session timeout (600 ms, less the last ping's age of 200 ms at most)
    assert time.monotonic() - killed_at >= 0.35
    assert await zk.exists("/brokers/ids/7") is None


async def test_garbage_on_the_wire_only_hurts_its_own_connection(
        md: DaemonProcess, zk: MetadataClient) -> None:
    await zk.create("/still", b"here")

    def raw(payload: bytes, read: bool = True) -> bytes:
        with socket.create_connection((md.host, md.port), timeout=3) as s:
            s.sendall(payload)
            if not read:
                return b""
            s.shutdown(socket.SHUT_WR)
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except OSError:
                pass
            return out

    seed = random.randrange(2**32)
    print("garbage seed", seed)
    rng = random.Random(seed)
    raw(bytes(rng.randrange(256) for _ in range(2000)))
    raw(struct.pack(">I", 0xFFFFFFF0) + b"x" * 100)  # oversize length
    raw(struct.pack(">I", 50) + b"short", read=False)  # truncated frame, then gone
    raw(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # undecodable header
    # a well-formed frame for an unknown api is answered, not dropped
    answer = raw(encode_request(4242, 0, 9, "t", {}))
    assert len(answer) > 4 and struct.unpack(">I", answer[:4])[0] == len(answer) - 4
    # a well-formed Md request with a malformed body is answered too
    answer = raw(encode_request(int(Api.MD_CREATE), 0, 10, "t", {"nopath": 1}))
    assert len(answer) > 4
    assert (await zk.get("/still"))[0] == b"here"
    async with MetadataClient(md.address) as fresh:
        assert await fresh.children("/") == ["still"]


async def test_sigterm_stops_cleanly(procs: Processes, tmp_path: Path) -> None:
    conf = tmp_path / "zoo.cfg"
    conf.write_text(f"# ZooKeeper-style\ntickTime=100\ninitLimit=5\nclientPort=0\n"
                    f"dataDir={tmp_path / 'zkdata'}\nserver.1=localhost:2888:3888\n")
    md = procs.spawn("md-conf", [sys.executable, "-m", "moldau.broker.metadata",
                                 "--config", str(conf), "--host", "127.0.0.1"])
    async with MetadataClient(md.address, session_timeout_ms=5000) as c:
        # tickTime=100 gives ZooKeeper's bounds: 2 to 20 ticks
        assert c.session_timeout_ms == 2000
        await c.create("/x")
    assert (tmp_path / "zkdata").is_dir()
    t0 = time.monotonic()
    assert await asyncio.to_thread(md.stop, 10.0) == 0
    assert time.monotonic() - t0 < 5
    assert "shutdown: done" in md.tail()
