"""The zone's disks: each is verified (when the config pins a sha256) and mounted read-only once, on demand.

A disk that fails verification is remembered as failed and never mounted: every container that needs it
fails to start with the same clear message (fail closed). Disks come from the config, or are hot-plugged
later (IDM ``disk.attach``: ``add``, ``remove``); those are verified without stopping PID 1's loop
(``verify_async``, hashing in a forked child) before their first use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from zoneinit.config.plan import DiskPlan
from zoneinit.errors import ZoneInitError
from zoneinit.mounts.images import mount_image
from zoneinit.mounts.table import MountTable

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB

if TYPE_CHECKING:
    from zoneinit.supervisor.loop import Supervisor

Verified = Callable[[BaseException | None], None]


class DiskStore:
    def __init__(self, disks: list[DiskPlan], mounts: MountTable, base: str = "/run/zone/images") -> None:
        self.disks = {d.name: d for d in disks}
        self.mounts = mounts
        self.base = base
        self.mounted: dict[str, str] = {}
        self.failed: dict[str, ZoneInitError] = {}
        self.verified: dict[str, str] = {}
        self._verifying: dict[str, list[Verified]] = {}   # name -> who waits for its hash

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
            if disk.sha256 and name not in self.verified:
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

    # --- hot-plugged disks -------------------------------------------------------------------------------
    def add(self, disk: DiskPlan) -> None:
        """Register a disk the host attached to the running zone (verified and mounted on first use)."""
        if disk.name in self.disks:
            raise ValueError(f"disk.attach: a disk named {disk.name!r} is already attached")
        other = next((d.name for d in self.disks.values() if d.device == disk.device), None)
        if other is not None:
            raise ValueError(f"disk.attach: {disk.device} is already disk {other!r}")
        self.failed.pop(disk.name, None)
        self.disks[disk.name] = disk

    def role_of(self, name: str) -> str | None:
        disk = self.disks.get(name)
        return disk.role if disk is not None else None

    def verify_async(self, name: str, loop: Supervisor, done: Verified) -> None:
        """``done(None)`` once disk ``name`` is verified (at once if it is, or needs no hash), ``done(error)`` if
        it is unknown or does not match; the hash runs in a forked child while the loop goes on."""
        disk = self.disks.get(name)
        if disk is None:
            done(ZoneInitError(f"no disk named {name!r} in this zone (have: {', '.join(self.disks) or 'none'})"))
            return
        if name in self.failed:
            done(self.failed[name])
            return
        if not disk.sha256 or name in self.verified or name in self.mounted:
            done(None)
            return
        waiting = self._verifying.get(name)
        if waiting is not None:
            waiting.append(done)
            return
        self._verifying[name] = [done]
        from zoneinit.isolate import start_in_child
        from zoneinit.mounts.verify import verify_sha256

        def finished(digest: object, error: BaseException | None) -> None:
            if self.disks.get(name) is not disk:
                return   # detached (and maybe attached again) meanwhile: remove() answered its waiters
            if error is None:
                self.verified[name] = str(digest)
            else:
                failure = ZoneInitError(f"disk {name} ({disk.device})")
                failure.__cause__ = error
                self.failed[name] = failure
                error = failure
            for callback in self._verifying.pop(name, []):
                callback(error)

        start_in_child(loop, finished, verify_sha256, disk.device, disk.sha256, disk.size)

    def remove(self, name: str) -> None:
        """Unmount disk ``name`` (its containers must be gone) and forget it; the host may then unplug it."""
        if name not in self.disks:
            raise FileNotFoundError(f"no disk named {name!r} in this zone")
        target = self.mounted.get(name)
        if target is not None:
            problems = self.mounts.unmount_under(target)
            if problems:
                raise ZoneInitError(f"detach disk {name}: " + "; ".join(f"unmount {t}: {e}" for t, e in problems))
            if target == os.path.join(self.base, name):
                with contextlib.suppress(OSError):   # not empty or gone: nothing of ours
                    os.rmdir(target)
        for table in (self.mounted, self.verified, self.failed):
            table.pop(name, None)
        del self.disks[name]
        for callback in self._verifying.pop(name, []):   # a create waiting for its hash fails, named
            callback(ZoneInitError(f"disk {name} was detached before it was verified"))
