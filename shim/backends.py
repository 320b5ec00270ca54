"""Which ZoneBackend the shim daemon runs: `ZONE_SHIM_BACKEND=package.module:factory`, or the default.

containerd starts shims with its own environment, so an operator (or a test) selects a backend by setting
the variable for containerd. The factory is called with no arguments and returns a ZoneBackend.

The default backend is the zone backend over IDM. Until the host-side IDM link of issue 11 lands it is
`NoZoneBackend`: the shim answers every call that needs a zone with Unavailable and says why, so a pod on
handler `edera` fails RunPodSandbox with that reason instead of running anywhere else — never a container
with weaker isolation than asked.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NoReturn

from shim.ttrpc.status import InvalidArgument, Unavailable
from shim.zone_backend import ZoneBackend

ENV = "ZONE_SHIM_BACKEND"
NOT_YET = ("no zone backend: the IDM host link this shim drives zones through is not built yet "
           "(issue 11); set ZONE_SHIM_BACKEND=module:factory to use another backend")


class NoZoneBackend:
    """A backend that boots nothing: every operation fails with Unavailable and the reason."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise Unavailable(NOT_YET)

    start_zone = create_container = start_container = delete_container = _refuse
    exec_process = start_exec = delete_exec = signal = resize_pty = stats = _refuse
    pause = resume = update = _refuse

    def stop_zone(self, timeout: float) -> None:
        pass  # nothing was ever started

    def cleanup_after_crash(self, bundle: str, container_id: str) -> None:
        pass  # nothing was ever started


def load_backend(spec: str | None = None) -> ZoneBackend:
    spec = spec if spec is not None else os.environ.get(ENV, "")
    if not spec:
        return NoZoneBackend()  # type: ignore[return-value]
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidArgument(f"{ENV}={spec!r}: expected package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise InvalidArgument(f"{ENV}={spec!r}: {e}") from e
    return factory()
