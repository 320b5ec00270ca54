"""Ownership shifting of an unpacked root tree, for containers that run in a user namespace.

A zone container with a user namespace maps its ids 0..65535 to the zone's ``shift``..``shift+65535``, so
its root is not the zone's root. Its root image must then be owned by the shifted ids, or container root
would see every file of its own image as ``nobody`` and could write none of them. Kernel 6.1 cannot idmap
a squashfs (or tmpfs, or an overlay of them) mount, so the shift is done once, here, on the host, before
the tree is packed: every owner ``u`` becomes ``u + shift``.

What chown(2) would lose is put back: the setuid/setgid bits (chown clears them) and file capabilities,
which are rewritten as version 3 ``security.capability`` whose root id is the shifted root, so they apply
inside the container's user namespace (a version 2 capability only applies where kernel uid 0 is root).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from zoneinit.config.idrange import ID_RANGE, owner_shift_problem

from .errors import BuildError

DEFAULT_SHIFT = ID_RANGE    # container ids 0..65535 are zone ids 65536..131071 (the zone keeps 0..65535)

CAPABILITY_XATTR = "security.capability"
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_CAP_V2 = struct.Struct("<IIIII")     # magic_etc, permitted lo, inheritable lo, permitted hi, inheritable hi
_CAP_V3 = struct.Struct("<IIIIII")    # ... + rootid


class IdShiftError(BuildError):
    """The tree cannot be shifted as asked."""


def check_shift(shift: int) -> int:
    """A usable shift: a multiple of 65536, at least 65536 (so it never overlaps the zone's own ids)."""
    problem = owner_shift_problem(shift)
    if problem:
        raise IdShiftError(problem)
    return shift


def shifted_capability(value: bytes, rootid: int) -> bytes:
    """A ``security.capability`` value rewritten as revision 3 owned by ``rootid`` (the container's root)."""
    if len(value) < _CAP_V2.size:
        raise IdShiftError(f"security.capability of {len(value)} bytes is not a v2/v3 capability")
    magic, p_lo, i_lo, p_hi, i_hi = _CAP_V2.unpack_from(value)
    if magic & VFS_CAP_REVISION_MASK not in (VFS_CAP_REVISION_2, VFS_CAP_REVISION_3):
        raise IdShiftError(f"security.capability revision {magic >> 24:#x} is not known")
    flags = magic & VFS_CAP_FLAGS_EFFECTIVE
    return _CAP_V3.pack(VFS_CAP_REVISION_3 | flags, p_lo, i_lo, p_hi, i_hi, rootid)


def _shift_one(path: str, st: os.stat_result, shift: int) -> None:
    for kind, value in (("uid", st.st_uid), ("gid", st.st_gid)):
        if value >= ID_RANGE:
            raise IdShiftError(f"{path}: {kind} {value} is outside the container's id range 0..{ID_RANGE - 1}")
    capability = None
    if stat.S_ISREG(st.st_mode):
        try:
            capability = os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
        except OSError:
            capability = None
    os.chown(path, st.st_uid + shift, st.st_gid + shift, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))  # chown cleared them
    if capability is not None:
        os.setxattr(path, CAPABILITY_XATTR, shifted_capability(capability, shift), follow_symlinks=False)


def shift_ownership(tree: str | Path, shift: int) -> int:
    """Add ``shift`` to the owner and group of every entry of ``tree`` (the root included); returns the count.

    Raises IdShiftError naming the first file whose id does not fit the container's range."""
    check_shift(shift)
    root = os.fspath(tree)
    count = 0
    linked: set[int] = set()  # inodes with several names are shifted once
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in linked:
                    continue
                linked.add(st.st_ino)
            _shift_one(path, st, shift)
            count += 1
    _shift_one(root, os.lstat(root), shift)
    return count + 1
