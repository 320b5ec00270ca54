"""Read-only images (addons.squashfs, root images, the config disk) and the per-container overlay.

Images are mounted read-only straight from their virtio-blk device (no loop device needed); the file
system type is read from the image's magic so the config doesn't have to say it. A plain file is
mounted through a loop device only if one is asked for (tests).
"""

from __future__ import annotations

import os

from styrolite.syscalls.constants import MS_NODEV, MS_NOSUID, MS_RDONLY
from zoneinit.errors import ZoneInitError
from zoneinit.mounts.table import MountRecord, MountTable

# (offset, magic bytes, fstype)
_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"hsqs", "squashfs"),
    (1024, (0xE0F5E1E2).to_bytes(4, "little"), "erofs"),
    (1080, (0xEF53).to_bytes(2, "little"), "ext4"),
    (32769, b"CD001", "iso9660"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),  # not mountable: reported clearly rather than guessed
)


def detect_fstype(path: str) -> str | None:
    """The file system in a block device or image file, from its superblock magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(32776)
    except OSError as e:
        raise ZoneInitError(f"read superblock of {path}") from e
    for offset, magic, fstype in _MAGICS:
        if head[offset:offset + len(magic)] == magic:
            return fstype
    if (head[510:512] == b"\x55\xaa" and head[82:87] == b"FAT32") or head[54:59] in (b"FAT12", b"FAT16"):
        return "vfat"
    return None


def mount_image(table: MountTable, device: str, target: str, fstype: str | None = None) -> MountRecord | None:
    """Mount ``device`` read-only at ``target`` (type from its magic unless given)."""
    fstype = fstype or detect_fstype(device)
    if fstype is None or fstype == "zstd":
        raise ZoneInitError(f"{device}: no file system this zone can mount (squashfs, erofs, ext4, iso9660, vfat)")
    try:
        return table.mount(device, target, fstype, MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError as e:
        raise ZoneInitError(f"mount {fstype} image {device} on {target}") from e


def mount_overlay(table: MountTable, lowers: list[str], scratch: str, target: str) -> MountRecord | None:
    """A writable view of read-only ``lowers`` (first is topmost): upper and work dirs live in ``scratch``
    (a directory on tmpfs), so writes vanish with the zone. Setuid bits count on it (not ``nosuid``)."""
    upper = os.path.join(scratch, "upper")
    work = os.path.join(scratch, "work")
    for d in (upper, work, target):
        os.makedirs(d, mode=0o755, exist_ok=True)
    data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    try:
        # the merged "/" takes its owner and mode from the upper dir: make them the image's own (for an
        # ownership-shifted image, that is the container's root, not the zone's)
        top = os.stat(lowers[0])
        os.chown(upper, top.st_uid, top.st_gid)
        os.chmod(upper, top.st_mode & 0o7777)
    except OSError as e:
        raise ZoneInitError(f"give the overlay upper dir {upper} the owner of {lowers[0]}") from e
    try:
        # not nosuid: the overlay is the container's root, whose setuid binaries work as under runc; a
        # container that must not gain privileges says so (process.noNewPrivileges, which the runtime sets).
        # The read-only image below stays nosuid: exec goes through the overlay's mount, never the image's.
        return table.mount("overlay", target, "overlay", 0, data)
    except OSError as e:
        raise ZoneInitError(f"mount overlay on {target} over {', '.join(lowers)}") from e
