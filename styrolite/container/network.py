"""The one network step the runtime itself takes: the loopback interface of a new network namespace is up.

A new network namespace starts with ``lo`` down; runc and crun bring it up so 127.0.0.1 works in every
container. One ioctl pair on a throw-away socket (SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP), so the init needs
no netlink library; everything else about networking belongs to whoever created the namespace.
"""

from __future__ import annotations

import _socket  # the C module under `socket` (whose import builds IntEnums): one datagram socket for ioctls
import fcntl
import struct

from styrolite.errors import ContainerError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in the 24-byte union


def loopback_up(name: str = "lo") -> None:
    try:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
        try:
            request = struct.pack(_IFREQ, name.encode(), 0)
            flags = struct.unpack(_IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, name.encode(), flags | IFF_UP))
        finally:
            sock.close()
    except OSError as e:
        raise ContainerError(f"bring {name} up in the container's network namespace: {e.strerror}") from e
