"""Which cgroup hierarchies this host has, read from /proc/self/mountinfo.

Three shapes exist (the same words runc and systemd use):

* **unified** - cgroup2 mounted at the cgroup root (``/sys/fs/cgroup``): zones, modern distros.
* **hybrid** - v1 hierarchies under ``<root>/<controller>`` plus a cgroup2 at ``<root>/unified`` that owns the
  controllers not bound to v1 (on this development host: only hugetlb).
* **legacy** - v1 only.
"""

from __future__ import annotations

import os

from styrolite.cgroups.base import CgroupError
from styrolite.mountinfo import parse_mountinfo
from styrolite.records import field, record

V1_RESOURCE_CONTROLLERS = (
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
    "net_cls", "net_prio", "perf_event", "rdma", "misc",
)


@record
class Hierarchy:
    mountpoint: str
    root: str
    """The mount's root inside the hierarchy (``/`` unless a cgroup namespace or bind mount moved it)."""
    controllers: tuple[str, ...] = ()
    """v1 controllers bound to it (``name=systemd`` included), empty for cgroup2."""


@record
class CgroupLayout:
    mode: str  # "unified", "hybrid" or "legacy"
    unified: Hierarchy | None = None
    v1: dict[str, Hierarchy] = field(default_factory=dict)
    """v1 controller (and ``name=...`` hierarchy) -> the hierarchy it is bound to."""

    def v1_hierarchies(self) -> list[Hierarchy]:
        """Each distinct v1 hierarchy once (``cpu,cpuacct`` co-mounts appear once)."""
        seen: dict[str, Hierarchy] = {}
        for hierarchy in self.v1.values():
            seen.setdefault(hierarchy.mountpoint, hierarchy)
        return list(seen.values())


def layout_from_mountinfo(text: str, root: str = "/sys/fs/cgroup") -> CgroupLayout:
    """The cgroup layout under ``root`` from the text of a mountinfo file."""
    root = root.rstrip("/") or "/"
    unified: Hierarchy | None = None
    v1: dict[str, Hierarchy] = {}
    for entry in parse_mountinfo(text):
        mountpoint = entry.mount_point
        if mountpoint != root and os.path.dirname(mountpoint) != root:
            continue
        if entry.fstype == "cgroup2":
            # The last mount of a path wins, as in the kernel's view of the path.
            unified = Hierarchy(mountpoint, entry.root)
        elif entry.fstype == "cgroup":
            controllers = tuple(sorted(o for o in entry.super_options
                                       if o in V1_RESOURCE_CONTROLLERS or o.startswith("name=")))
            hierarchy = Hierarchy(mountpoint, entry.root, controllers)
            for controller in controllers:
                v1[controller] = hierarchy
    if unified is not None and unified.mountpoint == root:
        return CgroupLayout("unified", unified, {})
    if v1:
        return CgroupLayout("hybrid" if unified is not None else "legacy", unified, v1)
    if unified is not None:
        # cgroup2 only, but not at the root (e.g. only /sys/fs/cgroup/unified): drive it as the unified hierarchy.
        return CgroupLayout("unified", unified, {})
    raise CgroupError(f"no cgroup hierarchy mounted at or under {root} (see /proc/self/mountinfo)")


def detect_layout(root: str = "/sys/fs/cgroup", mountinfo: str = "/proc/self/mountinfo") -> CgroupLayout:
    with open(mountinfo) as f:
        return layout_from_mountinfo(f.read(), root)


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per hierarchy: ``""`` (the v2 line) and each v1 controller -> path."""
    result: dict[str, str] = {}
    with open(proc_cgroup) as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            _hid, controllers, path = parts
            if not controllers:
                result[""] = path
            for controller in controllers.split(","):
                if controller:
                    result[controller] = path
    return result
