"""Disk images delivered to a running zone, and taken away again.

QEMU (QMP, on the zone's ``qmp.sock``):

* attach: ``blockdev-add`` of a read-only raw node over the file, then ``device_add`` of a
  ``virtio-blk-pci`` on that node with a ``serial`` (the zone finds the disk by
  ``/sys/block/vdX/serial``, the way PID 1 finds its boot disks; at most 20 bytes). A read-only node makes
  a read-only device (the guest sees ``/sys/block/vdX/ro`` = 1). The ``pc`` machine's ACPI PCI hotplug
  announces it; the guest kernel's built-in acpiphp picks it up.
* detach: ``device_del``, then wait for ``DEVICE_DELETED`` (the guest has ejected the device; it must have
  unmounted it first), then ``blockdev-del``. One QMP connection carries all of it (host.backends.qmp.QmpSession).

Xen (``xl``, in dom0): ``xl block-attach`` of a read-only ``phy`` disk backed by a read-only loop device
(host.backends.xen loop helpers), at the next free ``xvd`` name; ``xl block-detach`` and the loop device released.
The zone finds a Xen disk by its ``xvd`` name (xen-blkfront has no serial).

Each disk says how the zone finds it (``zone_locator()``: the ``serial`` or ``device`` of IDM ``disk.attach``).
The backends offer these as ``Backend.attach_disk``/``detach_disk``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from host.backends.qmp import QmpError, QmpSession
from host.backends.xl import attach_loop, detach_loop, xl
from host.errors import BackendError, HotplugError

VIRTIO_BLK_SERIAL_MAX = 20          # VIRTIO_BLK_ID_BYTES
QMP_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$")   # QEMU's id_wellformed, and a node-name limit of 31
XVD_MAJOR_BASE = 202 << 8           # xvda = 51712: the Vdev numbers xl block-list prints
XEN_TARGET_FORBIDDEN = re.compile(r"[,\s\"]")


# --- QEMU -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QemuDisk:
    """A disk attached with :func:`qemu_attach_disk`: what :func:`qemu_detach_disk` needs."""

    device_id: str      # the virtio-blk-pci device
    node_name: str      # the block node under it
    serial: str
    path: Path

    def zone_locator(self) -> dict[str, str]:
        return {"serial": self.serial}


@contextmanager
def _qmp(qmp_socket: Path, timeout: float) -> Iterator[QmpSession]:
    """A QMP session whose connection failures are hot-plug failures (the zone's QEMU is gone or not ours)."""
    try:
        with QmpSession(qmp_socket, timeout) as qmp:
            yield qmp
    except HotplugError:
        raise
    except BackendError as e:   # a QMP error nobody here handled, or the connection
        raise HotplugError(str(e)) from e


def _check_serial(serial: str) -> str:
    if not serial or len(serial.encode()) > VIRTIO_BLK_SERIAL_MAX or not serial.isascii() or not serial.isprintable():
        raise HotplugError(f"virtio-blk serial {serial!r}: 1-{VIRTIO_BLK_SERIAL_MAX} printable ASCII characters")
    return serial


def qemu_attach_disk(qmp_socket: Path, image: Path, *, name: str, serial: str | None = None,
                     timeout: float = 10.0) -> QemuDisk:
    """Attach ``image`` read-only to the zone behind ``qmp_socket`` as virtio-blk ``name`` with ``serial``
    (default: ``name``). On failure nothing stays attached."""
    if not QMP_ID.match(name) or len(name) > 26:
        raise HotplugError(f"disk name {name!r}: a letter, then up to 25 of [A-Za-z0-9_.-]")
    serial = _check_serial(serial if serial is not None else name)
    path = Path(image).resolve()
    if not path.is_file():
        raise HotplugError(f"disk image {image}: no such file")
    disk = QemuDisk(device_id=name, node_name=f"node-{name}", serial=serial, path=path)
    with _qmp(qmp_socket, timeout) as qmp:
        try:
            qmp.execute("blockdev-add", {"driver": "raw", "node-name": disk.node_name, "read-only": True,
                                         "file": {"driver": "file", "filename": str(path), "read-only": True}})
        except QmpError as e:
            raise HotplugError(f"attach {path} as {name}: blockdev-add refused") from e
        try:
            qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": disk.device_id, "drive": disk.node_name,
                                       "serial": serial})
        except BackendError as e:
            try:
                qmp.execute("blockdev-del", {"node-name": disk.node_name})
            except BackendError as undo:
                raise HotplugError(f"attach {path} as {name}: device_add refused, and blockdev-del of "
                                   f"{disk.node_name} failed too ({undo})") from e
            raise HotplugError(f"attach {path} as {name}: device_add refused") from e
    return disk


