"""The ``qemu`` backend: a zone definition plus its boot files -> a running ``qemu-system-x86_64``.

Machine: ``-accel kvm`` when /dev/kvm really works, else ``-accel tcg`` (accel.py). Direct kernel boot
(``-kernel``/``-initrd``/``-append``), no firmware menus, ``-no-reboot`` so a guest power-off, reboot or
panic (``panic=-1``) ends QEMU. ``-nodefaults -display none`` instead of ``-nographic``: ``-nographic``
cannot be combined with ``-daemonize`` and would tie the console to our terminal; here the console
(ttyS0) always goes to the zone's console.log and the CLI streams container output over IDM.

Devices, in this order (host/bootplan.py has the contract with PID 1):
  virtio-serial-pci with one port "zone.idm" on a unix socket (first virtio device -> /dev/vport0p1),
  virtio-blk-pci read-only disks: addons (vda), config (vdb), root images (vdc...), with serial=,
  virtio-rng-pci (early entropy), and virtio-net-pci on user-mode networking when the zone asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from host.backends.accel import choose_accel
from host.backends.qmp import qmp_command
from host.bootplan import IDM_PORT_NAME, BootFiles, kernel_cmdline
from host.errors import BackendError
from host.state import ZoneDir, pid_alive
from host.zonedef import ZoneDef
from idm.errors import ConnectionClosed, IdmTimeout
from idm.transport import SocketTransport, connect_unix

if TYPE_CHECKING:
    from host.backends.hotplug import PluggedDisk, QemuDisk
    from host.backends.nics import TapNic

QEMU_BINARY = "qemu-system-x86_64"


def qemu_binary() -> str | None:
    return shutil.which(os.environ.get("ZONE_QEMU", QEMU_BINARY))


def qemu_command(definition: ZoneDef, zone: ZoneDir, boot: BootFiles, *, accel: str = "tcg",
                 daemonize: bool = False, binary: str = QEMU_BINARY, cmdline: str | None = None,
                 nics: Sequence[TapNic] = ()) -> list[str]:
    """The full argv; pure (no files touched), so it is unit-testable. ``nics``: extra NICs on taps whose fds
    QEMU inherits (after the virtio-rng, so the boot devices keep their places)."""
    argv = [
        binary,
        "-name", f"zone-{definition.name},process=zone-{definition.name}",
        "-accel", accel,
        "-machine", "pc",   # under TCG the simpler pc machine reaches /init sooner than q35
        *(["-cpu", "host"] if accel == "kvm" else []),   # TCG: the default qemu64 model boots fastest
        "-m", f"{definition.memory_mib}M",
        "-smp", str(definition.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(boot.kernel),
        "-initrd", str(boot.initrd),
        "-append", cmdline if cmdline is not None else kernel_cmdline(definition),
        # IDM first: the first virtio device, so the port is /dev/vport0p1 in the zone
        "-device", "virtio-serial-pci,id=idmbus",
        "-chardev", f"socket,id=idm,path={zone.idm_socket},server=on,wait=off",
        "-device", f"virtserialport,bus=idmbus.0,chardev=idm,name={IDM_PORT_NAME}",
    ]
    for index, disk in enumerate(boot.disks()):
        drive = f"d{index}"
        argv += [
            "-drive", f"file={disk.path},if=none,id={drive},format=raw,readonly=on",
            "-device", f"virtio-blk-pci,drive={drive},serial={disk.serial}",
        ]
    argv += ["-device", "virtio-rng-pci"]
    for index, nic in enumerate(nics):
        argv += nic.qemu_args(f"pod{index}")
    if definition.network is not None:
        netdev = "user,id=net0"
        for forward in definition.network.host_forwards:
            netdev += f",hostfwd={forward}"
        argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
    argv += [
        "-chardev", f"file,id=console,path={zone.console_log}",
        "-serial", "chardev:console",
        "-qmp", f"unix:{zone.qmp_socket},server=on,wait=off",
        "-pidfile", str(zone.pidfile),
    ]
    if daemonize:
        argv.append("-daemonize")
    return argv


class QemuBackend:
    """Start, watch and stop one zone's QEMU process (the ``qemu`` backend)."""

    name = "qemu"
    disk_prefix = "vd"

    def __init__(self, zone: ZoneDir) -> None:
        self.zone = zone
        self.process: subprocess.Popen[bytes] | None = None   # set when we started it in the foreground

    def kernel_cmdline(self, definition: ZoneDef) -> str:
        return kernel_cmdline(definition)

    @property
    def console_log(self) -> Path:
        return self.zone.console_log

    def boot(self, definition: ZoneDef, boot: BootFiles, *, daemonize: bool, cmdline: str | None = None,
             nics: Sequence[TapNic] = (), accel: str | None = None, socket_timeout: float = 10.0) -> None:
        binary = qemu_binary()
        if binary is None:
            raise BackendError(f"{QEMU_BINARY} not found (install the Debian package qemu-system-x86)")
        accel = accel or choose_accel()
        pass_fds = [nic.fd for nic in nics if nic.fd is not None]
        if len(pass_fds) != len(nics):
            raise BackendError("a pod NIC's tap fd was already closed: QEMU cannot inherit it")
        argv = qemu_command(definition, self.zone, boot, accel=accel, daemonize=daemonize, binary=binary,
                            cmdline=cmdline, nics=nics)
        for stale in (self.zone.idm_socket, self.zone.qmp_socket, self.zone.pidfile):
            stale.unlink(missing_ok=True)
        log_path = self.zone.path / "qemu.log"
        with open(log_path, "wb") as log:
            if daemonize:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False,
                                        pass_fds=pass_fds)
                if result.returncode != 0:
                    raise BackendError(f"start QEMU for zone {definition.name!r}: {last_line(log_path)}")
                pid = self.zone.pid()
                if pid is None:
                    raise BackendError(f"QEMU for zone {definition.name!r} wrote no pidfile")
            else:
                # own session: a Ctrl-C on our terminal reaches us, and we stop the zone properly
                self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                start_new_session=True, pass_fds=pass_fds)
                pid = self.process.pid
        self.zone.save_runtime(backend="qemu", pid=pid, accel=accel, argv=argv)
        self._wait_for_socket(socket_timeout, log_path)

    def _wait_for_socket(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout
        while not self.zone.idm_socket.exists():
            if not self.alive():
                raise BackendError(f"QEMU for zone {self.zone.name!r} exited: {last_line(log_path)}")
            if time.monotonic() > deadline:
                raise BackendError(f"QEMU for zone {self.zone.name!r} did not open {self.zone.idm_socket}")
            time.sleep(0.02)

    def connect(self, timeout: float) -> SocketTransport:
        """The virtio-serial chardev socket, retried until QEMU accepts (the zone's PID 1 answers later: data
        waits in the socket until it opens the port)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return connect_unix(str(self.zone.idm_socket), max(min(remaining, 5.0), 0.1))
            except ConnectionClosed as e:  # not there yet
                if remaining <= 0:
                    raise IdmTimeout(f"zone {self.zone.name!r}: {self.zone.idm_socket} did not accept a "
                                     f"connection within {timeout} s: {e}") from e
                time.sleep(0.1)

    def attach_disk(self, image: Path, *, name: str, timeout: float = 10.0) -> QemuDisk:
        """QMP blockdev-add + device_add of a read-only virtio-blk with serial ``name`` (hotplug.py)."""
        from host.backends.hotplug import qemu_attach_disk

        return qemu_attach_disk(self.zone.qmp_socket, image, name=name, timeout=timeout)

    def detach_disk(self, disk: PluggedDisk, *, timeout: float = 30.0) -> None:
        from host.backends.hotplug import QemuDisk, qemu_detach_disk

        if not isinstance(disk, QemuDisk):
            raise BackendError(f"zone {self.zone.name!r} runs under QEMU: {disk!r} is not one of its disks")
        qemu_detach_disk(self.zone.qmp_socket, disk, timeout=timeout)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.zone.is_running()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for QEMU to exit; True if it did within ``timeout``."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self, timeout: float = 5.0) -> None:
        """Stop QEMU now: QMP quit, then SIGTERM, then SIGKILL. The guest gets no say (used after a timeout)."""
        if not self.alive():
            return
        try:
            qmp_command(self.zone.qmp_socket, "quit", timeout=timeout)
            if self.wait(timeout):
                return
        except BackendError:
            pass   # no QMP (QEMU wedged, or not ours): signals next
        pid = self.process.pid if self.process is not None else self.zone.pid()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if pid is None or not pid_alive(pid):
                return
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            if self.wait(timeout):
                return
        raise BackendError(f"QEMU (pid {pid}) of zone {self.zone.name!r} did not exit")


def last_line(path: Path) -> str:
    """The last non-blank line of a log (QEMU's, a console's), or "no output": what a failure message quotes."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
