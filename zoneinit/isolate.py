"""Run a heavy one-off job in a forked child, so PID 1 never maps what the job needs.

Reading the config disk and hashing disks need ``hashlib`` (OpenSSL's libcrypto: ~3.6 MB of resident memory
that PID 1 would carry for its whole life), ``re``, ``ipaddress``... A forked child does the work and sends the
result back pickled; its memory goes away with it. An error comes back as its type name and its one-line
description (``describe``) and is re-raised in PID 1 as the same zoneinit error type.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from zoneinit import errors as zerrors

T = TypeVar("T")


def _child(function: Callable[..., Any], args: tuple[Any, ...], write_fd: int) -> None:
    signal.set_wakeup_fd(-1)  # never wake PID 1's loop with the child's signals
    try:
        result: tuple[Any, ...] = ("ok", function(*args))
    except BaseException as e:
        from styrolite.errors import describe

        result = ("err", type(e).__name__, describe(e))
    try:
        data = pickle.dumps(result)
    except Exception as e:
        data = pickle.dumps(("err", "ZoneInitError", f"cannot send the result back: {e}"))
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view):]


def in_child(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` computed in a forked child; its result, or its error re-raised here."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            _child(function, args, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    try:
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise zerrors.ZoneInitError(f"helper process for {getattr(function, '__name__', function)} died "
                                    f"(wait status {status:#x})")
    result = pickle.loads(b"".join(chunks))
    if result[0] == "ok":
        return result[1]
    _, type_name, message = result
    error_type = getattr(zerrors, type_name, None)
    if not (isinstance(error_type, type) and issubclass(error_type, zerrors.ZoneInitError)):
        error_type = zerrors.ZoneInitError
    raise error_type(message)
