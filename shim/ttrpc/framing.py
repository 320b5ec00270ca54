"""ttrpc message framing: a 10-byte header, then the message data.

    +----------------------+----------------------+---------+----------+--------------+
    | u32 BE data length   | u32 BE stream id     | u8 type | u8 flags | data         |
    +----------------------+----------------------+---------+----------+--------------+

Data is at most 4 MiB (MAX_MESSAGE_LENGTH); a longer message is refused. Client-initiated streams have odd
ids. Types: 1 request, 2 response, 3 data (streaming, ttrpc >= 1.2; containerd 1.6 sends only unary
requests). `FrameDecoder` is incremental and pure (no I/O): feed it bytes, take frames out. An oversized
frame is never buffered: its data is skipped as it arrives and reported once as `FrameTooLarge`, so the
connection stays usable, as in containerd/ttrpc's channel.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE_LENGTH = 4 << 20

FLAG_REMOTE_CLOSED = 0x01
FLAG_REMOTE_OPEN = 0x02
FLAG_NO_DATA = 0x04


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int  # a MessageType value, or an unknown number (ignored by receivers for compatibility)
    flags: int
    data: bytes


@dataclass(frozen=True)
class FrameTooLarge:
    """A frame whose announced length exceeded the limit; its data was (or is being) discarded."""

    stream_id: int
    type: int
    length: int
    limit: int

    @property
    def message(self) -> str:
        return f"message length {self.length} exceeds maximum message size of {self.limit}"


def encode_frame(stream_id: int, type: int, data: bytes, flags: int = 0,
                 limit: int = MAX_MESSAGE_LENGTH) -> bytes:
    if len(data) > limit:
        raise ValueError(f"ttrpc: message of {len(data)} bytes exceeds maximum message size of {limit}")
    if not 0 <= stream_id < 1 << 32:
        raise ValueError(f"ttrpc: stream id {stream_id} out of range")
    return HEADER.pack(len(data), stream_id, type, flags) + data


class FrameDecoder:
    """Incremental decoder: `feed(data)` returns the frames (and oversize reports) completed by `data`."""

    def __init__(self, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discard = 0  # bytes of an oversized frame still to skip

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is pending (EOF here is a clean end of the connection)."""
        return not self._buffer and not self._discard

    def feed(self, data: bytes) -> list[Frame | FrameTooLarge]:
        out: list[Frame | FrameTooLarge] = []
        view = memoryview(data)
        if self._discard:
            skipped = min(self._discard, len(view))
            self._discard -= skipped
            view = view[skipped:]
        self._buffer += view
        while True:
            if self._discard:
                skipped = min(self._discard, len(self._buffer))
                del self._buffer[:skipped]
                self._discard -= skipped
                if self._discard:
                    break
            if len(self._buffer) < HEADER_SIZE:
                break
            length, stream_id, type_, flags = HEADER.unpack_from(self._buffer)
            if length > self.limit:
                del self._buffer[:HEADER_SIZE]
                self._discard = length
                out.append(FrameTooLarge(stream_id, type_, length, self.limit))
                continue
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            out.append(Frame(stream_id, type_, flags, bytes(self._buffer[HEADER_SIZE:end])))
            del self._buffer[:end]
        return out
