"""Bind remounts that keep the flags a mount already has.

A fresh bind ignores ro/nosuid/...; a second mount(MS_BIND|MS_REMOUNT) applies them. That call replaces
*all* per-mount flags, so flags the mount already has (nosuid, nodev, ro of the source...) must be
repeated: inside a user namespace the kernel refuses to drop such "locked" flags (EPERM), and outside
one it would silently drop them.
"""

from __future__ import annotations

import os

from styrolite.rootfs.options import MountOptions
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

# statvfs f_flag bit -> the mount flag a remount must repeat, or the kernel refuses (EPERM) to drop it
# inside a user namespace, or silently drops it outside one
_STATVFS_TO_MS = {
    os.ST_RDONLY: k.MS_RDONLY,
    os.ST_NOSUID: k.MS_NOSUID,
    os.ST_NODEV: k.MS_NODEV,
    os.ST_NOEXEC: k.MS_NOEXEC,
    os.ST_NOATIME: k.MS_NOATIME,
    os.ST_NODIRATIME: k.MS_NODIRATIME,
    os.ST_RELATIME: k.MS_RELATIME,
    0x2000: k.MS_NOSYMFOLLOW,  # ST_NOSYMFOLLOW (Linux 5.10), not in Python's os module
}
_ATIME_FLAGS = k.MS_NOATIME | k.MS_NODIRATIME | k.MS_RELATIME | k.MS_STRICTATIME
_BIND_ONLY = k.MS_BIND | k.MS_REC | k.MS_REMOUNT


def locked_flags(path: str) -> int:
    """The MS_* flags the mount holding ``path`` already has (statvfs), to be kept across a bind remount."""
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _STATVFS_TO_MS.items() if flags & st)


_MOUNTINFO_TO_MS = {
    "ro": k.MS_RDONLY, "nosuid": k.MS_NOSUID, "nodev": k.MS_NODEV, "noexec": k.MS_NOEXEC,
    "noatime": k.MS_NOATIME, "nodiratime": k.MS_NODIRATIME, "relatime": k.MS_RELATIME, "nosymfollow": k.MS_NOSYMFOLLOW,
}


def flags_from_mountinfo(options: set[str]) -> int:
    """The same locked flags, from a mountinfo entry's per-mount options."""
    return sum(ms for name, ms in _MOUNTINFO_TO_MS.items() if name in options)


def remount_bind(where: str, requested: MountOptions, current: int, sys: Syscalls = LINUX) -> None:
    """MS_BIND|MS_REMOUNT with the requested flags plus what the mount has and the options did not clear."""
    keep = current & ~requested.cleared
    if requested.sets_atime:
        keep &= ~_ATIME_FLAGS
    flags = (requested.flags & ~_BIND_ONLY & ~k.MS_PROPAGATION) | keep
    sys.mount(None, where, None, k.MS_BIND | k.MS_REMOUNT | flags)
