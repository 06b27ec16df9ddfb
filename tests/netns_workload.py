"""Client workloads for multi-host tests, run as scripts on a client host, plus the checks
the tests apply to what they write.

``produce`` sends records with increasing sequence numbers (record ``s`` goes to partition
``s % partitions``) for a bounded time and writes one JSON line per outcome:

    {"ev": "start", "t": <unix time>}
    {"ev": "ack", "w": <writer>, "p": <partition>, "o": <offset>, "s": <seq>,
     "ts": <sent at>, "t": <acked at>}
    {"ev": "err", "w": <writer>, "p": <partition>, "s": <seq>, "code": "<ErrorCode name>",
     "ts": ..., "t": ...}
    {"ev": "done", "sent": n, "acked": n, "failed": n, "t": ...}

``consume`` reads every partition from the beginning up to its end offset (taken once the
cluster answers) and writes ``{"w", "p", "o", "s"}`` per record, then ``{"ev": "done", "ends"}``.
Record values are ``{"w": <writer>, "s": <seq>}`` JSON, so several producers can share a topic.

``create`` makes a topic and ``describe`` prints its partitions (leader, epoch, replicas,
ISR) as one JSON object; both print ``{"error": <code name>, "message": ...}`` on failure.
``md-leader`` prints which node each metadata quorum member takes for its leader.

Both stop by themselves: ``produce`` after ``--duration`` seconds (or on SIGTERM), ``consume``
when every partition is read or ``--timeout`` passes (exit status 3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# ---------------------------------------------------------------------- scripts


def _write(out: IO[str], **ev: Any) -> None:
    out.write(json.dumps(ev, separators=(",", ":")) + "\n")


async def _produce(a: argparse.Namespace, out: IO[str]) -> int:
    from moldau.clients import MoldauError, Producer

    kwargs: dict[str, Any] = dict(
        acks=a.acks, linger_ms=a.linger_ms, delivery_timeout_ms=a.delivery_timeout_ms,
        request_timeout_ms=a.request_timeout_ms, retry_backoff_ms=100,
        metadata_max_age_ms=5000)
    if a.retries is not None:
        kwargs["retries"] = a.retries
    params = inspect.signature(Producer).parameters
    if "enable_idempotence" in params:
        kwargs["enable_idempotence"] = a.idempotence
    elif a.idempotence:
        print("this producer has no enable_idempotence", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    producer = Producer(a.bootstrap, **kwargs)
    await producer.start()
    _write(out, ev="start", t=time.time())
    window = asyncio.Semaphore(a.window)
    pending: set[asyncio.Task[None]] = set()
    counts = {"acked": 0, "failed": 0}

    async def track(seq: int, p: int, sent: float, fut: asyncio.Future[Any]) -> None:
        try:
            md = await fut
            counts["acked"] += 1
            _write(out, ev="ack", w=a.writer, p=md.partition, o=md.offset, s=seq, ts=sent,
                   t=time.time())
        except MoldauError as e:
            counts["failed"] += 1
            _write(out, ev="err", w=a.writer, p=p, s=seq, code=e.code.name, ts=sent,
                   t=time.time())
        finally:
            window.release()

    deadline = time.monotonic() + a.duration
    interval = 1.0 / a.rate
    next_at = time.monotonic()
    seq = 0
    while not stop.is_set() and time.monotonic() < deadline:
        await window.acquire()
        p = seq % a.partitions
        value = json.dumps({"w": a.writer, "s": seq}).encode()
        sent = time.time()
        try:
            fut = await producer.send(a.topic, value, partition=p)
        except MoldauError as e:
            window.release()
            counts["failed"] += 1
            _write(out, ev="err", w=a.writer, p=p, s=seq, code=e.code.name, ts=sent,
                   t=time.time())
        else:
            t = loop.create_task(track(seq, p, sent, fut))
            pending.add(t)
            t.add_done_callback(pending.discard)
        seq += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        else:
            next_at = time.monotonic()  # behind (e.g. blocked on the window): don't burst
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(a.grace):
            await producer.flush()
    await producer.stop(timeout=0)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    _write(out, ev="done", sent=seq, t=time.time(), **counts)
    return 0


async def _consume(a: argparse.Namespace, out: IO[str]) -> int:
    from moldau.clients import Consumer, MoldauError

    deadline = time.monotonic() + a.timeout
    consumer = Consumer(bootstrap_servers=a.bootstrap, auto_offset_reset="earliest",
                        request_timeout_ms=5000, metadata_max_age_ms=2000)
    await consumer.start()
    try:
        tps = [(a.topic, p) for p in range(a.partitions)]
        while True:
            try:
                ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
                break
            except MoldauError as e:
                if time.monotonic() > deadline:
                    print(f"no end offsets: {e}", file=sys.stderr)
                    return 3
                await asyncio.sleep(0.5)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = {p for p, end in ends.items() if end > 0}
        while left:
            if time.monotonic() > deadline:
                print(f"timed out; partitions not read to the end: {sorted(left)}",
                      file=sys.stderr)
                return 3
            try:
                records = await consumer.poll(500)
            except MoldauError as e:
                print(f"poll: {e}", file=sys.stderr)
                await asyncio.sleep(0.2)
                continue
            for r in records:
                v = json.loads(r.value) if r.value is not None else {}
                _write(out, w=v.get("w", ""), p=r.partition, o=r.offset, s=v.get("s"))
                if r.offset + 1 >= ends[r.partition]:
                    left.discard(r.partition)
        _write(out, ev="done", ends={str(p): e for p, e in ends.items()})
    finally:
        await consumer.stop()
    return 0


async def _create(a: argparse.Namespace) -> int:
    from moldau.clients import Admin, MoldauError, NewTopic

    configs = dict(kv.split("=", 1) for kv in a.config)
    async with Admin(a.bootstrap, request_timeout_ms=10000) as admin:
        try:
            await admin.create_topics([NewTopic(a.topic, a.partitions, a.replication_factor,
                                                configs)])
        except MoldauError as e:
            print(json.dumps({"error": e.code.name, "message": str(e)}))
            return 1
    print(json.dumps({"created": a.topic}))
    return 0


async def _describe(a: argparse.Namespace) -> int:
    from moldau.clients import Admin, MoldauError

    admin = Admin(a.bootstrap, request_timeout_ms=a.request_timeout_ms)
    # the metadata names every registered broker, and one may be cut off: don't let a
    # connection attempt to it outlast the request timeout
    admin.cluster.connect_timeout = a.request_timeout_ms / 1000
    async with admin:
        try:
            (t,) = await admin.describe_topics([a.topic])
        except MoldauError as e:
            print(json.dumps({"error": e.code.name, "message": str(e)}))
            return 1
    print(json.dumps({str(p.partition): {"leader": p.leader, "epoch": p.leader_epoch,
                                         "replicas": list(p.replicas), "isr": list(p.isr)}
                      for p in t.partitions}))
    return 0


async def _md_leader(a: argparse.Namespace) -> int:
    """Print {address: leader id or null} as each metadata node sees it (resuming a session
    that never existed creates nothing)."""
    from moldau.clients.protocol.messages import MdConnectRequest
    from moldau.clients.rpc import Connection, parse_hostports

    async def seen_by(host: str, port: int) -> int | None:
        conn = Connection(host, port)
        try:
            await conn.connect(timeout=1.0)
            resp = await conn.request(MdConnectRequest(timeout_ms=1000, session_id=1),
                                      timeout=2.0)
            return int(resp.leader) if resp.leader else None
        except (OSError, TimeoutError, ConnectionError, ValueError):
            return None
        except Exception as e:  # the protocol's own errors: this node can't tell
            print(f"{host}:{port}: {e!r}", file=sys.stderr)
            return None
        finally:
            await conn.close()

    addrs = parse_hostports(a.servers, 2181)
    seen = await asyncio.gather(*(seen_by(h, p) for h, p in addrs))
    print(json.dumps({f"{h}:{p}": s for (h, p), s in zip(addrs, seen, strict=True)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netns_workload.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("--bootstrap", required=True)
    pr.add_argument("--topic", required=True)
    pr.add_argument("--partitions", type=int, required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--duration", type=float, default=20.0)
    pr.add_argument("--rate", type=float, default=200.0, help="records per second")
    pr.add_argument("--window", type=int, default=200, help="unacknowledged records at most")
    pr.add_argument("--acks", default="all")
    pr.add_argument("--linger-ms", type=int, default=5)
    pr.add_argument("--retries", type=int, default=None)
    pr.add_argument("--delivery-timeout-ms", type=int, default=30000)
    pr.add_argument("--request-timeout-ms", type=int, default=5000)
    pr.add_argument("--grace", type=float, default=15.0,
                    help="seconds to wait for outstanding records after the duration")
    pr.add_argument("--idempotence", action=argparse.BooleanOptionalAction, default=False)
    pr.add_argument("--writer", default="", help="a name put in every value (several writers)")
    co = sub.add_parser("consume")
    co.add_argument("--bootstrap", required=True)
    co.add_argument("--topic", required=True)
    co.add_argument("--partitions", type=int, required=True)
    co.add_argument("--out", required=True)
    co.add_argument("--timeout", type=float, default=30.0)
    cr = sub.add_parser("create")
    cr.add_argument("--bootstrap", required=True)
    cr.add_argument("--topic", required=True)
    cr.add_argument("--partitions", type=int, required=True)
    cr.add_argument("--replication-factor", type=int, required=True)
    cr.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    de = sub.add_parser("describe")
    de.add_argument("--bootstrap", required=True)
    de.add_argument("--topic", required=True)
    de.add_argument("--request-timeout-ms", type=int, default=3000)
    ml = sub.add_parser("md-leader")
    ml.add_argument("--servers", required=True, help="metadata nodes HOST:PORT,...")
    a = ap.parse_args(argv)
    if a.cmd == "md-leader":
        return asyncio.run(_md_leader(a))
    if a.cmd == "create":
        return asyncio.run(_create(a))
    if a.cmd == "describe":
        return asyncio.run(_describe(a))
    with open(a.out, "w", buffering=1) as out:  # line-buffered: the test reads it live
        return asyncio.run(_produce(a, out) if a.cmd == "produce" else _consume(a, out))


# ---------------------------------------------------------------------- checks


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines written so far (a torn last line, still being written, is skipped)."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


@dataclass
class Verdict:
    """What a read-back says about the acknowledged records."""

    acked: int = 0
    consumed: int = 0
    lost: list[tuple[int, int]] = field(default_factory=list)  # (partition, seq)
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    out_of_order: list[tuple[int, int, int]] = field(default_factory=list)  # (p, seq, prev)
    offset_mismatch: list[tuple[int, int, int, int]] = field(default_factory=list)
    unacked_present: int = 0  # records written whose ack never came (allowed)

    def problems(self, duplicates_allowed: bool = False) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged records lost, e.g. {self.lost[:10]}")
        if self.duplicates and not duplicates_allowed:
            out.append(f"{len(self.duplicates)} duplicates, e.g. {self.duplicates[:10]}")
        if self.out_of_order:
            out.append(f"{len(self.out_of_order)} out of order, e.g. {self.out_of_order[:10]}")
        if self.offset_mismatch:
            out.append(f"{len(self.offset_mismatch)} acked offsets that hold another record, "
                       f"e.g. {self.offset_mismatch[:10]} (p, offset, acked seq, found seq)")
        return out


def verify(produced: list[dict[str, Any]], consumed: list[dict[str, Any]]) -> Verdict:
    """Every acknowledged record must be read back exactly once, at the offset it was
    acknowledged with, and each partition must hold each writer's sequence numbers in
    increasing order (first occurrences; a duplicate is a re-send of one already there)."""
    v = Verdict()
    acked = {(e.get("w", ""), e["p"], e["s"]): e["o"] for e in produced if e.get("ev") == "ack"}
    v.acked = len(acked)
    seen: set[tuple[str, int, int]] = set()
    last: dict[tuple[str, int], int] = {}
    at_offset: dict[tuple[int, int], tuple[str, int]] = {}
    for r in consumed:
        if "ev" in r:
            continue
        v.consumed += 1
        w, p, s = r.get("w", ""), r["p"], r["s"]
        at_offset[(p, r["o"])] = (w, s)
        if (w, p, s) in seen:
            v.duplicates.append((p, s))
            continue
        seen.add((w, p, s))
        prev = last.get((w, p), -1)
        if s <= prev:
            v.out_of_order.append((p, s, prev))
        last[(w, p)] = max(prev, s)
        if (w, p, s) not in acked:
            v.unacked_present += 1
    for (w, p, s), o in sorted(acked.items()):
        if (w, p, s) not in seen:
            v.lost.append((p, s))
        elif at_offset.get((p, o)) != (w, s):
            v.offset_mismatch.append((p, o, s, at_offset.get((p, o), ("", -1))[1]))
    return v


def recovery_seconds(produced: list[dict[str, Any]], fault_at: float,
                     partitions: Sequence[int] | None = None) -> float | None:
    """Seconds from ``fault_at`` until a record *sent* after it is acknowledged, for the
    slowest of ``partitions`` (every partition acknowledged at all if None); None if one of
    them never recovered."""
    first: dict[int, float] = {}
    for e in produced:
        if e.get("ev") == "ack" and e["ts"] >= fault_at:
            d = e["t"] - fault_at
            if d < first.get(e["p"], float("inf")):
                first[e["p"]] = d
    wanted = set(partitions) if partitions is not None else {
        e["p"] for e in produced if e.get("ev") == "ack"}
    if not wanted <= first.keys():
        return None
    return max(first[p] for p in wanted)


if __name__ == "__main__":
    sys.exit(main())
