"""QEMU command-line construction and the kernel command line (no boot)."""

from __future__ import annotations

from pathlib import Path

from host.backends.qemu import qemu_command
from host.bootplan import BootFiles, block_device, kernel_cmdline, root_image_device
from host.state import zone_dir
from host.zonedef import NetworkDef, ZoneDef
from zoneinit.boot.cmdline import parse_cmdline


def setup(tmp_path, **kw):
    definition = ZoneDef(name="web", kernel_image="/k", initrd="/i", memory_mib=384, vcpus=2, **kw)
    zone = zone_dir("web", tmp_path)
    boot = BootFiles(kernel=Path("/c/image"), initrd=Path("/c/initrd"), addons=Path("/c/addons.squashfs"),
                     config_disk=zone.disks / "config.img", root_images=[Path("/c/root0.img"), Path("/c/root1.img")])
    return definition, zone, boot


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


def test_machine_memory_accel_and_direct_kernel_boot(tmp_path):
    definition, zone, boot = setup(tmp_path)
    argv = qemu_command(definition, zone, boot, accel="tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert option_values(argv, "-accel") == ["tcg"]
    assert option_values(argv, "-m") == ["384M"]
    assert option_values(argv, "-smp") == ["2"]
    assert option_values(argv, "-kernel") == ["/c/image"]
    assert option_values(argv, "-initrd") == ["/c/initrd"]
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert "-daemonize" not in argv
    assert "-cpu" not in argv
    kvm = qemu_command(definition, zone, boot, accel="kvm", daemonize=True)
    assert option_values(kvm, "-cpu") == ["host"] and kvm[-1] == "-daemonize"


def test_disks_are_read_only_in_the_documented_order_with_serials(tmp_path):
    definition, zone, boot = setup(tmp_path)
    argv = qemu_command(definition, zone, boot)
    drives = option_values(argv, "-drive")
    assert [d.split(",")[0] for d in drives] == [
        "file=/c/addons.squashfs", f"file={zone.disks / 'config.img'}", "file=/c/root0.img", "file=/c/root1.img"]
    assert all("readonly=on" in d and "format=raw" in d for d in drives)
    blk = [d for d in option_values(argv, "-device") if d.startswith("virtio-blk-pci")]
    assert [d.split("serial=")[1] for d in blk] == ["zone-addons", "zone-config", "zone-root0", "zone-root1"]
    assert root_image_device(0) == "/dev/vdc" and root_image_device(1, "xvd") == "/dev/xvdd"
    assert block_device(25) == "/dev/vdz" and block_device(26) == "/dev/vdaa"


def test_idm_port_is_the_first_virtio_device_on_the_zone_socket(tmp_path):
    definition, zone, boot = setup(tmp_path)
    argv = qemu_command(definition, zone, boot)
    devices = option_values(argv, "-device")
    assert devices[0].startswith("virtio-serial-pci")
    assert "virtserialport,bus=idmbus.0,chardev=idm,name=zone.idm" in devices
    assert f"socket,id=idm,path={zone.idm_socket},server=on,wait=off" in option_values(argv, "-chardev")
    assert f"file,id=console,path={zone.console_log}" in option_values(argv, "-chardev")
    assert option_values(argv, "-serial") == ["chardev:console"]
    assert option_values(argv, "-pidfile") == [str(zone.pidfile)]
    assert option_values(argv, "-qmp") == [f"unix:{zone.qmp_socket},server=on,wait=off"]


def test_network_only_when_asked(tmp_path):
    definition, zone, boot = setup(tmp_path)
    assert "-netdev" not in qemu_command(definition, zone, boot)
    definition, zone, boot = setup(tmp_path, network=NetworkDef(host_forwards=["tcp::8080-:80"]))
    argv = qemu_command(definition, zone, boot)
    assert option_values(argv, "-netdev") == ["user,id=net0,hostfwd=tcp::8080-:80"]
    assert "virtio-net-pci,netdev=net0" in option_values(argv, "-device")


def test_kernel_cmdline_names_the_devices_pid1_reads(tmp_path):
    definition, zone, boot = setup(tmp_path, cmdline_extra=["zone.debug"])
    line = option_values(qemu_command(definition, zone, boot), "-append")[0]
    assert line.startswith("console=ttyS0 quiet panic=-1 ")
    parsed = parse_cmdline(line)
    assert parsed.addons == "/dev/vda" and parsed.config == "/dev/vdb" and parsed.idm == "/dev/vport0p1"
    assert parsed.debug and not parsed.unknown
    xen = parse_cmdline(kernel_cmdline(definition, console="hvc0", disk_prefix="xvd", idm=None))
    assert xen.addons == "/dev/xvda" and xen.config == "/dev/xvdb" and xen.idm is None
    assert xen.other["console"] == "hvc0"


class TapNic:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def qemu_args(self, netdev_id: str = "pod0", fd_number: int | None = None) -> list[str]:
        return ["-netdev", f"tap,id={netdev_id},fd={self.fd},vhost=off",
                "-device", f"virtio-net-pci,netdev={netdev_id},mac=02:00:00:00:00:01"]


def test_pod_nics_come_after_the_boot_devices(tmp_path):
    definition, zone, boot = setup(tmp_path)
    argv = qemu_command(definition, zone, boot, nics=[TapNic(7), TapNic(9)])
    devices = option_values(argv, "-device")
    rng = devices.index("virtio-rng-pci")
    assert devices[rng + 1:rng + 3] == ["virtio-net-pci,netdev=pod0,mac=02:00:00:00:00:01",
                                        "virtio-net-pci,netdev=pod1,mac=02:00:00:00:00:01"]
    assert option_values(argv, "-netdev") == ["tap,id=pod0,fd=7,vhost=off", "tap,id=pod1,fd=9,vhost=off"]


def test_xen_takes_no_tap_nics(tmp_path):
    import pytest

    from host.backends.xen import XenBackend
    from host.errors import BackendError

    definition, zone, boot = setup(tmp_path)
    with pytest.raises(BackendError, match="vif"):
        XenBackend(zone).boot(definition, boot, nics=[TapNic(7)])
