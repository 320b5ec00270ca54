"""``zonehost exec``: wire our stdin/stdout/stderr (and terminal) to an IDM exec stream.

-i forwards stdin until EOF; -t asks the zone for a pty, puts our terminal in raw mode for the duration and
forwards window size changes (SIGWINCH -> exec.resize). The exit code is the exec'd process's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pump_stdin(session: Any) -> None:
    from idm.errors import IdmError

    with contextlib.suppress(IdmError, OSError):
        while data := os.read(0, 65536):
            session.write(data)
    with contextlib.suppress(IdmError, OSError):
        session.close_stdin()


def run_exec(client: Any, *, container: str, command: list[str], env: dict[str, str] | None = None,
             cwd: str | None = None, user: dict[str, int] | None = None, interactive: bool = False,
             tty: bool = False) -> int:
    rows = cols = None
    if tty:
        size = shutil.get_terminal_size((80, 24))
        rows, cols = size.lines, size.columns
    session = client.exec(command, container=container, env=env or None, cwd=cwd, user=user, tty=tty,
                          rows=rows, cols=cols)
    if interactive:
        threading.Thread(target=_pump_stdin, args=(session,), daemon=True).start()
    else:
        session.close_stdin()
    previous_winch = None
    if tty and os.isatty(1) and threading.current_thread() is threading.main_thread():
        def on_winch(_signum: int, _frame: Any) -> None:
            size = shutil.get_terminal_size((80, 24))
            with contextlib.suppress(Exception):
                session.resize(size.lines, size.columns)
        previous_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with raw_terminal(0) if tty and interactive else contextlib.nullcontext():
            for channel, data in session.output():
                target = sys.stderr.buffer if channel == "stderr" else sys.stdout.buffer
                target.write(data)
                target.flush()
        return session.wait(30)
    finally:
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
