"""Broker lifecycle: registration, clean shutdown, session expiry, two brokers sharing the
work, duplicate ids, memory at rest."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import Processes, free_port
from test_broker_helpers import (
    FAST_SESSION,
    batch,
    connect,
    create_topic,
    fetch,
    fetch_all,
    metadata,
    produce,
    values_of,
)

from moldau.clients.metadata.client import MetadataClient
from moldau.clients.protocol import ErrorCode


async def broker_ids(md_address: str) -> list[str]:
    client = MetadataClient(md_address)
    await client.start()
    try:
        return await client.children("/brokers/ids")
    finally:
        await client.close()


async def wait_for_ids(md_address: str, expected: list[str], timeout: float) -> bool:
    for _ in range(int(timeout / 0.2)):
        if await broker_ids(md_address) == expected:
            return True
        await asyncio.sleep(0.2)
    return await broker_ids(md_address) == expected


async def test_sigterm_stops_cleanly_and_deregisters(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address)
    assert await broker_ids(md.address) == ["1"]
    conn = await connect(b.address)
    await create_topic(conn, "bye")
    await produce(conn, "bye", 0, batch([b"x"]))
    # a long poll in flight must not hold the shutdown up
    parked = asyncio.create_task(fetch(conn, "bye", 0, 1, max_wait_ms=60000))
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    assert b.popen is not None
    rc = await asyncio.to_thread(b.popen.wait, 10)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed < 5, f"shutdown took {elapsed:.1f}s"
    # the registration went with the session, not after a session timeout
    assert await broker_ids(md.address) == []
    try:
        entry = await asyncio.wait_for(parked, 5)
        assert entry[1] == 0
    except Exception:  # or the connection closed under it: both are fine
        pass
    await conn.close()
    assert "shutting down" in b.tail()


async def test_restart_keeps_data(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address)
    conn = await connect(b.address)
    await create_topic(conn, "keep", partitions=2)
    for i in range(10):
        await produce(conn, "keep", i % 2, batch([b"%d" % i]))
    await conn.close()
    assert b.stop() == 0
    b = procs.broker(1, md.address, port=b.port)
    conn = await connect(b.address)
    assert [v for _, v in values_of(await fetch_all(conn, "keep", 0))] == \
        [b"0", b"2", b"4", b"6", b"8"]
    assert (await produce(conn, "keep", 1, batch([b"more"])))[2] == 5
    await conn.close()


async def test_two_brokers_share_partitions(procs: Processes) -> None:
    md = procs.metadata()
    b1 = procs.broker(1, md.address)
    b2 = procs.broker(2, md.address)
    c1 = await connect(b1.address)
    c2 = await connect(b2.address)
    assert (await create_topic(c1, "shared", partitions=6))["error_code"] == 0
    meta = await metadata(c1, ["shared"])
    assert sorted(b[0] for b in meta.brokers) == [1, 2]
    leaders = {p["partition"]: p["leader"] for p in meta.topics[0]["partitions"]}
    assert sorted(leaders.values()) == [1, 1, 1, 2, 2, 2]
    # broker 2 learns of the topic from its watch
    for _ in range(50):
        meta2 = await metadata(c2, ["shared"])
        if meta2.topics[0]["error_code"] == 0:
            break
        await asyncio.sleep(0.1)
    assert {p["partition"]: p["leader"] for p in meta2.topics[0]["partitions"]} == leaders
    conns = {1: c1, 2: c2}
    for p, leader in leaders.items():
        other = 3 - leader
        entry = await produce(conns[leader], "shared", p, batch([b"p%d" % p]))
        assert entry[1] == 0, (p, entry)
        entry = await produce(conns[other], "shared", p, batch([b"wrong"]))
        assert entry[1] == ErrorCode.NOT_LEADER_OR_FOLLOWER, (p, entry)
        assert (await fetch(conns[other], "shared", p, 0))[1] == \
            ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert values_of(await fetch_all(conns[leader], "shared", p)) == [(0, b"p%d" % p)]
    await c1.close()
    await c2.close()


async def test_duplicate_broker_id_fails_clearly(procs: Processes, tmp_path: Path) -> None:
    md = procs.metadata()
    procs.broker(1, md.address, extra=FAST_SESSION)
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "moldau.broker", "--broker-id", "1", "--listeners",
        "127.0.0.1:0", "--log-dirs", str(tmp_path / "other"), "--zookeeper", md.address,
        *FAST_SESSION, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode != 0
    assert b"already running" in err, err
    assert await broker_ids(md.address) == ["1"]


async def test_restart_after_kill_reregisters(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address, extra=FAST_SESSION)
    b.kill()
    # the old session's node is still there; the new broker waits for it to expire
    t0 = time.monotonic()
    b = procs.broker(1, md.address, extra=FAST_SESSION)
    assert time.monotonic() - t0 < 10
    assert await broker_ids(md.address) == ["1"]


@pytest.mark.timeout(60)
async def test_session_expiry_reregisters(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address, extra=FAST_SESSION)
    conn = await connect(b.address)
    await create_topic(conn, "expire")
    await conn.close()
    b.signal(signal.SIGSTOP)
    try:
        assert await wait_for_ids(md.address, [], 15)
    finally:
        b.signal(signal.SIGCONT)
    assert await wait_for_ids(md.address, ["1"], 15)
    conn = await connect(b.address)
    assert (await produce(conn, "expire", 0, batch([b"back"])))[1] == 0
    # watches work again on the new session: a new topic is seen
    assert (await create_topic(conn, "after-expiry"))["error_code"] == 0
    assert (await produce(conn, "after-expiry", 0, batch([b"x"])))[1] == 0
    await conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_at_rest(procs: Processes) -> None:
    md = procs.metadata()
    b = procs.broker(1, md.address)
    await asyncio.sleep(0.5)
    idle = rss_mb(b.pid)
    conn = await connect(b.address)
    for i in range(10):
        assert (await create_topic(conn, f"mem{i}", partitions=10))["error_code"] == 0
    for i in range(10):
        for p in range(10):
            await produce(conn, f"mem{i}", p, batch([b"x" * 100] * 10))
    await conn.close()
    await asyncio.sleep(0.5)
    loaded = rss_mb(b.pid)
    print(f"broker RSS idle {idle:.1f} MB, with 100 partitions {loaded:.1f} MB")
    assert idle <= 60
    assert loaded <= 150


async def test_unreachable_metadata_service_fails_clearly(tmp_path: Path) -> None:
    port = free_port()
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "moldau.broker", "--broker-id", "1", "--listeners",
        "127.0.0.1:0", "--log-dirs", str(tmp_path / "logs"), "--zookeeper",
        f"127.0.0.1:{port}", "--override", "zookeeper.connection.timeout.ms=1000",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 1
    assert b"ready" not in out
    assert f"127.0.0.1:{port}".encode() in err, err
    # the log directory was released: another broker can take it at once
    assert (tmp_path / "logs").is_dir()
