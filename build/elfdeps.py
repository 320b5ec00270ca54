"""The shared-library closure of ELF files, found with ``ldd``, so the initramfs carries exactly what they load.

Libraries are staged at the path ``ldd`` reports (ld.so searches /lib/x86_64-linux-gnu and /lib64 by default,
so no ld.so.cache is needed). Libraries the code dlopen()s by name (libseccomp.so.2, ...) are not visible to
ldd and are resolved through ``ldconfig -p``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd(path: Path) -> list[Path]:
    """Absolute paths of every library ``path`` loads (the interpreter included); [] for static files."""
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if result.returncode != 0 or "not a dynamic executable" in result.stdout + result.stderr:
        return []
    libs = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise FileNotFoundError(f"{path}: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match:
            libs.append(Path(match.group(2)))
    return libs


def find_library(soname: str) -> Path:
    """Where the dynamic linker would find ``soname`` on this machine (as dlopen() would)."""
    output = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split()[0] == soname and "x86-64" in parts[0]:
            return Path(parts[1])
    raise FileNotFoundError(f"library {soname} not found (ldconfig -p); install the package that ships it")


def closure(binaries: Iterable[Path], dlopened: Iterable[str] = ()) -> list[Path]:
    """Every library the binaries (and the dlopen()ed sonames) need, transitively, sorted."""
    extra = [find_library(name) for name in dlopened]
    found: set[Path] = set(extra)
    todo = [b for b in binaries if is_elf(b)] + extra
    seen: set[Path] = set()
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        for lib in ldd(item):
            if lib not in found:
                found.add(lib)
                todo.append(lib)
    return sorted(found)


def stage_libraries(libraries: Iterable[Path], root: Path) -> list[Path]:
    """Copy each library to the same absolute path under ``root`` (symlinks resolved to the real file)."""
    staged = []
    for lib in libraries:
        target = root / str(lib).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib.resolve(), target)
        target.chmod(0o755)
        staged.append(target)
    return staged


def strip(paths: Iterable[Path]) -> None:
    """Drop symbols and debug info (``strip --strip-unneeded`` keeps what dynamic linking needs)."""
    files = [str(p) for p in paths if is_elf(p)]
    if files:
        subprocess.run(["strip", "--strip-unneeded", *files], check=True)


# --- libraries from unpacked Debian packages (system extensions) ------------------------------------------------
# An extension's tools must not borrow the build host's libraries: their closure is resolved in the unpacked
# package trees only (DT_NEEDED, read with readelf), and a library none of the packages ships is an error.

LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")


def needed(path: Path) -> list[str]:
    """The sonames ``path`` names in DT_NEEDED ([] for a static program)."""
    result = subprocess.run(["readelf", "-d", "--wide", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise FileNotFoundError(f"{path}: readelf failed: {result.stderr.strip()[-200:]}")
    return _NEEDED.findall(result.stdout)


def has_runpath(path: Path) -> bool:
    result = subprocess.run(["readelf", "-d", "--wide", str(path)], capture_output=True, text=True)
    return "(RUNPATH)" in result.stdout


def _inside(root: Path, path: Path) -> Path:
    """``path`` (under ``root``) with its symbolic links followed inside ``root``: an absolute link target
    means root/target, never the build host's file."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = root / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    raise FileNotFoundError(f"{path}: too many levels of symbolic links")


def find_in_trees(soname: str, trees: Iterable[Path]) -> Path | None:
    """The real file of library ``soname`` in the first package tree that ships it."""
    for root in trees:
        for directory in LIBRARY_DIRS:
            candidate = root / directory / soname
            if candidate.exists() or candidate.is_symlink():
                real = _inside(root, candidate)
                if real.is_file():
                    return real
    return None


def closure_in_trees(programs: Iterable[Path], trees: list[Path]) -> dict[str, Path]:
    """soname -> file for every library the programs need, transitively, found in ``trees`` only."""
    found: dict[str, Path] = {}
    todo = [p for p in programs if is_elf(p)]
    seen: set[Path] = set()
    missing: dict[str, str] = {}
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        for soname in needed(item):
            if soname in found or soname in missing:
                continue
            path = find_in_trees(soname, trees)
            if path is None:
                missing[soname] = item.name
                continue
            found[soname] = path
            todo.append(path)
    if missing:
        listed = ", ".join(f"{soname} (needed by {by})" for soname, by in sorted(missing.items()))
        raise FileNotFoundError(f"libraries in none of the packages: {listed}")
    return dict(sorted(found.items()))


def relocate(program: Path, *, interpreter: str | None, rpath: str) -> None:
    """Point ``program`` at another loader and library directory (patchelf): ``DT_RPATH`` (not RUNPATH), so
    the directory is searched for the libraries' own dependencies too and wins over LD_LIBRARY_PATH."""
    command = ["patchelf"]
    if interpreter is not None:
        command += ["--set-interpreter", interpreter]
    command += ["--force-rpath", "--set-rpath", rpath, str(program)]
    if shutil.which("patchelf") is None:
        raise FileNotFoundError("patchelf not found (install the Debian package patchelf)")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"patchelf {program.name}: {result.stderr.strip()[-300:]}")
