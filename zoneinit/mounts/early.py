"""The first mounts PID 1 makes, before anything else can work: /proc, /sys, /dev, /run, /tmp, cgroup2.

``root`` prefixes every target so the same code is exercised in a test under a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
from collections import namedtuple

from styrolite.mountinfo import read_mountinfo
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls.constants import MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC, MS_RELATIME
from zoneinit.mounts.table import MountTable

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    pass


# source, target, fstype: str; flags: int (MS_*); data: str | None; essential: bool — a value type, cheaper for
# PID 1 than a frozen dataclass; a collections.namedtuple (typing.NamedTuple's class syntax imports typing)
EarlyMount = namedtuple("EarlyMount", ("source", "target", "fstype", "flags", "data", "essential"),
                        defaults=(None, True))


EARLY_MOUNTS: tuple[EarlyMount, ...] = (
    EarlyMount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME),
    EarlyMount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME),
    EarlyMount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_RELATIME, "mode=0755"),
    EarlyMount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC | MS_RELATIME, "gid=5,mode=0620,ptmxmode=0666"),
    EarlyMount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_RELATIME, "mode=1777"),
    EarlyMount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_RELATIME, "mode=0755"),
    EarlyMount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_RELATIME, "mode=1777", essential=False),
    EarlyMount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME,
               "nsdelegate"),
)

DEV_SYMLINKS = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
}

CGROUP_ROOT = "/sys/fs/cgroup"


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root != "/" else path


def _mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, fstype) of each mount, in order; empty if /proc is not mounted yet."""
    try:
        return [(entry.mount_point, entry.fstype) for entry in read_mountinfo(mountinfo)]
    except OSError:
        return []


def mounted_targets(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Mount points that exist now (empty if /proc is not mounted yet)."""
    return {point for point, _ in _mounts(mountinfo)}


def early_mounts(table: MountTable, root: str = "/", mounts: tuple[EarlyMount, ...] = EARLY_MOUNTS,
                 mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount each one, skipping targets already mounted (stage-0 mounted /proc and /dev; a kernel may
    automount devtmpfs): mounting again would stack a second instance.

    Returns the targets actually mounted now."""
    done: list[str] = []
    existing = mounted_targets(mountinfo)
    for m in mounts:
        target = _under(root, m.target)
        if target in existing:
            continue
        if table.mount(m.source, target, m.fstype, m.flags, m.data, essential=m.essential, tolerate_busy=True):
            done.append(target)
        if m.target == "/proc":  # now readable if it was not before
            existing |= mounted_targets(mountinfo)
    for link, points_to in DEV_SYMLINKS.items():
        path = _under(root, link)
        if not os.path.lexists(path):
            with contextlib.suppress(OSError):  # cosmetic: nothing in the zone depends on these
                os.symlink(points_to, path)
    return done


def enable_cgroup_controllers(cgroup_root: str = CGROUP_ROOT) -> list[str]:
    """Enable every available controller for the children of the root cgroup; returns those enabled.

    Each controller is written on its own so one the kernel refuses doesn't block the rest."""
    try:
        with open(os.path.join(cgroup_root, "cgroup.controllers"), encoding="ascii") as f:
            available = f.read().split()
    except OSError:
        return []
    enabled: list[str] = []
    for controller in available:
        try:
            with open(os.path.join(cgroup_root, "cgroup.subtree_control"), "w", encoding="ascii") as f:
                f.write(f"+{controller}")
            enabled.append(controller)
        except OSError:
            continue
    return enabled


def root_is_rootfs(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True when / is the initramfs itself (fstype ``rootfs``): a mount without a parent."""
    return next((fstype for point, fstype in _mounts(mountinfo) if point == "/"), "") == "rootfs"


def make_root_pivotable(sys: Syscalls = LINUX, staging: str = "/.zone-root") -> None:
    """Make / a real mount (with a parent) so containers can pivot_root.

    The initramfs root (``rootfs``) has no parent mount, and pivot_root(2) refuses (EINVAL) to move a root
    like that, in every mount namespace copied from it. Instead of copying the initramfs into a tmpfs
    (switch_root: time and twice the memory), PID 1 binds / (recursively, with /proc, /dev... already
    mounted) onto a directory, moves that bind onto / and chroots into it: the same files, no copy, but now
    / is a mount whose parent is rootfs, which pivot_root accepts."""
    os.makedirs(staging, mode=0o700, exist_ok=True)
    sys.mount("/", staging, None, MS_BIND | MS_REC)
    os.chdir(staging)
    sys.mount(staging, "/", None, MS_MOVE)
    sys.chroot(".")
    os.chdir("/")
    with contextlib.suppress(OSError):
        os.rmdir(staging)  # the (now empty) directory in the new root
