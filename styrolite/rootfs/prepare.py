"""Stage 1, before pivot_root, in the container's mount namespace: everything that needs host paths.

Order (runc's prepareRoot + mountToRootfs + createDevices): make "/" rslave (or
``linux.rootfsPropagation``) so nothing we mount leaks to the host, bind the rootfs onto itself so
it is a mount point pivot_root accepts, then each ``mounts`` entry in order, then /dev.

A container without a mount namespace of its own shares the runtime's: then "/" keeps its propagation
and the rootfs is not bound onto itself (both would change the host's mount table); the entries are
still mounted under the rootfs, where the host sees them, as runc does, and ``delete`` detaches them.
"""

from __future__ import annotations

import errno
import os

from styrolite.errors import ConfigError, ContainerError
from styrolite.mountinfo import MountEntry, mount_containing, read_mountinfo
from styrolite.records import field, record
from styrolite.rootfs.devices import setup_dev
from styrolite.rootfs.mounts import bind_source, describe_mount, is_bind, mount_entry
from styrolite.rootfs.options import parse_options, propagation_flags
from styrolite.spec.model import Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

DEFAULT_PROPAGATION = k.MS_SLAVE | k.MS_REC


@record
class PreparedRootfs:
    rootfs: str  # absolute, symlink-free host path of the rootfs, now its own mount point
    userns: bool  # devices were bind-mounted rather than mknod'ed
    root_mount_ids: list[int] = field(default_factory=list)  # the rootfs bind and the host mounts under it
    own_namespace: bool = True  # False: the runtime's mount namespace is shared (no pivot_root, chroot)


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


def prepare_rootfs(spec: Spec, bundle: str, sys: Syscalls = LINUX, console_path: str | None = None, *,
                   own_namespace: bool = True, source_fds: dict[int, int] | None = None) -> PreparedRootfs:
    """Mount the container's filesystem tree at its rootfs; call pivot_into(prepared.rootfs) next.

    ``source_fds`` maps an index of ``spec.mounts`` to an O_PATH fd of its bind source, opened before a user
    namespace took away the right to look the path up (``open_bind_sources``).
    """
    rootfs = rootfs_path(spec, bundle)
    if not own_namespace:
        prepared = PreparedRootfs(rootfs=rootfs, userns=spec.namespace("user") is not None, own_namespace=False)
        _mount_all(rootfs, spec, bundle, sys, prepared, console_path, source_fds or {})
        return prepared
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
    entries = read_mountinfo()  # once: the rootfs bind's ids, and the host's cgroup hierarchies
    prepared = PreparedRootfs(rootfs=rootfs, userns=spec.namespace("user") is not None,
                              root_mount_ids=_mount_ids_under(rootfs, entries))
    _mount_all(rootfs, spec, bundle, sys, prepared, console_path, source_fds or {}, entries)
    return prepared


def _mount_all(rootfs: str, spec: Spec, bundle: str, sys: Syscalls, prepared: PreparedRootfs,
               console_path: str | None, source_fds: dict[int, int], mountinfo: list[MountEntry] | None = None,
               ) -> None:
    cgroupns = spec.namespace("cgroup") is not None
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the bind, not the dir below it
    try:
        for index, mount in enumerate(spec.mounts):
            mount_entry(root_fd, mount, bundle, sys, cgroupns=cgroupns, source_fd=source_fds.get(index),
                        mountinfo=mountinfo)
        setup_dev(root_fd, spec, sys, userns=prepared.userns, console_path=console_path)
    finally:
        os.close(root_fd)


def _make_parent_private(rootfs: str, sys: Syscalls) -> None:
    """pivot_root also refuses a new root whose parent mount is shared (runc's rootfsParentMountPrivate)."""
    parent = mount_containing(os.path.dirname(rootfs), read_mountinfo())
    if parent is not None and parent.shared:
        sys.mount(None, parent.mount_point, None, k.MS_PRIVATE)


def _mount_ids_under(rootfs: str, entries: list[MountEntry]) -> list[int]:
    """Ids of the rootfs bind and of host submounts it carried along (root.readonly covers them too)."""
    return [e.mount_id for e in entries if e.mount_point == rootfs or e.mount_point.startswith(rootfs + "/")]


def open_bind_sources(spec: Spec, bundle: str, sys: Syscalls = LINUX) -> dict[int, int]:
    """Detached copies (open_tree OPEN_TREE_CLONE) of every bind mount's source, keyed by its index in
    ``spec.mounts``.

    Taken while the caller is still the runtime's root in the runtime's mount namespace: inside a new user
    namespace a source under a directory only the host's root may search (0700) could no longer be looked
    up, and a plain descriptor of it could not be bound from the container's new mount namespace (EINVAL).
    A detached tree can: ``mount_entry`` moves it into place (runc and crun take their sources early too).
    Without open_tree (kernels before 5.2) the sources are looked up by path later, as before.
    """
    opened: dict[int, int] = {}
    try:
        for index, mount in enumerate(spec.mounts):
            options = parse_options(mount.options)
            if mount.type in ("cgroup", "cgroup2") or not is_bind(mount, options):
                continue
            source = bind_source(mount, bundle)
            flags = k.OPEN_TREE_CLONE | k.OPEN_TREE_CLOEXEC | (k.AT_RECURSIVE if options.flags & k.MS_REC else 0)
            try:
                opened[index] = sys.open_tree(k.AT_FDCWD, source, flags)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    break
                raise ContainerError(f"{describe_mount(mount)}: open bind source {source!r}") from e
    except BaseException:
        for fd in opened.values():
            os.close(fd)
        raise
    return opened
