"""host.pod.network against real namespaces: CNI's bridge + host-local make the pod network, we join a tap
to it, and pings from the node's bridge are answered *through the tap* by a process holding the tap fd."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from podtest_frames import REPLY_TTL, TapResponder, ping
from podtest_netns import CniPod, unique

from host.pod.errors import PodNetworkError
from host.pod.netns import run_in_netns
from host.pod.network import (
    PodDns,
    PodNetwork,
    PodRoute,
    ZoneNic,
    attach_link,
    connect_zone_nic,
    disconnect_zone_nic,
    inspect_pod_network,
    interface_names,
)
from host.pod.tap import IFF_VNET_HDR, tap_flags

pytestmark = pytest.mark.root


def _link(netns: Path, name: str) -> dict:
    from pyroute2 import IPRoute

    def work() -> dict:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return {}
            link = ipr.get_links(found[0])[0]
            qdiscs = [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=found[0])]
            return {"mtu": link.get_attr("IFLA_MTU"), "mac": link.get_attr("IFLA_ADDRESS"),
                    "up": bool(link["flags"] & 1), "qdiscs": qdiscs}

    return run_in_netns(netns, work)


def test_inspect_reads_what_cni_configured(cni_pod: CniPod) -> None:
    dns = PodDns.from_resolv_conf("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\n"
                                  "options ndots:5\n")
    network = inspect_pod_network(cni_pod.netns, dns=dns)
    assert network.interface == "eth0"
    assert network.addresses == (f"{cni_pod.ip}/{cni_pod.prefix}",)
    assert network.mtu == cni_pod.mtu
    assert network.mac == _link(cni_pod.netns, "eth0")["mac"]
    assert PodRoute("0.0.0.0/0", cni_pod.gateway) in network.routes
    assert network.gateway(4) == cni_pod.gateway
    document = network.zone_config()
    assert document == {"interface": "eth0", "mtu": cni_pod.mtu,
                        "ipv4": {"address": cni_pod.ip, "prefix": cni_pod.prefix, "gateway": cni_pod.gateway},
                        "dns": ["10.96.0.10"], "search": ["default.svc.cluster.local", "svc.cluster.local"]}
    # the zone's own parser accepts it: this is what goes on the config disk
    from zoneinit.config.parser import parse_zone_config
    config = parse_zone_config({"version": 1, "name": "pod", "network": document})
    assert config.network is not None and config.network.mtu == cni_pod.mtu
    # nothing was changed by looking
    assert interface_names(cni_pod.netns) == ["lo", "eth0"]


def test_ping_from_the_bridge_is_answered_through_the_tap(cni_pod: CniPod) -> None:
    nic = connect_zone_nic(cni_pod.netns)
    try:
        assert nic.fd is not None
        name, flags = tap_flags(nic.fd)
        assert name == "tap0_zone" and flags & IFF_VNET_HDR
        tap = _link(cni_pod.netns, "tap0_zone")
        assert tap["mtu"] == cni_pod.mtu and tap["up"] and "ingress" in tap["qdiscs"]
        assert "ingress" in _link(cni_pod.netns, "eth0")["qdiscs"]
        sysctl = Path("/proc/sys/net/ipv6/conf/tap0_zone/disable_ipv6")
        assert run_in_netns(cni_pod.netns, sysctl.read_text).strip() == "1"   # no IPv6 chatter to the zone
        with TapResponder(nic.fd, nic.network.mac, cni_pod.ip) as zone:
            ttls = run_in_netns(cni_pod.node, lambda: ping(cni_pod.ip, count=3))
            # TTL 42 is the responder's: the pod namespace's own stack (TTL 64) never saw the packets
            assert ttls == [REPLY_TTL] * 3, f"replies {ttls} (source {cni_pod.source})"
            assert zone.frames_in >= 4   # ARP request + 3 echo requests, all via veth ingress -> tap
            # and the other way: the zone speaks first, the bridge (the pod's gateway) answers
            bridge_mac = _link(cni_pod.node, cni_pod.bridge)["mac"]
            for _ in range(20):
                zone.ping_out(bridge_mac, cni_pod.gateway, ident=0x7777)
                if (cni_pod.gateway, 0x7777) in zone.echo_replies_seen:
                    break
                import time
                time.sleep(0.1)
            assert (cni_pod.gateway, 0x7777) in zone.echo_replies_seen
    finally:
        disconnect_zone_nic(cni_pod.netns, nic=nic)
    assert nic.fd is None
    assert "tap0_zone" not in interface_names(cni_pod.netns)
    assert "ingress" not in _link(cni_pod.netns, "eth0")["qdiscs"]
    # the veth is containerd's and still works: now the pod namespace's own stack answers, with TTL 64
    assert run_in_netns(cni_pod.node, lambda: ping(cni_pod.ip, count=1)) == [64]


def test_the_tap_goes_with_its_last_fd(cni_pod: CniPod) -> None:
    nic = connect_zone_nic(cni_pod.netns, tap="tapgone0")
    try:
        assert "tapgone0" in interface_names(cni_pod.netns)
        nic.close()   # what happens when QEMU (the last holder) exits
        assert "tapgone0" not in interface_names(cni_pod.netns)
    finally:
        disconnect_zone_nic(cni_pod.netns, tap="tapgone0")
    disconnect_zone_nic(cni_pod.netns, tap="tapgone0")   # idempotent


def test_a_second_zone_cannot_take_the_same_pod(cni_pod: CniPod) -> None:
    nic = connect_zone_nic(cni_pod.netns)
    try:
        with pytest.raises(PodNetworkError, match="tap0_zone exists already"):
            connect_zone_nic(cni_pod.netns)
        with pytest.raises(PodNetworkError, match="eth0 already has an ingress qdisc"):
            connect_zone_nic(cni_pod.netns, tap="tap1_zone")
        # the failed attempt left nothing behind
        assert sorted(interface_names(cni_pod.netns)) == ["eth0", "lo", "tap0_zone"]
    finally:
        disconnect_zone_nic(cni_pod.netns, nic=nic)


def test_attach_link_moves_a_backend_device_in_and_redirects(cni_pod: CniPod,
                                                             make_netns: Callable[[str], Path]) -> None:
    """The Xen path: a vif that exists in dom0 is moved into the pod namespace. A veth pair in a stand-in
    dom0 namespace plays the vif; its peer, read with a packet socket, plays the zone's netfront."""
    from pyroute2 import IPRoute

    dom0 = make_netns("zptdom0")
    vif, front = unique("vif"), unique("nf")

    def make_pair() -> int:
        with IPRoute() as ipr:
            ipr.link("add", ifname=vif, kind="veth", peer={"ifname": front})
            index = ipr.link_lookup(ifname=front)[0]
            ipr.link("set", index=index, state="up", mtu=cni_pod.mtu)
            return index

    front_index = run_in_netns(dom0, make_pair)
    network = attach_link(cni_pod.netns, vif, from_netns=dom0)
    assert vif in interface_names(cni_pod.netns) and vif not in interface_names(dom0)
    assert _link(cni_pod.netns, vif)["mtu"] == cni_pod.mtu

    def packet_socket() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.bind((front, 0))
        return sock

    sock = run_in_netns(dom0, packet_socket)
    try:
        assert front_index > 0
        with TapResponder(sock.fileno(), network.mac, cni_pod.ip, vnet_hdr=False):
            assert run_in_netns(cni_pod.node, lambda: ping(cni_pod.ip, count=2)) == [REPLY_TTL] * 2
    finally:
        sock.close()
        disconnect_zone_nic(cni_pod.netns, tap=vif)
    assert vif not in interface_names(cni_pod.netns)


