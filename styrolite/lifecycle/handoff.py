"""What ``create`` and ``exec`` hand to their caller besides the return value: the pty master over
``--console-socket`` (SCM_RIGHTS, as runc's protocol) and the process's pid in ``--pid-file``."""

from __future__ import annotations

import _socket
import os

from styrolite.container.sync import send_fds
from styrolite.errors import ContainerError


def send_console(path: str, fd: int) -> None:
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
            send_fds(sock, b"console", [fd])
        finally:
            sock.close()
    except OSError as e:
        raise ContainerError(f"send the console to --console-socket {path!r}: {e.strerror}") from e


def write_pid_file(path: str, pid: int) -> None:
    """Atomically (a reader never sees a partial number): write a temporary file, then rename it."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.replace(tmp, path)
    except OSError as e:
        raise ContainerError(f"write --pid-file {path!r}: {e.strerror}") from e
