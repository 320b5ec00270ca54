"""The zone's PID 1: boot the zone (docs/boot.md), then supervise it forever.

    main()  ->  ZoneInit().boot()  ->  ZoneInit().supervise()   (never returns when it is PID 1)

Every boot phase is stamped on CLOCK_BOOTTIME and guarded: a failing phase is reported (one console line,
an IDM ``zone.error`` event, an entry in the ready event's ``errors``) and the boot goes on as far as it
can, so the host can always ask the zone what went wrong. Heavy modules (pyroute2, hashlib, Styrolite's
runtime, the IDM server) are imported inside the phases that need them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from styrolite.syscalls import LINUX, Syscalls
from zoneinit.boot.cmdline import ZoneCmdline, read_cmdline
from zoneinit.boot.timing import BootTimeline, Phase
from zoneinit.config.plan import LaunchPlan
from zoneinit.console import ConsoleLog, attach_console
from zoneinit.mounts.early import (
    EARLY_MOUNTS,
    EarlyMount,
    early_mounts,
    enable_cgroup_controllers,
    make_root_pivotable,
    root_is_rootfs,
)
from zoneinit.mounts.table import MountTable
from zoneinit.supervisor.loop import SHUTDOWN_SIGNALS, Supervisor

VERSION = "0.1.0"
IDM_PORT_NAME = "zone.idm"
DEVICE_WAIT = 3.0   # seconds to wait for a device node that a just-loaded module creates
# Loaded when a mount first needs them, not at boot (a zone that never mounts erofs never loads it).
LAZY_MODULES = frozenset({"squashfs", "erofs", "overlay", "loop", "ext4", "isofs", "vfat", "fat"})
FSTYPE_MODULES = {"iso9660": "isofs"}


@dataclass(frozen=True)
class ZonePaths:
    run: str = "/run/zone"
    addons: str = "/run/zone/addons"
    config: str = "/run/zone/config"
    images: str = "/run/zone/images"
    bundles: str = "/run/zone/bundles"
    scratch: str = "/run/zone/scratch"
    net: str = "/run/zone/net"
    workload_netns: str = "/run/zone/netns/workload"
    idm_socket: str = "/run/zone/idm.sock"
    styrolite_state: str = "/run/styrolite"
    modules_base: str = "/lib/modules"
    cmdline: str = "/proc/cmdline"


class _NoPowerOff:
    """The seam, minus reboot(2): when we are not PID 1 (tests, a debug run) shutdown must not power off."""

    def __init__(self, inner: Syscalls, log: ConsoleLog) -> None:
        self._inner, self._log = inner, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def reboot(self, cmd: int) -> None:
        self._log.info(f"not PID 1: skipping reboot({cmd:#x})")


def wait_for_path(path: str, timeout: float = DEVICE_WAIT) -> bool:
    """Device nodes appear asynchronously after a module loads (devtmpfs); poll briefly."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def set_oom_score_adj(value: int = -1000) -> None:
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
        f.write(str(value))


def on_xen() -> bool:
    """Booted as a Xen guest (the drivers to load differ: xen_netfront, xen_evtchn...)."""
    try:
        with open("/sys/hypervisor/type", encoding="ascii") as f:
            return f.read().strip() == "xen"
    except OSError:
        return False


