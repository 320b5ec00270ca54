"""The zone's errors, as containerd's kinds: every backend call to the zone (through the pod's one
``host.link.ZoneLink``) is ``guarded``.

Error mapping (the zone's code -> what containerd and its CRI act on): ``not-found`` -> NotFound,
``invalid-argument`` -> InvalidArgument (a container the zone refuses, with the zone's message naming the
field), ``unknown-type`` -> Unimplemented (a zone whose PID 1 does not know the request), a lost link or
timeout -> Unavailable; anything else -> Internal with the zone's message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from host.errors import HostError
from idm.errors import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNKNOWN_TYPE,
    ConnectionClosed,
    IdmError,
    IdmTimeout,
    RemoteError,
)
from shim.ttrpc.status import Internal, InvalidArgument, NotFound, RpcError, Unavailable, Unimplemented

T = TypeVar("T")


def translate(what: str, error: Exception) -> RpcError:
    if isinstance(error, RpcError):
        return error
    if isinstance(error, RemoteError):
        text = f"{what}: {error.remote_message}"
        if error.code == NOT_FOUND:
            return NotFound(text)
        if error.code == INVALID_ARGUMENT:
            return InvalidArgument(text)
        if error.code == UNKNOWN_TYPE:
            return Unimplemented(f"{what}: this zone's PID 1 does not know the request ({error.remote_message})")
        return Internal(text)
    if isinstance(error, ConnectionClosed | IdmTimeout):
        return Unavailable(f"{what}: the zone does not answer ({error})")
    if isinstance(error, IdmError | HostError | OSError):
        return Internal(f"{what}: {error}")
    return Internal(f"{what}: {type(error).__name__}: {error}")


def guarded(what: str, call: Callable[[], T]) -> T:
    """``call()``, its failure translated into containerd's error kinds."""
    try:
        return call()
    except RpcError:
        raise
    except Exception as e:
        raise translate(what, e) from e
