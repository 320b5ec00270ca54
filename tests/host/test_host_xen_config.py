"""xl domain config generation for the Xen PV backend (no Xen needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.backends.xen import xl_config
from host.bootplan import BootFiles
from host.errors import BackendError
from host.zonedef import NetworkDef, ZoneDef
from zoneinit.boot.cmdline import parse_cmdline


def boot() -> BootFiles:
    return BootFiles(kernel=Path("/c/image"), initrd=Path("/c/initrd.img"), addons=Path("/c/addons.squashfs"),
                     config_disk=Path("/z/config.img"), root_images=[Path("/c/root0.squashfs")])


def parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        values[key] = value
    return values


def test_pv_domain_with_kernel_ramdisk_memory_and_vcpus():
    config = parse(xl_config(ZoneDef(name="web", kernel_image="/k", initrd="/i", memory_mib=512, vcpus=2), boot()))
    assert config["name"] == '"zone-web"'
    assert config["type"] == '"pv"'
    assert config["kernel"] == '"/c/image"'
    assert config["ramdisk"] == '"/c/initrd.img"'
    assert config["memory"] == "512" and config["maxmem"] == "512" and config["vcpus"] == "2"
    assert config["on_poweroff"] == config["on_reboot"] == config["on_crash"] == '"destroy"'
    assert "vif" not in config


def test_disks_in_bootplan_order_read_only_with_target_last():
    config = parse(xl_config(ZoneDef(name="web", kernel_image="/k", initrd="/i"), boot()))
    disks = [d.strip().strip('"') for d in config["disk"].strip("[] ").split(", ")]
    assert disks == [
        "format=raw,vdev=xvda,access=ro,backendtype=phy,target=/c/addons.squashfs",
        "format=raw,vdev=xvdb,access=ro,backendtype=phy,target=/z/config.img",
        "format=raw,vdev=xvdc,access=ro,backendtype=phy,target=/c/root0.squashfs",
    ]


def test_command_line_uses_hvc0_and_xvd_devices():
    extra = parse(xl_config(ZoneDef(name="web", kernel_image="/k", initrd="/i"), boot()))["extra"].strip('"')
    parsed = parse_cmdline(extra)
    assert parsed.other["console"] == "hvc0"
    assert parsed.addons == "/dev/xvda" and parsed.config == "/dev/xvdb" and parsed.idm == "vchan"


def test_vif_only_with_a_network():
    definition = ZoneDef(name="web", kernel_image="/k", initrd="/i", network=NetworkDef(bridge="xenbr0"))
    assert parse(xl_config(definition, boot()))["vif"] == '[ "bridge=xenbr0" ]'
    definition.network = NetworkDef()
    assert parse(xl_config(definition, boot()))["vif"] == '[ "" ]'


def test_quotes_in_paths_are_refused():
    bad = boot()
    bad.kernel = Path('/c/ima"ge')
    with pytest.raises(BackendError, match="quote"):
        xl_config(ZoneDef(name="web", kernel_image="/k", initrd="/i"), bad)
