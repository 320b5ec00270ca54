"""Run a heavy one-off job in a forked child, so PID 1 never maps what the job needs.

Reading the config disk and hashing disks need ``hashlib`` (OpenSSL's libcrypto: ~3.6 MB of resident memory
that PID 1 would carry for its whole life), ``re``, ``ipaddress``... A forked child does the work and sends the
result back pickled; its memory goes away with it. An error comes back as its type name and its one-line
description (``describe``) and is re-raised in PID 1 as the same zoneinit error type.
"""

from __future__ import annotations

import contextlib
import os
import signal
from _pickle import dumps, loads  # pickle's C half: pickle.py itself would cost PID 1 ~0.45 MB of heap
from collections.abc import Callable

from zoneinit import errors as zerrors

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

if TYPE_CHECKING:
    from zoneinit.supervisor.loop import Supervisor


def _child(function: Callable[..., Any], args: tuple[Any, ...], write_fd: int) -> None:
    signal.set_wakeup_fd(-1)  # never wake PID 1's loop with the child's signals
    try:
        result: tuple[Any, ...] = ("ok", function(*args))
    except BaseException as e:
        from styrolite.errors import describe

        result = ("err", type(e).__name__, describe(e))
    try:
        data = dumps(result)
    except Exception as e:
        data = dumps(("err", "ZoneInitError", f"cannot send the result back: {e}"))
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view):]


def _fork(function: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, int]:
    """The child's pid and the read end of its result pipe."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            _child(function, args, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd


def _result(function: Callable[..., Any], data: bytes, status: str) -> Any:
    if not data:
        raise zerrors.ZoneInitError(f"helper process for {getattr(function, '__name__', function)} died ({status})")
    result = loads(data)
    if result[0] == "ok":
        return result[1]
    _, type_name, message = result
    error_type = getattr(zerrors, type_name, None)
    if not (isinstance(error_type, type) and issubclass(error_type, zerrors.ZoneInitError)):
        error_type = zerrors.ZoneInitError
    raise error_type(message)


def in_child(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` computed in a forked child; its result, or its error re-raised here."""
    pid, read_fd = _fork(function, args)
    chunks = []
    try:
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    return _result(function, b"".join(chunks), f"wait status {status:#x}")


def start_in_child(loop: Supervisor, done: Callable[[Any, BaseException | None], None],
                   function: Callable[..., Any], *args: Any) -> None:
    """``function(*args)`` in a forked child while PID 1's loop goes on; ``done(result, None)`` or
    ``done(None, error)`` on the loop when it has finished. The reaper collects the child."""
    pid, read_fd = _fork(function, args)
    os.set_blocking(read_fd, False)
    chunks: list[bytes] = []

    def readable(fd: int) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            chunks.append(chunk)
            return
        loop.remove_reader(fd)
        os.close(fd)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)   # it has closed its pipe, so it is exiting; the reaper may have had it first
        try:
            result = _result(function, b"".join(chunks), "no result")
        except BaseException as e:
            done(None, e)
        else:
            done(result, None)

    loop.add_reader(read_fd, readable)
