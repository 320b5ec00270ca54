"""A bounded ring of a container's output: the last ``limit`` bytes, plus followers fed as output arrives.

PID 1 must not grow with a chatty container, so older bytes are dropped (``dropped`` counts them).
stdout and stderr share one ring (their interleaving is kept); followers are told which stream each chunk
came from. A follower is a callable ``(channel, chunk)``; it is responsible for its own bounds (IDM credit).
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_LIMIT = 256 * 1024


class OutputRing:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self.total = 0      # bytes ever written
        self.dropped = 0    # bytes that fell off the front
        self.followers: list[Callable[[str, bytes], None]] = []

    def append(self, data: bytes, channel: str = "stdout") -> None:
        if not data:
            return
        self.total += len(data)
        self._buffer += data
        excess = len(self._buffer) - self.limit
        if excess > 0:
            del self._buffer[:excess]
            self.dropped += excess
        for follower in list(self.followers):
            follower(channel, data)

    def snapshot(self, tail: int | None = None) -> bytes:
        """The retained output, or only its last ``tail`` bytes."""
        if tail is not None and tail >= 0:
            return bytes(self._buffer[-tail:]) if tail else b""
        return bytes(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)
