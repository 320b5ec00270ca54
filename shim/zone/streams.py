"""An exec's IDM stream before it exists, as the byte streams the Task service bridges to containerd's FIFOs.

containerd names an exec's stdio at ``Exec`` but the process only starts (and its IDM ``exec`` stream only
opens) at ``Start``; the shim's pumps want their sources and sink at once. ``PendingStream`` stands for the
stream until it is ``set`` -- then each channel is the link's own thread-safe ``idm.client.StreamReader``/
``StreamWriter`` (reading a channel is what grants the zone more credit, so a client that stops reading slows
the process down instead of making anyone buffer without bound) -- or ``fail``ed: the sources then end and
the sink refuses. A container's ``container.attach`` exists from its Create and needs no stand-in.
"""

from __future__ import annotations

import contextlib
import threading

from idm.client import ClientStream, StreamReader, StreamWriter
from idm.errors import IdmError


class PendingStream:
    """An IDM stream that will exist once the process starts; the adapters wait for it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.stream: ClientStream | None = None
        self.error: str | None = None
        self._close_on_set: list[str] = []   # input channels closed before the stream existed

    def set(self, stream: ClientStream) -> None:
        with self._lock:
            self.stream = stream
            self._ready.set()
            early, self._close_on_set = self._close_on_set, []
        for channel in early:
            with contextlib.suppress(IdmError):
                stream.close_channel(channel)

    def fail(self, reason: str) -> None:
        """The stream will never come (the process did not start)."""
        with self._lock:
            if self.stream is None:
                self.error = reason
                self._ready.set()

    def get(self) -> ClientStream | None:
        self._ready.wait()
        return self.stream

    def close_input(self, channel: str) -> None:
        """EOF on an input channel, now or as soon as the stream exists."""
        with self._lock:
            stream = self.stream
            if stream is None:
                if self.error is None:
                    self._close_on_set.append(channel)
                return
        with contextlib.suppress(IdmError):
            stream.close_channel(channel)

    def source(self, channel: str) -> PendingSource:
        return PendingSource(self, channel)

    def sink(self, channel: str = "stdin") -> PendingSink:
        return PendingSink(self, channel)


class PendingSource:
    """One output channel (stdout, stderr): waits for the stream, then reads it."""

    def __init__(self, pending: PendingStream, channel: str) -> None:
        self.pending = pending
        self.channel = channel
        self._reader: StreamReader | None = None
        self._closed = False

    def read(self, max_bytes: int) -> bytes:
        if self._reader is None:
            stream = self.pending.get()
            if stream is None or self._closed:
                return b""
            self._reader = StreamReader(stream, self.channel)
        try:
            return self._reader.read(max_bytes)
        except IdmError:
            return b""   # the stream failed (the link is gone): the end of this output

    def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()


class PendingSink:
    """The stdin channel: waits for the stream, then writes within the zone's credit."""

    def __init__(self, pending: PendingStream, channel: str = "stdin") -> None:
        self.pending = pending
        self.channel = channel
        self._writer: StreamWriter | None = None

    def write(self, data: bytes) -> None:
        if self._writer is None:
            stream = self.pending.get()
            if stream is None:
                raise BrokenPipeError(f"{self.channel}: the process is not running ({self.pending.error})")
            self._writer = StreamWriter(stream, self.channel)
        self._writer.write(data)

    def close(self) -> None:
        self.pending.close_input(self.channel)
