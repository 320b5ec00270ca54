"""A container's OCI bundle in the zone: an overlay rootfs over its read-only image and a config.json.

The base document is Styrolite's hardened ``default_config()`` (its capabilities, masked paths, Docker-style
seccomp profile); the container's plan fills in the process, and the zone's choices are applied: the zone's
workload network namespace (shared by the zone's containers, never PID 1's own; a fresh empty one if the zone
could not make it), the zone's name files bound read-only, and the writable layer on tmpfs.

Fail closed: if this build cannot give a container the hardened base, the container fails (exit 125 and the
reason, like a disk whose digest does not match); it never starts with a weaker hand-written config.
"""

from __future__ import annotations

import json
import os

from zoneinit.config.idrange import ID_RANGE
from zoneinit.config.plan import ContainerPlan
from zoneinit.errors import ZoneInitError
from zoneinit.mounts.disks import DiskStore
from zoneinit.mounts.images import mount_overlay
from zoneinit.mounts.table import MountTable

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from zoneinit.containers.ocimerge import Merged
    from zoneinit.containers.pod import Pod

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _hardened_base() -> tuple[dict[str, Any], dict[str, Any]]:
    """Styrolite's hardened default config.json and its Docker-style seccomp profile (default EPERM, an allow
    list, no kexec/modules/mount/bpf...). ZoneInitError if this build lacks either: no weaker stand-in."""
    try:
        from styrolite.security import default_profile
        from styrolite.spec.defaults import default_config
        from styrolite.spec.serialize import to_json_obj
    except ImportError as e:
        raise ZoneInitError("the runtime's hardened default config or seccomp profile is not in this build: "
                            "refusing to start a container with weaker settings") from e
    return default_config(), to_json_obj(default_profile())


def build_config(plan: ContainerPlan, *, hostname: str | None = None,
                 name_files: dict[str, str] | None = None, netns: str | None = None,
                 owner_shift: int = 0) -> dict[str, Any]:
    """The config.json document for ``plan`` (a plain dict). With ``owner_shift`` (its root image's owners
    were shifted by that much) the container gets a user namespace mapping its ids 0..65535 there, so its
    root is not the zone's root."""
    config, seccomp = _hardened_base()
    process = config.setdefault("process", {})
    if plan.args:
        process["args"] = list(plan.args)
    env = {e.split("=", 1)[0]: e for e in process.get("env", [])}
    for entry in plan.env:
        env[entry.split("=", 1)[0]] = entry
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH
    process["env"] = list(env.values())
    process["cwd"] = plan.cwd or "/"
    user: dict[str, Any] = {"uid": plan.uid, "gid": plan.gid}
    if plan.additional_gids:
        user["additionalGids"] = list(plan.additional_gids)
    process["user"] = user
    process["terminal"] = plan.terminal
    process.setdefault("oomScoreAdj", 0)  # PID 1 runs at -1000; its children must not inherit that
    config["root"] = {"path": "rootfs", "readonly": plan.readonly_root}
    config["hostname"] = plan.hostname or hostname or plan.id
    linux = config.setdefault("linux", {})
    namespaces = [ns for ns in linux.get("namespaces", []) if ns.get("type") not in ("network", "user")]
    namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    if not any(ns.get("type") == "cgroup" for ns in namespaces):
        namespaces.append({"type": "cgroup"})  # its own cgroup is its "/" (and a user namespace may mount it)
    if owner_shift:
        namespaces.insert(0, {"type": "user"})
        mapping = [{"containerID": 0, "hostID": owner_shift, "size": ID_RANGE}]
        linux["uidMappings"], linux["gidMappings"] = mapping, [dict(m) for m in mapping]
    linux["namespaces"] = namespaces
    linux.setdefault("seccomp", seccomp)
    _apply_limits(linux, plan)
    mounts = config.setdefault("mounts", [])
    for name, source in (name_files or {}).items():
        if name == "hostname":
            continue  # the container has its own UTS namespace and hostname
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": source,
                       "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    annotations = config.setdefault("annotations", {})
    annotations.update(plan.annotations)
    if plan.main:
        annotations["zone.main"] = "true"
    return config


CPU_PERIOD = 100_000  # microseconds


def _apply_limits(linux: dict[str, Any], plan: ContainerPlan) -> None:
    """The config's ``limits`` as cgroup resources (memory bytes, CPU quota per period, pids)."""
    resources = linux.setdefault("resources", {})
    if plan.memory_limit:
        resources.setdefault("memory", {})["limit"] = int(plan.memory_limit)
    if plan.cpus:
        resources.setdefault("cpu", {}).update({"quota": int(plan.cpus * CPU_PERIOD), "period": CPU_PERIOD})
    if plan.pids_limit:
        resources["pids"] = {"limit": int(plan.pids_limit)}


