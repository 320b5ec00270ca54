"""IDM streams as the byte streams the Task service bridges to containerd's FIFOs (``shim.zone_backend``).

One IDM stream (an ``exec``, a container's ``container.attach``) carries several channels: ``stdin`` host →
zone, ``stdout``/``stderr`` zone → host, each with its own credit (docs/idm.md §5). Each channel becomes
one ``ByteSource``/``ByteSink`` here, read or written by a pump thread of ``shim.stdio``: reading a
channel is what grants the zone more credit, so a client that stops reading slows the process down instead
of making anyone buffer without bound.

A stream may not exist yet when containerd wants the streams: an exec's stdio is named at ``Exec`` but the
process only starts at ``Start``. ``PendingStream`` stands for it until it is ``set`` (or ``fail``ed: the
sources then end, the sink refuses).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Protocol

from idm.errors import IdmError


class Channels(Protocol):
    """What the adapters need of ``idm.client.ClientStream``."""

    done: bool

    def read(self, channel: str | None = None, timeout: float | None = None) -> tuple[str, bytes] | None: ...

    def write(self, channel: str, data: bytes, timeout: float | None = None) -> None: ...

    def close_channel(self, channel: str) -> None: ...

    def cancel(self) -> None: ...


class PendingStream:
    """An IDM stream that will exist once the process starts; the adapters wait for it."""

    def __init__(self, stream: Channels | None = None) -> None:
        self._ready = threading.Event()
        self.stream: Channels | None = None
        self.error: str | None = None
        self._open_sources = 0
        self._close_on_set: list[str] = []   # input channels closed before the stream existed
        self._lock = threading.Lock()
        if stream is not None:
            self.set(stream)

    def set(self, stream: Channels) -> None:
        with self._lock:
            self.stream = stream
            self._ready.set()
            early, self._close_on_set = self._close_on_set, []
        for channel in early:
            with contextlib.suppress(IdmError):
                stream.close_channel(channel)

    def close_input(self, channel: str) -> None:
        """EOF on an input channel, now or as soon as the stream exists."""
        with self._lock:
            stream = self.stream
            if stream is None:
                if self.error is None:
                    self._close_on_set.append(channel)
                return
        if not stream.done:
            with contextlib.suppress(IdmError):
                stream.close_channel(channel)

    def fail(self, reason: str) -> None:
        """The stream will never come (the process did not start): sources end, the sink refuses."""
        self.error = reason
        self._ready.set()

    def get(self) -> Channels | None:
        self._ready.wait()
        return self.stream

    def source(self, channel: str) -> StreamSource:
        with self._lock:
            self._open_sources += 1
        return StreamSource(self, channel)

    def sink(self, channel: str = "stdin") -> StreamSink:
        return StreamSink(self, channel)

    def _source_closed(self) -> None:
        """Once no source wants output any more, a stream still running is cancelled (the zone stops
        sending; for an exec whose output nobody reads, this happens only after its exit was reported)."""
        with self._lock:
            self._open_sources -= 1
            last = self._open_sources == 0
        stream = self.stream
        if last and stream is not None and not stream.done:
            with contextlib.suppress(IdmError):
                stream.cancel()


class StreamSource:
    """One output channel (stdout, stderr) of an IDM stream."""

    def __init__(self, pending: PendingStream, channel: str) -> None:
        self.pending = pending
        self.channel = channel
        self._rest = b""
        self._closed = False

    def read(self, max_bytes: int) -> bytes:
        if self._rest:
            data, self._rest = self._rest[:max_bytes], self._rest[max_bytes:]
            return data
        stream = self.pending.get()
        if stream is None or self._closed:
            return b""
        try:
            item = stream.read(self.channel)
        except IdmError:
            return b""   # the stream failed (link lost): end of this output
        if item is None:
            return b""
        data = item[1]
        if len(data) > max_bytes:
            data, self._rest = data[:max_bytes], data[max_bytes:]
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pending._source_closed()


class StreamSink:
    """The stdin channel of an IDM stream; ``write`` waits for the zone's credit."""

    def __init__(self, pending: PendingStream, channel: str = "stdin") -> None:
        self.pending = pending
        self.channel = channel
        self._closed = False

    def write(self, data: bytes) -> None:
        stream = self.pending.get()
        if stream is None or self._closed:
            raise BrokenPipeError(f"{self.channel}: the process is not running ({self.pending.error or 'closed'})")
        try:
            stream.write(self.channel, data)
        except IdmError as e:
            raise BrokenPipeError(f"{self.channel}: {e}") from e

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pending.close_input(self.channel)
