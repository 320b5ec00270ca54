"""Fuzz IDM: the frame decoder, the message schema and the zone server's dispatch of whatever decodes.

Each input is used three ways:
1. fed to a fresh ``MessageDecoder`` in chunks (chunk size taken from the input): every item must be a Message
   or a ProtocolError, the decoder must never buffer more than one frame, and every Message must re-encode
   and decode to itself;
2. msgpack-decoded as one body and validated (``unpack_body`` + ``parse``): only FrameError/SchemaError;
3. every decoded message is dispatched by a real ``IdmServer`` (with a stream-opening handler, so hostile
   data/credit/close reach live streams): the server must not raise, its output stays bounded.

    python3 bench/fuzz_idm.py [--runs 1000000] [--engine atheris|mutate] [--seed N]
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_common import main

from idm import messages as m
from idm.errors import ProtocolError
from idm.framing import HEADER, HEADER_SIZE, MAGIC

MAX_FRAME = 4096          # small, so "frame too large" is reachable by short inputs
MAX_STREAMS_HELD = 1024   # the server's per-connection limit


def seeds() -> list[bytes]:
    msgs = [
        m.request(1, "hello", {"versions": [1], "events": True, "client": "fuzz"}),
        m.request(2, "ping", {"x": [1, 2.5, None, b"\x00", "s"]}),
        m.request(3, "events.ack", {"upto": 5}),
        m.request(4, "stream.open", {"window": 4096}),
        m.Message(m.DATA, 4, payload=b"hello", channel="stdin"),
        m.Message(m.CREDIT, 4, payload=65536, channel="stdout"),
        m.Message(m.CLOSE, 4, channel="stdin"),
        m.Message(m.CLOSE, 4, payload={"cancel": True}),
        m.error(9, "bad-frame", "x"),
        m.response(5, {}),
        m.event(1, "container.exit", {"id": "main", "exit_code": 0}),
        m.request(6, "no.such", None),
    ]
    frames = [m.encode(msg) for msg in msgs]
    return [*frames, b"".join(frames), b"garbage" + frames[1] + b"\xff" * 9 + frames[2],
            HEADER.pack(MAGIC, 1 << 30) + b"\x80", HEADER.pack(MAGIC, 0), b"IDM1\x00\x00\x00\x05\x81\xa1v\x02"]


TOKENS = [MAGIC, b"\x81\xa1v\x01", b"\xa1t\xa3req", b"\xa1t\xa4data", b"\xa1t\xa6credit", b"\xa1t\xa5close",
          b"\xa2id", b"\xa4type", b"\xa2ch", b"\xa1p", b"\xa4ping", b"\xa5hello", b"\xdf\xff\xff\xff\xff",
          b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff"]


class _Server:
    """One IdmServer over a socketpair, reused across inputs (recreated if the connection ever closes)."""

    def __init__(self) -> None:
        from idm.server import IdmServer
        from idm.transport import socket_pair

        self.server = IdmServer(max_frame=MAX_FRAME, info=lambda: {"zone": "fuzz"})
        self.server.register("stream.open", self._open)
        zone_end, self.host_end = socket_pair()
        self.conn = self.server.add_transport(zone_end, name="fuzz", persistent=False)
        os.set_blocking(self.host_end.fileno(), False)

    def _open(self, req: object) -> None:
        stream = req.open_stream()  # type: ignore[attr-defined]
        stream.on_data = lambda *_a: None
        req.reply({"stream": stream.id, "window": stream.window})  # type: ignore[attr-defined]

    def dispatch(self, items: list[m.Message | ProtocolError]) -> None:
        for item in items:
            self.server._dispatch(self.conn, item)
            if self.conn.closed:
                break
        self.server._flush(self.conn)
        self._drain()
        if len(self.conn.streams) > MAX_STREAMS_HELD:
            raise AssertionError(f"{len(self.conn.streams)} streams held open")
        if self.conn.pending_output > 8 << 20:
            raise AssertionError(f"{self.conn.pending_output} bytes of output pending")

    def _drain(self) -> None:
        while True:
            try:
                if not os.read(self.host_end.fileno(), 1 << 20):
                    break
            except BlockingIOError:
                break

    def close(self) -> None:
        self.server.close()
        self.host_end.close()


_server: _Server | None = None


def target(data: bytes) -> None:
    global _server
    # 1. the stream decoder, chunked
    decoder = m.MessageDecoder(MAX_FRAME)
    step = 1 + (data[0] % 37 if data else 0)
    items: list[m.Message | ProtocolError] = []
    for i in range(0, len(data), step):
        got = decoder.feed(data[i:i + step])
        if decoder.frames.buffered > HEADER_SIZE + MAX_FRAME + step:
            raise AssertionError(f"decoder buffers {decoder.frames.buffered} bytes")
        items += got
    for item in items:
        if isinstance(item, ProtocolError):
            continue
        if not isinstance(item, m.Message):
            raise AssertionError(f"decoder produced {type(item).__name__}")
        again = m.MessageDecoder(MAX_FRAME).feed(m.encode(item, MAX_FRAME))
        if len(again) != 1 or repr(again[0]) != repr(item):
            raise AssertionError(f"round trip changed {item!r} into {again!r}")
    # 2. one body through the schema
    with contextlib.suppress(ProtocolError):
        m.parse(m.unpack_body(data))
    # 3. the server's dispatch of what decoded
    if items:
        if _server is None or _server.conn.closed:
            if _server is not None:
                _server.close()
            _server = _Server()
        _server.dispatch(items)


if __name__ == "__main__":
    sys.exit(main("idm", target, seeds(), tokens=TOKENS, max_len=16384))
