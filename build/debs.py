"""Debian packages as build inputs: ``apt-get download`` once into the cache, ``dpkg-deb -x`` to unpack.

The kernel image, the busybox image and the Xen dom0 are made from Debian packages. A package is downloaded
once into ``<cache>/debs/`` (a later build uses the newest ``<package>_*.deb`` there); the download goes to a
private directory first, so a concurrent build never sees a half-written .deb. :func:`unpacked` keeps an
unpacked tree per .deb content under ``<cache>/unpacked/<digest>``, for packages read again and again (the
dom0's libraries); :func:`extract` unpacks into a directory the caller owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .buildlog import logger
from .cachedir import cache_dir
from .digests import sha256_hex
from .errors import BuildError

log = logger("debs")


class DebError(BuildError):
    """A Debian package cannot be downloaded or unpacked."""


def _cached(directory: Path, package: str) -> Path | None:
    found = sorted(directory.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download(package: str) -> Path:
    """The package's .deb in ``<cache>/debs/``, fetched with ``apt-get download`` the first time."""
    dest = cache_dir() / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    existing = _cached(dest, package)
    if existing is not None:
        return existing
    if shutil.which("apt-get") is None:
        raise DebError(f"{package}: not in {dest} and apt-get is not available to download it")
    log(f"apt-get download {package}")
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        result = subprocess.run(["apt-get", "download", package], cwd=scratch, capture_output=True, text=True)
        fetched = _cached(scratch, package)
        if result.returncode != 0 or fetched is None:
            raise DebError(f"apt-get download {package} failed (run apt-get update?): "
                           f"{result.stderr.strip()[-300:]}")
        os.replace(fetched, dest / fetched.name)
        return dest / fetched.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def field(deb: Path, name: str) -> str:
    """One control field (``Depends``, ``Version``...) of a .deb; empty if absent."""
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
    if result.returncode != 0:
        raise DebError(f"{deb.name}: dpkg-deb -f failed: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def listing(deb: Path) -> str:
    """``dpkg-deb -c``: the package's file list, one ``tar tv`` line per entry."""
    result = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True)
    if result.returncode != 0:
        raise DebError(f"{deb.name}: dpkg-deb -c failed: {result.stderr.strip()[-300:]}")
    return result.stdout


def extract(deb: Path, into: Path) -> Path:
    """Unpack the package's files into ``into`` (created); returns ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True)
    if result.returncode != 0:
        raise DebError(f"{deb.name}: dpkg-deb -x failed: {result.stderr.strip()[-300:]}")
    return into


def unpacked(deb: Path) -> Path:
    """The package's files unpacked once per .deb content, under ``<cache>/unpacked/<digest>``."""
    target = cache_dir() / "unpacked" / sha256_hex(deb)[:16]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        extract(deb, scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():  # a parallel build won the race: its tree is the same
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
