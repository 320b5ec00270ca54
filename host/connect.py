"""Open the IDM link to a zone: QEMU's virtio-serial unix socket (Xen: the vchan, host.xen).

The blocking client is ``host.idm`` (the protocol core lives in ``idm.client``).
QEMU accepts the socket connection at once; data we send waits in the socket until PID 1 opens the port,
so ``hello`` simply takes as long as the boot does (``timeout`` bounds it).
"""

from __future__ import annotations

from typing import Any

from host.errors import BackendError
from host.state import ZoneDir


def connect(zone: ZoneDir, *, timeout: float = 30.0, events: bool = True) -> Any:
    """A connected, greeted IDM client for ``zone``; BackendError if the zone does not answer."""
    from host.idm import IdmError
    from host.idm import connect as idm_connect

    definition = zone.load()
    if definition.backend == "xen":
        from host.xen import connect_vchan
        return connect_vchan(zone, timeout=timeout, events=events)
    from host.callproxy import proxy_for

    proxy = proxy_for(zone.control_socket)   # a foreground `zonehost run` holds the link: go through it
    if proxy is not None:
        return proxy
    if not zone.idm_socket.exists():
        raise BackendError(f"zone {zone.name!r} has no IDM socket (is it running?)")
    try:
        return idm_connect(str(zone.idm_socket), timeout=timeout, events=events, name="zonehost")
    except IdmError as e:
        raise BackendError(f"IDM to zone {zone.name!r}") from e
