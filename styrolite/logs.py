"""The runtime's logger, ``styrolite``, without importing ``logging`` on the paths that log nothing.

Modules write ``from styrolite.logs import log`` and call ``log.warning("fmt %s", arg)`` as with a
``logging.Logger``. Where the records go:

* a library caller (the zone's PID 1, a test with ``caplog``) gets the standard
  ``logging.getLogger("styrolite")``; the ``logging`` package is imported the first time something is logged;
* the CLI installs its own sink (``set_sink``) that writes runc's formats to stderr and ``--log``
  without the ``logging`` package: importing it is a few milliseconds of every CLI call, and most calls
  (``state``, ``start``, ``kill``, ``delete``) log nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "styrolite"
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}


class Log:
    """The subset of ``logging.Logger`` the runtime uses; records go to the sink, else to ``logging``."""

    def __init__(self) -> None:
        self.sink: Callable[[int, str], None] | None = None

    def log(self, level: int, message: str, *args: object) -> None:
        if self.sink is not None:
            self.sink(level, message % args if args else message)
            return
        import logging

        logging.getLogger(NAME).log(level, message, *args)

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)


log = Log()


def set_sink(sink: Callable[[int, str], None] | None) -> None:
    """Send every record to ``sink(level, message)`` (None: back to the ``logging`` package)."""
    log.sink = sink