class ZoneInit:
    def __init__(self, *, sys: Syscalls = LINUX, paths: ZonePaths | None = None, pid1: bool | None = None,
                 console: bool = True, early: tuple[EarlyMount, ...] = EARLY_MOUNTS) -> None:
        self.paths = paths or ZonePaths()
        self.pid1 = os.getpid() == 1 if pid1 is None else pid1
        self.use_console = console
        self.early = early
        self.log = ConsoleLog()
        self.sys = sys if self.pid1 else _NoPowerOff(sys, self.log)
        self.timeline = BootTimeline()
        self.mounts = MountTable(sys)
        self.mounts.load_fstype = self._load_fstype
        self.supervisor = Supervisor(self.log)
        self.cmdline = ZoneCmdline()
        self.plan = LaunchPlan()
        self.errors: list[dict[str, str]] = []
        self.server: Any = None
        self.containers: Any = None
        self.disks: Any = None
        self.shutdown: Any = None
        self.module_loader: Any = None
        self.boot_index: Any = None
        self.addons_index: Any = None
        self.name_files: dict[str, str] = {}
        self.workload_netns: str | None = None  # the pinned network namespace the containers join
        self._idm_channel: str | None = None
        self.ready = False
        self._stamp_stage0()

    # --- phases ------------------------------------------------------------------------------------
    def _stamp_stage0(self) -> None:
        raw = os.environ.get("ZONE_STAGE0_NS", "")
        if raw.isdigit():
            self.timeline.phases.append(Phase("stage0", int(raw) / 1e9, self.timeline.init_started - int(raw) / 1e9))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the phase; an error in it is reported and the boot continues."""
        try:
            with self.timeline.phase(name):
                yield
        except Exception as e:
            self.report(f"boot phase {name}", e)

    def report(self, what: str, error: BaseException) -> None:
        from styrolite.errors import describe

        self.errors.append({"phase": what, "error": describe(error)})
        self.log.error(what, error)

    def boot(self) -> None:
        with self.phase("early-mounts"):
            if self.pid1 and root_is_rootfs():
                make_root_pivotable(self.sys)
            early_mounts(self.mounts, mounts=self.early)
            if self.pid1 and self.use_console:
                attach_console()
            enable_cgroup_controllers()
            try:
                set_oom_score_adj(-1000)
            except OSError as e:  # needs CAP_SYS_RESOURCE: a zone has it, a test host may not
                self.log.warn(f"oom_score_adj -1000: {e.strerror}")
        with self.phase("cmdline"):
            self.cmdline = read_cmdline(self.paths.cmdline)
            self.log.debug = self.cmdline.debug
            for key in self.cmdline.unknown:
                self.log.warn(f"unknown kernel command line key {key}")
        with self.phase("supervisor"):
            self.supervisor.install_signals()
            self._make_shutdown()
        with self.phase("boot-modules"):
            self._load_boot_modules()
        with self.phase("idm"):
            self._start_idm(wait=False)
        with self.phase("config"):
            self._read_config()
        with self.phase("addons"):
            self._mount_addons()
        with self.phase("modules"):
            self._load_modules([*self.cmdline.modules, *self.plan.modules])
        if not self._idm_channel and self.cmdline.idm:
            with self.phase("idm-retry"):
                self._start_idm(wait=True)
        with self.phase("hostname"):
            if self.plan.hostname:
                self.sys.sethostname(self.plan.hostname)
        with self.phase("netns"):
            self._create_workload_netns()
        if self.plan.network is not None:
            with self.phase("network"):
                self._configure_network()
        with self.phase("containers"):
            self._start_containers()
        self.timeline.mark("ready")
        self.ready = True
        self.log.info(f"ready in {self.timeline.phases[-1].start:.3f}s since kernel start"
                      + (f" with {len(self.errors)} error(s)" if self.errors else ""))
        if self.server is not None:
            self.server.emit("zone.ready", self.ready_payload())

    # --- modules and addons ----------------------------------------------------------------------------
    def _loader(self) -> Any:
        if self.module_loader is None:
            from zoneinit.modules.loader import ModuleLoader

            self.module_loader = ModuleLoader.from_kernel(self.sys)
        return self.module_loader

    def _load_boot_modules(self) -> None:
        from zoneinit.modules.dep import ModuleIndex, boot_module_names, modules_root

        root = modules_root(self.paths.modules_base)
        if not os.path.exists(os.path.join(root, "modules.dep")):
            return
        from zoneinit.errors import ModuleError
        from zoneinit.modules.loader import is_no_device

        self.boot_index = ModuleIndex.load(root)
        loaded: list[str] = []
        absent: list[str] = []
        listed = boot_module_names(root, self.boot_index)
        needed_by_others = {dep for name in listed for dep in self.boot_index.deps.get(name, [])}
        # the modules asked for (not mere dependencies), minus those that wait (their deps come with them)
        for name in [n for n in listed if n not in needed_by_others and self._boot_module_wanted(n)]:
            try:
                results = self._loader().load(self.boot_index, [name])
            except ModuleError as e:
                if not is_no_device(e):
                    self.report(f"boot module {name}", e)
                else:
                    absent.append(name)
                continue
            loaded += [r.name for r in results if r.outcome == "loaded"]
        self.log.info(f"boot modules: {' '.join(loaded) or 'none'}"
                      + (f" (no device for {' '.join(absent)})" if absent else ""))

    def _boot_module_wanted(self, name: str) -> bool:
        """File system modules wait until a mount needs them (MountTable.load_fstype); Xen drivers are only
        worth loading under Xen. Everything else in the boot set is loaded at once."""
        if name in LAZY_MODULES:
            return False
        if name.startswith("xen"):
            return on_xen()
        return True

    def _load_fstype(self, fstype: str) -> bool:
        """Load the module of a file system the kernel does not know yet (from addons, else the initramfs)."""
        name = FSTYPE_MODULES.get(fstype, fstype)
        for index in (self.boot_index, self.addons_index):
            if index is not None and name in index:
                try:
                    self._loader().load(index, [name])
                    self.log.info(f"module {name} loaded for a {fstype} mount")
                    return True
                except Exception as e:
                    self.report(f"load module {name} for {fstype}", e)
                    return False
        return False

    def _mount_addons(self) -> None:
        """The addons image: the config's ``addons`` disk (verified like every disk), else zone.addons."""
        from zoneinit.modules.dep import ModuleIndex, find_addons_modules

        if self.plan.addons and self.disks is not None and self.plan.addons in self.disks.disks:
            addons_dir = self.disks.path(self.plan.addons, target=self.paths.addons)
        elif self.cmdline.addons:
            from zoneinit.mounts.images import mount_image

            if not wait_for_path(self.cmdline.addons):
                raise FileNotFoundError(f"addons device {self.cmdline.addons} did not appear")
            mount_image(self.mounts, self.cmdline.addons, self.paths.addons)
            addons_dir = self.paths.addons
        else:
            return
        root = find_addons_modules(addons_dir)
        if root is not None:
            self.addons_index = ModuleIndex.load(root)
        firmware = os.path.join(addons_dir, "firmware")
        if os.path.isdir(firmware):
            with contextlib.suppress(OSError), open("/sys/module/firmware_class/parameters/path", "w") as f:
                f.write(firmware)

    def _load_modules(self, names: list[str]) -> None:
        """Load by name from the addons tree (or the initramfs one); each failure is reported on its own."""
        from zoneinit.errors import ModuleError

        for name in names:
            index = next((i for i in (self.addons_index, self.boot_index) if i is not None and name in i), None)
            try:
                if index is None:
                    raise ModuleError(f"module {name!r} is in neither the addons nor the initramfs modules")
                results = self._loader().load(index, [name])
                self.log.info(f"module {name}: " + ", ".join(f"{r.name} {r.outcome}" for r in results))
            except ModuleError as e:
                self.report(f"load module {name}", e)

    # --- IDM -------------------------------------------------------------------------------------------
    def _start_idm(self, *, wait: bool, channel: str | None = None) -> None:
        channel = channel or self.cmdline.idm
        if self.server is None:
            self._make_server()
        if self._idm_channel:
            return
        if channel == "vchan":  # Xen: serve a vchan to dom0 (idm/vchan.py), its drivers come from addons
            if wait:
                self._load_modules(["xen_evtchn", "xen_gntalloc"])
                from idm.vchan import VchanTransport

                self.server.add_transport(VchanTransport.serve(), name="host", persistent=True)
                self._idm_channel = channel
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
        self._idm_channel = channel
        self.log.info(f"IDM on {channel}")

    def _make_server(self) -> None:
        from idm.server import IdmServer

        server = IdmServer(info=self.info, log=self.log.info)
        self.server = server
        self.supervisor.add_reader(server.fileno(), lambda _fd: server.service())
        self.supervisor.timed_services.append((server.timeout, server.service))
        self.log.event_sink = lambda event, payload: server.emit(event, payload)
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(self.paths.idm_socket), exist_ok=True)
            server.listen_unix(self.paths.idm_socket)
        self._make_containers()
        from zoneinit.idm.handlers import ZoneHandlers

        ZoneHandlers(server, self.supervisor, self.containers, info=self.info,
                  request_shutdown=self.request_shutdown).register()

    # --- config, disks, network, containers ---------------------------------------------------------
    def _read_config(self) -> None:
        from zoneinit.mounts.configdisk import read_plan
        from zoneinit.mounts.disks import DiskStore

        device = self.cmdline.config
        if device:
            if not wait_for_path(device):
                from zoneinit.errors import ConfigDiskError

                raise ConfigDiskError(f"config disk {device} did not appear")
            from zoneinit.isolate import in_child

            self.plan = in_child(read_plan, device)  # json, re, ipaddress, hashlib stay out of PID 1
        else:
            self.log.info("no zone.config on the kernel command line: no containers to start")
        if self.cmdline.debug:
            self.plan.debug = True
        self.log.debug = self.plan.debug
        if self.cmdline.poweroff_on_exit is not None:
            self.plan.poweroff_on_exit = self.cmdline.poweroff_on_exit
        if self.shutdown is not None:
            self.shutdown.grace = self.plan.shutdown_grace
        self.disks = DiskStore(self.plan.disks, self.mounts, self.paths.images)

    def _create_workload_netns(self) -> None:
        """The network namespace the containers share (never PID 1's own), made and pinned in a helper."""
        from zoneinit.isolate import in_child
        from zoneinit.network import create_workload_namespace

        self.workload_netns = in_child(create_workload_namespace, self.paths.workload_netns, self.sys)

    def _configure_network(self) -> None:
        """Load the NIC driver if the interface is missing (virtio_net lives in addons), then configure the
        links in a forked child: pyroute2 (and the multiprocessing, pickle... it imports) never becomes
        resident in PID 1; addresses and routes are kernel state, the name files are on disk."""
        from zoneinit.isolate import in_child
        from zoneinit.network import configure_network

        plan = self.plan.network
        for iface in plan.interfaces:
            self._ensure_interface(iface.name)
        self.name_files = in_child(configure_network, plan, self.paths.net, self.workload_netns, self.sys)

    def _ensure_interface(self, name: str) -> None:
        if os.path.exists(f"/sys/class/net/{name}"):
            return
        driver = "xen_netfront" if on_xen() else "virtio_net"
        self._load_modules([driver])
        if not wait_for_path(f"/sys/class/net/{name}"):
            from zoneinit.errors import ZoneInitError

            raise ZoneInitError(f"network interface {name} did not appear (driver {driver})")

    def _make_containers(self) -> None:
        if self.containers is not None:
            return
        from zoneinit.containers.manager import ContainerManager

        def emit(event: str, payload: dict[str, Any]) -> None:
            if self.server is not None:
                self.server.emit(event, payload)

        self.containers = ContainerManager(
            self.supervisor, prepare_bundle=self._prepare_bundle, remove_bundle=self._remove_bundle,
            runtime_factory=self._runtime, emit=emit, log=self.log, echo_output=self.cmdline.debug,
        )
        self.containers.on_main_exit.append(self._main_exited)
        if self.shutdown is not None:
            self.shutdown.containers = self.containers

    def _runtime(self) -> Any:
        from styrolite.api import Runtime

        return Runtime(state_root=self.paths.styrolite_state)

    def _prepare_bundle(self, plan: Any) -> str:
        from zoneinit.containers.bundle import prepare_bundle

        if self.disks is None:
            from zoneinit.mounts.disks import DiskStore

            self.disks = DiskStore([], self.mounts, self.paths.images)
        hostname = self.plan.network.hostname if self.plan.network else None
        return prepare_bundle(plan, self.disks, self.mounts, bundles=self.paths.bundles, scratch=self.paths.scratch,
                              hostname=hostname or self.plan.name, name_files=self.name_files,
                              netns=self.workload_netns)

    def _remove_bundle(self, container_id: str) -> None:
        from zoneinit.containers.bundle import remove_bundle

        remove_bundle(container_id, self.mounts, bundles=self.paths.bundles, scratch=self.paths.scratch)

    def _start_containers(self) -> None:
        if not self.plan.containers:
            return
        self._make_containers()
        main = self.plan.main_container()
        if main is not None:
            main.main = True
        for plan in self.plan.containers:
            container = self.containers.launch(plan)
            if container is None:
                self.errors.append({"phase": f"container {plan.id}",
                                    "error": self.containers.containers[plan.id].error or "failed"})

    def _main_exited(self, container: Any) -> None:
        if self.plan.poweroff_on_exit and self.shutdown is not None:
            reason = f"main container {container.id} exited with {container.exit_code}"
            # from the loop's next turn: whatever reported the exit (a failed create...) finishes first
            self.supervisor.call_later(0, lambda: self.request_shutdown("poweroff", reason))

    # --- shutdown ----------------------------------------------------------------------------------
    def _make_shutdown(self) -> None:
        from zoneinit.supervisor.shutdown import Shutdown

        class _NoContainers:
            def running(self) -> list[str]:
                return []

            def signal(self, *_args: Any, **_kwargs: Any) -> None:
                return None

        self.shutdown = Shutdown(self.supervisor, self.containers or _NoContainers(), self.mounts, sys=self.sys,
                                 log=self.log, grace=self.plan.shutdown_grace)
        self.shutdown.before_power_off.append(self._announce_power_off)
        for signum in SHUTDOWN_SIGNALS:
            self.supervisor.add_signal_handler(signum, self._on_shutdown_signal)

    def _on_shutdown_signal(self, signum: int) -> None:
        self.request_shutdown("poweroff", signal.Signals(signum).name)

    def request_shutdown(self, action: str, reason: str) -> None:
        if self.server is not None and not self.shutdown.in_progress:
            self.server.emit("zone.shutdown", {"action": action, "reason": reason})
        self.shutdown.request(action, reason)

    def _announce_power_off(self, action: str, reason: str) -> None:
        """Let the IDM link carry the last events before the power goes.

        The main container's exit event is waited for until the host acknowledges it, up to
        ``plan.exit_ack_wait`` seconds: a main container that exits at once must not power the zone off
        before the host has even connected and learnt its exit code."""
        server = self.server
        if server is None:
            return
        deadline = time.monotonic() + max(self.plan.exit_ack_wait, 0.0)
        flush_deadline = time.monotonic() + 2.0
        while True:
            server.service()
            pending = 0
            for conn in server.connections:
                with contextlib.suppress(Exception):
                    conn.flush()
                pending += conn.pending_output
            unacked = sum(1 for msg in server.unacked_events()
                          if msg.type == "container.exit" and (msg.payload or {}).get("main"))
            now = time.monotonic()
            if (not unacked or now >= deadline) and (not pending or now >= flush_deadline):
                return
            timeout = server.timeout()
            self.supervisor.selector.select(0.02 if timeout is None else min(timeout, 0.02))
            self.supervisor.reap()

    # --- reporting -----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        from zoneinit.metrics import pid1_resources, process_memory, process_rss

        uname = os.uname()
        return {
            "zone": self.plan.name,
            "init_version": VERSION,
            "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
            "hostname": uname.nodename,
            "ready": self.ready,
            "boot": self.timeline.as_dict(),
            "errors": list(self.errors),
            "containers": self.containers.list() if self.containers is not None else [],
            "init_rss": process_rss(),
            "init_memory": process_memory(),
            "pid1": self.pid1,
            **pid1_resources(),
        }

    def ready_payload(self) -> dict[str, Any]:
        payload = self.info()
        payload["main"] = (self.plan.main_container().id if self.plan.main_container() else None)
        return payload

    # --- the loop --------------------------------------------------------------------------------------
    def supervise(self) -> None:
        """PID 1: loop forever. Not PID 1: return once a shutdown has completed."""
        while True:
            try:
                self.supervisor.run(until=lambda: not self.pid1 and self.shutdown is not None
                                    and self.shutdown.state == "done")
            except BaseException as e:  # PID 1 must survive even KeyboardInterrupt/SystemExit
                with contextlib.suppress(BaseException):
                    self.report("supervisor", e)
                continue
            if not self.pid1:
                return


def main() -> int:
    if os.getpid() != 1:
        # the boot mounts over /run, /tmp, /dev...: on a host that would damage the running system
        print("zone-init: refusing to boot: not PID 1 (this is the zone's init, run by the kernel)",
              file=sys.stderr)
        return 2
    zone = ZoneInit()
    try:
        zone.boot()
    except BaseException as e:  # the boot guards each phase; this is the last line of defence
        with contextlib.suppress(BaseException):
            zone.report("boot", e)
    zone.supervise()
    return 0


if __name__ == "__main__":
    sys.exit(main())