def container_config(plan: ContainerPlan, *, hostname: str | None = None, name_files: dict[str, str] | None = None,
                     netns: str | None = None, owner_shift: int = 0,
                     pod: Pod | None = None) -> tuple[dict[str, Any], Merged | None]:
    """config.json for ``plan``: ``build_config``, then for a pod container (an OCI config or volumes from the
    host) the host's OCI config merged under the zone's policy (``ocimerge``) and the volumes' bind mounts,
    which replace the zone's name files at the same place. Pure: nothing is created."""
    config = build_config(plan, hostname=hostname, name_files=name_files, netns=netns, owner_shift=owner_shift)
    if plan.oci is None and not plan.volumes:
        return config, None
    if pod is None:
        raise ZoneInitError(f"container {plan.id}: a pod container needs the zone's pod state")
    from zoneinit.containers.ocimerge import Merged, merge

    merged = merge(config, plan.oci, pod.paths, owner_shift=owner_shift) if plan.oci is not None else \
        Merged([], {}, set())
    covered = {v.destination for v in plan.volumes}
    config["mounts"] = [m for m in config.get("mounts", []) if m.get("destination") not in covered]
    config["mounts"] += pod.volume_mounts(plan.id, plan.volumes)
    return config, merged


def check_config(config: dict[str, Any]) -> None:
    """The runtime's own validation of a config.json (ConfigError naming the field), before anything is made."""
    from styrolite.spec.parse import parse_config

    parse_config(config)


def check_plan(plan: ContainerPlan, disks: DiskStore, pod: Pod, *, hostname: str | None = None,
               name_files: dict[str, str] | None = None, netns: str | None = None) -> None:
    """A pod container (an OCI config or volumes from the host) is refused before anything of it exists if its
    image is not a root disk, its owner shift is not the pod's, it shares the pod's pid namespace and that
    one's holder has died, or the runtime would refuse its config.json."""
    role = disks.role_of(plan.image) if plan.image else None
    if role != "root":
        roots = [name for name in disks.disks if disks.role_of(name) == "root"]
        raise ValueError(f"container.create: {plan.image!r} is not an attached root disk "
                         f"(have: {', '.join(roots) or 'none'})")
    shift = disks.owner_shift_of(plan.image)
    if plan.oci is not None:
        pod.check_shift(shift)
    config, merged = container_config(plan, hostname=hostname, name_files=name_files, netns=netns,
                                      owner_shift=shift, pod=pod)
    check_config(config)
    if merged is not None:
        from zoneinit.config.sysctls import by_namespace
        from zoneinit.containers.ocimerge import check_pod_sysctls

        check_pod_sysctls(merged.pod_sysctls)
        check_pod_sysctls(by_namespace(pod.sysctls))
        if "pid" in merged.shared:
            pod.check_pid_namespace()


def prepare_bundle(plan: ContainerPlan, disks: DiskStore, mounts: MountTable, *, bundles: str = "/run/zone/bundles",
                   scratch: str = "/run/zone/scratch", hostname: str | None = None,
                   name_files: dict[str, str] | None = None, netns: str | None = None, pod: Pod | None = None,
                   warn: Any = None) -> str:
    """Mount the overlay rootfs, make the pod things the container uses (volumes, shared namespaces, pod
    sysctls) and write config.json; returns the bundle directory."""
    bundle = os.path.join(bundles, plan.id)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs, mode=0o755, exist_ok=True)
    if plan.image:
        lower = disks.rootfs_of(plan.image)
        mount_overlay(mounts, [lower], os.path.join(scratch, plan.id), rootfs)
    owner_shift = disks.owner_shift_of(plan.image) if plan.image else 0
    config, merged = container_config(plan, hostname=hostname, name_files=name_files, netns=netns,
                                      owner_shift=owner_shift, pod=pod)
    if merged is not None and pod is not None:
        if plan.oci is not None:
            pod.ensure_namespaces(owner_shift)
        if "pid" in merged.shared:
            pod.ensure_pid_namespace()
        pod.prepare_volumes(plan.id, plan.volumes, owner_shift)
        pod.apply_sysctls(merged.pod_sysctls)
        for warning in merged.warnings:
            if warn is not None:
                warn(f"container {plan.id}: {warning}")
    tmp = os.path.join(bundle, "config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, os.path.join(bundle, "config.json"))
    return bundle


def remove_bundle(container_id: str, mounts: MountTable, *, bundles: str = "/run/zone/bundles",
                  scratch: str = "/run/zone/scratch", pod: Pod | None = None) -> None:
    """Unmount the container's overlay and forget its bundle and scratch space. ZoneInitError names what
    could not be undone (the rest is done all the same)."""
    import shutil

    bundle = os.path.join(bundles, container_id)
    problems = [f"unmount {target}: {error}" for target, error in mounts.unmount_under(bundle)]
    if os.path.ismount(os.path.join(bundle, "rootfs")):
        problems.append(f"{bundle}/rootfs is still mounted: its files are kept")  # never delete through a mount
    else:
        def failed(_function: object, path: str, exc_info: tuple[type, BaseException, object]) -> None:
            problems.append(f"remove {path}: {exc_info[1]}")

        for directory in (bundle, os.path.join(scratch, container_id)):
            if os.path.lexists(directory):
                shutil.rmtree(directory, onerror=failed)
        if pod is not None:
            try:
                pod.remove_container(container_id)
            except OSError as e:
                problems.append(f"remove its file volumes: {e}")
    if problems:
        raise ZoneInitError(f"clean up container {container_id}: " + "; ".join(problems))
