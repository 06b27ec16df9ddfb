"""The frame codec and message schemas: round trips and garbage, without sockets."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldau.clients.protocol import (
    SCHEMAS,
    Api,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    UnsupportedApi,
    decode_request,
    decode_request_body,
    decode_response,
    encode_request,
    encode_response,
    from_body,
)
from moldau.clients.protocol.messages import (
    FetchRequest,
    MdCreateRequest,
    MetadataRequest,
    ProduceRequest,
)

bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@given(api=st.integers(0, 200), version=st.integers(0, 5), corr=st.integers(0, 2**31 - 1),
       client=st.text(max_size=20), body=bodies)
def test_request_round_trip(api: int, version: int, corr: int, client: str, body: object) -> None:
    frame = encode_request(api, version, corr, client, body)
    dec = FrameDecoder()
    frames = dec.feed(frame)
    assert len(frames) == 1 and dec.buffered == 0
    header, got = decode_request(frames[0])
    assert (header.api, header.version, header.correlation_id, header.client_id) == (
        api, version, corr, client)
    assert got == body


@given(chunks=st.lists(st.integers(1, 50), min_size=1, max_size=30), n=st.integers(1, 5))
def test_decoder_reassembles_any_split(chunks: list[int], n: int) -> None:
    stream = b"".join(encode_response(i, {"i": i, "pad": b"x" * i}) for i in range(n))
    dec = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    for size in chunks * (len(stream) // max(1, sum(chunks)) + 1):
        out += dec.feed(stream[pos:pos + size])
        pos += size
        if pos >= len(stream):
            break
    out += dec.feed(stream[pos:])
    assert [decode_response(f)[0] for f in out] == list(range(n))


def test_oversize_frame_is_refused_before_buffering() -> None:
    dec = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 1025) + b"x")
    # a frame exactly at the limit is fine
    ok = FrameDecoder(max_frame_size=1024)
    assert ok.feed(struct.pack(">I", 1024) + b"y" * 1024) == [b"y" * 1024]


@settings(max_examples=300)
@given(garbage=st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(garbage: bytes) -> None:
    dec = FrameDecoder(max_frame_size=4096)
    try:
        frames = dec.feed(garbage)
    except ProtocolError:
        return
    for f in frames:
        for decode in (decode_request, decode_response):
            try:
                decode(f)
            except ProtocolError:
                pass


def test_truncated_body_is_an_error() -> None:
    frame = encode_request(0, 0, 1, "c", {"acks": 1})
    payload = frame[4:-1]
    with pytest.raises(ProtocolError):
        decode_request(payload)


def test_trailing_bytes_are_an_error() -> None:
    payload = encode_request(0, 0, 1, "c", {})[4:] + msgpack.packb(1)
    with pytest.raises(ProtocolError):
        decode_request(payload)


def test_bodies_decode_into_messages_and_reject_bad_ones() -> None:
    req = ProduceRequest(acks=1, timeout_ms=100, topics=[["t", [[0, b"batch"]]]])
    assert decode_request_body(Api.PRODUCE, 0, req.to_body()) == req
    assert from_body(MetadataRequest, {}) == MetadataRequest()
    # unknown fields from a newer peer are ignored
    assert from_body(MdCreateRequest, {"path": "/a", "future": 1}).path == "/a"
    with pytest.raises(ProtocolError, match="missing field 'topics'"):
        decode_request_body(Api.FETCH, 0, {"max_wait_ms": 1, "min_bytes": 1, "max_bytes": 1})
    with pytest.raises(ProtocolError, match="not a map"):
        decode_request_body(Api.FETCH, 0, [1, 2])
    with pytest.raises(UnsupportedApi):
        decode_request_body(9999, 0, {})
    with pytest.raises(UnsupportedApi):
        decode_request_body(Api.FETCH, 7, {})


def test_every_api_has_request_and_response_of_its_own_api() -> None:
    for api, (req, resp, lo, hi) in SCHEMAS.items():
        assert api == req.API and api == resp.API and lo <= hi
    assert FetchRequest.API == Api.FETCH
