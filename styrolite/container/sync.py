"""The channel between the runtime and the container's processes while it is being set up.

A SOCK_SEQPACKET socketpair keeps message boundaries; each message is one small JSON object and may
carry file descriptors (the console's pty master). Either side reports failure with
``{"type": "error", "message": ...}`` and the other turns it into an exception.

Built on ``_socket`` (the C module under ``socket``) and styrolite.jsonio: the ``socket`` module turns its
constants into IntEnums at import, which with ``json`` was milliseconds of every ``styrolite create``.
"""

from __future__ import annotations

import _socket
import struct

from styrolite import jsonio
from styrolite.errors import ContainerError, suppress

MAX_MESSAGE = 65536


class SyncError(ContainerError):
    pass


class SyncChannel:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[SyncChannel, SyncChannel]:
        parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)  # close-on-exec
        return cls(parent), cls(child)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, fds: list[int] | None = None, **fields: object) -> None:
        data = jsonio.dumps({"type": kind, **fields}).encode()
        if fds:
            send_fds(self.sock, data, fds)
        else:
            self.sock.send(data)

    def send_error(self, message: str) -> None:
        with suppress(OSError):
            self.send("error", message=message)

    def receive(self, expected: str | tuple[str, ...], what: str) -> tuple[dict, list[int]]:
        """Next message; it must be of the expected type (an ``error`` message raises with its text)."""
        try:
            data, fds = recv_fds(self.sock, MAX_MESSAGE, 4)
        except OSError as e:
            raise SyncError(f"{what}: {e.strerror}") from e
        if not data:
            raise SyncError(f"{what}: the container process exited during setup")
        message = jsonio.loads(data.decode())
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


def send_fds(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """One message carrying ``fds`` (SCM_RIGHTS), as ``socket.send_fds``."""
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])


def recv_fds(sock: _socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it, as ``socket.recv_fds``."""
    fds: list[int] = []
    data, ancillary, _flags, _addr = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * _INT_SIZE))
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            count = len(payload) // _INT_SIZE
            fds += struct.unpack(f"{count}i", payload[: count * _INT_SIZE])
    return data, fds


_INT_SIZE = struct.calcsize("i")


def _close_quietly(fd: int) -> None:
    import os

    with suppress(OSError):
        os.close(fd)
