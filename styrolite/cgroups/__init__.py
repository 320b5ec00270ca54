"""Container cgroups: one ``CgroupManager`` interface over cgroup v2 (zones) and cgroup v1 (hybrid hosts).

    cgroup = open_cgroup(spec.linux.cgroups_path, container_id)
    cgroup.create()
    cgroup.apply(spec.linux.resources)
    cgroup.add_process(pid)
    ...
    cgroup.destroy(kill=True)

The driver is chosen from /proc/self/mountinfo: cgroup2 at the root -> v2; v1 hierarchies -> v1 (plus the
hybrid cgroup2 at ``<root>/unified`` for what only it offers).
"""

from __future__ import annotations

from styrolite.cgroups.base import CgroupError, CgroupManager, empty_stats
from styrolite.cgroups.layout import CgroupLayout, detect_layout, own_cgroups
from styrolite.cgroups.paths import CgroupPath, directory_in, parse_cgroups_path
from styrolite.cgroups.v1 import V1Manager
from styrolite.cgroups.v2 import V2Manager
from styrolite.syscalls import LINUX, Syscalls

__all__ = [
    "CgroupError", "CgroupLayout", "CgroupManager", "CgroupPath", "V1Manager", "V2Manager", "detect_layout",
    "empty_stats", "open_cgroup", "parse_cgroups_path",
]


def open_cgroup(cgroups_path: str | None, container_id: str, root: str = "/sys/fs/cgroup", *,
                sys: Syscalls = LINUX, mountinfo: str = "/proc/self/mountinfo",
                proc_cgroup: str = "/proc/self/cgroup") -> CgroupManager:
    """The manager for a container's cgroup (nothing is created until ``create()``).

    Raises ``CgroupError`` for a bad ``cgroupsPath`` (``..``, systemd ``slice:prefix:name``) or a host
    without cgroups.
    """
    path = parse_cgroups_path(cgroups_path, container_id)
    layout = detect_layout(root, mountinfo)
    own = {} if path.absolute else own_cgroups(proc_cgroup)
    if layout.mode == "unified":
        assert layout.unified is not None
        directory = directory_in(layout.unified, path, own.get(""))
        return V2Manager(layout.unified.mountpoint, directory, str(path), sys)
    directories = {controller: directory_in(hierarchy, path, own.get(controller))
                   for controller, hierarchy in layout.v1.items()}
    unified = None
    if layout.unified is not None:
        unified = V2Manager(layout.unified.mountpoint, directory_in(layout.unified, path, own.get("")), str(path),
                            sys, manage_devices=False)
    return V1Manager(directories, str(path), unified)
