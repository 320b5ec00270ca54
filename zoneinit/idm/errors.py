"""The zone's errors as IDM wire codes: a handler raises what it raises, the host gets a code and one line.

The ``idm`` package knows only its own ``IdmError``; this is where PID 1 says which of its errors (and the
runtime's) mean "not found", "invalid argument" or "the zone failed".
"""

from __future__ import annotations

from collections.abc import Callable

from idm.errors import HANDLER_FAILED, INVALID_ARGUMENT, NOT_FOUND, IdmError
from idm.server import Request
from styrolite.errors import ConfigError, NotFoundError, StateError, StyroliteError, describe
from zoneinit.errors import ZoneConfigError

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

Handler = Callable[[Request], "Any"]

_NOT_FOUND = (NotFoundError, FileNotFoundError)
_INVALID = (ConfigError, ZoneConfigError, StateError, ValueError, TypeError, KeyError)


def wire_error(error: Exception) -> IdmError:
    """The IDM error ``error`` is answered with: its wire code and its cause chain on one line."""
    if isinstance(error, IdmError):
        return IdmError(describe(error), error.code)
    if isinstance(error, _NOT_FOUND):
        return IdmError(describe(error), NOT_FOUND)
    if isinstance(error, _INVALID):
        return IdmError(describe(error), INVALID_ARGUMENT)
    if isinstance(error, StyroliteError):
        return IdmError(describe(error), HANDLER_FAILED)
    return IdmError(f"{type(error).__name__}: {describe(error)}", HANDLER_FAILED)


def translated(type_: str, handler: Handler, log: Callable[[str], None]) -> Handler:
    """``handler`` with its errors turned into IDM errors; an unexpected one is logged with its traceback."""

    def run(req: Request) -> Any:
        try:
            return handler(req)
        except Exception as e:
            if not isinstance(e, (IdmError, StyroliteError, *_NOT_FOUND, *_INVALID)):
                import traceback  # on the first crash only: PID 1 does not carry it (and linecache, tokenize)

                log(f"idm: handler for {type_!r} crashed:\n{traceback.format_exc()}")
            raise wire_error(e) from e

    return run


def fail(req: Request, error: BaseException, log: Callable[[str], None]) -> None:
    """Answer ``req`` (a request answered later, from a callback) with ``error`` as ``translated`` would."""
    if not isinstance(error, (IdmError, StyroliteError, *_NOT_FOUND, *_INVALID)):
        import traceback

        log(f"idm: {req.type} failed unexpectedly:\n"
            + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    wired = wire_error(error) if isinstance(error, Exception) else IdmError(str(error), HANDLER_FAILED)
    req.fail(wired.code, wired.message)
