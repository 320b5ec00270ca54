"""The QEMU device layout PID 1 relies on (host/bootplan.py), seen from inside by a busybox-only init:
disks vda/vdb/vdc carry serials zone-addons/zone-config/zone-root0, the IDM port is vport0p1 named zone.idm,
and a guest power-off ends QEMU (-no-reboot)."""

from __future__ import annotations

from pathlib import Path

from busybox_initrd import build_busybox_initrd

from host import images
from host.backends.qemu import QemuBackend
from host.bootplan import BootFiles, kernel_cmdline
from host.state import zone_dir
from host.zonedef import ZoneDef


def test_disk_serials_idm_port_and_power_off(kernel_image, tmp_path):
    kernel = images.prepare_kernel(kernel_image)
    initrd = images.boot_initrd(build_busybox_initrd(tmp_path / "bb.cpio.zst"), kernel)
    definition = ZoneDef(name="probe", kernel_image=str(kernel_image), initrd=str(initrd))
    zone = zone_dir("probe", tmp_path / "zones")
    zone.create(definition)
    config, root = zone.disks / "config.img", zone.disks / "root0.img"
    for disk in (config, root):
        disk.write_bytes(b"\0" * 4096)
    boot = BootFiles(kernel=kernel.image, initrd=initrd, addons=kernel.addons, config_disk=config,
                     root_images=[root])
    qemu = QemuBackend(zone)
    qemu.boot(definition, boot, daemonize=False,
              cmdline=kernel_cmdline(definition) + " baseline.probe baseline.cmd=echo,probe-done")
    try:
        assert qemu.wait(240), "the busybox init did not power off"
    finally:
        qemu.kill()
    console = Path(zone.console_log).read_text(errors="replace")
    assert "BLOCK vda zone-addons" in console, console[-3000:]
    assert "BLOCK vdb zone-config" in console
    assert "BLOCK vdc zone-root0" in console
    assert "PORT vport0p1 zone.idm" in console
    assert "probe-done" in console and "BASELINE-DONE" in console
