"""Ship a Python package (and the stdlib it pulls in) as sourceless bytecode next to a Nuitka binary.

Why: pyroute2 0.9 is ~230 modules and its package ``__init__`` imports nearly all of them (plus asyncio,
sqlite3, ssl, unittest.mock, multiprocessing...). Compiled to C by Nuitka it dominated both the binary size
and the compile time, for code PID 1 runs once per boot and only when a network is configured. Excluded from
compilation (``--nofollow-import-to``), it is found at run time by Python's ordinary path finder in the
binary's directory, which a standalone program has on ``sys.path``.

The module set is measured, not guessed: a child interpreter imports the package and every submodule it
can, and reports ``sys.modules``; every pure-Python module in that closure is compiled to an unchecked-hash
``.pyc`` by :mod:`zonebuild.pyc` (no source mtime, no dependence on the building process) and every
extension module is copied.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from .pyc import write_pyc

# Runs as `python -I -S`: no site-packages processing, so .pth files of whatever else is installed cannot import
# modules at start-up and hide them from the measurement; the interpreter's own site-packages are added by path.
PROBE = r"""
import sys, sysconfig
for key in ("purelib", "platlib"):
    if sysconfig.get_paths()[key] not in sys.path:
        sys.path.append(sysconfig.get_paths()[key])
import importlib, pkgutil
before = set(sys.modules)
skip = tuple(sys.argv[2].split(",")) if sys.argv[2] else ()

def walk(path, prefix):
    for info in pkgutil.iter_modules(path, prefix):
        if skip and info.name.startswith(skip):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:
            continue
        if info.ispkg:
            walk(module.__path__, info.name + ".")

for name in sys.argv[1].split(","):
    walk(importlib.import_module(name).__path__, name + ".")
found = []
for name in sorted(set(sys.modules) - before):
    spec = getattr(sys.modules[name], "__spec__", None)
    if name.startswith("__") or spec is None or not spec.has_location or not spec.origin:
        continue  # __mp_main__ and friends, built-ins, frozen and namespace modules: nothing to ship
    found.append([name, spec.origin, spec.submodule_search_locations is not None])
import json  # only now: the probe's own imports must not hide modules from the measurement
print(json.dumps(found))
"""


def module_closure(packages: Iterable[str], skip_prefixes: Iterable[str] = ()) -> list[tuple[str, str, bool]]:
    """(name, file, is_package) of every module importing ``packages`` (and all their submodules) loads,
    measured in an isolated child interpreter started from / (neither our sys.path, our environment, our
    __main__ nor other packages' start-up hooks leak in)."""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, ",".join(packages), ",".join(skip_prefixes)],
                            capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise ImportError(f"cannot import {', '.join(packages)} to ship it as bytecode: {result.stderr[-600:]}")
    return [(name, origin, is_package) for name, origin, is_package in json.loads(result.stdout.splitlines()[-1])]


def _already_present(target: Path, name: str) -> bool:
    parts = name.split(".")
    folder = target.joinpath(*parts[:-1])
    return any(folder.glob(f"{parts[-1]}.so")) or any(folder.glob(f"{parts[-1]}.*.so"))


def stage_modules(modules: Iterable[tuple[str, str, bool]], target: Path) -> int:
    """Write each module into ``target`` as .pyc (or copy its .so); returns how many files were written."""
    written = 0
    for name, origin_text, is_package in sorted(set(modules)):
        origin = Path(origin_text)
        parts = name.split(".")
        if origin.suffix == ".py":
            folder = target.joinpath(*parts) if is_package else target.joinpath(*parts[:-1])
            write_pyc(origin, folder / ("__init__.pyc" if is_package else f"{parts[-1]}.pyc"), f"{name}.py")
            written += 1
        elif origin.suffix == ".so" and not _already_present(target, name):
            out = target.joinpath(*parts[:-1], origin.name)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, out)
            os.chmod(out, 0o755)
            written += 1
    return written
