"""PID 1's IDM endpoint: the server on PID 1's loop, the local socket for ``/bin/zone``, the handlers, and
the channel to the host (a virtio-serial port or hvc device, or a Xen vchan served to dom0).

The host channel is chosen from ``zone.idm=`` (a device path, or ``vchan``); without it, the virtio-serial
port QEMU names ``zone.idm``. A device that a module creates may appear only after the ``modules`` phase,
so :meth:`IdmService.attach_host` is tried at the ``idm`` phase and, if needed, again at ``idm-retry``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from idm.server import IdmServer
from zoneinit.boot.devices import wait_for_path
from zoneinit.console import ConsoleLog
from zoneinit.containers.manager import ContainerManager
from zoneinit.idm.handlers import ZoneHandlers
from zoneinit.supervisor.loop import Supervisor

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from zoneinit.containers.pod import Pod
    from zoneinit.mounts.disks import DiskStore

IDM_PORT_NAME = "zone.idm"
XEN_IDM_DRIVERS = ["xen_evtchn", "xen_gntalloc"]
FLUSH_WAIT = 2.0   # seconds to let the last frames out before the power goes


class IdmService:
    def __init__(self, supervisor: Supervisor, log: ConsoleLog, containers: ContainerManager, *,
                 info: Callable[[], dict[str, Any]], request_shutdown: Callable[[str, str], None],
                 socket_path: str, disks: Callable[[], DiskStore] | None = None,
                 pod: Callable[[], Pod] | None = None) -> None:
        self.supervisor = supervisor
        self.log = log
        self.server = server = IdmServer(info=info, log=log.info)
        self.channel: str | None = None   # the host channel once attached
        supervisor.add_reader(server.fileno(), lambda _fd: server.service())
        supervisor.timed_services.append((server.timeout, server.service))
        log.event_sink = server.emit
        try:
            os.makedirs(os.path.dirname(socket_path), exist_ok=True)
            server.listen_unix(socket_path)
        except OSError as e:
            log.warn(f"IDM: no local socket at {socket_path} for /bin/zone: {e}")
        ZoneHandlers(server, supervisor, containers, info=info, request_shutdown=request_shutdown, disks=disks,
                     pod=pod).register()

    def attach_host(self, channel: str | None, *, wait: bool, load_modules: Callable[[list[str]], None]) -> None:
        """Serve the host channel, if it is there (``wait``: give a device that a module creates time to
        appear, and fail if it does not)."""
        if self.channel:
            return
        if channel == "vchan":  # Xen: a vchan served to dom0 (idm/vchan.py); its drivers come from addons
            if wait:
                load_modules(XEN_IDM_DRIVERS)
                from idm.vchan import VchanTransport

                self.server.add_transport(VchanTransport.serve(), name="host", persistent=True)
                self.channel = channel
                self.log.info("IDM on a vchan for dom0")
            return
        if not channel:  # not named on the command line: the virtio-serial port QEMU calls "zone.idm"
            from idm.transport import find_virtio_port

            try:
                channel = find_virtio_port(IDM_PORT_NAME)
            except FileNotFoundError:
                return
        if not os.path.exists(channel) and not (wait and wait_for_path(channel)):
            if wait:
                raise FileNotFoundError(f"IDM channel {channel} does not exist")
            return
        from idm.transport import FdTransport

        self.server.add_transport(FdTransport.open_device(channel), name="host", persistent=True)
        self.channel = channel
        self.log.info(f"IDM on {channel}")

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        self.server.emit(event, payload)

    def drain_before_power_off(self, ack_wait: float) -> None:
        """Let the link carry the last events before the power goes.

        The main container's exit event is waited for until the host acknowledges it, up to ``ack_wait``
        seconds: a main container that exits at once must not power the zone off before the host has even
        connected and learnt its exit code. A write that fails now is reported, never fatal."""
        server = self.server
        deadline = time.monotonic() + max(ack_wait, 0.0)
        flush_deadline = time.monotonic() + FLUSH_WAIT
        failed: set[str] = set()
        while True:
            server.service()
            pending = 0
            for conn in server.connections:
                try:
                    conn.flush()
                except Exception as e:
                    if conn.name not in failed:
                        failed.add(conn.name)
                        self.log.error(f"IDM: flush to {conn.name} before power-off", e)
                pending += conn.pending_output
            unacked = sum(1 for msg in server.unacked_events()
                          if msg.type == "container.exit" and (msg.payload or {}).get("main"))
            now = time.monotonic()
            if (not unacked or now >= deadline) and (not pending or now >= flush_deadline):
                return
            timeout = server.timeout()
            self.supervisor.selector.select(0.02 if timeout is None else min(timeout, 0.02))
            self.supervisor.reap()
