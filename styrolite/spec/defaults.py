"""The default config.json (``styrolite spec``) and the devices every container gets.

Modelled on ``runc spec`` but hardened the way zones want it: a smaller capability set (Docker's
defaults without CAP_NET_RAW), no ambient capabilities, no_new_privs, a read-only root.
"""

from __future__ import annotations

import os

from styrolite import OCI_VERSION
from styrolite.spec.model import Device

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip

DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

DEFAULT_ENV: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")


def _char_device(name: str, major: int, minor: int) -> Device:
    return Device(type="c", path=f"/dev/{name}", major=major, minor=minor, file_mode=0o666, uid=0, gid=0)


# Created in every container whatever config.json says (runtime-spec config-linux.md "Default Devices").
# /dev/ptmx (-> pts/ptmx) and /dev/console (the pty) are links/binds made by the runtime, not nodes here.
DEFAULT_DEVICES: tuple[Device, ...] = (
    _char_device("null", 1, 3),
    _char_device("zero", 1, 5),
    _char_device("full", 1, 7),
    _char_device("random", 1, 8),
    _char_device("urandom", 1, 9),
    _char_device("tty", 5, 0),
)


def default_mounts(rootless: bool) -> list[dict[str, Any]]:
    devpts_options = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts_options.append("gid=5")  # tty group; unmapped in a rootless user namespace
    # sysfs needs a network namespace owned by the container's user namespace: rootless binds the host's
    sys_options = ["nosuid", "noexec", "nodev", "ro"]
    sysfs = (
        {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", *sys_options]}
        if rootless
        else {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}
    )
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts_options},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        sysfs,
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]  # fmt: skip


def default_config(rootless: bool = False) -> dict[str, Any]:
    """A fresh config.json document (plain dict, ready for json.dump) running ``sh`` in ``./rootfs``."""
    caps = list(DEFAULT_CAPABILITIES)
    namespaces = ["pid", "ipc", "uts", "mount"] + (["user"] if rootless else ["network"])
    linux: dict[str, Any] = {
        "namespaces": [{"type": ns} for ns in namespaces],
        "maskedPaths": list(DEFAULT_MASKED_PATHS),
        "readonlyPaths": list(DEFAULT_READONLY_PATHS),
    }
    if rootless:
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": list(DEFAULT_ENV),
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "styrolite",
        "mounts": default_mounts(rootless),
        "linux": linux,
    }
