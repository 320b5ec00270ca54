"""``linux.cgroupsPath``: validation and where it lands in each hierarchy.

Per the runtime spec an absolute path is relative to the hierarchy's root (the cgroup mount), a relative
path is relative to the runtime's own cgroup. A path may never climb out with ``..``: the container would
otherwise pick a cgroup it does not own.
"""

from __future__ import annotations

import os

from styrolite.cgroups.base import CgroupError
from styrolite.cgroups.layout import Hierarchy
from styrolite.records import record

DEFAULT_PARENT = "styrolite"


@record(frozen=True)
class CgroupPath:
    parts: tuple[str, ...]
    absolute: bool

    def __str__(self) -> str:
        joined = "/".join(self.parts)
        return "/" + joined if self.absolute else joined


def parse_cgroups_path(cgroups_path: str | None, container_id: str) -> CgroupPath:
    """Validate ``cgroupsPath`` (None or empty: ``/styrolite/<id>``)."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", "..") or "\0" in container_id:
            raise CgroupError(f"container id {container_id!r} cannot name a cgroup")
        return CgroupPath((DEFAULT_PARENT, container_id), True)
    if "\0" in cgroups_path:
        raise CgroupError(f"linux.cgroupsPath {cgroups_path!r}: contains a NUL byte")
    absolute = cgroups_path.startswith("/")
    if not absolute and cgroups_path.count(":") == 2:
        raise CgroupError(f"linux.cgroupsPath {cgroups_path!r}: systemd cgroup driver not supported "
                          "(\"slice:prefix:name\" paths); use a path like /styrolite/<id>")
    parts = tuple(p for p in cgroups_path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise CgroupError(f"linux.cgroupsPath {cgroups_path!r}: '..' is not allowed (would escape the hierarchy)")
    if not parts:
        raise CgroupError(f"linux.cgroupsPath {cgroups_path!r}: must name a cgroup below the hierarchy root")
    return CgroupPath(parts, absolute)


def directory_in(hierarchy: Hierarchy, path: CgroupPath, own_cgroup: str | None) -> str:
    """The container's directory in one hierarchy.

    ``own_cgroup`` is this process's path in that hierarchy from /proc/self/cgroup; it only matters for
    relative paths. It is made relative to the mount's root (they differ inside a cgroup namespace).
    """
    base = hierarchy.mountpoint
    if not path.absolute:
        own = own_cgroup or "/"
        mount_root = hierarchy.root.rstrip("/")
        if mount_root and (own == mount_root or own.startswith(mount_root + "/")):
            own = own[len(mount_root):] or "/"
        own_parts = [p for p in own.split("/") if p not in ("", ".")]
        if ".." in own_parts:  # our cgroup is outside this mount's view (cgroup namespace): use its root
            own_parts = []
        base = os.path.join(base, *own_parts)
    return os.path.join(base, *path.parts)
