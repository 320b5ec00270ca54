"""Which namespace a sysctl belongs to: the one home of that rule for the zone config and pod containers.

A pod's sysctls (the sandbox's ``linux.sysctl``: Kubernetes' ``securityContext.sysctls``) are written into
the pod's shared namespaces. Only namespaced ones can be: ``net.*`` (network), the System V IPC ones and
``fs.mqueue.*`` (ipc), ``kernel.domainname`` (uts) -- the same list runc accepts. Any other sysctl would
change the whole zone kernel, not the pod, and is refused (as runc refuses it).
"""

from __future__ import annotations

IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                         "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


def sysctl_namespace(key: str) -> str | None:
    """The namespace a sysctl belongs to: "network", "ipc" or "uts" (None: not namespaced)."""
    if key.startswith("net."):
        return "network"
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return "ipc"
    if key == "kernel.domainname":
        return "uts"
    return None


def by_namespace(sysctls: dict[str, str]) -> dict[str, dict[str, str]]:
    """``sysctls`` grouped by namespace; ValueError names the first one that is not namespaced."""
    grouped: dict[str, dict[str, str]] = {}
    for key, value in sysctls.items():
        kind = sysctl_namespace(key)
        if kind is None:
            raise ValueError(f"sysctl {key!r} is not namespaced: setting it would change the whole zone kernel, "
                             "not the pod")
        grouped.setdefault(kind, {})[key] = value
    return grouped
