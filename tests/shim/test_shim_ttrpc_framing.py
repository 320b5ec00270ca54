"""ttrpc framing: header layout, limits, incremental decoding, and fuzzing of the decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim.ttrpc.framing import (
    HEADER_SIZE,
    MAX_MESSAGE_LENGTH,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MessageType,
    encode_frame,
)


def test_header_is_ten_bytes_big_endian() -> None:
    data = encode_frame(0x01020304, MessageType.REQUEST, b"xyz", flags=0x05)
    assert HEADER_SIZE == 10
    assert data == struct.pack(">IIBB", 3, 0x01020304, 1, 5) + b"xyz"


def test_limit_is_four_mebibytes() -> None:
    assert MAX_MESSAGE_LENGTH == 4 * 1024 * 1024
    encode_frame(1, MessageType.REQUEST, b"\0" * MAX_MESSAGE_LENGTH)
    with pytest.raises(ValueError, match="exceeds maximum message size"):
        encode_frame(1, MessageType.REQUEST, b"\0" * (MAX_MESSAGE_LENGTH + 1))


def test_stream_id_range() -> None:
    with pytest.raises(ValueError, match="stream id"):
        encode_frame(1 << 32, MessageType.REQUEST, b"")


def test_decodes_byte_by_byte() -> None:
    wire = encode_frame(1, 1, b"hello") + encode_frame(3, 2, b"") + encode_frame(5, 3, b"x", flags=1)
    decoder = FrameDecoder()
    frames = []
    for i in range(len(wire)):
        frames += decoder.feed(wire[i:i + 1])
    assert frames == [Frame(1, 1, 0, b"hello"), Frame(3, 2, 0, b""), Frame(5, 3, 1, b"x")]
    assert decoder.at_boundary


def test_partial_frame_is_not_a_boundary() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1, 1, b"hello")[:12]) == []
    assert not decoder.at_boundary


def test_oversized_frame_is_skipped_not_buffered() -> None:
    decoder = FrameDecoder(limit=16)
    big = struct.pack(">IIBB", 1000, 7, 1, 0)
    out = decoder.feed(big + b"a" * 500)
    assert out == [FrameTooLarge(7, 1, 1000, 16)]
    assert decoder.buffered == 0
    # the rest of the oversized data, then a good frame in the same chunk
    out = decoder.feed(b"a" * 500 + encode_frame(9, 1, b"ok"))
    assert out == [Frame(9, 1, 0, b"ok")]
    assert "exceeds maximum message size of 16" in FrameTooLarge(7, 1, 1000, 16).message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
                          st.binary(max_size=64)), max_size=8),
       st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_roundtrip_any_chunking(frames: list[tuple[int, int, int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(sid, t, data, flags=f) for sid, t, f, data in frames)
    decoder = FrameDecoder()
    got: list = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        got += decoder.feed(wire[pos:pos + step])
        pos += step
        i += 1
    assert got == [Frame(sid, t, f, data) for sid, t, f, data in frames]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_buffers_more_than_one_frame(garbage: bytes) -> None:
    decoder = FrameDecoder(limit=256)
    for item in decoder.feed(garbage):
        assert isinstance(item, Frame | FrameTooLarge)
        if isinstance(item, Frame):
            assert len(item.data) <= 256
    assert decoder.buffered < HEADER_SIZE + 256
