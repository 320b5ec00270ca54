"""The container's root filesystem, in three stages the container init calls in its new mount namespace:

    prepared = prepare_rootfs(spec, bundle, sys, console_path)   # mounts, devices (host paths visible)
    pivot_into(prepared.rootfs, sys)                             # pivot_root, old root detached
    finalize_rootfs(spec, sys, prepared)                         # masks, read-only paths, sysctl, ro root

``console_path`` (process.terminal) is bound onto /dev/console in prepare; a pty opened later from the
container's own /dev/ptmx can instead be bound after the pivot with ``mount_console(path, sys)``.
"""

from styrolite.rootfs.devices import mount_console
from styrolite.rootfs.finalize import finalize_rootfs
from styrolite.rootfs.options import MountOptions, parse_options
from styrolite.rootfs.pivot import chroot_into, pivot_into
from styrolite.rootfs.prepare import PreparedRootfs, open_bind_sources, prepare_rootfs

__all__ = [
    "MountOptions", "PreparedRootfs", "chroot_into", "finalize_rootfs", "mount_console", "open_bind_sources",
    "parse_options", "pivot_into", "prepare_rootfs",
]
