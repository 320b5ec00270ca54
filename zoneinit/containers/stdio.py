"""A container's own stdio for the host's attach stream (IDM ``container.attach``): its output from the first
byte, and its stdin.

``AttachBuffer`` holds what the container wrote until the attached stream takes it, at most ``limit`` bytes
per channel: beyond that PID 1 stops reading the container's pipe and the container blocks in write(2), as it
would on a full pipe to runc's shim; nothing is dropped and PID 1 does not grow. The log ring
(``output.OutputRing``) gets the same bytes as they are read. ``StdinPipe`` writes what the host sends into
the container's stdin pipe (or its terminal) without blocking the loop, and closes it (EOF, or ^D on a
terminal) only once everything sent before the close has been written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB

if TYPE_CHECKING:
    from zoneinit.supervisor.loop import Supervisor

ATTACH_LIMIT = 256 * 1024   # bytes per channel held for the attach stream before the container is made to wait


class AttachBuffer:
    def __init__(self, channels: tuple[str, ...], limit: int = ATTACH_LIMIT) -> None:
        self.limit = limit
        self.pending: dict[str, bytearray] = {channel: bytearray() for channel in channels}
        self.eof: set[str] = set()
        self.on_data: Callable[[], None] | None = None   # the attached session: something new to send
        self.on_room: Callable[[], None] = lambda: None  # the manager: read the paused pipes again

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.pending)

    def feed(self, channel: str, data: bytes) -> None:
        self.pending.setdefault(channel, bytearray()).extend(data)
        if self.on_data is not None:
            self.on_data()

    def full(self, channel: str) -> bool:
        return len(self.pending.get(channel, b"")) >= self.limit

    def take(self, channel: str, n: int) -> bytes:
        backlog = self.pending.get(channel)
        if not backlog or n <= 0:
            return b""
        was_full = len(backlog) >= self.limit
        data = bytes(backlog[:n])
        del backlog[:n]
        if was_full and len(backlog) < self.limit:
            self.on_room()
        return data

    def close(self, channel: str) -> None:
        self.eof.add(channel)
        if self.on_data is not None:
            self.on_data()

    def drained(self) -> bool:
        return not any(self.pending.values())


class StdinPipe:
    """PID 1's end of a container's stdin: the pipe's write end, or a duplicate of the terminal's master
    (owned: closed at EOF)."""

    def __init__(self, loop: Supervisor, fd: int, *, terminal: bool) -> None:
        self.loop = loop
        self.fd: int | None = fd
        self.terminal = terminal
        self.pending = bytearray()
        self.closing = False
        self.on_written: Callable[[int], None] = lambda _n: None   # credit back to the stream that sent them
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self.fd is None or self.closing:
            self.on_written(len(data))   # nowhere to go: dropped, but the sender's credit keeps flowing
            return
        self.pending += data
        self._flush()

    def _flush(self, _fd: int | None = None) -> None:
        fd = self.fd
        while self.pending and fd is not None:
            try:
                n = os.write(fd, self.pending)
            except BlockingIOError:
                self.loop.add_writer(fd, self._flush)
                return
            except OSError:   # the container closed its stdin or exited: the rest has no reader
                n = len(self.pending)
            del self.pending[:n]
            self.on_written(n)
        if fd is not None:
            self.loop.remove_writer(fd)
        if self.closing:
            self._close_now()

    def close(self) -> None:
        """EOF once what was written before has reached the container."""
        self.closing = True
        if not self.pending:
            self._close_now()

    def _close_now(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        self.loop.remove_writer(fd)
        if self.terminal:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")   # a terminal has no half-close: ^D is EOF for its line discipline
        with contextlib.suppress(OSError):
            os.close(fd)   # a terminal's: our duplicate of the master, which stays open for the output