def qemu_detach_disk(qmp_socket: Path, disk: QemuDisk | str, *, timeout: float = 30.0) -> None:
    """Unplug a disk attached by :func:`qemu_attach_disk` (or named by its device id) and drop its block node.
    The guest must have unmounted it. Idempotent: a device or node that is already gone is fine."""
    device_id = disk.device_id if isinstance(disk, QemuDisk) else disk
    node_name = disk.node_name if isinstance(disk, QemuDisk) else f"node-{disk}"
    with _qmp(qmp_socket, min(timeout, 10.0)) as qmp:
        gone = False
        try:
            qmp.execute("device_del", {"id": device_id})
        except QmpError as e:
            if e.qmp_class != "DeviceNotFound":
                raise HotplugError(f"detach {device_id}: device_del refused") from e
            gone = True
        if not gone:
            try:
                qmp.wait_event("DEVICE_DELETED", lambda data: data.get("device") == device_id, timeout)
            except BackendError as e:
                raise HotplugError(f"detach {device_id}: the zone did not release the device within "
                                   f"{timeout:.0f} s (still mounted in the zone?)") from e
        nodes = {node["node-name"] for node in qmp.execute("query-named-block-nodes", {"flat": True})}
        if node_name in nodes:
            try:
                qmp.execute("blockdev-del", {"node-name": node_name})
            except QmpError as e:
                raise HotplugError(f"detach {device_id}: blockdev-del {node_name} refused") from e


def qemu_block_nodes(qmp_socket: Path) -> list[str]:
    """The node names of the zone's named block nodes (``query-named-block-nodes``)."""
    with _qmp(qmp_socket, 10.0) as qmp:
        return [node["node-name"] for node in qmp.execute("query-named-block-nodes", {"flat": True})]


# --- Xen ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class XenDisk:
    domain: str
    vdev: str           # "xvdd": what the zone sees as /dev/xvdd
    loop: str           # the dom0 loop device backing it
    path: Path

    def zone_locator(self) -> dict[str, str]:
        return {"device": f"/dev/{self.vdev}"}


PluggedDisk = QemuDisk | XenDisk


def xvd_name(index: int) -> str:
    """0 -> xvda, 25 -> xvdz (xl's single-letter form; 26 disks are plenty for one pod)."""
    if not 0 <= index < 26:
        raise HotplugError(f"xvd index {index}: only xvda..xvdz")
    return "xvd" + chr(ord("a") + index)


def block_attach_spec(vdev: str, target: str) -> str:
    """xl's disk spec (xl-disk-configuration(5)) for a read-only phy disk; ``target=`` must come last."""
    if not re.fullmatch(r"xvd[a-z]", vdev):
        raise HotplugError(f"Xen vdev {vdev!r}: expected xvda..xvdz")
    if XEN_TARGET_FORBIDDEN.search(target):
        raise HotplugError(f"Xen disk target {target!r}: contains a comma, space or quote")
    return f"format=raw,vdev={vdev},access=ro,backendtype=phy,target={target}"


def parse_block_list(text: str) -> list[int]:
    """The Vdev numbers of ``xl block-list DOMAIN`` (header line first)."""
    numbers = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].isdigit():
            numbers.append(int(fields[0]))
    return numbers


def next_free_vdev(used: list[int]) -> str:
    taken = {(number - XVD_MAJOR_BASE) >> 4 for number in used if number >= XVD_MAJOR_BASE}
    for index in range(26):
        if index not in taken:
            return xvd_name(index)
    raise HotplugError("no free xvd name left (xvda..xvdz all attached)")


def _xl(*args: str, timeout: float = 60.0) -> str:
    return xl(*args, timeout=timeout, error=HotplugError).stdout


def xen_attach_disk(domain: str, image: Path, *, vdev: str | None = None) -> XenDisk:
    """``xl block-attach`` ``image`` read-only to ``domain`` (default: the next free xvd name)."""
    path = Path(image).resolve()
    if not path.is_file():
        raise HotplugError(f"disk image {image}: no such file")
    vdev = vdev or next_free_vdev(parse_block_list(_xl("block-list", domain)))
    loop = attach_loop(path)
    try:
        _xl("block-attach", domain, block_attach_spec(vdev, loop))
    except BaseException:
        detach_loop(loop)
        raise
    return XenDisk(domain, vdev, loop, path)


def xen_detach_disk(disk: XenDisk, *, timeout: float = 60.0) -> None:
    """``xl block-detach`` (xl waits for the zone's frontend to close), then the loop device goes."""
    try:
        _xl("block-detach", disk.domain, disk.vdev, timeout=timeout)
    finally:
        detach_loop(disk.loop)