def test_errors_name_the_namespace(make_netns: Callable[[str], Path], tmp_path: Path) -> None:
    missing = Path("/var/run/netns") / unique("zptnone")
    with pytest.raises(PodNetworkError, match=rf"pod netns {missing}: no such file"):
        connect_zone_nic(missing)
    disconnect_zone_nic(missing)   # already gone: nothing to do
    empty = make_netns("zptempty")
    with pytest.raises(PodNetworkError, match=rf"pod netns {empty}: no veth found .*lo"):
        connect_zone_nic(empty)
    assert interface_names(empty) == ["lo"]
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    with pytest.raises(PodNetworkError, match="not a network namespace"):
        inspect_pod_network(plain)
    with pytest.raises(PodNetworkError, match="interface name"):
        connect_zone_nic(empty, tap="a-very-long-tap-name")


def test_zone_config_fails_closed_on_routes_it_cannot_carry() -> None:
    network = PodNetwork("/run/netns/x", "eth0", "02:00:00:00:00:01", 1500, ("10.1.0.5/24",),
                         (PodRoute("0.0.0.0/0", "10.1.0.1"), PodRoute("192.168.0.0/16", "10.1.0.254")))
    with pytest.raises(PodNetworkError, match=r"route 192.168.0.0/16 via 10.1.0.254 on eth0"):
        network.zone_config()
    two = PodNetwork("/run/netns/x", "eth0", "02:00:00:00:00:01", 1500, ("10.1.0.5/24", "10.1.0.6/24"))
    with pytest.raises(PodNetworkError, match="2 IPv4 addresses"):
        two.zone_config()
    dual = PodNetwork("/run/netns/x", "eth0", "02:00:00:00:00:01", 9000, ("10.1.0.5/24", "fd00::5/64"),
                      (PodRoute("0.0.0.0/0", "10.1.0.1"), PodRoute("::/0", "fd00::1")))
    assert dual.zone_config("eth1") == {"interface": "eth1", "mtu": 9000,
                                        "ipv4": {"address": "10.1.0.5", "prefix": 24, "gateway": "10.1.0.1"},
                                        "ipv6": {"address": "fd00::5", "prefix": 64, "gateway": "fd00::1"}}


def test_qemu_arguments() -> None:
    network = PodNetwork("/run/netns/x", "eth0", "0a:58:0a:01:00:05", 1450, ("10.1.0.5/24",))
    nic = ZoneNic(network, "tap0_zone", 7)
    assert nic.qemu_args() == ["-netdev", "tap,id=pod0,fd=7,vhost=off",
                               "-device", "virtio-net-pci,netdev=pod0,mac=0a:58:0a:01:00:05,host_mtu=1450"]
    assert nic.qemu_args("n1", fd_number=3)[1] == "tap,id=n1,fd=3,vhost=off"
    nic.fd = None
    with pytest.raises(PodNetworkError, match="already closed"):
        nic.qemu_args()


def test_resolv_conf_parsing(tmp_path: Path) -> None:
    dns = PodDns.from_resolv_conf("# generated\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\ndomain a.example\n"
                                  "search b.example c.example ; comment\noptions ndots:5 timeout:2\n")
    assert dns == PodDns(("10.0.0.10", "fe80::1"), ("b.example", "c.example"), ("ndots:5", "timeout:2"))
    with pytest.raises(PodNetworkError, match=r"resolv.conf:1: nameserver 'x' is not an IP"):
        PodDns.from_resolv_conf("nameserver x\n")
    with pytest.raises(PodNetworkError, match="read DNS config"):
        PodDns.from_file(tmp_path / "missing")
    assert os.path.basename(str(tmp_path))
