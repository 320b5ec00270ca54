"""What a zone boots from, independent of the hypervisor: kernel, initrd, disks in a fixed order, cmdline.

Disk order (the contract with PID 1, see zoneinit/cmdline.py): the disks are attached in this order, so
under QEMU they are /dev/vda, /dev/vdb, /dev/vdc... and under Xen PV /dev/xvda, /dev/xvdb, ...

    index 0  addons.squashfs   serial "zone-addons"   (kernel modules, from the kernel OCI image)
    index 1  config disk       serial "zone-config"   (the zone's launch config, host/configdisk)
    index 2+ root images       serial "zone-root0", "zone-root1", ...   (one per container image)
    then     extension disks   serial "zone-ext0", "zone-ext1", ...     (one per system extension image)

The devices are also named on the kernel command line (``zone.addons=/dev/vda zone.config=/dev/vdb``) and,
under QEMU, carry the virtio-blk serial above (``/sys/block/vdX/serial``), so PID 1 never has to guess.
IDM is the virtio-serial port named ``zone.idm``; it is the first virtio device, so its node is
``/dev/vport0p1`` (``/sys/class/virtio-ports/vport0p1/name`` reads ``zone.idm``). Under Xen, IDM is a vchan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from host.zonedef import ZoneDef

IDM_PORT_NAME = "zone.idm"
QEMU_IDM_DEVICE = "/dev/vport0p1"
QEMU_CONSOLE = "ttyS0"
XEN_CONSOLE = "hvc0"


@dataclass(frozen=True)
class Disk:
    role: str       # "addons", "config", "root0", ...
    path: Path
    serial: str     # virtio-blk serial (max 20 bytes)


@dataclass
class BootFiles:
    """Files prepared by host.images (cached by content hash) and the per-zone config disk."""

    kernel: Path                   # the kernel OCI image's /kernel/image
    initrd: Path                   # our initrd with the kernel's boot-modules cpio appended
    addons: Path                   # the kernel OCI image's /kernel/addons.squashfs
    config_disk: Path              # per zone, in the zone's state dir
    root_images: list[Path] = field(default_factory=list)
    extensions: list[Path] = field(default_factory=list)   # system extension disks, after the root images

    def disks(self) -> list[Disk]:
        disks = [Disk("addons", self.addons, "zone-addons"), Disk("config", self.config_disk, "zone-config")]
        disks += [Disk(f"root{i}", path, f"zone-root{i}") for i, path in enumerate(self.root_images)]
        disks += [Disk(f"ext{i}", path, f"zone-ext{i}") for i, path in enumerate(self.extensions)]
        return disks


def block_device(index: int, prefix: str = "vd") -> str:
    """0 -> /dev/vda, 25 -> /dev/vdz, 26 -> /dev/vdaa (the kernel's sd/vd naming)."""
    name = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(ord("a") + rem) + name
    return f"/dev/{prefix}{name}"


def root_image_device(index: int, prefix: str = "vd") -> str:
    """The device of the ``index``-th root image, as the config disk names it for PID 1."""
    return block_device(2 + index, prefix)


def extension_device(index: int, root_images: int = 1, prefix: str = "vd") -> str:
    """The device of the ``index``-th system extension disk (after ``root_images`` root images)."""
    return block_device(2 + root_images + index, prefix)


def kernel_cmdline(definition: ZoneDef, *, console: str = QEMU_CONSOLE, disk_prefix: str = "vd",
                   idm: str | None = QEMU_IDM_DEVICE, quiet: bool = True) -> str:
    words = [f"console={console}"]
    if quiet:
        words.append("quiet")
    words += [
        "panic=-1",                    # a kernel panic reboots at once, and -no-reboot turns that into an exit
        f"zone.addons={block_device(0, disk_prefix)}",
        f"zone.config={block_device(1, disk_prefix)}",
    ]
    if idm:
        words.append(f"zone.idm={idm}")
    words += definition.cmdline_extra
    return " ".join(words)
