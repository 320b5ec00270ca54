"""Attach a local terminal/pipes to an exec session (used by ``/bin/zone exec`` and the host CLI).

stdin is pumped by a thread (blocking reads are fine on the client side), output is written as it
arrives, a local tty is put in raw mode for ``-t`` and SIGWINCH becomes ``exec.resize``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from typing import BinaryIO

from idm.client import ExecSession
from idm.errors import IdmError


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on ``fd``, None when it is not a terminal."""
    try:
        rows, cols = termios.tcgetwinsize(fd)
    except (OSError, termios.error):
        return None
    return rows, cols


def attach(
    session: ExecSession,
    *,
    tty_mode: bool = False,
    stdin_fd: int | None = 0,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> int:
    """Pump stdin to the session and its output to ``stdout``/``stderr`` until it exits; return its exit code."""
    out = stdout or sys.stdout.buffer
    err = stderr or sys.stderr.buffer
    saved_mode = None
    previous_winch = None
    if tty_mode and stdin_fd is not None and os.isatty(stdin_fd):
        saved_mode = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
    if tty_mode and threading.current_thread() is threading.main_thread():
        def on_winch(_signo: int, _frame: object) -> None:
            size = terminal_size(stdin_fd if stdin_fd is not None else 1)
            if size:
                with contextlib.suppress(IdmError):
                    session.resize(*size)

        previous_winch = signal.signal(signal.SIGWINCH, on_winch)
    if stdin_fd is not None:
        threading.Thread(target=_pump_stdin, args=(session, stdin_fd), daemon=True).start()
    else:
        session.close_stdin()
    try:
        for channel, data in session.output():
            target = err if channel == "stderr" else out
            target.write(data)
            target.flush()
        return session.wait()
    finally:
        if saved_mode is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_mode)
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)


def _pump_stdin(session: ExecSession, fd: int) -> None:
    with contextlib.suppress(IdmError, OSError):
        while data := os.read(fd, 65536):
            session.write(data)
        session.close_stdin()
