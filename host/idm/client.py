"""Connect the host to a zone: QEMU's virtio-serial chardev socket now, given fds, a vchan later.

The client itself is ``idm.client.IdmClient`` (one place for the protocol); this module adds
what only the host needs: waiting for QEMU to create the socket and for the zone's PID 1 to answer.
"""

from __future__ import annotations

import time
from typing import Any

from idm.client import ClientStream, Event, ExecSession, IdmClient
from idm.errors import ConnectionClosed, IdmError, IdmTimeout, RemoteError
from idm.transport import Transport, connect_unix

__all__ = [
    "ClientStream",
    "ConnectionClosed",
    "Event",
    "ExecSession",
    "IdmClient",
    "IdmError",
    "IdmTimeout",
    "RemoteError",
    "connect",
    "connect_transport",
    "from_fds",
]


def connect(path: str, *, timeout: float = 60.0, hello_timeout: float | None = None, **kwargs: Any) -> IdmClient:
    """Connect to a zone's IDM socket (QEMU ``-chardev socket,path=...,server=on``) and say hello.

    Retries until the socket exists and the zone answers ``hello`` (PID 1 may still be booting), or until
    ``timeout`` seconds have passed. The returned client's ``info`` holds the zone's hello payload.
    """
    deadline = time.monotonic() + timeout
    last: IdmError | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IdmTimeout(f"zone at {path} did not answer within {timeout} s: {last}")
        try:
            transport = connect_unix(path, min(remaining, 5.0))
        except ConnectionClosed as e:  # not there yet
            last = e
            time.sleep(min(0.1, max(remaining, 0)))
            continue
        return IdmClient(transport, timeout=hello_timeout or max(remaining, 1.0), **kwargs)


def connect_transport(transport: Transport, **kwargs: Any) -> IdmClient:
    """A client over any transport (a vchan client end, a test socketpair)."""
    return IdmClient(transport, **kwargs)


def from_fds(read_fd: int, write_fd: int | None = None, **kwargs: Any) -> IdmClient:
    """A client over inherited file descriptors (e.g. a pipe pair or a serial device opened by the caller)."""
    return IdmClient.from_fds(read_fd, write_fd, **kwargs)
