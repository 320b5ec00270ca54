"""A tap device whose queue is a file descriptor we hold: what QEMU's ``-netdev tap,fd=N`` takes.

``/dev/net/tun`` + ``TUNSETIFF`` creates the device in the network namespace of the process that *opened*
the file, so the caller opens it inside the pod namespace (host.pod.netns). The tap is not persistent: it
lives exactly as long as some process holds the fd (us until QEMU has it, then QEMU), so a crashed shim or
QEMU cannot leave a tap behind. pyroute2 can create taps too, but only persistent ones and without handing
out the queue fd, which is the one thing QEMU needs -- hence the two ioctls here.
"""

from __future__ import annotations

import fcntl
import os
import struct

from host.pod.errors import PodNetworkError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000    # a virtio_net_hdr before each frame: QEMU then offers checksum/GSO offloads
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")   # struct ifreq: name, then ifr_flags (the union is 24 bytes)
VNET_HDR_LEN = 10                   # the kernel's default struct virtio_net_hdr size (TUNSETVNETHDRSZ)


def valid_ifname(name: str) -> str:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise PodNetworkError(f"interface name {name!r}: 1-15 bytes, no '/' or spaces")
    return name


def open_tap(name: str, *, vnet_hdr: bool = True) -> int:
    """Create tap ``name`` in the calling thread's network namespace; returns its queue fd (O_CLOEXEC:
    hand it to QEMU with ``pass_fds``)."""
    valid_ifname(name)
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise PodNetworkError(f"open {TUN_DEVICE} (is the tun module loaded?)") from e
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except OSError as e:
        os.close(fd)
        raise PodNetworkError(f"create tap {name} (TUNSETIFF)") from e
    return fd


def tap_flags(fd: int) -> tuple[str, int]:
    """(name, flags) of the tap behind ``fd`` (TUNGETIFF)."""
    raw = fcntl.ioctl(fd, TUNGETIFF, _IFREQ.pack(b"", 0))
    name, flags = _IFREQ.unpack(raw)
    return name.rstrip(b"\0").decode(), flags
