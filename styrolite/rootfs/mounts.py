"""One ``mounts`` entry of config.json, mounted inside the (not yet pivoted) rootfs.

Each step is its own kernel call, as runc does it: the mount itself, then for binds a remount that
applies ro/nosuid/... (mount(2) ignores those flags on a fresh bind), then one call per propagation
change, then mount_setattr(AT_RECURSIVE) for the ``r*`` options. Every call targets a freshly opened
``/proc/self/fd/N`` of the destination resolved inside the root, so the newest mount is the one changed.
"""

from __future__ import annotations

import errno
import os
import stat

from styrolite.errors import ContainerError, StyroliteError
from styrolite.rootfs.cgroupfs import mount_cgroup
from styrolite.rootfs.copy import copy_tree
from styrolite.rootfs.options import MountOptions, parse_options
from styrolite.rootfs.remount import locked_flags, remount_bind
from styrolite.rootfs.resolve import fd_path, make_dirs, make_file, open_in_root, target
from styrolite.spec.model import Mount
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    from styrolite.mountinfo import MountEntry

_BIND_ONLY = k.MS_BIND | k.MS_REC | k.MS_REMOUNT


def describe_mount(mount: Mount) -> str:
    kind = mount.type or "bind"
    return f'mount "{mount.source or kind}" on "{mount.destination}" (type {kind})'


def is_bind(mount: Mount, options: MountOptions) -> bool:
    return options.is_bind or mount.type == "bind"


def mount_entry(root_fd: int, mount: Mount, bundle: str, sys: Syscalls = LINUX, *, cgroupns: bool = False,
                source_fd: int | None = None, mountinfo: list[MountEntry] | None = None) -> None:
    """Mount one entry; every failure becomes ``mount "proc" on "/proc" (type proc): <cause>``.

    ``source_fd``: an O_PATH fd of a bind mount's source, opened earlier (see ``open_bind_sources``).
    ``mountinfo``: the mount table as read after the rootfs bind, for the cgroup hierarchies (else read here).
    """
    try:
        options = parse_options(mount.options)
        if mount.type in ("cgroup", "cgroup2"):
            mount_cgroup(root_fd, mount, options, sys, cgroupns=cgroupns, mountinfo=mountinfo)
        elif is_bind(mount, options):
            _mount_bind(root_fd, mount, options, bundle, sys, source_fd)
        else:
            _mount_filesystem(root_fd, mount, options, sys)
        apply_propagation_and_attrs(root_fd, mount.destination, options, sys)
    except (OSError, ValueError, StyroliteError) as e:
        raise ContainerError(describe_mount(mount)) from e


def apply_propagation_and_attrs(root_fd: int, destination: str, options: MountOptions, sys: Syscalls) -> None:
    for propagation in options.propagation:
        with target(root_fd, destination, sys) as where:
            sys.mount(None, where, None, propagation)
    if options.has_recursive_attrs:
        with target(root_fd, destination, sys) as where:
            sys.mount_setattr(where, k.AT_RECURSIVE, options.attr_set, options.attr_clr)


def _refuse_symlink(root_fd: int, destination: str, sys: Syscalls) -> None:
    """proc and sysfs must land exactly where asked, never through a link planted in the image (runc does
    the same since CVE-2019-19921): a /proc symlink could put a writable proc where masks do not reach."""
    fd = open_in_root(root_fd, destination, sys, os.O_PATH | os.O_NOFOLLOW)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise ContainerError(f"destination {destination!r} is a symlink inside the rootfs")
    finally:
        os.close(fd)


