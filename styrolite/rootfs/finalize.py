"""Stage 3, after pivot_root: lock the container's view down (runc's standard_init + finalizeRootfs).

Order: sysctls (before /proc/sys turns read-only), readonlyPaths, maskedPaths, root.readonly, then
the final "/" propagation (an unbindable tree would refuse the read-only binds). Paths are resolved
in the new root with openat2(RESOLVE_IN_ROOT) and changed through /proc/self/fd/N, so a link the
image planted cannot move a mask or a read-only bind. Paths missing from the image are skipped, as
runc does.
"""

from __future__ import annotations

import errno
import os
import stat

from styrolite.errors import ConfigError, ContainerError
from styrolite.mountinfo import mount_containing, read_mountinfo
from styrolite.rootfs.options import parse_options, propagation_flags
from styrolite.rootfs.prepare import PreparedRootfs
from styrolite.rootfs.remount import locked_flags, remount_bind
from styrolite.rootfs.resolve import fd_path, open_in_root
from styrolite.spec.model import Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

_READ_ONLY = parse_options(["ro"])


def finalize_rootfs(spec: Spec, sys: Syscalls = LINUX, prepared: PreparedRootfs | None = None) -> None:
    linux = spec.linux
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for key, value in (linux.sysctl if linux else {}).items():
            write_sysctl(root_fd, key, value, sys)
        for path in linux.readonly_paths if linux else []:
            readonly_path(root_fd, path, sys)
        for path in linux.masked_paths if linux else []:
            mask_path(root_fd, path, sys)
        own_namespace = prepared is None or prepared.own_namespace
        if spec.root is not None and spec.root.readonly:
            if not own_namespace:  # create refuses this combination first; never remount the host's "/"
                raise ContainerError("root.readonly needs a mount namespace of the container's own")
            make_root_readonly(prepared.root_mount_ids if prepared else [], sys)
        if linux and linux.rootfs_propagation and own_namespace:  # last: an unbindable tree would refuse the
            # read-only binds
            flags = propagation_flags(linux.rootfs_propagation, "linux.rootfsPropagation")
            _step(f'make "/" {linux.rootfs_propagation}', sys.mount, None, "/", None, flags)
    finally:
        os.close(root_fd)


def _step(what: str, call, *args) -> None:
    try:
        call(*args)
    except OSError as e:
        raise ContainerError(what) from e


class _existing:
    """``with _existing(root_fd, path, sys) as fd``: an O_PATH fd of ``path`` in the root, or None when the
    image does not have it; closed on exit."""

    def __init__(self, root_fd: int, path: str, sys: Syscalls) -> None:
        self.root_fd, self.path, self.sys = root_fd, path, sys
        self.fd: int | None = None

    def __enter__(self) -> int | None:
        try:
            self.fd = open_in_root(self.root_fd, self.path, self.sys)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        return self.fd

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _mount_target(fd: int, path: str) -> str:
    """``/proc/self/fd/N`` when the container has a /proc; else the plain path (after the pivot there is no
    host left to escape to, only the image's own links)."""
    return fd_path(fd) if os.path.isdir("/proc/self/fd") else path


def mask_path(root_fd: int, path: str, sys: Syscalls = LINUX) -> None:
    """/dev/null over a file, an empty read-only tmpfs over a directory."""
    try:
        with _existing(root_fd, path, sys) as fd:
            if fd is None:
                return
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                sys.mount("tmpfs", _mount_target(fd, path), "tmpfs", k.MS_RDONLY, None)
            else:
                sys.mount("/dev/null", _mount_target(fd, path), None, k.MS_BIND)
    except OSError as e:
        raise ContainerError(f'mask "{path}"') from e


def readonly_path(root_fd: int, path: str, sys: Syscalls = LINUX) -> None:
    """Bind ``path`` onto itself, then remount it read-only keeping its nosuid/nodev/noexec."""
    try:
        with _existing(root_fd, path, sys) as fd:
            if fd is None:
                return
            where = _mount_target(fd, path)
            sys.mount(where, where, None, k.MS_BIND | k.MS_REC)
        with _existing(root_fd, path, sys) as fd:  # re-open: now names the new bind
            assert fd is not None
            where = _mount_target(fd, path)
            remount_bind(where, _READ_ONLY, locked_flags(where), sys)
    except OSError as e:
        raise ContainerError(f'make "{path}" read-only') from e


def write_sysctl(root_fd: int, key: str, value: str, sys: Syscalls = LINUX) -> None:
    """``net.ipv4.ip_forward`` -> /proc/sys/net/ipv4/ip_forward (resolved in the root, like the rest)."""
    parts = key.split(".")
    if not all(parts) or any(p in ("..", ".") or "/" in p for p in parts):
        raise ConfigError(f"linux.sysctl.{key}", "not a sysctl name")
    try:
        fd = open_in_root(root_fd, "/proc/sys/" + "/".join(parts), sys, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise ContainerError(f"sysctl {key}={value}") from e


def make_root_readonly(root_mount_ids: list[int], sys: Syscalls = LINUX) -> None:
    """Read-only "/" and every host mount the rootfs bind carried along - not the config's own mounts
    (a recursive flag would also freeze /dev, /dev/shm, /tmp...: runc and crun leave those alone)."""
    points = ["/"]
    if root_mount_ids:
        entries = read_mountinfo()
        by_id = {e.mount_id: e for e in entries}
        for mount_id in root_mount_ids:
            entry = by_id.get(mount_id)
            if entry is None or entry.mount_point == "/":
                continue
            top = mount_containing(entry.mount_point, entries)
            if top is not None and top.mount_id == mount_id:  # not hidden under a config mount
                points.append(entry.mount_point)
    for point in points:
        try:
            try:
                sys.mount_setattr(point, k.AT_SYMLINK_NOFOLLOW, k.MOUNT_ATTR_RDONLY)
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EINVAL):
                    raise
                remount_bind(point, _READ_ONLY, locked_flags(point), sys)
        except OSError as e:
            raise ContainerError(f'make "{point}" read-only') from e
