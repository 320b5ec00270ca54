"""Boot a pod's zone, and take it down again.

At the sandbox's Create the shim boots one zone for the pod (``PodZone.boot``):

1. the zone's state directory ``<state_dir>/pod-<12 hex of the sandbox id>/`` (``host.state.ZoneDir``:
   ``zone.json``, ``idm.sock``, ``qmp.sock``, ``console.log``, ``qemu.log``, the config disk);
2. the pod network: ``host.pod.network.connect_zone_nic`` in the pod netns containerd + CNI made -- a tap
   beside the CNI veth, tc ``mirred`` both ways -- and the pod's DNS from the ``resolv.conf`` CRI wrote;
3. boot inputs as ``zonehost`` prepares them (``host.launch.prepare_kernel_only``: the kernel OCI image read
   as ``zonehost run --kernel`` reads it, unpacked and verified; our initrd + the kernel's boot modules), and a
   config disk with the pod's name and hostname, its network, the ``addons`` disk, the kernel's ``components``
   record, **no containers** and ``poweroff_on_exit: false`` (the zone lives as long as the pod, whatever its
   containers do);
4. QEMU, as ``host.backends.qemu`` builds its command line, plus the pod NIC (``-netdev tap,fd=N`` with the
   veth's MAC and MTU); its pid is the one containerd sees for every task of the pod;
5. one ``host.link.ZoneLink`` for the zone's life, opened once QEMU's IDM socket exists; the boot ends at
   PID 1's ``zone.ready``. A zone that stops first, or does not get there within ``boot_timeout``, fails
   the sandbox's Create with the last line of its console (why it did not boot).

``stop`` asks PID 1 for ``zone.shutdown`` and kills QEMU after the grace period; the tap goes with QEMU's fd
(it is not persistent), the veth's ingress qdisc (and its filter) is removed, the state directory too.

Xen PV is not offered here: a shim would have to run in dom0 next to containerd (``xl`` and the vchan are
dom0's), which this machine's test setup (Xen inside QEMU) does not give containerd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host import images
from host.backends import Backend
from host.backends.qemu import last_line
from host.errors import HostError
from host.lifecycle import last_console_line, wait_ready
from host.link import ZoneInfo, ZoneLink
from host.state import ZoneDir, pid_alive
from host.zonedef import ZoneDef
from idm.errors import IdmError
from shim.ttrpc.status import Unavailable
from shim.zone.config import ShimConfig
from shim.zone.sandbox import PodSandbox

log = logging.getLogger("shim.zone")

POINTER = "zone-state.json"   # in each task's bundle: where the pod's zone lives (for `delete` after a crash)


class ZoneBootError(Unavailable):
    """The pod's zone did not come up; the message carries the console's reason."""


@dataclass(frozen=True)
class ZoneRecord:
    """What a later process needs to clean up a zone whose shim died (``POINTER`` in the bundles)."""

    state: str            # the zone's state directory
    netns: str | None     # the pod netns the zone's NIC is joined to
    pid: int = 0          # QEMU's

    def write(self, bundle: str) -> None:
        path = os.path.join(bundle, POINTER)
        temp = path + ".tmp"
        with open(temp, "w") as f:
            json.dump({"state": self.state, "netns": self.netns, "pid": self.pid}, f)
        os.replace(temp, path)

    @classmethod
    def read(cls, bundle: str) -> ZoneRecord | None:
        try:
            with open(os.path.join(bundle, POINTER)) as f:
                document = json.load(f)
            return cls(str(document["state"]), document.get("netns"), int(document.get("pid") or 0))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _kernel_and_initrd(config: ShimConfig) -> tuple[str, str]:
    kernel = config.kernel or str(images.default_kernel_image())
    initrd = config.initrd or str(images.default_initrd())
    return kernel, initrd


def zone_document(pod: PodSandbox, network: dict[str, Any] | None, grace: float) -> dict[str, Any]:
    """The pod zone's config: its identity, network and sysctls; no containers; it outlives them. (``host.launch``
    adds the kernel's addons disk, pinned, and validates it with the zone's own parser.)"""
    document: dict[str, Any] = {
        "version": 1,
        "name": pod.zone_name,
        "hostname": pod.hostname,
        "disks": [],
        "containers": [],
        "options": {"poweroff_on_exit": False, "shutdown_grace": grace},
    }
    if network is not None:
        document["network"] = network
    if pod.sysctls:
        document["sysctls"] = dict(pod.sysctls)
    return document


class PodZone:
    """One running pod zone: its QEMU (``backend``), its IDM link, its pod NIC."""

    def __init__(self, zone: ZoneDir, backend: Backend, process: subprocess.Popen[bytes], netns: str | None,
                 link: ZoneLink, ready: ZoneInfo) -> None:
        self.zone = zone
        self.backend = backend
        self.process = process
        self.netns = netns
        self.link = link
        self.ready = ready
        self.timings: dict[str, float] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def record(self) -> ZoneRecord:
        return ZoneRecord(str(self.zone.path), self.netns, self.pid)

    # --- boot --------------------------------------------------------------------------------------------
    @classmethod
    def boot(cls, config: ShimConfig, pod: PodSandbox) -> PodZone:
        from host.launch import create_and_boot
        from host.pod.network import PodDns, connect_zone_nic, disconnect_zone_nic

        started = time.monotonic()
        kernel_layout, initrd_file = _kernel_and_initrd(config)
        definition = ZoneDef(name=pod.zone_name, kernel_image=kernel_layout, initrd=initrd_file,
                             memory_mib=config.memory_mib, vcpus=config.vcpus, backend=config.hypervisor,
                             cmdline_extra=list(config.kernel_args))
        root = Path(config.state_dir)
        stale = ZoneDir(root, pod.zone_name)
        if stale.path.exists():
            if stale.is_running():
                raise ZoneBootError(f"pod {pod.id}: zone {pod.zone_name} already runs (QEMU pid {stale.pid()})")
            stale.remove()   # left by a shim that died; its QEMU is gone
        if config.accel:
            os.environ["ZONE_ACCEL"] = config.accel   # host.backends.accel reads it
        nic = None
        zone: ZoneDir | None = None
        process: subprocess.Popen[bytes] | None = None
        link: ZoneLink | None = None
        try:
            if pod.netns is not None:
                dns = PodDns.from_file(pod.resolv_conf) if pod.resolv_conf else None
                nic = connect_zone_nic(pod.netns, dns=dns)
            document = zone_document(pod, nic.network.zone_config() if nic is not None else None,
                                     config.stop_timeout)
            prepared = time.monotonic()
            try:
                zone, backend = create_and_boot(definition, daemonize=False, root=root, document=document,
                                                nics=[nic] if nic is not None else [])
            except HostError as e:
                raise ZoneBootError(f"zone {pod.zone_name} did not start: {e}") from e
            if nic is not None:
                nic.close()   # QEMU holds the tap now; it goes when QEMU does
            process = getattr(backend, "process", None)
            if process is None:
                raise ZoneBootError(f"zone {pod.zone_name}: the {config.hypervisor} backend gave no VMM process")
            zone.update_runtime(netns=pod.netns)
            link = cls._connect(zone, process, started + config.boot_timeout)
            ready = cls._ready(zone, process, link, started + config.boot_timeout)
            timings = {"zone_prepare": prepared - started, "zone_boot": time.monotonic() - prepared}
            log.info("zone %s ready: network and config %.2f s, QEMU start to zone.ready %.2f s (pid %d)",
                     pod.zone_name, timings["zone_prepare"], timings["zone_boot"], process.pid)
            zone.update_runtime(timings=timings)
            booted = cls(zone, backend, process, pod.netns, link, ready)
            booted.timings = timings
            return booted
        except BaseException:
            if link is not None:
                with contextlib.suppress(Exception):
                    link.close()
            if process is not None:
                _kill(process)
            if pod.netns is not None:
                with contextlib.suppress(Exception):
                    disconnect_zone_nic(pod.netns, nic=nic)
            elif nic is not None:
                nic.close()
            if zone is not None:
                _log_console(zone)
                zone.remove()
            raise

    @staticmethod
    def _connect(zone: ZoneDir, process: subprocess.Popen[bytes], deadline: float) -> ZoneLink:
        try:
            return ZoneLink.open(zone, timeout=max(deadline - time.monotonic(), 1.0))
        except (HostError, IdmError) as e:
            raise ZoneBootError(_not_up(zone, process, str(e))) from e

    @staticmethod
    def _ready(zone: ZoneDir, process: subprocess.Popen[bytes], link: ZoneLink, deadline: float) -> ZoneInfo:
        """PID 1's ``zone.ready``. A boot phase that failed (PID 1 goes on and reports it) fails the pod:
        a zone without its network or disks is not the pod that was asked for."""
        ready = link.hello
        if not ready.get("ready"):
            try:
                ready = wait_ready(link, zone, max(deadline - time.monotonic(), 1.0))
            except (HostError, IdmError) as e:
                raise ZoneBootError(_not_up(zone, process, str(e))) from e
        errors = [f"{e.get('phase')}: {e.get('error')}" for e in ready.get("errors") or [] if isinstance(e, dict)]
        if errors:
            raise ZoneBootError(f"zone {zone.name} booted with errors: {'; '.join(errors)}")
        return ready

    # --- life --------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def console_reason(self) -> str:
        return last_console_line(self.zone)

    def stop(self, timeout: float) -> str:
        """zone.shutdown, QEMU killed after ``timeout``; then the NIC's tc filters and the state go.
        Returns how the zone ended."""
        from host.pod.network import disconnect_zone_nic

        how = "already stopped"
        if self.alive():
            how = "clean shutdown"
            try:
                if timeout > 0:
                    self.link.shutdown("the pod is stopping", timeout=min(timeout, 5.0))
            except (HostError, IdmError) as e:
                log.warning("zone %s did not accept zone.shutdown (%s); killing it", self.zone.name, e)
                timeout = 0.0
            if not self.wait(timeout):
                how = f"killed after {timeout:.0f} s"
                _kill(self.process)
        with contextlib.suppress(Exception):
            self.link.close()
        if self.netns is not None:
            try:
                disconnect_zone_nic(self.netns)
            except HostError as e:
                log.warning("zone %s: %s", self.zone.name, e)
        self.zone.remove()
        return how


def _not_up(zone: ZoneDir, process: subprocess.Popen[bytes], detail: str) -> str:
    console = last_console_line(zone)
    if console == "no console output":
        console += f" (QEMU: {last_line(zone.path / 'qemu.log')})"
    if process.poll() is not None or _wait_exit(process, 2.0):
        return f"zone {zone.name} stopped during boot (QEMU exit {process.returncode}); console: {console}"
    return f"zone {zone.name} did not become ready ({detail}); console: {console}"


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _log_console(zone: ZoneDir, lines: int = 30) -> None:
    """A zone that failed to boot: the end of its console and of QEMU's output go to the shim's log (which
    containerd keeps), as its state directory is removed."""
    for name, path in (("console", zone.console_log), ("qemu", zone.path / "qemu.log")):
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines()[-lines:]:
                log.warning("zone %s %s: %s", zone.name, name, line)


def cleanup_zone(record: ZoneRecord) -> None:
    """After the shim died: kill its QEMU (if it is still the zone's), drop the NIC's tc filters, remove the
    state directory. Idempotent."""
    from host.pod.network import disconnect_zone_nic

    state = Path(record.state)
    zone = ZoneDir(state.parent, state.name)
    pid = zone.pid() or record.pid
    if pid and pid_alive(pid) and _is_qemu_of(pid, zone):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if record.netns is not None:
        with contextlib.suppress(HostError):
            disconnect_zone_nic(record.netns)
    zone.remove()


def _is_qemu_of(pid: int, zone: ZoneDir) -> bool:
    """Whether ``pid`` is still this zone's QEMU (a reused pid must never be killed)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(zone.idm_socket).encode() in argv
