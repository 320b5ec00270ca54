"""The zone config the host writes for `run`: validated by the zone's own parser (no boot)."""

from __future__ import annotations

from pathlib import Path

from host.images import PreparedKernel, PreparedRoot
from host.launch import network_config, zone_config
from host.zonedef import NetworkDef, ZoneDef


def fake_inputs(tmp_path: Path) -> tuple[PreparedKernel, PreparedRoot]:
    addons = tmp_path / "addons.squashfs"
    addons.write_bytes(b"addons" * 100)
    root = tmp_path / "root.squashfs"
    root.write_bytes(b"root" * 100)
    kernel = PreparedKernel(image=tmp_path / "image", addons=addons, boot_modules=tmp_path / "boot.cpio",
                            metadata={}, digest="sha256:" + "0" * 64)
    image_config = {"Entrypoint": ["/bin/entry"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"],
                    "WorkingDir": "/work"}
    return kernel, PreparedRoot(root, "squashfs", image_config)


def test_run_config_has_pinned_disks_and_one_main_container(tmp_path):
    kernel, root = fake_inputs(tmp_path)
    definition = ZoneDef(name="web", kernel_image="/k", initrd="/i", command=["echo", "hi"], env={"A": "cli"})
    config = zone_config(definition, kernel, root)
    assert config.name == "web" and config.hostname == "web"
    assert [(d.name, d.role, d.device) for d in config.disks] == [
        ("addons", "addons", "/dev/vda"), ("root0", "root", "/dev/vdc")]
    assert [d.size for d in config.disks] == [600, 400]
    assert all(d.sha256.startswith("sha256:") for d in config.disks)
    (container,) = config.containers
    assert container.name == "main" and container.main and container.image == "root0"
    assert container.args == ["/bin/entry", "echo", "hi"]     # docker semantics: override replaces Cmd
    assert "A=cli" in container.env and "A=image" not in container.env
    assert container.cwd == "/work"
    assert config.options.poweroff_on_exit
    assert config.network is None


def test_a_shifted_root_image_is_pinned_with_its_owner_shift(tmp_path):
    """`run` (user namespace on by default) builds the image shifted; the disk says so, and the zone maps ids."""
    kernel, root = fake_inputs(tmp_path)
    shifted = PreparedRoot(root.path, root.fstype, root.config, owner_shift=65536)
    definition = ZoneDef(name="web", kernel_image="/k", initrd="/i")
    assert definition.user_namespace is True
    config = zone_config(definition, kernel, shifted)
    assert config.disk("root0").owner_shift == 65536 and config.disk("addons").owner_shift == 0
    plain = zone_config(definition, kernel, root)
    assert plain.disk("root0").owner_shift == 0
    old = {k: v for k, v in ZoneDef(name="web", kernel_image="/k", initrd="/i").to_json().items()
           if k != "user_namespace"}
    assert ZoneDef.from_json(old).user_namespace is True  # a zone.json written before the field still loads


def test_xen_devices_and_network(tmp_path):
    kernel, root = fake_inputs(tmp_path)
    definition = ZoneDef(name="web", kernel_image="/k", initrd="/i", network=NetworkDef())
    config = zone_config(definition, kernel, root, disk_prefix="xvd")
    assert [d.device for d in config.disks] == ["/dev/xvda", "/dev/xvdc"]
    assert config.network is not None and config.network.ipv4 is not None
    assert (config.network.ipv4.address, config.network.ipv4.prefix, config.network.ipv4.gateway) == (
        "10.0.2.15", 24, "10.0.2.2")
    assert config.network.dns == ["10.0.2.3"]
    assert network_config(NetworkDef(address="fd00::5/64", gateway=None, dns=[]))["ipv6"] == {
        "address": "fd00::5", "prefix": 64}


def test_last_console_line_prefers_what_userspace_said(tmp_path):
    from host.lifecycle import last_console_line
    from host.state import zone_dir

    zone = zone_dir("z", tmp_path)
    zone.create(ZoneDef(name="z", kernel_image="/k", initrd="/i"))
    assert last_console_line(zone) == "no console output"
    zone.console_log.write_text("[    1.0] booting\ninit: cannot mount /proc\n[    2.0] Kernel panic - not syncing\n"
                                "[    2.1] Kernel Offset: 0x1\n")
    assert last_console_line(zone) == "init: cannot mount /proc"
    zone.console_log.write_text("[    2.0] Kernel panic - not syncing: no init\n[    2.1] Kernel Offset: 0x1\n")
    assert last_console_line(zone) == "[    2.0] Kernel panic - not syncing: no init"


def test_a_pods_own_config_gets_the_addons_disk_and_the_zones_parser(tmp_path):
    """The shim writes the pod's document (name, hostname, network, no containers, poweroff_on_exit off);
    the host adds the kernel's addons disk, pinned, and validates it as PID 1 will."""
    import pytest

    from host.errors import HostError
    from host.launch import given_config

    kernel, _root = fake_inputs(tmp_path)
    document = {"version": 1, "name": "pod-1", "hostname": "web-0", "options": {"poweroff_on_exit": False},
                "network": {"interface": "eth0", "mtu": 1450, "ipv4": {"address": "10.1.0.5", "prefix": 24,
                                                                        "gateway": "10.1.0.1"}, "dns": ["10.96.0.10"]},
                "disks": [{"name": "addons", "role": "addons", "device": "/dev/vdz", "sha256": "sha256:" + "1" * 64,
                           "size": 1}]}   # the caller's idea of the addons disk is replaced by the real one
    config = given_config(document, kernel, "xvd")
    assert [(d.name, d.device, d.size) for d in config.disks] == [("addons", "/dev/xvda", 600)]
    assert config.containers == [] and not config.options.poweroff_on_exit and config.network.mtu == 1450
    from styrolite.errors import describe

    with pytest.raises(HostError) as error:
        given_config({**document, "hostname": "not a host name"}, kernel)
    assert "$.hostname: 'not a host name' is not a valid host name" in describe(error.value)
