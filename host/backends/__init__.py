"""The hypervisors a zone runs on, behind one interface (``Backend``), and the one place that picks one.

A backend boots a zone from its boot files (``host.bootplan``), opens the byte stream the IDM link runs on,
says whether the zone is alive, waits for it to end and ends it. Everything above (``host.launch``,
``host.lifecycle``, ``host.link``) works on any backend; a graceful stop is IDM's ``zone.shutdown`` then
``wait`` then ``kill``.

    qemu   QEMU, direct kernel boot, virtio devices; KVM when it really works, else TCG  (qemu.py, accel.py, qmp.py)
    xen    a Xen PV domain driven with ``xl``, IDM over a vchan                         (xen.py)

For a pod (a containerd shim, docs/pods-contract.md) a backend also boots with extra NICs on tap devices the
caller made (``nics``: ``host.pod.network.ZoneNic``) and hot-plugs read-only disk images into the running
zone and out again (``attach_disk``/``detach_disk``, hotplug.py); the zone learns of such a disk over IDM
(``ZoneLink.attach_disk(..., **disk.zone_locator())``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from host.errors import ZoneDefError
from host.zonedef import BACKENDS, ZoneDef

if TYPE_CHECKING:
    from collections.abc import Sequence

    from host.backends.hotplug import PluggedDisk
    from host.backends.nics import TapNic
    from host.bootplan import BootFiles
    from host.state import ZoneDir
    from idm.transport import Transport



class Backend(Protocol):
    name: str           # "qemu" or "xen": ZoneDef.backend
    disk_prefix: str    # how the guest names its block devices: "vd" (virtio-blk) or "xvd" (Xen)

    def kernel_cmdline(self, definition: ZoneDef) -> str:
        """The kernel command line: the console and the devices PID 1 reads (host.bootplan)."""
        ...

    def boot(self, definition: ZoneDef, boot: BootFiles, *, daemonize: bool, cmdline: str | None = None,
             nics: Sequence[TapNic] = ()) -> None:
        """Start the zone (``daemonize``: it outlives this process), with ``nics`` as its extra network cards
        (the VMM inherits their fds; the caller closes its copies afterwards)."""
        ...

    def attach_disk(self, image: Path, *, name: str, timeout: float = 10.0) -> PluggedDisk:
        """Hot-plug ``image`` read-only into the running zone as ``name``; nothing stays attached on failure."""
        ...

    def detach_disk(self, disk: PluggedDisk, *, timeout: float = 30.0) -> None:
        """Unplug a disk ``attach_disk`` gave (the zone must have let go of it: IDM disk.detach); idempotent."""
        ...

    def connect(self, timeout: float) -> Transport:
        """The byte stream to the zone's PID 1 the IDM link runs on, once the hypervisor offers it."""
        ...

    @property
    def console_log(self) -> Path:
        """Where the zone's console output goes."""
        ...

    def alive(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the zone to end (it powered off, or was killed); True if it did within ``timeout``."""
        ...

    def kill(self, timeout: float = 5.0) -> None:
        """End the zone now; the guest gets no say (after a graceful stop timed out)."""
        ...


def backend_for(zone: ZoneDir, definition: ZoneDef | None = None) -> Backend:
    """The backend a zone was defined with (its zone.json unless ``definition`` is given)."""
    name = (definition or zone.load()).backend
    if name == "qemu":
        from host.backends.qemu import QemuBackend

        return QemuBackend(zone)
    if name == "xen":
        from host.backends.xen import XenBackend

        return XenBackend(zone)
    raise ZoneDefError(f"backend: {name!r} is not one of {', '.join(BACKENDS)}")
