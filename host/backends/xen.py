"""The ``xen`` backend: a zone as a PV domain driven with ``xl``.

``xl_config`` turns the zone definition and its boot files into an xl domain config (type "pv", kernel,
ramdisk, command line, memory, vcpus, read-only disks xvda/xvdb/xvdc... in the order of host.bootplan, an
optional vif); ``XenBackend`` runs ``xl create`` / ``xl destroy`` / ``xl domid`` and keeps the guest console
in the zone's console.log (``xl console`` in the background). IDM is a vchan the zone serves to dom0.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from host.backends.xl import XL, attach_loop, detach_loop, xl
from host.bootplan import XEN_CONSOLE, BootFiles, kernel_cmdline
from host.errors import BackendError
from host.state import ZoneDir
from host.zonedef import ZoneDef

if TYPE_CHECKING:
    from collections.abc import Sequence

    from host.backends.hotplug import PluggedDisk, XenDisk
    from host.backends.nics import TapNic
    from idm.vchan import VchanTransport

XEN_IDM = "vchan"   # zone.idm=vchan: PID 1 serves IDM on a vchan under its own xenstore tree (docs/idm.md)


def domain_name(definition_or_name: ZoneDef | str) -> str:
    name = definition_or_name if isinstance(definition_or_name, str) else definition_or_name.name
    return f"zone-{name}"


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise BackendError(f"xl config value {value!r} contains a quote or newline")
    return f'"{value}"'


def xen_kernel_cmdline(definition: ZoneDef) -> str:
    """The console is hvc0, the disks xvd*, IDM a vchan (host.bootplan)."""
    return kernel_cmdline(definition, console=XEN_CONSOLE, disk_prefix="xvd", idm=XEN_IDM)


def xl_config(definition: ZoneDef, boot: BootFiles, *, cmdline: str | None = None,
              devices: dict[Path, str] | None = None) -> str:
    """The xl domain config text (xl.cfg(5) syntax). ``devices`` maps disk files to the loop devices
    attached for them (backendtype=phy needs a block device)."""
    extra = cmdline if cmdline is not None else xen_kernel_cmdline(definition)
    disks = []
    for index, disk in enumerate(boot.disks()):
        vdev = f"xvd{chr(ord('a') + index)}"
        # target= must come last: everything after it is the path
        target = (devices or {}).get(disk.path, disk.path)
        disks.append(_quote(f"format=raw,vdev={vdev},access=ro,backendtype=phy,target={target}"))
    lines = [
        f"name = {_quote(domain_name(definition))}",
        'type = "pv"',
        f"kernel = {_quote(str(boot.kernel))}",
        f"ramdisk = {_quote(str(boot.initrd))}",
        f"extra = {_quote(extra)}",
        f"memory = {definition.memory_mib}",
        f"maxmem = {definition.memory_mib}",
        f"vcpus = {definition.vcpus}",
        f"disk = [ {', '.join(disks)} ]",
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
    ]
    if definition.network is not None:
        vif = f"bridge={definition.network.bridge}" if definition.network.bridge else ""
        lines.append(f"vif = [ {_quote(vif)} ]")
    return "\n".join(lines) + "\n"


class XenBackend:
    """Start, watch and stop one zone's PV domain (the ``xen`` backend)."""

    name = "xen"
    disk_prefix = "xvd"

    def __init__(self, zone: ZoneDir) -> None:
        self.zone = zone
        self.console: subprocess.Popen[bytes] | None = None

    def kernel_cmdline(self, definition: ZoneDef) -> str:
        return xen_kernel_cmdline(definition)

    @property
    def console_log(self) -> Path:
        return self.zone.console_log

    @property
    def config_file(self) -> Path:
        return self.zone.path / "xl.cfg"

    def domain(self) -> str:
        return domain_name(self.zone.name)

    def boot(self, definition: ZoneDef, boot: BootFiles, *, daemonize: bool = True, cmdline: str | None = None,
             nics: Sequence[TapNic] = ()) -> None:
        if nics:
            raise BackendError("xen: a pod NIC is netback's vif, joined to the pod after boot "
                               "(host.pod.network.attach_link), not a tap fd")
        devices = {disk.path: attach_loop(disk.path) for disk in boot.disks() if disk.path.is_file()}
        self.zone.save_runtime(backend="xen", loops=sorted(devices.values()))
        self.config_file.write_text(xl_config(definition, boot, cmdline=cmdline, devices=devices))
        xl("create", str(self.config_file), timeout=120)
        domid = self.domid()
        if domid is None:
            raise BackendError(f"xl create {self.domain()}: the domain is not listed")
        with open(self.zone.console_log, "ab") as log:
            self.console = subprocess.Popen([XL, "console", self.domain()], stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
        self.zone.save_runtime(backend="xen", domid=domid, console_pid=self.console.pid, loops=sorted(devices.values()))

    def attach_disk(self, image: Path, *, name: str, timeout: float = 10.0) -> XenDisk:
        """``xl block-attach`` of ``image`` on a read-only loop device at the next free xvd (hotplug.py); the zone
        finds it by that device path. ``name`` is the zone's name for it (IDM), not Xen's."""
        from host.backends.hotplug import xen_attach_disk

        return xen_attach_disk(self.domain(), image)

    def detach_disk(self, disk: PluggedDisk, *, timeout: float = 30.0) -> None:
        from host.backends.hotplug import XenDisk, xen_detach_disk

        if not isinstance(disk, XenDisk):
            raise BackendError(f"zone {self.zone.name!r} runs under Xen: {disk!r} is not one of its disks")
        xen_detach_disk(disk, timeout=timeout)

    def domid(self) -> int | None:
        result = xl("domid", self.domain(), check=False, timeout=30)
        text = result.stdout.strip()
        return int(text) if result.returncode == 0 and text.isdigit() else None

    def connect(self, timeout: float) -> VchanTransport:
        """The vchan the zone's PID 1 serves to dom0 (libxenvchan client side), retried until it does."""
        from idm.vchan import connect_vchan_client

        domid = self.zone.runtime().get("domid")
        if not isinstance(domid, int):
            raise BackendError(f"zone {self.zone.name!r} has no Xen domain id (is it running?)")
        return connect_vchan_client(domid, timeout=timeout)

    def alive(self) -> bool:
        if shutil.which(XL) is None:
            return False
        return self.domid() is not None

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        self._release_loops()
        return True

    def _release_loops(self) -> None:
        """Detach the loop devices of a domain that is gone (idempotent: LOOP_CLR_FD on a free one fails)."""
        for device in self.zone.runtime().get("loops") or []:
            detach_loop(device)

    def kill(self, timeout: float = 10.0) -> None:
        if self.alive():
            xl("destroy", self.domain(), timeout=timeout + 30)
        pid = self.zone.runtime().get("console_pid")
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 15)
        self._release_loops()
