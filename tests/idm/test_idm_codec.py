"""Framing and message codec: round trips, resynchronisation, limits, schema errors, fuzzing."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idm import messages as m
from idm.errors import (
    BAD_FRAME,
    BAD_MESSAGE,
    FRAME_TOO_LARGE,
    UNSUPPORTED_VERSION,
    FrameError,
    ProtocolError,
    SchemaError,
)
from idm.framing import HEADER, MAGIC, FrameDecoder, encode_frame


def raw_frame(body: dict) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(MAGIC, len(packed)) + packed


def decode_all(data: bytes, max_frame: int = 1 << 20, step: int = 0) -> list:
    dec = m.MessageDecoder(max_frame)
    if not step:
        return dec.feed(data)
    out = []
    for i in range(0, len(data), step):
        out += dec.feed(data[i : i + step])
    return out


def test_round_trip_every_kind() -> None:
    msgs = [
        m.request(1, "ping", {"x": [1, 2]}),
        m.response(1, {"pong": True}),
        m.error(2, "unknown-type", "nope"),
        m.event(9, "container.exit", {"id": "web", "exit_code": 7}),
        m.Message(m.DATA, 3, payload=b"\x00" * 100, channel="stdout"),
        m.Message(m.CREDIT, 3, payload=65536, channel="stdout"),
        m.Message(m.CLOSE, 3, channel="stdin"),
        m.Message(m.CLOSE, 3, payload={"exit_code": 0}),
    ]
    wire = b"".join(m.encode(x) for x in msgs)
    assert decode_all(wire) == msgs
    assert decode_all(wire, step=1) == msgs  # byte by byte: the decoder is incremental
    assert decode_all(wire, step=7) == msgs


def test_garbage_between_frames_is_reported_once_and_skipped() -> None:
    ping = m.encode(m.request(5, "ping"))
    out = decode_all(b"\xff\x00garbage IDM" + ping + b"noise" * 100 + ping, step=3)
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["FrameError", "Message", "FrameError", "Message"]
    assert out[0].code == BAD_FRAME
    assert out[1].id == 5 and out[3].id == 5


def test_false_magic_inside_garbage_does_not_swallow_the_next_frame() -> None:
    ping = m.encode(m.request(5, "ping"))
    # "IDM1" followed by a plausible length but a body that is not a msgpack map: rejected on its first byte.
    out = decode_all(MAGIC + b"\x00\x00\x00\x40" + b"zzzz" + ping)
    assert isinstance(out[0], FrameError)
    assert out[-1] == m.request(5, "ping")


def test_oversize_frame_is_rejected_without_buffering_it() -> None:
    dec = FrameDecoder(max_frame=1024)
    big = encode_frame(msgpack.packb({"p": b"x" * 5000}), max_frame=1 << 20)
    items = dec.feed(big[:100])
    assert [type(x) for x in items] == [FrameError]
    assert items[0].code == FRAME_TOO_LARGE
    for i in range(100, len(big), 512):
        dec.feed(big[i : i + 512])
        assert dec.buffered <= 1024 + 8
    ping = m.encode(m.request(1, "ping"))
    assert dec.feed(ping) == [bytearray(ping[8:])]


def test_encode_refuses_oversize() -> None:
    with pytest.raises(FrameError) as exc:
        m.encode(m.Message(m.DATA, 1, payload=b"x" * 2000, channel="stdout"), max_frame=1024)
    assert exc.value.code == FRAME_TOO_LARGE


def test_undecodable_body_is_reported_and_next_frame_decodes() -> None:
    bad = HEADER.pack(MAGIC, 3) + b"\x81\xc1\xc1"  # map header then reserved bytes
    out = decode_all(bad + m.encode(m.request(2, "ping")))
    assert isinstance(out[0], FrameError) and out[0].code == BAD_FRAME
    assert out[1] == m.request(2, "ping")


@pytest.mark.parametrize(
    ("body", "code", "msg_id"),
    [
        ({"v": 2, "t": "req", "id": 4, "type": "ping"}, UNSUPPORTED_VERSION, 4),
        ({"t": "req", "id": 4, "type": "ping"}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "bogus", "id": 4}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "req", "id": 4}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "req", "id": -1, "type": "ping"}, BAD_MESSAGE, 0),
        ({"v": 1, "t": "err", "id": 4, "p": "x"}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "data", "id": 4, "ch": "stdout", "p": "text"}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "credit", "id": 4, "ch": "stdout", "p": 0}, BAD_MESSAGE, 4),
        ({"v": 1, "t": "credit", "id": 4, "ch": "stdout", "p": 1 << 40}, BAD_MESSAGE, 4),
    ],
)
def test_schema_errors_name_the_problem_and_the_request(body: dict, code: str, msg_id: int) -> None:
    out = decode_all(raw_frame(body) + m.encode(m.request(8, "ping")))
    assert isinstance(out[0], SchemaError)
    assert out[0].code == code and out[0].msg_id == msg_id
    assert out[1] == m.request(8, "ping")


def test_non_map_body_is_a_frame_error() -> None:
    packed = msgpack.packb([1, 2, 3])
    out = decode_all(HEADER.pack(MAGIC, len(packed)) + packed + m.encode(m.request(1, "ping")))
    assert isinstance(out[0], FrameError)
    assert out[1] == m.request(1, "ping")


def test_bounded_containers() -> None:
    out = decode_all(raw_frame({"v": 1, "t": "req", "id": 1, "type": "x", "p": [0] * (m.MAX_ARRAY_LEN + 1)}))
    assert isinstance(out[0], FrameError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=16, max_value=4096))
def test_fuzz_decoder_only_typed_errors(chunks: list[bytes], max_frame: int) -> None:
    dec = m.MessageDecoder(max_frame)
    for chunk in chunks:
        for item in dec.feed(chunk):
            assert isinstance(item, m.Message | ProtocolError)
        assert dec.frames.buffered <= max_frame + 8 + len(chunk)


packable_ints = st.integers(-(2**63), 2**64 - 1)
msg_values = st.one_of(
    st.none(), st.booleans(), packable_ints, st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(["req", "resp", "err", "event", "data", "credit", "close", "ping", 1, 0, 2]),
    st.lists(packable_ints, max_size=3), st.dictionaries(st.text(max_size=3), packable_ints, max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["v", "t", "id", "type", "p", "ch", "x"]), msg_values, max_size=7),
       st.binary(max_size=40).filter(lambda g: MAGIC not in g))
def test_fuzz_schema_only_typed_errors(body: dict, garbage: bytes) -> None:
    ping = m.encode(m.request(3, "ping"))
    out = decode_all(garbage + raw_frame(body) + ping)
    assert all(isinstance(x, m.Message | ProtocolError) for x in out)
    assert out[-1] == m.request(3, "ping")  # whatever came before, the decoder is back in sync
