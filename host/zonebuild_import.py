"""Import ``zonebuild`` from a source checkout too (pyproject maps it to build/; without pip install it is not
on sys.path under that name). The host side calls this before its first ``import zonebuild...``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_zonebuild() -> None:
    if "zonebuild" in sys.modules or importlib.util.find_spec("zonebuild") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "zonebuild", REPO / "build" / "__init__.py", submodule_search_locations=[str(REPO / "build")]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"zonebuild not found (no {REPO / 'build'})")
    module = importlib.util.module_from_spec(spec)
    sys.modules["zonebuild"] = module
    spec.loader.exec_module(module)
