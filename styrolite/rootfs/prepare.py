"""Stage 1, before pivot_root, in the container's new mount namespace: everything that needs host paths.

Order (runc's prepareRoot + mountToRootfs + createDevices): make "/" rslave (or
``linux.rootfsPropagation``) so nothing we mount leaks to the host, bind the rootfs onto itself so
it is a mount point pivot_root accepts, then each ``mounts`` entry in order, then /dev.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from styrolite.errors import ConfigError, ContainerError
from styrolite.mountinfo import mount_containing, read_mountinfo
from styrolite.rootfs.devices import setup_dev
from styrolite.rootfs.mounts import mount_entry
from styrolite.rootfs.options import propagation_flags
from styrolite.spec.model import Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

DEFAULT_PROPAGATION = k.MS_SLAVE | k.MS_REC


@dataclass
class PreparedRootfs:
    rootfs: str  # absolute, symlink-free host path of the rootfs, now its own mount point
    userns: bool  # devices were bind-mounted rather than mknod'ed
    root_mount_ids: list[int] = field(default_factory=list)  # the rootfs bind and the host mounts under it


def rootfs_path(spec: Spec, bundle: str) -> str:
    if spec.root is None or not spec.root.path:
        raise ConfigError("root.path", "missing")
    path = os.path.realpath(os.path.join(bundle, spec.root.path))
    if not os.path.isdir(path):
        raise ContainerError(f"rootfs {path!r} is not a directory")
    return path


def initial_propagation(spec: Spec) -> int:
    """The propagation "/" gets before the rootfs bind. An unbindable "/" could not be bound, so those
    start as rslave and become unbindable only after pivot_root (finalize)."""
    name = spec.linux.rootfs_propagation if spec.linux else None
    if not name:
        return DEFAULT_PROPAGATION
    flags = propagation_flags(name, "linux.rootfsPropagation")
    return DEFAULT_PROPAGATION if flags & k.MS_UNBINDABLE else flags


def prepare_rootfs(spec: Spec, bundle: str, sys: Syscalls = LINUX, console_path: str | None = None) -> PreparedRootfs:
    """Mount the container's filesystem tree at its rootfs; call pivot_into(prepared.rootfs) next."""
    rootfs = rootfs_path(spec, bundle)
    propagation = initial_propagation(spec)
    try:
        sys.mount(None, "/", None, propagation)
    except OSError as e:
        raise ContainerError(f'make "/" {k.mount_flag_names(propagation)}') from e
    shared = bool(propagation & k.MS_SHARED)
    try:
        if shared:
            _make_parent_private(rootfs, sys)
        sys.mount(rootfs, rootfs, None, k.MS_BIND | k.MS_REC)
        if shared:  # pivot_root refuses a shared new root; finalize_rootfs makes it shared again
            sys.mount(None, rootfs, None, k.MS_PRIVATE)
    except OSError as e:
        raise ContainerError(f'bind rootfs "{rootfs}" onto itself') from e
    prepared = PreparedRootfs(rootfs=rootfs, userns=spec.namespace("user") is not None,
                              root_mount_ids=_mount_ids_under(rootfs))
    cgroupns = spec.namespace("cgroup") is not None
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the bind, not the dir below it
    try:
        for mount in spec.mounts:
            mount_entry(root_fd, mount, bundle, sys, cgroupns=cgroupns)
        setup_dev(root_fd, spec, sys, userns=prepared.userns, console_path=console_path)
    finally:
        os.close(root_fd)
    return prepared


def _make_parent_private(rootfs: str, sys: Syscalls) -> None:
    """pivot_root also refuses a new root whose parent mount is shared (runc's rootfsParentMountPrivate)."""
    parent = mount_containing(os.path.dirname(rootfs), read_mountinfo())
    if parent is not None and parent.shared:
        sys.mount(None, parent.mount_point, None, k.MS_PRIVATE)


def _mount_ids_under(rootfs: str) -> list[int]:
    """Ids of the rootfs bind and of host submounts it carried along (root.readonly covers them too)."""
    entries = read_mountinfo()
    return [e.mount_id for e in entries if e.mount_point == rootfs or e.mount_point.startswith(rootfs + "/")]
