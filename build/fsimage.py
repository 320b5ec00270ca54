"""Read-only file system images (squashfs, erofs) with reproducible bytes.

Used for the root images (owners, modes, times and xattrs of the tree kept) and for the kernel image's
``addons.squashfs`` (everything root-owned, every time 0). The options fix what the tools would otherwise take
from the build machine: the file system's creation time (``-mkfs-time 0``, erofs ``-T0``) and erofs's UUID.
``SOURCE_DATE_EPOCH`` is removed from the tools' environment: mksquashfs refuses to run when both it and a
time option are given, and the image's times must not depend on the caller's environment anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import BuildError

FSTYPES = ("squashfs", "erofs")
EROFS_UUID = "00000000-0000-0000-0000-000000000000"
PACKAGES = {"squashfs": "squashfs-tools", "erofs": "erofs-utils"}


class FsImageError(BuildError):
    """The file system image could not be made."""


def make_fs(tree: Path, out: Path, fstype: str = "squashfs", *, all_root: bool = False,
            all_time: int | None = None) -> Path:
    """One read-only image of ``tree`` at ``out``; ``all_root``: owner 0:0 for every file, ``all_time``: one
    mtime for every file (squashfs only; otherwise the tree's owners and times are kept)."""
    if fstype == "squashfs":
        command = ["mksquashfs", str(tree), str(out), "-noappend", "-comp", "zstd", "-mkfs-time", "0",
                   "-quiet", "-no-progress"]
        if all_root:
            command.append("-all-root")
        if all_time is not None:
            command += ["-all-time", str(all_time)]
    elif fstype == "erofs":
        if all_root or all_time is not None:
            raise FsImageError("erofs images keep the tree's owners and times (all_root/all_time: squashfs only)")
        command = ["mkfs.erofs", "-zlz4hc", "-T0", f"-U{EROFS_UUID}", "--quiet", str(out), str(tree)]
    else:
        raise FsImageError(f"unknown file system type {fstype!r}; choose {' or '.join(FSTYPES)}")
    if shutil.which(command[0]) is None:
        raise FsImageError(f"{command[0]} not found (install {PACKAGES[fstype]})")
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise FsImageError(f"{command[0]} failed: {result.stderr.strip()[-500:]}")
    return out
