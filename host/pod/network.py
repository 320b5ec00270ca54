"""Pod networking: the zone's NIC joined to the pod network namespace containerd + CNI made.

containerd creates the pod's network namespace and runs CNI in it; the result is a veth (CNI_IFNAME, usually
``eth0``) holding the pod IP, with routes. The pod's processes run in a zone, not in that namespace, so the
zone's NIC is joined to the veth the way Kata Containers does it in its "tcfilter" mode:

* a tap device is created *inside* the pod namespace (:mod:`host.pod.tap`); its fd goes to QEMU
  (``-netdev tap,fd=N,vhost=off``), so every frame the zone sends comes out of the tap, and every frame
  written to the tap reaches the zone;
* an ingress qdisc on the veth with one u32 match-all filter, action ``mirred egress redirect`` to the tap;
  and the same on the tap towards the veth. Frames cross in both directions without touching the pod
  namespace's own IP stack: the veth keeps its address (CNI CHECK/DEL expect it) but never answers;
* the tap's MTU is the veth's; the zone NIC gets the veth's MAC (``mac=`` on virtio-net), so the bridge's
  ARP and forwarding tables, which learned the veth, stay right;
* the zone is told the pod IP/prefix, gateway/routes, MTU and DNS (:class:`PodNetwork`); the zone's network
  phase applies them inside its workload namespace, which all containers of the pod share.

u32 and not matchall: both come from iproute2's ``tc``, but ``cls_matchall`` is a module some kernels
lack (this machine's, for one), while ``cls_u32`` is everywhere -- and it is what Kata uses. Everything is
done over netlink with pyroute2 (no ``ip``/``tc`` binaries); only the tap itself needs two ioctls.

Teardown removes what this module made: the tap and the veth's ingress qdisc (which holds the filter). The
veth and the namespace belong to containerd/CNI and are left alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from host.pod.errors import PodNetworkError
from host.pod.netns import open_netns, run_in_netns
from host.pod.tap import open_tap, valid_ifname

DEFAULT_INTERFACE = "eth0"      # CRI's CNI_IFNAME
DEFAULT_TAP = "tap0_zone"
INGRESS_HANDLE = 0xFFFF0000     # "ffff:"
ETH_P_ALL = 0x0003
FILTER_PRIO = 1
FILTER_CLASSID = 0x10001        # "1:1", as Kata sets it; unused by an ingress qdisc
MATCH_ALL = "0x0/0x0+0"         # u32: zero bits at offset 0 == every packet
ARPHRD_ETHER = 1
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2               # the connected-subnet routes the kernel adds with an address
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True)
class PodRoute:
    """One route of the pod namespace, beyond the connected subnet: ``destination`` is a CIDR
    (``0.0.0.0/0``/``::/0`` for the default route); ``gateway`` None means on-link."""

    destination: str
    gateway: str | None = None

    @property
    def is_default(self) -> bool:
        return ipaddress.ip_network(self.destination).prefixlen == 0

    @property
    def version(self) -> int:
        return ipaddress.ip_network(self.destination).version


@dataclass(frozen=True)
class PodDns:
    """resolv.conf content: containerd writes it per sandbox from the CRI's DNSConfig (not from CNI)."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @classmethod
    def from_resolv_conf(cls, text: str, source: str = "resolv.conf") -> PodDns:
        nameservers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            words = raw.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            keyword, values = words[0], words[1:]
            if keyword == "nameserver":
                if len(values) != 1:
                    raise PodNetworkError(f"{source}:{number}: 'nameserver' takes one address")
                try:
                    nameservers.append(str(ipaddress.ip_address(values[0].split("%", 1)[0])))
                except ValueError as e:
                    raise PodNetworkError(f"{source}:{number}: nameserver {values[0]!r} is not an IP") from e
            elif keyword in ("search", "domain"):
                search = list(values)   # the last search/domain line wins, as in the resolver
            elif keyword == "options":
                options += values
        return cls(tuple(nameservers), tuple(search), tuple(options))

    @classmethod
    def from_file(cls, path: str | Path) -> PodDns:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise PodNetworkError(f"read DNS config {path}") from e
        return cls.from_resolv_conf(text, str(path))


