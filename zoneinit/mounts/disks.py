"""The zone's disks: each is verified (when the config pins a sha256) and mounted read-only once, on demand.

A disk that fails verification is remembered as failed and never mounted: every container that needs it
fails to start with the same clear message (fail closed).
"""

from __future__ import annotations

import os

from zoneinit.config.plan import DiskPlan
from zoneinit.errors import ZoneInitError
from zoneinit.mounts.images import mount_image
from zoneinit.mounts.table import MountTable


class DiskStore:
    def __init__(self, disks: list[DiskPlan], mounts: MountTable, base: str = "/run/zone/images") -> None:
        self.disks = {d.name: d for d in disks}
        self.mounts = mounts
        self.base = base
        self.mounted: dict[str, str] = {}
        self.failed: dict[str, ZoneInitError] = {}
        self.verified: dict[str, str] = {}

    def path(self, name: str, target: str | None = None) -> str:
        """The mount point of disk ``name`` (verifying and mounting it, at ``target`` or under ``base``, the
        first time)."""
        if name in self.mounted:
            return self.mounted[name]
        if name in self.failed:
            raise self.failed[name]
        disk = self.disks.get(name)
        if disk is None:
            raise ZoneInitError(f"no disk named {name!r} in the zone config (have: {', '.join(self.disks) or 'none'})")
        try:
            if disk.sha256:
                from zoneinit.isolate import in_child
                from zoneinit.mounts.verify import verify_sha256

                # hashed in a child: OpenSSL's libcrypto never becomes part of PID 1's resident memory
                self.verified[name] = in_child(verify_sha256, disk.device, disk.sha256, disk.size)
            target = target or os.path.join(self.base, name)
            mount_image(self.mounts, disk.device, target, disk.fstype)
        except ZoneInitError as e:
            error = ZoneInitError(f"disk {name} ({disk.device})")
            error.__cause__ = e
            self.failed[name] = error
            raise error from e
        self.mounted[name] = target
        return target

    def rootfs_of(self, name: str) -> str:
        """The directory to use as a container root: the image's ``rootfs/`` if it has one, else its top."""
        top = self.path(name)
        nested = os.path.join(top, "rootfs")
        return nested if os.path.isdir(nested) else top

    def owner_shift_of(self, name: str) -> int:
        """How far the owners of root image ``name`` were shifted (0: not at all)."""
        disk = self.disks.get(name)
        return disk.owner_shift if disk is not None else 0
