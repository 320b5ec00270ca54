"""A pod container's config.json: the host's OCI config (checked by ``podspec``) merged under the zone's policy.

The base is the document ``bundle.build_config`` makes (Styrolite's hardened defaults, the zone's network
namespace, the user namespace of an owner-shifted image). From the host's config the zone takes the
process (args, env, cwd, user with additional gids and umask, terminal and console size, capabilities,
noNewPrivileges, rlimits, oomScoreAdj), ``root.readonly``, ``hostname``, ``annotations``, the mounts of
kernel file systems, and of ``linux``: resources, sysctl, seccomp (as given: absent means none, which is
what the pod asked), masked and read-only paths (absent: the zone's defaults), devices that exist in the
zone, rootfsPropagation, personality. The zone decides the rest itself: the root (its overlay of the
attached image), the namespaces (``podspec.namespace_modes``: the pod's ipc, uts and network are the ones
PID 1 keeps, and so is its pid namespace when the host gives a pid path (shareProcessNamespace), which a
holder process keeps alive as its pid 1; mount and cgroup are the container's own; a user namespace when
the image is owner-shifted: the pod's, ``pod.Pod``), the cgroup path.

Sysctls of a namespace the pod shares (net.* always, ipc ones when the pod's ipc namespace is shared) are
not the container's to set from inside its user namespace: they are returned as pod sysctls, which PID 1
writes into the pod's namespace itself.
"""

from __future__ import annotations

import os
import stat
from typing import Any, NamedTuple

from zoneinit.config.sysctls import sysctl_namespace
from zoneinit.containers.podspec import OWN


class PodPaths(NamedTuple):
    """Where the pod's shared namespaces are pinned in the zone."""

    network: str | None      # the workload network namespace (None: a fresh empty one per container)
    ipc: str
    uts: str
    user: str                # the pod's user namespace, which containers on owner-shifted images join
    pid: str                 # the pod's pid namespace (its holder is its pid 1), for shareProcessNamespace


class Merged(NamedTuple):
    warnings: list[str]
    pod_sysctls: dict[str, dict[str, str]]    # "network" / "ipc" / "uts" -> {sysctl: value}
    shared: set[str]                          # the pod namespaces this container joins ("ipc", "uts", "pid")


def merge(config: dict[str, Any], oci: dict[str, Any], pod: PodPaths, *, owner_shift: int,
          device_exists: Any = None) -> Merged:
    """Apply ``oci`` (podspec.check_oci's result) to ``config`` in place."""
    warnings: list[str] = []
    linux_in = oci.get("linux", {})
    modes: dict[str, str] = linux_in.get("namespaces") or {}
    if "process" in oci:
        process = dict(oci["process"])
        process.setdefault("cwd", "/")
        process.setdefault("oomScoreAdj", 0)   # PID 1 runs at -1000; its children must not inherit that
        config["process"] = process
    if "root" in oci:
        config["root"]["readonly"] = oci["root"]["readonly"]
    for key in ("hostname", "domainname"):
        if modes.get("uts") == OWN and key in oci:
            config[key] = oci[key]
        elif modes.get("uts") != OWN:
            config.pop(key, None)   # the pod's uts namespace holds the pod's name
    config.setdefault("annotations", {}).update(oci.get("annotations", {}))
    if "mounts" in oci:
        ours = [m for m in config.get("mounts", []) if m.get("type") == "bind"]   # the zone's name files
        config["mounts"] = [dict(m) for m in oci["mounts"]] + ours
    linux = config.setdefault("linux", {})
    shared = _namespaces(linux, modes, pod, owner_shift)
    if "resources" in linux_in:
        linux["resources"] = dict(linux_in["resources"])
    pod_sysctls: dict[str, dict[str, str]] = {}
    own_sysctls: dict[str, str] = {}
    for key, value in (linux_in.get("sysctl") or {}).items():
        kind = sysctl_namespace(key)
        if kind == "network" or (kind is not None and kind in shared):
            pod_sysctls.setdefault(kind, {})[key] = str(value)
        else:
            own_sysctls[key] = value   # the container's own namespace, or refused by the runtime's validator
    if own_sysctls:
        linux["sysctl"] = own_sysctls
    else:
        linux.pop("sysctl", None)
    if "seccomp" in linux_in:
        linux["seccomp"] = linux_in["seccomp"]
    else:
        linux.pop("seccomp", None)
    for key in ("maskedPaths", "readonlyPaths", "rootfsPropagation", "personality"):
        if key in linux_in:
            linux[key] = linux_in[key]
    if "devices" in linux_in:
        linux["devices"] = _zone_devices(linux_in["devices"], warnings, device_exists or _device_exists)
    return Merged(warnings, pod_sysctls, shared)


def _namespaces(linux: dict[str, Any], modes: dict[str, str], pod: PodPaths, owner_shift: int) -> set[str]:
    entries: list[dict[str, str]] = []
    shared: set[str] = set()
    if owner_shift:   # the pod's user namespace, mapped once for all its containers
        entries.append({"type": "user", "path": pod.user})
        linux.pop("uidMappings", None)
        linux.pop("gidMappings", None)
        shared.add("user")
    for kind in ("pid", "ipc", "uts", "mount", "cgroup"):
        if modes.get(kind, OWN) == OWN:
            entries.append({"type": kind})
        else:
            entries.append({"type": kind, "path": getattr(pod, kind)})
            shared.add(kind)
    entries.append({"type": "network", "path": pod.network} if pod.network else {"type": "network"})
    linux["namespaces"] = entries
    return shared


def _device_exists(device: dict[str, Any]) -> bool:
    path = device.get("path")
    if not isinstance(path, str) or not path.startswith("/dev/"):
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    kind = "b" if stat.S_ISBLK(info.st_mode) else "c" if stat.S_ISCHR(info.st_mode) else None
    wanted = device.get("type")
    return kind is not None and (wanted == kind or (wanted == "u" and kind == "c")) and \
        os.major(info.st_rdev) == device.get("major") and os.minor(info.st_rdev) == device.get("minor")


def _zone_devices(devices: Any, warnings: list[str], exists: Any) -> list[dict[str, Any]]:
    """linux.devices that exist in the zone as the same node (a host's device list names the host's)."""
    if not isinstance(devices, list):
        return devices   # the runtime's validator names the problem
    kept = []
    for device in devices:
        if isinstance(device, dict) and exists(device):
            kept.append(device)
        else:
            path = device.get("path") if isinstance(device, dict) else device
            warnings.append(f"$.oci.linux.devices: {path} does not exist in the zone; not created")
    return kept


def check_pod_sysctls(sysctls: dict[str, dict[str, str]], proc_sys: str = "/proc/sys") -> None:
    """A pod sysctl the zone kernel does not have is refused by name (the container would fail later)."""
    for values in sysctls.values():
        for key in values:
            if "/" in key or ".." in key.split(".") or not os.path.exists(os.path.join(proc_sys, *key.split("."))):
                raise ValueError(f"linux.sysctl: {key!r} does not exist in the zone kernel")
