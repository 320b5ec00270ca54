"""pivot_root the runc way: no put_old directory, nothing of the host left in the mount table.

``pivot_root(".", ".")`` stacks the old root on top of the new one at "/"; we step onto it through an
fd opened before the pivot, make it rslave (so detaching it cannot propagate unmounts back to the
host), lazily unmount it, and chdir to the new "/". Both fds are O_CLOEXEC and closed here, so no
directory of the host leaks into the container (the CVE-2024-21626 class).
"""

from __future__ import annotations

import os

from styrolite.errors import ContainerError
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k


def pivot_into(rootfs: str, sys: Syscalls = LINUX) -> None:
    try:
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fchdir(new_root)
                sys.pivot_root(".", ".")
            finally:
                os.close(new_root)
            os.fchdir(old_root)
            sys.mount(None, ".", None, k.MS_SLAVE | k.MS_REC)
            sys.umount2(".", k.MNT_DETACH)
        finally:
            os.close(old_root)
        os.chdir("/")
    except OSError as e:
        raise ContainerError(f"pivot_root into {rootfs!r}") from e


def chroot_into(rootfs: str, sys: Syscalls = LINUX) -> None:
    """A container without its own mount namespace cannot pivot_root (it would move the host's root):
    chroot into the rootfs instead, as runc does."""
    try:
        os.chdir(rootfs)
        sys.chroot(".")
        os.chdir("/")
    except OSError as e:
        raise ContainerError(f"chroot into {rootfs!r}") from e
