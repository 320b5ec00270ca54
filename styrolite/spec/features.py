"""``styrolite features``: the runtime-spec features document (features.md, features-linux.md).

It states what Styrolite implements, independent of the host: it is built from the same vocabulary the
validator accepts, minus what the runtime recognises but does not carry out (SCMP_ACT_NOTIFY needs a
seccomp agent; AppArmor, SELinux, Intel RDT, net devices, memory policies, systemd cgroups and idmapped
mounts are not implemented, and a config that asks for one of the runtime-spec 1.3 fields among them is
refused). ``ociVersionMax`` is the newest spec whose fields Styrolite knows; a config of a newer 1.x is
accepted when it uses none but those.
"""

from __future__ import annotations

from styrolite import __version__
from styrolite.spec import vocabulary as v

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNSUPPORTED_SECCOMP_ACTIONS = frozenset({"SCMP_ACT_NOTIFY"})
SUPPORTED_SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")


def features() -> dict[str, Any]:
    """The features document as a dict ready for json.dumps."""
    return {
        "ociVersionMin": v.OCI_VERSION_MIN,
        "ociVersionMax": v.OCI_VERSION_MAX,
        "hooks": list(v.HOOK_NAMES),
        "mountOptions": sorted(v.MOUNT_OPTIONS),
        "linux": {
            "namespaces": list(v.NAMESPACE_TYPES),
            "capabilities": list(v.CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(set(v.SECCOMP_ACTIONS) - UNSUPPORTED_SECCOMP_ACTIONS),
                "operators": sorted(v.SECCOMP_OPERATORS),
                "archs": sorted(v.SECCOMP_ARCHITECTURES),
                "knownFlags": list(v.SECCOMP_FLAGS),
                "supportedFlags": list(SUPPORTED_SECCOMP_FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False, "schemata": False, "enableMonitoring": False},
            "netDevices": {"enabled": False},
            "memoryPolicy": {"modes": [], "flags": []},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.styrolite.version": __version__},
    }