def _mount_filesystem(root_fd: int, mount: Mount, options: MountOptions, sys: Syscalls) -> None:
    fstype = mount.type
    if not fstype or fstype == "none":
        raise ContainerError("no filesystem type and no bind option")
    copy_up = TMPCOPYUP in options.data
    if copy_up:
        if fstype != "tmpfs":
            raise ContainerError(f"{TMPCOPYUP} is only valid for tmpfs, not {fstype}")
        options.data = [item for item in options.data if item != TMPCOPYUP]
    dir_fd = make_dirs(root_fd, mount.destination, sys)
    try:
        if fstype in ("proc", "sysfs"):
            _refuse_symlink(root_fd, mount.destination, sys)
        flags = options.flags & ~k.MS_PROPAGATION
        if copy_up:
            _mount_tmpfs_copy_up(root_fd, dir_fd, mount, options, flags, sys)
            return
        try:
            sys.mount(mount.source or fstype, fd_path(dir_fd), fstype, flags, options.data_string())
        except OSError as e:
            if e.errno != errno.EPERM or fstype not in HOST_FALLBACK:
                raise
            _bind_host_instead(root_fd, dir_fd, mount, options, sys)
    finally:
        os.close(dir_fd)


TMPCOPYUP = "tmpcopyup"


def _mount_tmpfs_copy_up(root_fd: int, dir_fd: int, mount: Mount, options: MountOptions, flags: int,
                         sys: Syscalls) -> None:
    """``tmpcopyup``: the new tmpfs starts with a copy of what the image has at the destination (runc, crun).

    A descriptor of the image's directory, opened before the mount, still reaches it once the tmpfs covers
    the path; the copy goes into the tmpfs, which is made read-only afterwards if the options ask for it.
    """
    original = os.open(fd_path(dir_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sys.mount(mount.source or "tmpfs", fd_path(dir_fd), "tmpfs", flags & ~k.MS_RDONLY, options.data_string())
        with target(root_fd, mount.destination, sys) as where:
            fresh = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_tree(original, fresh)
        finally:
            os.close(fresh)
    finally:
        os.close(original)
    if flags & k.MS_RDONLY:
        with target(root_fd, mount.destination, sys) as where:
            sys.mount(None, where, None, k.MS_REMOUNT | flags, options.data_string())


# A user namespace may not mount a fresh sysfs (no owned network namespace) or mqueue (no owned ipc
# namespace); runc then binds the host's instead, with the same flags.
HOST_FALLBACK = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}


def _bind_host_instead(root_fd: int, dir_fd: int, mount: Mount, options: MountOptions, sys: Syscalls) -> None:
    source = HOST_FALLBACK[mount.type or ""]
    try:
        sys.mount(source, fd_path(dir_fd), None, k.MS_BIND | k.MS_REC)
    except OSError as e:
        raise ContainerError(f"a new {mount.type} is not permitted here (EPERM), and binding the host's "
                             f"{source} instead failed") from e
    if options.flags & ~_BIND_ONLY & ~k.MS_PROPAGATION:
        with target(root_fd, mount.destination, sys) as where:
            remount_bind(where, options, locked_flags(source), sys)


def bind_source(mount: Mount, bundle: str) -> str:
    """Bind sources are host paths, absolute or relative to the bundle (runtime-spec config.md)."""
    if not mount.source:
        raise ContainerError("bind mount without a source")
    return os.path.join(bundle, mount.source)


def _mount_bind(root_fd: int, mount: Mount, options: MountOptions, bundle: str, sys: Syscalls,
                source_fd: int | None = None) -> None:
    """``source_fd``: a detached copy of the source (``open_bind_sources``), moved into place instead."""
    source = bind_source(mount, bundle) if source_fd is None else fd_path(source_fd)
    try:
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as e:
        raise ContainerError(f"bind source {bind_source(mount, bundle)!r}") from e
    fd = make_dirs(root_fd, mount.destination, sys) if is_dir else make_file(root_fd, mount.destination, sys)
    try:
        if source_fd is None:
            sys.mount(source, fd_path(fd), None, k.MS_BIND | (options.flags & k.MS_REC))
        else:
            sys.move_mount(source_fd, "", fd, "", k.MOVE_MOUNT_F_EMPTY_PATH | k.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(fd)
    if options.flags & ~_BIND_ONLY & ~k.MS_PROPAGATION:
        current = locked_flags(source)
        with target(root_fd, mount.destination, sys) as where:
            remount_bind(where, options, current, sys)
