"""containerd's OCI config of a container -> the zone's ``container.create``; a CRI exec -> ``exec``.

The request (docs/pods-contract.md, kzone's PID 1: ``zoneinit/idm/handlers.py`` ``pod_plan``) is

* ``container``: the name and the root disk (the hot-plugged image), and whether the container takes stdin;
* ``oci``: containerd's config.json as it is, but for ``mounts``, which keep only the kernel file systems the
  zone mounts itself (``shim.zone.volumes``). PID 1 takes from it the process, ``root.readonly``, the
  hostname, the annotations and ``linux`` (resources, sysctl, seccomp, masked/readonly paths, devices,
  namespaces as *modes*: a namespace path means "the pod's", which in a zone is the one PID 1 keeps), and
  refuses what a zone cannot honour with the JSON path of the field (``$.oci.hooks: hooks run programs on
  the host``); it never takes the host's root path, namespace paths or cgroup path;
* ``volumes``: the mounts the shim delivers (files, emptyDirs);
* ``attach: true``: PID 1 keeps the container's stdio from its first byte for ``container.attach``.
"""

from __future__ import annotations

from typing import Any

from shim.ttrpc.status import InvalidArgument
from shim.zone.volumes import Delivery
from shim.zone_backend import ContainerSpec, ExecSpec


def container_request(spec: ContainerSpec, disk: str, delivery: Delivery) -> dict[str, Any]:
    """The ``container.create`` payload for ``spec`` on root disk ``disk``."""
    process = spec.spec.get("process")
    if not isinstance(process, dict) or not isinstance(process.get("args"), list) or not process["args"]:
        raise InvalidArgument(f"container {spec.container_id}: the OCI config has no process.args")
    oci = {key: value for key, value in spec.spec.items() if key != "mounts"}
    oci["mounts"] = delivery.mounts
    oci["process"] = {**process, "terminal": spec.terminal}
    request: dict[str, Any] = {"container": {"name": spec.container_id, "image": disk, "stdin": spec.stdin},
                               "oci": oci, "attach": True}
    if delivery.volumes:
        request["volumes"] = delivery.volumes
    return request


def exec_request(spec: ExecSpec) -> dict[str, Any]:
    """The ``exec`` payload for a CRI exec: containerd's OCI process (args, env, cwd, user with its additional
    groups, capabilities, rlimits, the terminal and its size) is the process PID 1 runs."""
    request: dict[str, Any] = {"container": spec.container_id, "process": dict(spec.process, terminal=spec.terminal),
                               "tty": spec.terminal}
    size = spec.process.get("consoleSize") or {}
    if spec.terminal and isinstance(size.get("height"), int) and isinstance(size.get("width"), int):
        request["rows"], request["cols"] = size["height"], size["width"]
    return request
