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
from styrolite.cgroups.v2 import V2Manager
from styrolite.syscalls import LINUX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from styrolite.cgroups.layout import CgroupLayout
    from styrolite.syscalls import Syscalls

__all__ = [
    "CgroupError", "CgroupLayout", "CgroupManager", "CgroupPath", "V1Manager", "V2Manager", "detect_layout",
    "empty_stats", "from_record", "open_cgroup", "parse_cgroups_path", "record_of",
]
_LAZY = {"CgroupLayout": "layout", "detect_layout": "layout", "own_cgroups": "layout", "CgroupPath": "paths",
         "directory_in": "paths", "parse_cgroups_path": "paths", "V1Manager": "v1"}


def __getattr__(name: str) -> object:
    """The layout and path helpers are imported on first use: ``delete`` and ``kill`` open the cgroup from
    the directories ``create`` recorded and never need them. So is the v1 driver: a cgroup v2 host (every zone)
    never loads it, and a long-lived caller (the zone's PID 1) does not carry it."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"styrolite.cgroups.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_cgroup(cgroups_path: str | None, container_id: str, root: str = "/sys/fs/cgroup", *,
                sys: Syscalls = LINUX, mountinfo: str = "/proc/self/mountinfo",
                proc_cgroup: str = "/proc/self/cgroup") -> CgroupManager:
    """The manager for a container's cgroup (nothing is created until ``create()``).

    Raises ``CgroupError`` for a bad ``cgroupsPath`` (``..``, systemd ``slice:prefix:name``) or a host
    without cgroups.
    """
    from styrolite.cgroups.layout import detect_layout, own_cgroups
    from styrolite.cgroups.paths import directory_in, parse_cgroups_path

    path = parse_cgroups_path(cgroups_path, container_id)
    layout = detect_layout(root, mountinfo)
    own = {} if path.absolute else own_cgroups(proc_cgroup)
    if layout.mode == "unified":
        assert layout.unified is not None
        directory = directory_in(layout.unified, path, own.get(""))
        return V2Manager(layout.unified.mountpoint, directory, str(path), sys)
    directories = {controller: directory_in(hierarchy, path, own.get(controller))
                   for controller, hierarchy in layout.v1.items()}
    from styrolite.cgroups.v1 import V1Manager

    unified = None
    if layout.unified is not None:
        unified = V2Manager(layout.unified.mountpoint, directory_in(layout.unified, path, own.get("")), str(path),
                            sys, manage_devices=False)
    return V1Manager(directories, str(path), unified)


def record_of(manager: CgroupManager) -> dict:
    """What ``from_record`` needs to open the same cgroup again (kept in the container's state): the
    directories as resolved at create, so later calls neither read the host's mounts nor depend on the
    cgroup of the process that runs them (a relative ``cgroupsPath``)."""
    if isinstance(manager, V2Manager):
        return {"version": 2, "path": manager.path, "mountpoint": manager.mountpoint, "directory": manager.directory}
    from styrolite.cgroups.v1 import V1Manager

    if isinstance(manager, V1Manager):
        unified = manager.unified
        return {"version": 1, "path": manager.path, "directories": dict(manager.directories),
                "unified": None if unified is None else {"mountpoint": unified.mountpoint,
                                                         "directory": unified.directory}}
    raise CgroupError(f"cannot record a {type(manager).__name__}")


def from_record(record: dict, sys: Syscalls = LINUX) -> CgroupManager:
    """The manager ``record_of`` described."""
    try:
        if record["version"] == 2:
            return V2Manager(record["mountpoint"], record["directory"], record["path"], sys)
        if record["version"] == 1:
            from styrolite.cgroups.v1 import V1Manager

            unified = record.get("unified")
            v2 = None if not unified else V2Manager(unified["mountpoint"], unified["directory"], record["path"], sys,
                                                    manage_devices=False)
            return V1Manager(dict(record["directories"]), record["path"], v2)
    except (KeyError, TypeError) as e:
        raise CgroupError(f"the container's cgroup record {record!r} is incomplete") from e
    raise CgroupError(f"the container's cgroup record names an unknown version {record.get('version')!r}")
