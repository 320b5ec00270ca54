"""containerd's OCI config of a container -> the zone's ``container.create`` (docs/pods-contract.md).

The request carries two views of one container:

* ``container``: the zone config's container definition (docs/zone-config.md): the name, the root disk,
  the process (args, env, cwd, user, terminal, stdin), ``readonly_root``, ``limits`` and annotations --
  what every PID 1 understands;
* ``oci``: what PID 1 merges under the zone's policy beyond that: ``process`` (capabilities, rlimits,
  noNewPrivileges, oomScoreAdj, umask...), ``linux`` (seccomp, sysctl, masked/readonly paths, resources,
  devices), the zone-side ``mounts`` (kernel file systems), ``hostname`` and ``annotations``;

plus ``files`` and ``volumes`` from ``shim.zone.volumes``. Never sent, because they name host things the
zone must decide itself: ``root`` (the zone's overlay over the attached disk), namespace paths (containerd
points them at the VMM's namespaces), ``cgroupsPath``. OCI ``hooks`` run host programs around a
container's life: a zone cannot run them, so a container that has any is refused, not started without them.
"""

from __future__ import annotations

from typing import Any

from shim.ttrpc.status import InvalidArgument
from shim.zone.volumes import Delivery
from shim.zone_backend import ContainerSpec, ExecSpec

OCI_LINUX_KEYS = ("seccomp", "sysctl", "maskedPaths", "readonlyPaths", "resources", "devices", "rootfsPropagation",
                  "mountLabel", "intelRdt", "personality")
MIB = 1 << 20


def _user(process: dict[str, Any]) -> dict[str, Any]:
    user = process.get("user") or {}
    result: dict[str, Any] = {"uid": int(user.get("uid", 0)), "gid": int(user.get("gid", 0))}
    gids = [int(g) for g in user.get("additionalGids") or []]
    if gids:
        result["additional_gids"] = gids
    return result


def limits(resources: dict[str, Any]) -> dict[str, int | float]:
    """The definition's ``limits`` from OCI linux.resources (memory bytes, cpus, pids); what is unset is left
    out."""
    found: dict[str, int | float] = {}
    memory = (resources.get("memory") or {}).get("limit")
    if isinstance(memory, int) and memory > 0:
        found["memory"] = max(memory, MIB)
    cpu = resources.get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    if isinstance(quota, int) and quota > 0 and isinstance(period, int) and period > 0:
        found["cpus"] = round(quota / period, 4)
    pids = (resources.get("pids") or {}).get("limit")
    if isinstance(pids, int) and pids > 0:
        found["pids"] = pids
    return found


def container_request(spec: ContainerSpec, disk: str, delivery: Delivery) -> dict[str, Any]:
    """The ``container.create`` payload for ``spec`` on root disk ``disk``."""
    oci = spec.spec
    if oci.get("hooks"):
        raise InvalidArgument(f"container {spec.container_id}: OCI hooks ({', '.join(sorted(oci['hooks']))}) run "
                              "host programs, which a zone cannot run")
    process = oci.get("process")
    if not isinstance(process, dict) or not isinstance(process.get("args"), list) or not process["args"]:
        raise InvalidArgument(f"container {spec.container_id}: the OCI config has no process.args")
    linux = oci.get("linux") or {}
    annotations = {k: v for k, v in (oci.get("annotations") or {}).items() if isinstance(v, str)}
    definition: dict[str, Any] = {
        "name": spec.container_id,
        "image": disk,
        "args": [str(a) for a in process["args"]],
        "env": [e for e in process.get("env") or [] if isinstance(e, str) and "=" in e],
        "cwd": process.get("cwd") or "/",
        "user": _user(process),
        "terminal": spec.terminal,
        "stdin": spec.stdin,
        "readonly_root": bool((oci.get("root") or {}).get("readonly")),
        "annotations": annotations,
    }
    found = limits(linux.get("resources") or {})
    if found:
        definition["limits"] = found
    zone_process = {k: v for k, v in process.items() if k not in ("consoleSize",)}
    zone_process["terminal"] = spec.terminal
    request: dict[str, Any] = {
        "container": definition,
        "oci": {
            "process": zone_process,
            "linux": {k: linux[k] for k in OCI_LINUX_KEYS if k in linux},
            "mounts": delivery.mounts,
            "annotations": annotations,
        },
    }
    if oci.get("hostname"):
        request["oci"]["hostname"] = oci["hostname"]
    if delivery.files:
        request["files"] = delivery.files
    if delivery.volumes:
        request["volumes"] = delivery.volumes
    return request


def exec_request(spec: ExecSpec) -> dict[str, Any]:
    """The ``exec`` payload for a CRI exec (its OCI process): the classic fields every PID 1 reads, and the
    process itself for the rest (additional groups, capabilities, rlimits...)."""
    process = spec.process
    user = _user(process)
    request: dict[str, Any] = {
        "container": spec.container_id,
        "command": [str(a) for a in process["args"]],
        "env": [e for e in process.get("env") or [] if isinstance(e, str) and "=" in e],
        "cwd": process.get("cwd") or "/",
        "user": user,
        "tty": spec.terminal,
        "process": {k: v for k, v in process.items() if k != "consoleSize"},
    }
    size = process.get("consoleSize") or {}
    if spec.terminal and isinstance(size.get("height"), int) and isinstance(size.get("width"), int):
        request["rows"], request["cols"] = size["height"], size["width"]
    return request
