"""The channel between the runtime and the container's processes while it is being set up.

A SOCK_SEQPACKET socketpair keeps message boundaries; each message is one small JSON object and may
carry file descriptors (the console's pty master). Either side reports failure with
``{"type": "error", "message": ...}`` and the other turns it into an exception.
"""

from __future__ import annotations

import contextlib
import json
import socket

from styrolite.errors import ContainerError

MAX_MESSAGE = 65536


class SyncError(ContainerError):
    pass


class SyncChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[SyncChannel, SyncChannel]:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(parent), cls(child)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, fds: list[int] | None = None, **fields: object) -> None:
        data = json.dumps({"type": kind, **fields}).encode()
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def send_error(self, message: str) -> None:
        with contextlib.suppress(OSError):
            self.send("error", message=message)

    def receive(self, expected: str | tuple[str, ...], what: str) -> tuple[dict, list[int]]:
        """Next message; it must be of the expected type (an ``error`` message raises with its text)."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except OSError as e:
            raise SyncError(f"{what}: {e.strerror}") from e
        if not data:
            raise SyncError(f"{what}: the container process exited during setup")
        message = json.loads(data)
        kind = message.get("type")
        if kind == "error":
            for fd in fds:
                _close_quietly(fd)
            raise SyncError(message.get("message", "unknown error"))
        wanted = (expected,) if isinstance(expected, str) else expected
        if kind not in wanted:
            raise SyncError(f"{what}: unexpected message {kind!r} (wanted {'/'.join(wanted)})")
        return message, fds

    def close(self) -> None:
        self.sock.close()


def _close_quietly(fd: int) -> None:
    import os

    with contextlib.suppress(OSError):
        os.close(fd)
