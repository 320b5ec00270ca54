"""Zone-side streams: byte channels tied to a request, with credit-based flow control.

A stream's id is the id of the request that opened it (``exec``, ``container.logs``). Each channel
direction has its own credit: the receiver grants bytes, the sender never sends more than it was
granted. Every channel starts with ``window`` bytes of credit (the opening request may ask for a
window; the zone caps it), so no round trip is needed before the first bytes flow. Memory per stream is
therefore bounded by one window per channel, whatever the producer does.
"""

from __future__ import annotations

from collections.abc import Callable

from idm import messages as m
from idm.errors import CREDIT_EXCEEDED, IdmError

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any, Protocol

DEFAULT_WINDOW = 1 << 20  # bytes in flight per stream channel: TCG latency makes a small window the bottleneck
MAX_WINDOW = 1 << 20
MIN_WINDOW = 4096
DATA_CHUNK = 32 * 1024  # bytes per data frame (64 KiB measured no faster)


def negotiate_window(requested: Any, cap: int = MAX_WINDOW) -> int:
    """The window a stream uses: what the opener asked for (an int), clamped to [MIN_WINDOW, cap]."""
    if type(requested) is not int:
        return min(DEFAULT_WINDOW, cap)
    return max(MIN_WINDOW, min(requested, cap))


if TYPE_CHECKING:  # for annotations only: no class to create at run time
    class StreamLink(Protocol):
        """What a stream needs from the session carrying it (a ``Connection``)."""

        def send(self, msg: m.Message) -> None: ...

        def forget_stream(self, sid: int) -> None: ...


class Stream:
    """One open stream on the zone side. Never blocks: ``send`` accepts what the credit allows.

    Callbacks (set by the owner, all optional): ``on_data(channel, bytes)`` incoming bytes,
    ``on_eof(channel)`` the peer closed a channel, ``on_credit(channel)`` more credit arrived,
    ``on_abort()`` the peer cancelled the stream or went away (after that ``send`` discards and
    returns the full length, so a producer keeps draining instead of stalling).
    """

    def __init__(self, conn: StreamLink, sid: int, window: int) -> None:
        self.conn = conn
        self.id = sid
        self.window = window
        self.on_data: Callable[[str, bytes], None] | None = None
        self.on_eof: Callable[[str], None] | None = None
        self.on_credit: Callable[[str], None] | None = None
        self.on_abort: Callable[[], None] | None = None
        self.finished = False
        self.aborted = False
        self._send_credit: dict[str, int] = {}
        self._recv_room: dict[str, int] = {}
        self._unreported: dict[str, int] = {}

    # --- sending -------------------------------------------------------------------------------
    def credit(self, channel: str) -> int:
        """Bytes this side may still send on ``channel``."""
        return self._send_credit.get(channel, self.window)

    def send(self, channel: str, data: bytes | bytearray | memoryview) -> int:
        """Queue up to the available credit of ``data``; returns the number of bytes accepted."""
        if self.aborted:
            return len(data)
        if self.finished:
            raise IdmError(f"stream {self.id} is finished")
        credit = self.credit(channel)
        n = min(len(data), credit)
        if n <= 0:
            return 0
        view = memoryview(data)
        for start in range(0, n, DATA_CHUNK):
            self.conn.send(m.Message(m.DATA, self.id, payload=bytes(view[start : min(n, start + DATA_CHUNK)]),
                                     channel=channel))
        self._send_credit[channel] = credit - n
        return n

    def close_channel(self, channel: str) -> None:
        """End of data on one channel (the reader sees EOF)."""
        if not (self.aborted or self.finished):
            self.conn.send(m.Message(m.CLOSE, self.id, channel=channel))

    def finish(self, result: Any = None) -> None:
        """End the stream with its result (e.g. ``{"exit_code": 0}``)."""
        if self.finished:
            return
        self.finished = True
        if not self.aborted:
            self.conn.send(m.Message(m.CLOSE, self.id, payload=result if result is not None else {}))
        self.conn.forget_stream(self.id)

    # --- receiving -----------------------------------------------------------------------------
    def consumed(self, channel: str, n: int) -> None:
        """The owner used ``n`` incoming bytes: give the credit back (batched to half a window)."""
        if n <= 0:
            return
        total = self._unreported.get(channel, 0) + n
        if total >= self.window // 2:
            self._unreported[channel] = 0
            self._recv_room[channel] = self._recv_room.get(channel, self.window) + total
            if not (self.aborted or self.finished):
                self.conn.send(m.Message(m.CREDIT, self.id, payload=total, channel=channel))
        else:
            self._unreported[channel] = total

    # --- called by the connection ----------------------------------------------------------------
    def _deliver(self, msg: m.Message) -> None:
        if self.aborted or self.finished:
            return
        if msg.kind == m.DATA:
            room = self._recv_room.get(msg.channel, self.window)
            if len(msg.payload) > room:
                self.conn.send(m.error(self.id, CREDIT_EXCEEDED,
                                       f"stream {self.id}: {len(msg.payload)} bytes on {msg.channel!r} "
                                       f"exceed the granted credit of {room}; dropped"))
                return
            self._recv_room[msg.channel] = room - len(msg.payload)
            if self.on_data:
                self.on_data(msg.channel, msg.payload)
            else:
                self.consumed(msg.channel, len(msg.payload))
        elif msg.kind == m.CREDIT:
            self._send_credit[msg.channel] = min(self.credit(msg.channel) + msg.payload, m.MAX_CREDIT)
            if self.on_credit:
                self.on_credit(msg.channel)
        elif msg.kind == m.CLOSE:
            if msg.channel:
                if self.on_eof:
                    self.on_eof(msg.channel)
            else:
                self.abort()

    def abort(self) -> None:
        """The peer cancelled the stream or its session ended."""
        if self.aborted or self.finished:
            return
        self.aborted = True
        if self.on_abort:
            self.on_abort()
