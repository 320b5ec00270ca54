"""A small rtnetlink client: the four things the zone's network helper does to the kernel's network state.

    with RtNetlink() as nl:
        nl.set_link(index, net_ns_fd=fd)          # move a link into another network namespace
        nl.set_link(index, mtu=1400, up=True)     # MTU, up
        nl.add_address(index, "10.0.2.15", 24)    # IPv4 or IPv6 (nodad=True: usable at once)
        nl.add_route("0.0.0.0/0", gateway="10.0.2.2", oif=index, metric=100)

Why not pyroute2 in the zone: its package ``__init__`` imports nearly all of its ~230 modules, and even its
narrowest entry (``pyroute2.iproute.linux``) brings asyncio, ssl (OpenSSL's libcrypto and libssl), unittest.mock
and multiprocessing: 242 modules, 2.1 s of the network phase under QEMU TCG and 8 MB of the initramfs, for
four requests. These messages are a few fixed structs (linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h)
built with ``struct`` on one ``AF_NETLINK`` socket. Every request asks for an acknowledgement; a negative
error in it is raised as :class:`NetlinkError`, an ``OSError`` with that errno and the request named.
Interface names resolve with ``socket.if_nametoindex`` (in the caller's network namespace).
"""

from __future__ import annotations

import errno as errno_module
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
IFLA_MTU, IFLA_NET_NS_FD = 4, 28
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 1, 4, 5, 6
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 0x1
IFA_F_NODAD = 0x02

NLMSGHDR = struct.Struct("=IHHII")     # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")   # family, (pad), device type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBI")    # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")    # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")          # length, type
NLMSGERR = struct.Struct("=i")         # the (negative) errno, followed by the request's header
U32 = struct.Struct("=I")


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` is its error, the message names the request."""


def _attribute(kind: int, payload: bytes) -> bytes:
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _address(text: str) -> tuple[int, bytes]:
    """(family, packed address) of an IPv4 or IPv6 address in text form."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        return family, socket.inet_pton(family, text)
    except OSError:
        raise ValueError(f"not an IP address: {text!r}") from None


class RtNetlink:
    """One NETLINK_ROUTE socket in the caller's network namespace; requests are synchronous."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._sequence = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- links -----------------------------------------------------------------------------------

    @staticmethod
    def link_index(name: str) -> int | None:
        """The index of interface ``name`` in this network namespace, or None."""
        try:
            return socket.if_nametoindex(name)
        except OSError:
            return None

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None,
                 net_ns_fd: int | None = None) -> None:
        """``ip link set``: up/down, MTU, or move it into the network namespace open at ``net_ns_fd``."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if mtu is not None:
            body += _attribute(IFLA_MTU, U32.pack(mtu))
        if net_ns_fd is not None:
            body += _attribute(IFLA_NET_NS_FD, U32.pack(net_ns_fd))
        self._request(RTM_NEWLINK, 0, body, f"set link {index}")

    # --- addresses and routes ----------------------------------------------------------------------

    def add_address(self, index: int, address: str, prefixlen: int, *, nodad: bool = False) -> None:
        """``ip addr add ADDRESS/PREFIXLEN dev INDEX`` (``nodad``: no duplicate address detection wait)."""
        family, packed = _address(address)
        body = IFADDRMSG.pack(family, prefixlen, IFA_F_NODAD if nodad else 0, RT_SCOPE_UNIVERSE, index)
        if family == socket.AF_INET:
            body += _attribute(IFA_LOCAL, packed)
        body += _attribute(IFA_ADDRESS, packed)
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {address}/{prefixlen}")

    def add_route(self, destination: str, *, gateway: str | None = None, oif: int | None = None,
                  metric: int | None = None) -> None:
        """``ip route add DESTINATION [via GATEWAY] [dev OIF] [metric METRIC]`` in the main table;
        ``destination`` is a CIDR (``0.0.0.0/0``, ``::/0`` for the default routes)."""
        network, _, length = destination.partition("/")
        family, packed = _address(network)
        dst_len = int(length) if length else len(packed) * 8
        if gateway is not None and _address(gateway)[0] != family:
            raise ValueError(f"route {destination}: gateway {gateway} is of another address family")
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
        if dst_len:
            body += _attribute(RTA_DST, packed)
        if gateway is not None:
            body += _attribute(RTA_GATEWAY, _address(gateway)[1])
        if oif is not None:
            body += _attribute(RTA_OIF, U32.pack(oif))
        if metric is not None:
            body += _attribute(RTA_PRIORITY, U32.pack(metric))
        what = f"add route {destination}" + (f" via {gateway}" if gateway else "")
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what)

    # --- the wire --------------------------------------------------------------------------------

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its acknowledgement; NetlinkError if the kernel refused it."""
        self._sequence += 1
        sequence = self._sequence
        header = NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, sequence, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + NLMSGHDR.size <= len(data):
                length, reply, _flags, reply_sequence, _port = NLMSGHDR.unpack_from(data, offset)
                if length < NLMSGHDR.size:
                    raise NetlinkError(errno_module.EPROTO, f"{what}: malformed netlink reply")
                if reply_sequence == sequence and reply in (NLMSG_ERROR, NLMSG_DONE):
                    code = NLMSGERR.unpack_from(data, offset + NLMSGHDR.size)[0] if reply == NLMSG_ERROR else 0
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return
                offset += (length + 3) & ~3
