"""The producer's record accumulator and batches, without a broker (the clock is passed in)."""

from __future__ import annotations

import asyncio

from moldau.clients.producer import RecordAccumulator, parse_acks
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.records import Compression, decode_all, encode_values, iter_batches
from moldau.clients.records.batch import HEADER_SIZE, set_base_offset
from moldau.clients.types import RecordMetadata

TP = ("t", 0)


def _fut() -> asyncio.Future[RecordMetadata]:
    return asyncio.get_running_loop().create_future()


async def test_batches_close_at_batch_size() -> None:
    acc = RecordAccumulator(batch_size=HEADER_SIZE + 100, linger_ms=5)
    futs = []
    created_flags = []
    for i in range(25):
        f = _fut()
        futs.append(f)
        _, created = acc.append(TP, 1000 + i, None, b"x" * 12, None, 20, f, now=0.0)
        created_flags.append(created)
    q = acc.queues[TP]
    # 100 bytes of room, 20 bytes per record: 5 records per batch
    assert [b.count for b in q] == [5] * 5
    assert created_flags == [i % 5 == 0 for i in range(25)]
    assert [b.closed for b in q] == [True] * 4 + [False]
    assert acc.open[TP] is q[-1]
    assert len(acc.incomplete) == 5


async def test_a_record_larger_than_batch_size_gets_its_own_batch() -> None:
    acc = RecordAccumulator(batch_size=HEADER_SIZE + 10, linger_ms=5)
    acc.append(TP, 1, None, b"small", None, 8, _fut(), 0.0)
    acc.append(TP, 1, None, b"y" * 500, None, 508, _fut(), 0.0)
    acc.append(TP, 1, None, b"z", None, 9, _fut(), 0.0)
    assert [b.count for b in acc.queues[TP]] == [1, 1, 1]


async def test_ready_after_linger_or_when_closed_or_flushing() -> None:
    acc = RecordAccumulator(batch_size=1000, linger_ms=5)
    acc.append(TP, 1, None, b"a", None, 9, _fut(), now=10.0)
    q = acc.queues[TP]
    assert not acc.is_ready(q, 10.001)
    assert acc.next_ready_time(q, 10.001) == 10.005
    assert acc.is_ready(q, 10.005)
    assert acc.is_ready(q, 10.001, force=True)
    acc.flushing += 1
    assert acc.is_ready(q, 10.0)
    acc.flushing -= 1
    acc.close(TP)
    assert acc.is_ready(q, 10.0)
    assert TP not in acc.open


async def test_drain_takes_batches_in_order_within_max_bytes() -> None:
    acc = RecordAccumulator(batch_size=HEADER_SIZE + 40, linger_ms=0)
    for i in range(12):
        acc.append(TP, 100 + i, str(i).encode(), b"v%d" % i, [("h", b"1")], 20, _fut(), 0.0)
    sizes = [len(b.encode(Compression.NONE)) for b in acc.queues[TP]]
    assert len(sizes) == 6
    taken = acc.drain(TP, sizes[0] + sizes[1] + 1, must_take_one=True)
    assert len(taken) == 2
    # a budget smaller than one batch takes nothing unless one must be taken
    assert acc.drain(TP, 10, must_take_one=False) == []
    assert len(acc.drain(TP, 10, must_take_one=True)) == 1
    rest = acc.drain(TP, 10**6, must_take_one=False)
    assert len(rest) == 3
    assert TP not in acc.queues and TP not in acc.open
    # the batches decode to the records in order, with keys, headers and timestamps
    data = b"".join(b.encoded for b in taken + rest)  # type: ignore[misc]
    buf = bytearray(data)
    offset = 0
    for pos, h in list(iter_batches(buf)):
        set_base_offset(buf, pos, offset)
        offset += h.record_count
    recs = decode_all(buf, 0, "t", 0)
    kept = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert [r.key for r in recs] == [str(i).encode() for i in kept]
    assert [r.value for r in recs] == [b"v%d" % i for i in kept]
    assert [r.timestamp for r in recs] == [100 + i for i in kept]
    assert all(r.headers == (("h", b"1"),) for r in recs)


