"""The zone's network: the workload network namespace, and (when the config asks for one) links,
addresses, routes and the name files.

Containers never share PID 1's network namespace. At boot PID 1 creates one *workload* namespace, pinned
by a bind mount at ``/run/zone/netns/workload``; the zone's containers join it (like the containers of a
Kubernetes pod: they share ``localhost`` and the zone's addresses). The NIC is moved into it before it is
configured, so PID 1's own namespace keeps only a loopback that is down: PID 1 is not reachable over the
network at all, and a container that breaks out of its netns still finds no interface of PID 1's.

The links, addresses and routes are set over rtnetlink (``zoneinit.rtnetlink``, imported by the functions that
need it), only ever in a forked helper. Containers get the name files (resolv.conf, hosts) as read-only bind
mounts.
"""

from __future__ import annotations

import _socket  # the C module under socket: its IntEnums would cost PID 1 ~0.37 MB (config.plan imports us)
import errno
import fcntl
import os
import struct

from styrolite.records import field, record
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k
from zoneinit.errors import ZoneInitError

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

IFA_F_NODAD = 0x02  # the address is usable at once (no duplicate address detection wait under a VM)
# Docker's per-container defaults: a container root in a user namespace has no CAP_NET_BIND_SERVICE or
# CAP_NET_RAW over the shared namespace, and still binds port 80 and pings.
WORKLOAD_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags (the union is 24 bytes)


@record
class InterfacePlan:
    name: str = "eth0"
    addresses: list[str] = field(default_factory=list)   # CIDR, IPv4 or IPv6: "10.0.2.15/24", "fec0::15/64"
    mtu: int | None = None


@record
class RoutePlan:
    destination: str = "default"       # "default" (v4 or v6 from the gateway), or a CIDR
    gateway: str | None = None
    interface: str | None = None
    metric: int | None = None


@record
class NetworkPlan:
    hostname: str | None = None
    domain: str | None = None
    interfaces: list[InterfacePlan] = field(default_factory=list)
    routes: list[RoutePlan] = field(default_factory=list)
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)  # address -> names (beyond localhost and us)


def _family(address: str) -> int:
    import ipaddress

    return _socket.AF_INET6 if ipaddress.ip_address(address.split("/")[0]).version == 6 else _socket.AF_INET


def _route_destination(route: RoutePlan) -> tuple[str, int]:
    import ipaddress

    if route.destination == "default":
        family = _family(route.gateway) if route.gateway else _socket.AF_INET
        return ("::/0" if family == _socket.AF_INET6 else "0.0.0.0/0"), family
    net = ipaddress.ip_network(route.destination, strict=False)
    return str(net), _socket.AF_INET6 if net.version == 6 else _socket.AF_INET


def _ignore_exists(call, *args: Any, **kwargs: Any) -> None:
    """Re-applying the same configuration is not an error."""
    try:
        call(*args, **kwargs)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


def bring_loopback_up() -> None:
    """``ip link set lo up`` in the calling thread's network namespace, with one ioctl (no netlink, no pyroute2)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        name = b"lo"
        flags = IFREQ.unpack(fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, IFREQ.pack(name, 0)))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, IFREQ.pack(name, flags | IFF_UP))
    finally:
        s.close()


def create_workload_namespace(pin: str, sys: Syscalls = LINUX) -> str:
    """A new network namespace with lo up, pinned by a bind mount of its nsfs file at ``pin``; returns ``pin``.

    Run it in a forked helper (:func:`zoneinit.isolate.in_child`): ``unshare`` moves the *caller* into the new
    namespace, and PID 1 must stay where it is. The bind mount is made in the mount namespace the helper
    shares with PID 1, so the pin outlives the helper.
    """
    step = f"create the workload network namespace at {pin}"
    try:
        os.makedirs(os.path.dirname(pin), mode=0o700, exist_ok=True)
        if not os.path.ismount(pin):
            os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o400))
            sys.unshare(k.CLONE_NEWNET)
            step = "bring lo up in the workload network namespace"
            bring_loopback_up()
            for name, value in WORKLOAD_SYSCTLS.items():
                step = f"set {name} in the workload network namespace"
                with open(f"/proc/sys/{name.replace('.', '/')}", "w", encoding="ascii") as f:
                    f.write(value)
            step = f"pin the workload network namespace at {pin}"
            sys.mount("/proc/thread-self/ns/net", pin, None, k.MS_BIND)
    except OSError as e:
        raise ZoneInitError(f"network: {step}") from e
    return pin


def move_into_namespace(names: list[str], pin: str) -> None:
    """Move the named links from the caller's network namespace into the pinned one (names and MACs kept)."""
    from zoneinit.rtnetlink import RtNetlink

    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with RtNetlink() as nl:
            for name in names:
                index = nl.link_index(name)
                if index is None:
                    raise ZoneInitError(f"network interface {name!r} does not exist in the zone")
                try:
                    nl.set_link(index, net_ns_fd=fd)
                except OSError as e:
                    raise ZoneInitError(f"network: move {name} into the workload namespace") from e
    finally:
        os.close(fd)


