"""The shared-library closure of ELF files, found with ``ldd``, so the initramfs carries exactly what they load.

Libraries are staged at the path ``ldd`` reports (ld.so searches /lib/x86_64-linux-gnu and /lib64 by default,
so no ld.so.cache is needed). Libraries the code dlopen()s by name (libseccomp.so.2, ...) are not visible to
ldd and are resolved through ``ldconfig -p``.
"""

from __future__ import annotations

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
