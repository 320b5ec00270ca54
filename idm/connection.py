"""One IDM session over one transport on the zone side: decoder in, buffered frames out, open streams.

The connection never blocks: ``send`` appends a frame to the output buffer and the server flushes it
when the transport is writable. What sits in the buffer is bounded by what the protocol allows the zone
to produce (replies to requests the peer sent, events, and stream data within granted credit).
"""

from __future__ import annotations

import selectors
from collections.abc import Callable

from idm import messages as m
from idm.errors import FRAME_TOO_LARGE, HANDLER_FAILED, FrameError, ProtocolError
from idm.framing import DEFAULT_MAX_FRAME
from idm.streams import Stream
from idm.transport import Transport

READ_SIZE = 64 * 1024


class Connection:
    """A session: created when a peer connects (or a device comes back), dropped when it goes away."""

    def __init__(self, transport: Transport, *, name: str, persistent: bool, max_frame: int = DEFAULT_MAX_FRAME,
                 on_output: Callable[[Connection], None] = lambda _conn: None,
                 log: Callable[[str], None] = lambda _msg: None) -> None:
        self.transport = transport
        self.name = name
        self.persistent = persistent  # a device that outlives sessions (virtio-serial, hvc): keep it open
        self.max_frame = max_frame
        self.on_output = on_output  # the owner flushes (now, or after the current service round)
        self.log = log
        self.decoder = m.MessageDecoder(max_frame)
        self.out = bytearray()
        self.streams: dict[int, Stream] = {}
        self.subscribed = False  # receives events (said hello with events=true)
        self.closed = False
        self.interest = selectors.EVENT_READ  # what the server's epoll set watches for
        self.notify = getattr(transport, "clear_notification", None)  # event-channel transports (transport.py)
        self.last_read = 0

    def send(self, msg: m.Message) -> None:
        if self.closed:
            return
        try:
            frame = m.encode(msg, self.max_frame)
        except ProtocolError as e:  # too large or not encodable: PID 1 must not fail because of a payload
            if msg.kind == m.RESPONSE:
                frame = m.encode(m.error(msg.id, FRAME_TOO_LARGE if isinstance(e, FrameError) else HANDLER_FAILED,
                                         f"the reply could not be sent: {e}"))
            else:
                self.log(f"idm: {msg.kind} {msg.type or msg.id} dropped: {e}")
                return
        self.out += frame
        self.on_output(self)

    @property
    def pending_output(self) -> int:
        return len(self.out)

    def flush(self) -> bool:
        """Write what the transport takes now; True when the buffer is empty. Raises ConnectionClosed."""
        out = self.out
        while out:
            n = self.transport.write(out)
            if n <= 0:
                return False
            del out[:n]
        return True

    def receive(self) -> list[m.Message | ProtocolError] | None:
        """Read once; the decoded items, or None when the peer went away."""
        data = self.transport.read(READ_SIZE)
        if data is None:
            self.last_read = 0
            return []
        if not data:
            return None
        self.last_read = len(data)
        return self.decoder.feed(data)

    def forget_stream(self, sid: int) -> None:
        self.streams.pop(sid, None)

    def end(self) -> None:
        """The session is over: abort its streams (their owners see on_abort) and drop pending output."""
        self.closed = True
        self.out.clear()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.abort()