@dataclass(frozen=True)
class PodNetwork:
    """What the zone needs to take over the pod's network identity (read from the pod namespace)."""

    netns: str
    interface: str                       # the CNI interface in the pod namespace (a veth)
    mac: str                             # its MAC: the zone NIC's MAC
    mtu: int
    addresses: tuple[str, ...]           # CIDRs, global scope: "10.88.0.5/16", "fd00::5/64"
    routes: tuple[PodRoute, ...] = ()    # without the connected subnets
    dns: PodDns = field(default_factory=PodDns)

    def address(self, version: int) -> str | None:
        found = [a for a in self.addresses if ipaddress.ip_interface(a).version == version]
        if len(found) > 1:
            raise PodNetworkError(f"pod netns {self.netns}: {self.interface} has {len(found)} IPv{version} "
                                  f"addresses ({', '.join(found)}); the zone config carries one per family")
        return found[0] if found else None

    def gateway(self, version: int) -> str | None:
        for route in self.routes:
            if route.is_default and route.version == version:
                return route.gateway
        return None

    def zone_config(self, interface: str = DEFAULT_INTERFACE) -> dict[str, Any]:
        """The zone config's ``network`` object (docs/zone-config.md) for the zone NIC ``interface``.

        Fails closed: a route the schema cannot carry (anything but one default gateway per family) is an
        error naming it, never a zone that silently lacks the route."""
        for route in self.routes:
            if not route.is_default or route.gateway is None:
                via = f" via {route.gateway}" if route.gateway else " (on-link)"
                raise PodNetworkError(f"pod netns {self.netns}: route {route.destination}{via} on "
                                      f"{self.interface}: the zone config carries only a default gateway per "
                                      "address family")
        document: dict[str, Any] = {"interface": interface, "mtu": self.mtu}
        for version in (4, 6):
            cidr = self.address(version)
            gateway = self.gateway(version)
            if cidr is None:
                if gateway is not None:
                    raise PodNetworkError(f"pod netns {self.netns}: IPv{version} gateway {gateway} but no "
                                          f"IPv{version} address on {self.interface}")
                continue
            parsed = ipaddress.ip_interface(cidr)
            family: dict[str, Any] = {"address": str(parsed.ip), "prefix": parsed.network.prefixlen}
            if gateway is not None:
                family["gateway"] = gateway
            document[f"ipv{version}"] = family
        if self.dns.nameservers:
            document["dns"] = list(self.dns.nameservers)
        if self.dns.search:
            document["search"] = list(self.dns.search)
        return document

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ZoneNic:
    """The pod network joined to a tap; ``fd`` is the tap's queue, owned by the caller until closed."""

    network: PodNetwork
    tap: str
    fd: int | None
    vnet_hdr: bool = True

    def qemu_args(self, netdev_id: str = "pod0", fd_number: int | None = None) -> list[str]:
        """QEMU arguments for this NIC. The fd must be inherited by QEMU (``pass_fds=[nic.fd]``);
        ``fd_number`` is its number in QEMU if that differs from ours. vhost=off: vhost-net needs KVM to
        pay off, and TCG is what runs here; QEMU finds IFF_VNET_HDR on the fd itself."""
        number = self.fd if fd_number is None else fd_number
        if number is None:
            raise PodNetworkError(f"tap {self.tap}: its fd was already closed (handed to QEMU?)")
        return ["-netdev", f"tap,id={netdev_id},fd={number},vhost=off",
                "-device", f"virtio-net-pci,netdev={netdev_id},mac={self.network.mac},host_mtu={self.network.mtu}"]

    def close(self) -> None:
        """Drop our copy of the tap fd (after QEMU has inherited it; the tap ends with QEMU's copy)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- reading the pod namespace --------------------------------------------------------------------------------

def _links(ipr: Any) -> list[tuple[int, str, str | None, Any]]:
    """(index, name, kind, message) of every link in the namespace."""
    rows = []
    for link in ipr.get_links():
        rows.append((link["index"], link.get_attr("IFLA_IFNAME"), link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                     link))
    return rows


def _find_interface(ipr: Any, netns: str, interface: str) -> Any:
    links = _links(ipr)
    named = [row for row in links if row[1] == interface]
    if named:
        link = named[0][3]
        if link["ifi_type"] != ARPHRD_ETHER:
            raise PodNetworkError(f"pod netns {netns}: {interface} is not an ethernet interface")
        return link
    veths = [row for row in links if row[2] == "veth"]
    if len(veths) == 1:
        return veths[0][3]
    names = ", ".join(f"{name} ({kind or 'device'})" for _, name, kind, _ in links) or "none"
    if not veths:
        raise PodNetworkError(f"pod netns {netns}: no veth found (no {interface!r} either; links: {names})")
    raise PodNetworkError(f"pod netns {netns}: no {interface!r} and {len(veths)} veths ({names}); name one")


def _addresses(ipr: Any, index: int) -> tuple[str, ...]:
    found = []
    for message in ipr.get_addr(index=index):
        if message["scope"] != RT_SCOPE_UNIVERSE:
            continue   # link-local fe80::/64 and friends: the zone makes its own
        found.append(f"{message.get_attr('IFA_ADDRESS')}/{message['prefixlen']}")
    return tuple(sorted(found, key=lambda c: (ipaddress.ip_interface(c).version, c)))


def _routes(ipr: Any, netns: str, index: int) -> tuple[PodRoute, ...]:
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for message in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            if message["proto"] == RTPROT_KERNEL or message["type"] != RTN_UNICAST:
                continue
            if message.get_attr("RTA_MULTIPATH") is not None:
                raise PodNetworkError(f"pod netns {netns}: multipath routes are not supported")
            if message.get_attr("RTA_OIF") != index:
                continue
            zero = "0.0.0.0" if family == socket.AF_INET else "::"
            destination = f"{message.get_attr('RTA_DST') or zero}/{message['dst_len']}"
            routes.append(PodRoute(str(ipaddress.ip_network(destination, strict=False)),
                                   message.get_attr("RTA_GATEWAY")))
    return tuple(routes)


def _describe(ipr: Any, netns: str, interface: str, dns: PodDns | None) -> tuple[PodNetwork, int]:
    link = _find_interface(ipr, netns, interface)
    index = link["index"]
    name = link.get_attr("IFLA_IFNAME")
    addresses = _addresses(ipr, index)
    if not addresses:
        raise PodNetworkError(f"pod netns {netns}: {name} has no global address (did CNI ADD succeed?)")
    network = PodNetwork(netns=str(netns), interface=name, mac=link.get_attr("IFLA_ADDRESS"),
                         mtu=link.get_attr("IFLA_MTU"), addresses=addresses, routes=_routes(ipr, netns, index),
                         dns=dns or PodDns())
    return network, index


def inspect_pod_network(netns: str | Path, *, interface: str = DEFAULT_INTERFACE,
                        dns: PodDns | None = None) -> PodNetwork:
    """Read the pod's network identity (veth MAC, MTU, addresses, routes) without changing anything."""
    from pyroute2 import IPRoute

    def work() -> PodNetwork:
        with IPRoute() as ipr:
            return _describe(ipr, str(netns), interface, dns)[0]

    return run_in_netns(netns, work)


