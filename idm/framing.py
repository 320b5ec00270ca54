"""IDM framing: ``MAGIC | u32 big-endian body length | body`` and an incremental, resynchronising decoder.

Why this shape: the channel is a raw byte stream (virtio-serial, an hvc tty, a vchan ring) that can carry
garbage (a console echo, a client that died mid-frame). The magic lets the reader find the next frame
again, the length bounds what it ever buffers, and the first body byte must start a msgpack map, which
rejects most false magic matches before any body is buffered.
"""

from __future__ import annotations

import struct

from idm.errors import BAD_FRAME, FRAME_TOO_LARGE, FrameError

MAGIC = b"IDM1"
HEADER = struct.Struct(">4sI")
HEADER_SIZE = HEADER.size  # 8
DEFAULT_MAX_FRAME = 1 << 20  # body bytes

# First byte of a msgpack map: fixmap 0x80-0x8f, map16 0xde, map32 0xdf.
_MAP_START = bytes(b in (0xDE, 0xDF) or 0x80 <= b <= 0x8F for b in range(256))


def encode_frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Frame one encoded body; refuses bodies the peer would reject as oversize."""
    if len(body) > max_frame:
        raise FrameError(f"frame body of {len(body)} bytes exceeds the limit of {max_frame}", FRAME_TOO_LARGE)
    return HEADER.pack(MAGIC, len(body)) + body


class FrameDecoder:
    """Feed bytes, get frame bodies. Never raises on input: bad input comes back as ``FrameError`` items.

    Memory: the decoder keeps at most one pending frame (header + ``max_frame``) plus the bytes of the
    current ``feed`` call. A run of garbage is reported once (one error per loss of sync, not per byte).
    """

    __slots__ = ("_buf", "_in_sync", "bytes_skipped", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_sync = True
        self.bytes_skipped = 0  # total bytes thrown away while resynchronising

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytearray | FrameError]:
        """Consume ``data``; return the complete frame bodies and framing errors, in stream order."""
        out: list[bytearray | FrameError] = []
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        max_frame = self.max_frame
        while True:
            avail = end - pos
            if avail >= HEADER_SIZE and buf.startswith(MAGIC, pos):
                length = (buf[pos + 4] << 24) | (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
                if length > max_frame:
                    self._lose_sync(out, f"frame of {length} bytes exceeds the limit of {max_frame}", FRAME_TOO_LARGE)
                    pos += 1
                    self.bytes_skipped += 1
                    continue
                if length == 0 or (avail > HEADER_SIZE and not _MAP_START[buf[pos + HEADER_SIZE]]):
                    self._lose_sync(out, "frame body is not a msgpack map", BAD_FRAME)
                    pos += 1
                    self.bytes_skipped += 1
                    continue
                if avail < HEADER_SIZE + length:
                    break
                start = pos + HEADER_SIZE
                pos = start + length
                self._in_sync = True
                out.append(buf[start:pos])
                continue
            if avail == 0:
                break
            if avail < HEADER_SIZE and MAGIC.startswith(bytes(buf[pos : pos + min(avail, 4)])):
                break  # a frame header may be arriving
            # Not at a frame start: skip to the next magic (or keep only a possible magic prefix).
            self._lose_sync(out, "bad magic: bytes outside a frame", BAD_FRAME)
            nxt = buf.find(MAGIC, pos + 1)
            if nxt < 0:
                nxt = max(pos + 1, end - 3)
            self.bytes_skipped += nxt - pos
            pos = nxt
        if pos:
            del buf[:pos]
        return out

    def _lose_sync(self, out: list[bytearray | FrameError], message: str, code: str) -> None:
        if self._in_sync:
            self._in_sync = False
            out.append(FrameError(message, code))
