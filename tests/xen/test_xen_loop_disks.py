"""host.backends.xen hands xl block devices: disk files become read-only loop devices (real loop ioctls, as
root), and the xl config names the device, not the file. Also the QEMU arguments of the dom0 image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host.backends.xen import xl_config
from host.backends.xl import attach_loop, detach_loop
from host.bootplan import BootFiles
from host.zonedef import ZoneDef


def _loop_backing(device: str) -> str:
    return Path(f"/sys/block/{os.path.basename(device)}/loop/backing_file").read_text().strip()


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"zone" * 1024)
    return path


@pytest.mark.root
@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no /dev/loop-control")
def test_attach_loop_is_read_only_and_detaches(disk: Path) -> None:
    device = attach_loop(disk)
    try:
        assert _loop_backing(device) == str(disk)
        assert Path(f"/sys/block/{os.path.basename(device)}/ro").read_text().strip() == "1"
        with open(device, "rb") as f:
            assert f.read(8) == b"zonezone"
    finally:
        detach_loop(device)
    assert not Path(f"/sys/block/{os.path.basename(device)}/loop/backing_file").exists()
    detach_loop(device)   # idempotent


def test_xl_config_names_loop_devices(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("kernel", "initrd", "addons", "config", "root0")}
    boot = BootFiles(kernel=files["kernel"], initrd=files["initrd"], addons=files["addons"],
                     config_disk=files["config"], root_images=[files["root0"]])
    definition = ZoneDef(name="z", kernel_image="k", initrd="i", backend="xen")
    devices = {files["addons"]: "/dev/loop3", files["config"]: "/dev/loop4", files["root0"]: "/dev/loop5"}
    text = xl_config(definition, boot, devices=devices)
    assert '"format=raw,vdev=xvda,access=ro,backendtype=phy,target=/dev/loop3"' in text
    assert '"format=raw,vdev=xvdc,access=ro,backendtype=phy,target=/dev/loop5"' in text
    assert str(files["addons"]) not in text


def test_dom0_qemu_arguments(tmp_path: Path) -> None:
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.dom0 import Dom0Image

    args = Dom0Image(Path("/x/xen"), Path("/x/vmlinuz"), Path("/x/dom0.cpio")).qemu_args()
    assert args[args.index("-kernel") + 1] == "/x/xen"
    assert args[args.index("-initrd") + 1] == "/x/vmlinuz console=hvc0 earlyprintk=xen panic=-1,/x/dom0.cpio"
    assert "dom0_mem=512M,max:512M" in args[args.index("-append") + 1]
    assert "-no-reboot" in args
