"""Container root filesystems into the pod's zone: one read-only image per image, hot-plugged, shared.

For a container's Create, containerd's snapshot mounts become a read-only erofs image
(``host.pod.rootfs.rootfs_image``: the layers merged, owners shifted by 65536 for the container's user
namespace, digest-pinned, cached by snapshot identity so a second pod of the same image pays one ``stat``
per layer). The backend hot-plugs the image into the zone (``Backend.attach_disk``: under QEMU a QMP
``blockdev-add`` + ``device_add`` of a read-only virtio-blk whose serial is the disk's name), then PID 1
hears of it with ``disk.attach`` (name, where to find it, sha256, size, fstype, owner shift): it finds the
device and verifies the whole image against the digest before the container uses it (fail closed). The
container's writable layer is the zone's (an overlay over the image on the zone's scratch space).

Containers of one pod that use the same image share the attached disk (counted); the last one's Delete
detaches it (``disk.detach``, then ``Backend.detach_disk``). QEMU's QMP socket takes one client at a time:
every hot-plug of the pod goes through one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.backends import Backend
from host.backends.hotplug import PluggedDisk
from host.link import ZoneLink
from host.pod.rootfs import RootfsImage, rootfs_image
from shim.zone.requests import guarded

log = logging.getLogger("shim.zone.disks")

ATTACH_TIMEOUT = 60.0


@dataclass
class AttachedDisk:
    name: str
    image: RootfsImage
    plugged: PluggedDisk
    users: int = 1


@dataclass(frozen=True)
class AttachTiming:
    image_seconds: float      # snapshot -> image (0-ish when cached)
    cached: bool
    hotplug_seconds: float    # QMP device_add + disk.attach (PID 1 found the device)
    shared: bool              # another container of the pod already had it attached


class PodDisks:
    def __init__(self, link: ZoneLink, backend: Backend, *, owner_shift: int | None, cache_dir: Path | None) -> None:
        self.link = link
        self.backend = backend
        self.owner_shift = owner_shift
        self.cache_dir = cache_dir
        self._lock = threading.Lock()   # one hot-plug at a time (QMP takes one client)
        self._disks: dict[str, AttachedDisk] = {}

    def acquire(self, mounts: Sequence[Any]) -> tuple[str, AttachTiming]:
        """The zone's name for the root disk of a container with these snapshot mounts (attached if needed)."""
        started = time.monotonic()
        image = guarded("container rootfs", lambda: rootfs_image(mounts, owner_shift=self.owner_shift,
                                                                 cache_dir=self.cache_dir))
        built = time.monotonic()
        name = "r" + image.key[:15]   # virtio serial <= 20 bytes; QMP ids start with a letter
        with self._lock:
            attached = self._disks.get(name)
            if attached is not None:
                attached.users += 1
                return name, AttachTiming(built - started, image.cached, 0.0, True)
            plugged = guarded(f"hot-plug {image.path}", lambda: self.backend.attach_disk(image.path, name=name))
            try:
                guarded(f"disk.attach {name}", lambda: self.link.attach_disk(
                    name, sha256=image.sha256, size=image.size, fstype=image.fstype, owner_shift=image.owner_shift,
                    timeout=ATTACH_TIMEOUT, **plugged.zone_locator()))
            except BaseException:
                try:
                    self.backend.detach_disk(plugged)
                except Exception as e:
                    log.warning("undoing the hot-plug of %s: %s", name, e)
                raise
            self._disks[name] = AttachedDisk(name, image, plugged)
        return name, AttachTiming(built - started, image.cached, time.monotonic() - built, False)

    def release(self, name: str, *, zone_alive: bool = True) -> None:
        """One container less on ``name``; the last one detaches it from the zone."""
        with self._lock:
            attached = self._disks.get(name)
            if attached is None:
                return
            attached.users -= 1
            if attached.users > 0:
                return
            del self._disks[name]
            if not zone_alive:
                return
            guarded(f"disk.detach {name}", lambda: self.link.detach_disk(name))
            guarded(f"unplug {name}", lambda: self.backend.detach_disk(attached.plugged))

    def forget(self) -> None:
        """The zone is gone: nothing is attached any more."""
        with self._lock:
            self._disks.clear()

    @property
    def attached(self) -> list[str]:
        with self._lock:
            return sorted(self._disks)
