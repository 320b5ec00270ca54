"""Reading the arguments of an IDM request: a missing or mistyped one is a ValueError naming it, which the
zone answers as invalid-argument (``zoneinit.idm.errors``)."""

from __future__ import annotations

import signal as signal_module

from idm.server import Request

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any


def require(req: Request, key: str, kind: type = str) -> Any:
    """``req``'s argument ``key``, which must be a ``kind`` (a non-empty one for str)."""
    value = req.arg(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ValueError(f"{req.type}: {key!r} is required ({kind.__name__})")
    return value


def signal_number(value: Any) -> int:
    """A signal given as a number, a name (``SIGTERM``) or a short name (``TERM``)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65:
        return value
    if isinstance(value, str):
        name = value.upper()
        if name.isdigit():
            return signal_number(int(name))
        try:
            return int(signal_module.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            pass
    raise ValueError(f"not a signal: {value!r}")