# --- joining the tap ------------------------------------------------------------------------------------------

def _redirect(ipr: Any, source: int, target: int) -> None:
    """Ingress qdisc on ``source`` + a u32 match-all filter: mirred egress redirect to ``target``."""
    ipr.tc("add", "ingress", source, INGRESS_HANDLE)
    ipr.tc("add-filter", "u32", source, parent=INGRESS_HANDLE, prio=FILTER_PRIO, protocol=ETH_P_ALL,
           target=FILTER_CLASSID, keys=[MATCH_ALL],
           action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target})


def _has_ingress(ipr: Any, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "ingress" for q in ipr.get_qdiscs(index=index))


def _quiet_ipv6(name: str) -> None:
    """No IPv6 of the pod namespace's own on ``name``: its link-local address, DAD and router solicitations
    would be sent *to the zone* through the tap. (Called in the pod namespace's thread: /proc/sys/net is
    that of the calling thread.)"""
    path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
    if os.path.exists(path):
        with open(path, "w", encoding="ascii") as f:
            f.write("1")


def _join(ipr: Any, netns: str, veth: int, veth_name: str, peer: int, peer_name: str, mtu: int) -> None:
    step = f"disable IPv6 on {peer_name}"
    try:
        _quiet_ipv6(peer_name)
        step = f"set {peer_name} mtu {mtu} and up"
        ipr.link("set", index=peer, mtu=mtu, state="up")
        if _has_ingress(ipr, veth):
            raise PodNetworkError(f"pod netns {netns}: {veth_name} already has an ingress qdisc "
                                  "(another zone attached? disconnect it first)")
        step = f"redirect {veth_name} ingress to {peer_name}"
        _redirect(ipr, veth, peer)
        step = f"redirect {peer_name} ingress to {veth_name}"
        _redirect(ipr, peer, veth)
    except PodNetworkError:
        raise
    except Exception as e:
        with contextlib.suppress(Exception):
            ipr.tc("del", "ingress", veth, INGRESS_HANDLE)
        raise PodNetworkError(f"pod netns {netns}: {step}") from e