async def test_reenqueue_puts_retries_before_newer_batches() -> None:
    acc = RecordAccumulator(batch_size=HEADER_SIZE + 20, linger_ms=0)
    for i in range(3):
        acc.append(TP, i, None, b"%d" % i, None, 20, _fut(), 0.0)
    first = acc.drain(TP, 10**6, must_take_one=True)
    assert len(first) == 3
    acc.append(TP, 9, None, b"new", None, 20, _fut(), 1.0)
    acc.reenqueue(TP, first, retry_at=1.1)
    q = acc.queues[TP]
    assert list(q)[:3] == first
    assert q[-1].records[0][3] == b"new"
    # the retry backoff holds the partition back, even under buffer pressure
    assert not acc.is_ready(q, 1.05, force=True)
    assert acc.next_ready_time(q, 1.05) == 1.1
    assert acc.is_ready(q, 1.1)


async def test_expire_removes_old_batches_from_the_front() -> None:
    acc = RecordAccumulator(batch_size=HEADER_SIZE + 20, linger_ms=0)
    acc.append(TP, 1, None, b"a", None, 20, _fut(), now=1.0)
    acc.append(TP, 1, None, b"b", None, 20, _fut(), now=2.0)
    acc.append(TP, 1, None, b"c", None, 20, _fut(), now=3.0)
    gone = acc.expire(TP, deadline=2.5)
    assert [b.records[0][3] for b in gone] == [b"a", b"b"]
    assert len(acc.queues[TP]) == 1
    assert acc.expire(TP, deadline=5.0)[0].records[0][3] == b"c"
    assert TP not in acc.queues and TP not in acc.open


async def test_encoded_batch_goes_after_buffered_records() -> None:
    acc = RecordAccumulator(batch_size=10**6, linger_ms=1000)
    acc.append(TP, 1, None, b"before", None, 14, _fut(), 0.0)
    bulk = encode_values([b"x", b"y"], timestamp=7)
    f = _fut()
    acc.append_encoded(TP, bulk, 2, 7, f, 0.0)
    acc.append(TP, 2, None, b"after", None, 13, _fut(), 0.0)
    q = acc.queues[TP]
    assert [b.count for b in q] == [1, 2, 1]
    assert q[0].closed and q[1].closed and not q[2].closed
    assert acc.is_ready(q, 0.0)  # the first batch was closed by the bulk one
    q[1].complete(40, -1)
    assert f.result() == RecordMetadata("t", 0, 40, 7)


async def test_complete_and_fail_resolve_every_future() -> None:
    acc = RecordAccumulator(batch_size=10**6, linger_ms=0)
    futs = [_fut() for _ in range(3)]
    for i, f in enumerate(futs):
        b, _ = acc.append(TP, 1000 + 10 * i, None, b"v", None, 9, f, 0.0)
    futs[1].cancel()  # a caller that gave up does not break the others
    b.complete(500, -1)
    assert futs[0].result() == RecordMetadata("t", 0, 500, 1000)
    assert futs[2].result() == RecordMetadata("t", 0, 502, 1020)
    # log-append time replaces the create time
    f2 = _fut()
    b2, _ = acc.append(("t", 1), 5, None, b"v", None, 9, f2, 0.0)
    b2.complete(0, 99)
    assert f2.result() == RecordMetadata("t", 1, 0, 99)
    f3 = _fut()
    b3, _ = acc.append(("t", 2), 5, None, b"v", None, 9, f3, 0.0)
    b3.fail(MoldauError(ErrorCode.MESSAGE_TOO_LARGE))
    assert isinstance(f3.exception(), MoldauError)
    assert f3.exception().code is ErrorCode.MESSAGE_TOO_LARGE  # type: ignore[union-attr]


def test_parse_acks() -> None:
    assert parse_acks("all") == -1
    assert parse_acks("ALL") == -1
    assert parse_acks("-1") == -1
    assert parse_acks(0) == 0
    assert parse_acks("1") == 1
    for bad in (2, "two", -2):
        try:
            parse_acks(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
