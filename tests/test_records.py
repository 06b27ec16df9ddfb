"""Record batches: round trips, offsets rewritten outside the CRC, corruption detected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moldau.clients.records import (
    HEADER_SIZE,
    BatchBuilder,
    Compression,
    CorruptRecordError,
    decode_all,
    decode_records,
    encode_values,
    iter_batches,
    set_base_offset,
    set_leader_epoch,
    validate_batch,
)

records_st = st.lists(
    st.tuples(
        st.integers(0, 2**40),
        st.none() | st.binary(max_size=20),
        st.none() | st.binary(max_size=200),
        st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=2),
    ),
    min_size=1, max_size=50,
)


@given(recs=records_st, codec=st.sampled_from(list(Compression)), base=st.integers(0, 2**50),
       epoch=st.integers(0, 2**31 - 1))
def test_round_trip(recs: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]],
                    codec: Compression, base: int, epoch: int) -> None:
    b = BatchBuilder(codec)
    for ts, k, v, h in recs:
        b.append(ts, k, v, h)
    raw = bytearray(b.build())
    set_base_offset(raw, 0, base)
    set_leader_epoch(raw, 0, epoch)
    h = validate_batch(raw)  # CRC still valid after both rewrites
    assert h.base_offset == base and h.partition_leader_epoch == epoch
    assert h.record_count == len(recs) and h.compression is codec
    assert h.max_timestamp == max(r[0] for r in recs)
    out = decode_records(raw, topic="t", partition=3)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in out] == [
        (base + i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(recs)]
    assert all(r.topic == "t" and r.partition == 3 for r in out)


def test_every_flipped_byte_inside_the_crc_is_detected() -> None:
    raw = encode_values([b"a" * 10, b"b" * 10], timestamp=5)
    for i in range(21, len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x40
        with pytest.raises(CorruptRecordError):
            validate_batch(bad)


def test_iter_batches_skips_a_partial_tail_and_decode_all_starts_at_offset() -> None:
    a = bytearray(encode_values([b"1", b"2", b"3"], timestamp=1))
    b = bytearray(encode_values([b"4", b"5"], timestamp=2))
    set_base_offset(a, 0, 10)
    set_base_offset(b, 0, 13)
    run = bytes(a + b)
    assert [h.base_offset for _, h in iter_batches(run)] == [10, 13]
    assert [h.base_offset for _, h in iter_batches(run[:-3])] == [10]
    assert [r.value for r in decode_all(run, start_offset=11)] == [b"2", b"3", b"4", b"5"]
    assert decode_all(run[: HEADER_SIZE - 1]) == []


def test_garbage_lengths_and_magic_are_corrupt() -> None:
    raw = bytearray(encode_values([b"x"], timestamp=1))
    raw[16] = 2  # Kafka's magic, not ours
    with pytest.raises(CorruptRecordError, match="magic"):
        validate_batch(raw)
    with pytest.raises(CorruptRecordError):
        list(iter_batches(b"\x00" * 8 + b"\x00\x00\x00\x01" + b"\x00" * 60))


def test_compression_names() -> None:
    assert Compression.parse("lz4") is Compression.LZ4
    assert Compression.parse(None) is Compression.NONE
    with pytest.raises(ValueError, match="unknown compression"):
        Compression.parse("snappy")