def connect_zone_nic(netns: str | Path, *, interface: str = DEFAULT_INTERFACE, tap: str = DEFAULT_TAP,
                     dns: PodDns | None = None, vnet_hdr: bool = True) -> ZoneNic:
    """Create ``tap`` in the pod namespace, redirect all traffic between it and the CNI veth both ways,
    and return the zone's NIC description with the tap fd (close it once QEMU holds its copy)."""
    from pyroute2 import IPRoute

    valid_ifname(tap)

    def work() -> ZoneNic:
        with IPRoute() as ipr:
            network, veth = _describe(ipr, str(netns), interface, dns)
            if ipr.link_lookup(ifname=tap):
                raise PodNetworkError(f"pod netns {netns}: {tap} exists already (another zone attached?)")
            fd = open_tap(tap, vnet_hdr=vnet_hdr)
            try:
                found = ipr.link_lookup(ifname=tap)
                if not found:
                    raise PodNetworkError(f"pod netns {netns}: tap {tap} vanished after TUNSETIFF")
                _join(ipr, str(netns), veth, network.interface, found[0], tap, network.mtu)
            except BaseException:
                os.close(fd)   # the tap is not persistent: it goes with its last fd
                raise
            return ZoneNic(network, tap, fd, vnet_hdr)

    return run_in_netns(netns, work)


def disconnect_zone_nic(netns: str | Path, *, interface: str = DEFAULT_INTERFACE, tap: str = DEFAULT_TAP,
                        nic: ZoneNic | None = None) -> None:
    """Undo :func:`connect_zone_nic`: the veth's ingress qdisc (and with it the filter) and the tap go;
    idempotent, and a namespace containerd already removed is not an error. A pod veth never carries an
    ingress qdisc of its own (connect refuses to attach over one), so the one found is ours."""
    from pyroute2 import IPRoute

    if nic is not None:
        nic.close()
    if not Path(netns).exists():
        return

    def work() -> None:
        with IPRoute() as ipr:
            links = {name: index for index, name, _, _ in _links(ipr)}
            step = ""
            try:
                if interface in links and _has_ingress(ipr, links[interface]):
                    step = f"remove the ingress qdisc of {interface}"
                    ipr.tc("del", "ingress", links[interface], INGRESS_HANDLE)
                if tap in links:
                    step = f"delete {tap}"
                    ipr.link("del", index=links[tap])
            except Exception as e:
                raise PodNetworkError(f"pod netns {netns}: {step}") from e

    run_in_netns(netns, work)


def attach_link(netns: str | Path, link: str, *, interface: str = DEFAULT_INTERFACE,
                from_netns: str | Path | None = None) -> PodNetwork:
    """Xen's counterpart of :func:`connect_zone_nic`: a backend device that already exists (the zone's
    ``vif<domid>.<n>`` in dom0) is moved into the pod namespace and joined to the veth the same way.
    ``from_netns``: where the link is now (default: the caller's namespace)."""
    from pyroute2 import IPRoute

    valid_ifname(link)
    target = open_netns(netns)

    def move() -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=link)
            if not found:
                raise PodNetworkError(f"link {link}: not found" + (f" in {from_netns}" if from_netns else ""))
            try:
                ipr.link("set", index=found[0], net_ns_fd=target)
            except Exception as e:
                raise PodNetworkError(f"move {link} into pod netns {netns}") from e

    try:
        if from_netns is None:
            move()
        else:
            run_in_netns(from_netns, move)
    finally:
        os.close(target)

    def work() -> PodNetwork:
        with IPRoute() as ipr:
            network, veth = _describe(ipr, str(netns), interface, None)
            peer = ipr.link_lookup(ifname=link)
            if not peer:
                raise PodNetworkError(f"pod netns {netns}: {link} vanished after the move")
            _join(ipr, str(netns), veth, network.interface, peer[0], link, network.mtu)
            return network

    return run_in_netns(netns, work)


def interface_names(netns: str | Path) -> list[str]:
    """Names of the links in ``netns`` (for checks and error messages)."""
    from pyroute2 import IPRoute

    def work() -> list[str]:
        with IPRoute() as ipr:
            return [name for _, name, _, _ in _links(ipr)]

    return run_in_netns(netns, work)
