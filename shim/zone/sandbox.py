"""The pod, as containerd's CRI describes it in the sandbox (pause) container's OCI spec.

CRI (containerd 1.6) writes the pod's identity into the sandbox spec's annotations
(``io.kubernetes.cri.sandbox-name``/``-namespace``/``-uid``), its hostname into ``hostname``, the pod
network namespace it created and ran CNI in into ``linux.namespaces[type=network].path``, and bind-mounts
the ``resolv.conf`` it wrote from the pod's DNSConfig. A pod that asks for a node namespace (hostNetwork,
hostPID, hostIPC: the namespace is then missing from the spec) is refused: a zone has its own kernel, so it
cannot share the node's network stack, processes or IPC objects, and running it without them would not be
what the pod asked for. The pod's sysctls (``linux.sysctl``: containerd writes them into the sandbox's spec
only) go into the zone config, and PID 1 writes them into the pod's namespaces (docs/pods-contract.md).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from shim.ttrpc.status import InvalidArgument
from shim.zone_backend import SandboxSpec
from zoneinit.config.sysctls import by_namespace

NAME = "io.kubernetes.cri.sandbox-name"
NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
UID = "io.kubernetes.cri.sandbox-uid"
LOG_DIRECTORY = "io.kubernetes.cri.sandbox-log-directory"


@dataclass(frozen=True)
class PodSandbox:
    id: str
    name: str               # the pod's name ("" for a task without CRI, e.g. `ctr run`)
    namespace: str          # the pod's Kubernetes namespace
    uid: str
    hostname: str           # the zone's hostname
    netns: str | None       # the pod network namespace (None: the pod has no network, e.g. `ctr run`)
    resolv_conf: str | None  # the resolv.conf CRI wrote for the pod
    zone_name: str          # the zone's name (state directory, zone config, QEMU's process name)
    sysctls: dict[str, str] = field(default_factory=dict)   # the pod's (securityContext.sysctls), for the zone


def zone_name_of(sandbox_id: str) -> str:
    """``pod-`` + 12 hex digits of the sandbox id: short (socket paths), valid everywhere a name goes."""
    digest = sandbox_id if all(c in "0123456789abcdef" for c in sandbox_id) and len(sandbox_id) >= 12 \
        else hashlib.sha256(sandbox_id.encode()).hexdigest()
    return f"pod-{digest[:12]}"


def _hostname(spec: dict[str, Any], fallback: str) -> str:
    name = spec.get("hostname") or fallback
    cleaned = "".join(c if c.isalnum() or c in "-." else "-" for c in str(name).lower()).strip("-.")[:63]
    return cleaned or "zone"


def pod_sandbox(sandbox: SandboxSpec) -> PodSandbox:
    spec = sandbox.spec
    annotations = spec.get("annotations") or {}
    linux = spec.get("linux") or {}
    namespaces = {ns.get("type"): ns for ns in linux.get("namespaces") or [] if isinstance(ns, dict)}
    cri = NAME in annotations
    if cri:
        shared = [what for kind, what in (("network", "hostNetwork (the node's network namespace)"),
                                          ("pid", "hostPID (the node's process namespace)"),
                                          ("ipc", "hostIPC (the node's IPC namespace)"))
                  if kind not in namespaces]
        if shared:
            raise InvalidArgument(f"pod {annotations.get(NAMESPACE, '')}/{annotations[NAME]}: a zone has its own "
                                  f"kernel and cannot share {' or '.join(shared)}; run this pod with another "
                                  "runtime class")
    netns = (namespaces.get("network") or {}).get("path") or None
    if netns is not None and not os.path.exists(netns):
        raise InvalidArgument(f"pod network namespace {netns} does not exist")
    sysctls = _sysctls(linux.get("sysctl"), annotations)
    resolv = next((m.get("source") for m in spec.get("mounts") or []
                   if isinstance(m, dict) and m.get("destination") == "/etc/resolv.conf"), None)
    return PodSandbox(id=sandbox.sandbox_id, name=annotations.get(NAME, ""), namespace=annotations.get(NAMESPACE, ""),
                      uid=annotations.get(UID, ""), hostname=_hostname(spec, annotations.get(NAME, "zone")),
                      netns=netns, resolv_conf=resolv if resolv and os.path.isfile(resolv) else None,
                      zone_name=zone_name_of(sandbox.sandbox_id), sysctls=sysctls)


def _sysctls(value: Any, annotations: dict[str, str]) -> dict[str, str]:
    """The sandbox's ``linux.sysctl``: containerd puts the pod's sysctls there only (its containers join the
    sandbox's namespaces), so the zone gets them in its config. One that is not a pod namespace's is refused
    here, as runc refuses it when it starts the sandbox."""
    pod = f"pod {annotations.get(NAMESPACE, '')}/{annotations.get(NAME, '')}"
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{pod}: linux.sysctl of the sandbox is not an object of strings")
    try:
        by_namespace(value)
    except ValueError as e:
        raise InvalidArgument(f"{pod}: {e}") from e
    return dict(value)
