"""Zone lifecycle on top of the backends and IDM: run (prepare, boot, start, stream), exec, stop, list."""

from __future__ import annotations

import argparse
from typing import Any

from host import progress
from host.errors import HostError
from host.state import ZoneDir


def backend_for(zone: ZoneDir) -> Any:
    definition = zone.load()
    if definition.backend == "xen":
        from host.xen import XenZone
        return XenZone(zone)
    from host.qemu import QemuZone
    return QemuZone(zone)


def request_shutdown(zone: ZoneDir, timeout: float = 5.0) -> bool:
    """Ask PID 1 over IDM to shut down cleanly; False if the zone does not answer."""
    try:
        from host.idm import connect_zone  # helper-5's client
    except ImportError:
        return False
    try:
        with connect_zone(zone, timeout=timeout) as client:
            client.call("zone.shutdown", {}, timeout=timeout)
        return True
    except Exception:
        return False


def stop_zone(zone: ZoneDir, timeout: float = 20.0) -> str:
    """IDM zone.shutdown, wait up to ``timeout`` for the hypervisor process to end, then kill. Returns how."""
    backend = backend_for(zone)
    if not backend.running():
        return "already stopped"
    if timeout > 0 and request_shutdown(zone, timeout=min(timeout, 5.0)):
        with progress.step(f"waiting for zone {zone.name} to power off"):
            if backend.wait(timeout):
                return "clean shutdown"
    backend.quit()
    return "killed"


def list_containers(zone: ZoneDir) -> list[dict[str, Any]]:
    raise HostError("container listing needs host.idm")


def container_logs(zone: ZoneDir) -> str | None:
    return None


def run_zone(args: argparse.Namespace) -> int:
    raise HostError("run: not wired yet")


def exec_in_zone(zone: ZoneDir, args: argparse.Namespace) -> int:
    raise HostError("exec: not wired yet")
