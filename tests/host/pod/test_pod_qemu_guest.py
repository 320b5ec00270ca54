"""host.pod with a real QEMU TCG guest (the zone kernel, a busybox /init driven over the serial console):

* its NIC is the pod's: the tap from connect_zone_nic, handed to QEMU as ``-netdev tap,fd=N``; the pod IP
  answers pings from the CNI bridge from the *guest kernel*, and the guest reaches the pod's gateway;
* rootfs images are hot-plugged over QMP (blockdev-add + device_add virtio-blk, serial), found in the guest
  by serial, verified by digest, mounted, and unplugged again (device_del, DEVICE_DELETED, blockdev-del).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from podtest_frames import ping
from podtest_guest import Guest, available, build_initrd, extract_modules, zone_kernel
from podtest_netns import CniPod, cni_network, netns_pool

from host.backends.hotplug import qemu_attach_disk, qemu_block_nodes, qemu_detach_disk
from host.errors import HotplugError
from host.pod.netns import run_in_netns
from host.pod.network import ZoneNic, connect_zone_nic, disconnect_zone_nic, interface_names
from host.pod.rootfs import rootfs_image

pytestmark = [pytest.mark.root, pytest.mark.slow]
NET_MODULES = ["net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko"]
GUEST_TTL = 99    # the guest answers with this TTL; the pod namespace's own stack would say 64


@dataclass
class Zone:
    guest: Guest
    pod: CniPod
    nic: ZoneNic
    workdir: Path


@pytest.fixture(scope="module")
def zone() -> Iterator[Zone]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="podguest-") as tmp, netns_pool() as make_netns:
        workdir = Path(tmp)
        with cni_network(make_netns, workdir) as pod:
            kernel = zone_kernel()
            initrd = build_initrd(workdir / "initrd", boot_modules=kernel.boot_modules,
                                  extra_modules=extract_modules(kernel, NET_MODULES, workdir))
            nic = connect_zone_nic(pod.netns)
            guest = None
            try:
                assert nic.fd is not None
                guest = Guest(kernel.image, initrd, workdir, extra_args=nic.qemu_args(), pass_fds=[nic.fd])
                nic.close()   # QEMU holds the tap now; it goes when QEMU does
                guest.boot()
                yield Zone(guest, pod, nic, workdir)
            finally:
                if guest is not None:
                    guest.stop()
                disconnect_zone_nic(pod.netns, nic=nic)
                assert "tap0_zone" not in interface_names(pod.netns)


def test_the_guest_nic_is_the_pod(zone: Zone) -> None:
    guest, network = zone.guest, zone.nic.network
    assert guest.check("cat /sys/class/net/eth0/address").strip() == network.mac
    assert guest.check("cat /sys/class/net/eth0/mtu").strip() == str(network.mtu)   # host_mtu
    config = network.zone_config()
    address = f"{config['ipv4']['address']}/{config['ipv4']['prefix']}"
    guest.check(f"echo {GUEST_TTL} > /proc/sys/net/ipv4/ip_default_ttl")
    guest.check(f"ip addr add {address} dev eth0 && ip link set eth0 up && "
                f"ip route add default via {config['ipv4']['gateway']}")
    # the node (CNI bridge) -> veth ingress -> tap -> QEMU -> guest kernel, and back
    ttls = run_in_netns(zone.pod.node, lambda: ping(zone.pod.ip, count=3, timeout=10))
    assert ttls == [GUEST_TTL] * 3
    # the guest -> tap ingress -> veth -> bridge: the pod's gateway answers
    assert "1 packets received" in guest.check(f"ping -c 1 -W 10 {zone.pod.gateway}", timeout=30)


def _layers(root: Path) -> list[dict]:
    lower, upper = root / "snapshots/1/fs", root / "snapshots/2/fs"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/hello").write_text("hello from a hot-plugged layer\n")
    (lower / "bin").mkdir()
    os.chown(lower / "bin", 0, 2)
    upper.mkdir(parents=True)
    (root / "snapshots/2/work").mkdir()
    return [{"type": "overlay", "source": "overlay",
             "options": [f"upperdir={upper}", f"workdir={root / 'snapshots/2/work'}", f"lowerdir={lower}"]}]


@pytest.mark.parametrize("fstype", ["erofs", "squashfs"])
def test_hotplug_a_rootfs_image(zone: Zone, fstype: str) -> None:
    guest = zone.guest
    image = rootfs_image(_layers(zone.workdir / f"layers-{fstype}"), fstype=fstype,
                         cache_dir=zone.workdir / "cache")
    name = f"ctr-{fstype}"
    disk = qemu_attach_disk(zone.guest.qmp, image.path, name=name, serial=f"pod-{fstype}")
    assert disk.node_name in qemu_block_nodes(guest.qmp)
    found = guest.check(f"for i in $(seq 100); do for b in /sys/block/vd*; do "
                        f"[ \"$(cat $b/serial 2>/dev/null)\" = pod-{fstype} ] && echo ${{b##*/}} && break 2; "
                        f"done; sleep 0.2; done")
    device = found.strip()
    assert re.fullmatch(r"vd[a-z]+", device), found
    assert guest.check(f"cat /sys/block/{device}/ro").strip() == "1"
    # what PID 1 does before mounting: the digest of the first `size` bytes
    digest = guest.check(f"head -c {image.size} /dev/{device} | sha256sum", timeout=120).split()[0]
    assert f"sha256:{digest}" == image.sha256
    guest.check(f"mount -t {fstype} -o ro /dev/{device} /mnt")
    assert guest.check("cat /mnt/etc/hello") == "hello from a hot-plugged layer\n"
    assert guest.check("stat -c '%u:%g' /mnt/etc/hello /mnt/bin").split() == ["65536:65536", "65536:65538"]
    guest.check("umount /mnt")
    qemu_detach_disk(guest.qmp, disk)
    assert guest.check(f"for i in $(seq 50); do [ -e /sys/block/{device} ] || break; sleep 0.2; done; "
                       f"ls /sys/block/ | tr '\\n' ' '").split().count(device) == 0
    assert disk.node_name not in qemu_block_nodes(guest.qmp)
    qemu_detach_disk(guest.qmp, name)   # gone already: idempotent


def test_hotplug_refusals_leave_nothing_attached(zone: Zone, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    disk = qemu_attach_disk(zone.guest.qmp, image, name="dup0")
    try:
        before = qemu_block_nodes(zone.guest.qmp)
        with pytest.raises(HotplugError, match=r"attach .* as dup0: blockdev-add refused"):
            qemu_attach_disk(zone.guest.qmp, image, name="dup0")
        assert qemu_block_nodes(zone.guest.qmp) == before
    finally:
        qemu_detach_disk(zone.guest.qmp, disk)
    with pytest.raises(HotplugError, match="serial"):
        qemu_attach_disk(zone.guest.qmp, image, name="x1", serial="a-serial-longer-than-20")
    with pytest.raises(HotplugError, match="no such file"):
        qemu_attach_disk(zone.guest.qmp, tmp_path / "missing.img", name="x2")
    with pytest.raises(HotplugError, match="disk name"):
        qemu_attach_disk(zone.guest.qmp, image, name="1bad name")
    with pytest.raises(HotplugError, match="cannot connect"):
        qemu_attach_disk(tmp_path / "no-qmp.sock", image, name="x3")