def enter_namespace(pin: str, sys: Syscalls = LINUX) -> None:
    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sys.setns(fd, k.CLONE_NEWNET)
    except OSError as e:
        raise ZoneInitError(f"network: enter the workload namespace {pin}") from e
    finally:
        os.close(fd)


def configure_links(plan: NetworkPlan) -> None:
    """lo up; each interface: MTU, addresses, up; then the routes. Raises ZoneInitError naming the step."""
    import ipaddress

    from zoneinit.rtnetlink import RtNetlink

    with RtNetlink() as nl:
        def index_of(name: str) -> int:
            index = nl.link_index(name)
            if index is None:
                raise ZoneInitError(f"network interface {name!r} does not exist in the zone")
            return index

        step = "bring lo up"
        try:
            nl.set_link(index_of("lo"), up=True)
            for iface in plan.interfaces:
                index = index_of(iface.name)
                if iface.mtu:
                    step = f"set mtu {iface.mtu} on {iface.name}"
                    nl.set_link(index, mtu=iface.mtu)
                for cidr in iface.addresses:
                    step = f"add address {cidr} to {iface.name}"
                    iface_net = ipaddress.ip_interface(cidr)
                    _ignore_exists(nl.add_address, index, str(iface_net.ip), iface_net.network.prefixlen,
                                   nodad=iface_net.version == 6)
                step = f"bring {iface.name} up"
                nl.set_link(index, up=True)
            for route in plan.routes:
                dst, _family = _route_destination(route)
                step = f"add route {dst}" + (f" via {route.gateway}" if route.gateway else "")
                oif = index_of(route.interface) if route.interface else None
                _ignore_exists(nl.add_route, dst, gateway=route.gateway, oif=oif, metric=route.metric)
        except ZoneInitError:
            raise
        except (OSError, ValueError) as e:
            raise ZoneInitError(f"network: {step}") from e


def resolv_conf(plan: NetworkPlan) -> str:
    lines = [f"nameserver {ns}" for ns in plan.nameservers]
    if plan.search:
        lines.append("search " + " ".join(plan.search))
    return "\n".join(lines) + "\n" if lines else ""


def hosts_file(plan: NetworkPlan) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if plan.hostname:
        names = plan.hostname + (f" {plan.hostname}.{plan.domain}" if plan.domain else "")
        first = next((a.split("/")[0] for i in plan.interfaces for a in i.addresses), "127.0.1.1")
        lines.append(f"{first}\t{names}")
    lines += [f"{address}\t{' '.join(names)}" for address, names in plan.hosts.items()]
    return "\n".join(lines) + "\n"


def write_name_files(plan: NetworkPlan, directory: str) -> dict[str, str]:
    """Write resolv.conf, hosts and hostname into ``directory``; returns {name in /etc: path written}."""
    os.makedirs(directory, exist_ok=True)
    files = {"resolv.conf": resolv_conf(plan), "hosts": hosts_file(plan), "hostname": (plan.hostname or "zone") + "\n"}
    written: dict[str, str] = {}
    for name, text in files.items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written[name] = path
    return written


def apply_hostname(plan: NetworkPlan, sys: Syscalls = LINUX) -> None:
    if plan.hostname:
        sys.sethostname(plan.hostname)
    if plan.domain:
        sys.setdomainname(plan.domain)


def configure_network(plan: NetworkPlan, files_dir: str, pin: str | None = None,
                      sys: Syscalls = LINUX) -> dict[str, str]:
    """The whole network step: hostname, links/addresses/routes, name files. Returns the name files.

    With ``pin`` (the workload namespace), the interfaces are first moved there and configured inside it;
    this changes the calling process's namespace, so it runs in a forked helper."""
    apply_hostname(plan, sys)
    if pin is not None:
        move_into_namespace([iface.name for iface in plan.interfaces], pin)
        enter_namespace(pin, sys)
    configure_links(plan)
    return write_name_files(plan, files_dir)
