"""Which ZoneBackend the shim daemon runs: `ZONE_SHIM_BACKEND=package.module:factory`, else the zone backend.

containerd starts shims with its own environment, so an operator (or a test) selects another backend by
setting the variable for containerd. The factory is called with no arguments and returns a ZoneBackend.
The default is `shim.zone.backend` (each pod in a zone under QEMU, driven over IDM); the shim's own tests
run the containerd side against a host-process double (`tests/shim/shim_backend_double.py`).
"""

from __future__ import annotations

import importlib
import os

from shim.ttrpc.status import InvalidArgument
from shim.zone_backend import ZoneBackend

ENV = "ZONE_SHIM_BACKEND"
DEFAULT = "shim.zone.backend:create"


def load_backend(spec: str | None = None) -> ZoneBackend:
    spec = spec if spec is not None else os.environ.get(ENV, "")
    module_name, sep, attribute = (spec or DEFAULT).partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidArgument(f"{ENV}={spec!r}: expected package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise InvalidArgument(f"{ENV}={spec!r}: {e}") from e
    return factory()
