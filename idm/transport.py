"""The byte-stream transport under IDM: four methods, so a Xen vchan fits later as easily as a socket.

``read(max_bytes)`` returns the bytes available (at most ``max_bytes``), ``None`` when nothing is available
right now (non-blocking), and ``b""`` when the peer is gone. ``write(data)`` returns how many bytes were
accepted (0 when it would block) and raises ``ConnectionClosed`` when the peer is gone. Both ends poll
``fileno()`` for readiness; transports here are always non-blocking.

Two optional methods serve event-channel transports such as a Xen vchan, whose one descriptor (the
event channel) becomes readable on any notification, "data arrived" or "space freed", is always
writable, and stays readable until the notification is consumed:

* ``clear_notification()``: consume the pending notification (without blocking when none is pending:
  callers invoke it on every wake-up of the descriptor). When a transport has it, both ends call
  it on every wake-up, then retry writes and drain reads until ``read`` returns None, and never wait
  for writability with POLLOUT.
* ``peer_present() -> bool``: for a persistent transport whose peer left: is a peer there again? (it may
  re-arm itself, e.g. a vchan server re-initialising for the next client). Without it the server checks
  the descriptor for POLLHUP.
"""

from __future__ import annotations

import _socket  # the C module under socket, whose IntEnums would cost a long-lived server (PID 1) ~0.37 MB
import contextlib
import errno
import os
import tty

from idm.errors import ConnectionClosed

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

_GONE = (errno.EPIPE, errno.ECONNRESET, errno.EIO, errno.ENOTCONN, errno.ESHUTDOWN, errno.ENODEV, errno.ENXIO)


def _read_error(e: OSError) -> bytes | None:
    """A non-blocking read's failure, the Transport way: None = nothing yet, b"" = the peer is gone."""
    if isinstance(e, (BlockingIOError, InterruptedError)):
        return None
    if e.errno in _GONE:
        return b""
    raise e


def _write_error(e: OSError, what: str) -> int:
    """A non-blocking write's failure: 0 = try later; a vanished peer is ConnectionClosed."""
    if isinstance(e, (BlockingIOError, InterruptedError)):
        return 0
    if e.errno in _GONE:
        raise ConnectionClosed(f"{what} peer gone: {os.strerror(e.errno)}") from e
    raise e


class Transport(Protocol):   # structural: any object with these four methods (a plain base class at run time)
    def fileno(self) -> int: ...

    def read(self, max_bytes: int) -> bytes | None: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None: ...


class SocketTransport:
    """A connected stream socket: socketpair in tests, a unix socket (QEMU chardev socket, /run/zone/idm.sock)."""

    def __init__(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, max_bytes: int) -> bytes | None:
        try:
            return self.sock.recv(max_bytes)
        except OSError as e:
            return _read_error(e)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.sock.send(data)
        except OSError as e:
            return _write_error(e, "socket")

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self.sock.shutdown(_socket.SHUT_RDWR)  # wakes a thread blocked on this socket
            self.sock.close()


class FdTransport:
    """A file descriptor byte stream: a virtio-serial port (/dev/vport0p1), an hvc tty, a pipe pair.

    ``write_fd`` defaults to ``fd`` (a character device is read and written through one descriptor).
    """

    def __init__(self, fd: int, write_fd: int | None = None, *, owns: bool = True) -> None:
        self.fd = fd
        self.write_fd = fd if write_fd is None else write_fd
        self.owns = owns
        os.set_blocking(self.fd, False)
        os.set_blocking(self.write_fd, False)

    @classmethod
    def open_device(cls, path: str) -> FdTransport:
        """Open a character device for IDM; a tty (hvc) is put in raw mode so no byte is translated or echoed."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if os.isatty(fd):
                tty.setraw(fd)
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def fileno(self) -> int:
        return self.fd

    def read(self, max_bytes: int) -> bytes | None:
        try:
            return os.read(self.fd, max_bytes)
        except OSError as e:
            return _read_error(e)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return os.write(self.write_fd, data)
        except OSError as e:
            return _write_error(e, "device")

    def close(self) -> None:
        if self.owns and self.fd >= 0:
            os.close(self.fd)
            if self.write_fd != self.fd:
                os.close(self.write_fd)
        self.fd = self.write_fd = -1


def socket_pair() -> tuple[SocketTransport, SocketTransport]:
    """Two connected transports (tests, and a zone-local loopback)."""
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return SocketTransport(a), SocketTransport(b)


def connect_unix(path: str, timeout: float = 10.0) -> SocketTransport:
    """Connect to a unix socket (QEMU's virtio-serial chardev socket or the zone's /run/zone/idm.sock)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise ConnectionClosed(f"connect to {path}: {e.strerror or e}") from e
    return SocketTransport(sock)


def find_virtio_port(name: str, sys_root: str = "/sys/class/virtio-ports") -> str:
    """The /dev node of the virtio-serial port QEMU named ``name`` (no udev in a zone to make symlinks)."""
    try:
        entries = sorted(os.listdir(sys_root))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            with open(os.path.join(sys_root, entry, "name")) as f:
                if f.read().strip() == name:
                    return f"/dev/{entry}"
        except OSError:
            continue
    raise FileNotFoundError(f"no virtio-serial port named {name!r} under {sys_root}")
