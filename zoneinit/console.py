"""The console: fds 0-2 of PID 1, and the one-line log every phase writes to it.

The kernel starts /init with fds 0-2 on /dev/console only if the initramfs has that node; after
devtmpfs is mounted we reopen it so the log always reaches the serial console. Log lines are written
with ``os.write`` (no buffering to lose on power-off). A failure is one clear line; the traceback is
added only under ``zone.debug``. Errors are also handed to ``event_sink`` (the IDM server, once it runs)
so the host sees them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

CONSOLE = "/dev/console"


def attach_console(path: str = CONSOLE) -> bool:
    """Point fds 0, 1 and 2 at the console; returns False (and leaves the fds alone) if it can't be opened."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    for target in (0, 1, 2):
        if fd != target:
            os.dup2(fd, target, inheritable=True)
    if fd > 2:
        os.close(fd)
    return True


class ConsoleLog:
    def __init__(self, fd: int = 2, debug: bool = False, prefix: str = "zoneinit") -> None:
        self.fd = fd
        self.debug = debug
        self.prefix = prefix
        self.event_sink: Callable[[str, dict[str, object]], None] | None = None

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):  # a console that went away must never take PID 1 down
            os.write(self.fd, text.encode("utf-8", errors="replace"))

    def info(self, message: str) -> None:
        self._write(f"{self.prefix}: {message}\n")

    def warn(self, message: str) -> None:
        self._write(f"{self.prefix}: warning: {message}\n")
        self._emit("zone.warning", {"message": message})

    def error(self, message: str, error: BaseException | None = None) -> None:
        """One line ``zoneinit: error: <message>: <cause chain>``; the traceback only under zone.debug."""
        line = message
        if error is not None:
            from styrolite.errors import describe

            line = f"{message}: {describe(error)}"
        self._write(f"{self.prefix}: error: {line}\n")
        if error is not None and self.debug:
            import traceback  # imported on the first one: with linecache and tokenize, ~0.2 MB PID 1 rarely needs

            self._write("".join(traceback.format_exception(error)))
        self._emit("zone.error", {"message": line})

    def _emit(self, event: str, body: dict[str, object]) -> None:
        sink = self.event_sink
        if sink is None:
            return
        try:
            sink(event, body)
        except Exception:  # the IDM link being down is not a reason to stop logging
            if self.debug:
                import traceback

                self._write("".join(traceback.format_exception(*sys.exc_info())))
