"""A ``cgroup`` mount: what the container sees at /sys/fs/cgroup, decided by what this zone has.

Unified hosts (zones) get a fresh cgroup2 mount. On a v1 or hybrid host (this build machine) the
mount becomes a tmpfs holding one entry per hierarchy found in /proc/self/mountinfo, like runc:
a bind of the container's own cgroup directory (or, with a cgroup namespace, a fresh mount of that
hierarchy, which the namespace roots at the container's cgroup), with the entry's flags (``ro``).
"""

from __future__ import annotations

import errno
import os
import posixpath

from styrolite.errors import suppress
from styrolite.mountinfo import MountEntry, mount_containing, read_mountinfo
from styrolite.rootfs.options import MountOptions
from styrolite.rootfs.remount import flags_from_mountinfo, remount_bind
from styrolite.rootfs.resolve import fd_path, make_dirs, target
from styrolite.spec.model import Mount
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

CGROUP_ROOT = "/sys/fs/cgroup"
_NOT_CONTROLLERS = {"rw", "ro", "xattr", "clone_children", "noprefix", "cpuset_v2_mode", "favordynmods"}


def is_unified(entries: list[MountEntry]) -> bool:
    entry = mount_containing(CGROUP_ROOT, entries)
    return entry is not None and entry.mount_point == CGROUP_ROOT and entry.fstype == "cgroup2"


def hierarchies(entries: list[MountEntry]) -> list[MountEntry]:
    """The v1 (and hybrid v2 ``unified``) hierarchies mounted directly under /sys/fs/cgroup."""
    return [e for e in entries
            if e.fstype in ("cgroup", "cgroup2") and posixpath.dirname(e.mount_point) == CGROUP_ROOT]


def controllers(entry: MountEntry) -> set[str]:
    """``{"cpu", "cpuacct"}`` or ``{"name=systemd"}``; empty for cgroup2."""
    if entry.fstype == "cgroup2":
        return set()
    return {o for o in entry.super_options if o not in _NOT_CONTROLLERS and not o.startswith("release_agent=")}


def own_cgroups(text: str) -> dict[frozenset[str], str]:
    """/proc/self/cgroup: controller set -> this process's path (the empty set is the v2 hierarchy)."""
    result: dict[frozenset[str], str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            result[frozenset(filter(None, parts[1].split(",")))] = parts[2]
    return result


def hierarchy_source(entry: MountEntry, own: dict[frozenset[str], str]) -> str:
    """The host directory of this process's cgroup in that hierarchy (its mount point if unknown)."""
    path = own.get(frozenset(controllers(entry)))
    if path is None:
        return entry.mount_point
    relative = posixpath.relpath(path, entry.root) if entry.root != "/" else path.lstrip("/")
    if relative.startswith(".."):  # our cgroup is outside what this mount shows
        return entry.mount_point
    return posixpath.normpath(posixpath.join(entry.mount_point, relative))


def mount_cgroup(root_fd: int, mount: Mount, options: MountOptions, sys: Syscalls = LINUX, *,
                 cgroupns: bool = False, mountinfo: list[MountEntry] | None = None,
                 self_cgroup: str | None = None) -> None:
    entries = read_mountinfo() if mountinfo is None else mountinfo
    flags = options.flags & ~k.MS_PROPAGATION & ~k.MS_BIND & ~k.MS_REC
    dir_fd = make_dirs(root_fd, mount.destination, sys)
    try:
        if is_unified(entries):
            _mount_cgroup2(root_fd, mount, options, flags, dir_fd, sys)
            return
        sys.mount("tmpfs", fd_path(dir_fd), "tmpfs", flags & ~k.MS_RDONLY, "mode=755")
    finally:
        os.close(dir_fd)
    if self_cgroup is None:
        with open("/proc/self/cgroup") as f:
            self_cgroup = f.read()
    own = own_cgroups(self_cgroup)
    for entry in hierarchies(entries):
        _mount_hierarchy(root_fd, mount.destination, entry, own, options, sys, cgroupns=cgroupns)
    if flags & k.MS_RDONLY:
        with target(root_fd, mount.destination, sys) as where:
            sys.mount(None, where, None, k.MS_REMOUNT | flags, "mode=755")


def _mount_cgroup2(root_fd: int, mount: Mount, options: MountOptions, flags: int, dir_fd: int,
                   sys: Syscalls) -> None:
    """A fresh cgroup2 mount. The kernel refuses (EBUSY) to stack a file system on the root of a mount of
    the same superblock: that is the case when a bind of the host's /sys (a user namespace's sysfs
    fallback) carried the host's cgroup2 mount along, locked. Ours then goes over a small tmpfs."""
    try:
        sys.mount(mount.source or "cgroup2", fd_path(dir_fd), "cgroup2", flags, options.data_string())
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    sys.mount("tmpfs", fd_path(dir_fd), "tmpfs", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "mode=555,size=4k")
    with target(root_fd, mount.destination, sys) as where:
        sys.mount(mount.source or "cgroup2", where, "cgroup2", flags, options.data_string())


def _mount_hierarchy(root_fd: int, destination: str, entry: MountEntry, own: dict[frozenset[str], str],
                     options: MountOptions, sys: Syscalls, *, cgroupns: bool) -> None:
    flags = options.flags & ~k.MS_PROPAGATION & ~k.MS_BIND & ~k.MS_REC
    name = posixpath.basename(entry.mount_point)
    where = posixpath.join(destination, name)
    fd = make_dirs(root_fd, where, sys)
    try:
        if cgroupns:
            data = ",".join(sorted(controllers(entry))) or None
            sys.mount("cgroup", fd_path(fd), entry.fstype, flags, data)
        else:
            sys.mount(hierarchy_source(entry, own), fd_path(fd), None, k.MS_BIND | k.MS_REC)
    finally:
        os.close(fd)
    if not cgroupns and flags:
        current = flags_from_mountinfo(entry.options)
        with target(root_fd, where, sys) as path:
            remount_bind(path, options, current, sys)
    if "," in name:  # co-mounted controllers: cpu -> cpu,cpuacct like the host has
        parent = make_dirs(root_fd, destination, sys)
        try:
            for alias in name.split(","):
                with suppress(FileExistsError):
                    os.symlink(name, alias, dir_fd=parent)
        finally:
            os.close(parent)
