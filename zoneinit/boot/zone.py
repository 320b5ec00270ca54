"""The state PID 1's boot phases share (``Zone``), filled in phase by phase, and how it reports.

A phase that fails is reported (one console line, an IDM ``zone.error`` event, an entry in the ready
event's ``errors``) and the boot goes on as far as it can, so the host can always ask what went wrong.
Everything heavy (the IDM server, Styrolite's runtime, lzma/zstandard...) is imported by the phase that needs
it, and the config parser, disk hashing and the network's rtnetlink client run in forked children; the types
below are imported for annotations only.
"""

from __future__ import annotations

import contextlib
import os
from collections import namedtuple
from collections.abc import Iterator

from styrolite.syscalls import LINUX, Syscalls
from zoneinit.boot.cmdline import ZoneCmdline
from zoneinit.boot.timing import BootTimeline, Phase
from zoneinit.config.plan import ContainerPlan, LaunchPlan
from zoneinit.console import ConsoleLog
from zoneinit.metrics import process_memory
from zoneinit.modules.policy import ZoneModules
from zoneinit.mounts.early import EARLY_MOUNTS, EarlyMount
from zoneinit.mounts.table import MountTable
from zoneinit.supervisor.loop import Supervisor

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from styrolite.api import Runtime
    from zoneinit.containers.manager import ContainerManager, ManagedContainer
    from zoneinit.containers.pod import Pod
    from zoneinit.idm.service import IdmService
    from zoneinit.mounts.disks import DiskStore
    from zoneinit.supervisor.shutdown import Shutdown

VERSION = "0.1.0"


# Where the zone keeps what (every field a path, str): a value type, cheaper for PID 1 than a frozen dataclass.
# typing.NamedTuple's class syntax would import typing into PID 1: the same tuple from collections.
_ZONE_PATHS = {
    "addons": "/run/zone/addons",
    "extensions": "/run/zone/extensions",
    "firmware": "/run/zone/firmware",
    "images": "/run/zone/images",
    "bundles": "/run/zone/bundles",
    "scratch": "/run/zone/scratch",
    "net": "/run/zone/net",
    "workload_netns": "/run/zone/netns/workload",
    "idm_socket": "/run/zone/idm.sock",
    "pod": "/run/zone/pod",               # the pod's shared namespaces and volumes
    "styrolite_state": "/run/styrolite",
    "modules_base": "/lib/modules",
    "cmdline": "/proc/cmdline",
}
ZonePaths = namedtuple("ZonePaths", list(_ZONE_PATHS), defaults=list(_ZONE_PATHS.values()))


class NoPowerOff:
    """The seam, minus reboot(2): when we are not PID 1 (tests, a debug run) shutdown must not power off."""

    def __init__(self, inner: Syscalls, log: ConsoleLog) -> None:
        self._inner, self._log = inner, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def reboot(self, cmd: int) -> None:
        self._log.info(f"not PID 1: skipping reboot({cmd:#x})")


class Zone:
    """Everything the boot phases (``zoneinit.boot.phases``) share; created empty, filled in as they run."""

    def __init__(self, *, sys: Syscalls = LINUX, paths: ZonePaths | None = None, pid1: bool | None = None,
                 console: bool = True, early: tuple[EarlyMount, ...] = EARLY_MOUNTS) -> None:
        self.paths = paths or ZonePaths()
        self.pid1 = os.getpid() == 1 if pid1 is None else pid1
        self.use_console = console
        self.early = early
        self.log = ConsoleLog()
        self.sys: Syscalls = sys if self.pid1 else NoPowerOff(sys, self.log)  # type: ignore[assignment]
        self.timeline = BootTimeline(memory=process_memory)   # what each phase leaves resident in PID 1
        self.mounts = MountTable(sys)
        self.supervisor = Supervisor(self.log)
        self.modules = ZoneModules(sys, self.log, self.report)
        self.mounts.load_fstype = self.modules.load_fstype
        self.cmdline = ZoneCmdline()
        self.plan = LaunchPlan()
        self.errors: list[dict[str, str]] = []
        self.idm: IdmService | None = None
        self.containers: ContainerManager | None = None
        self.disks: DiskStore | None = None
        self.pod: Pod | None = None
        self.shutdown: Shutdown | None = None
        self.name_files: dict[str, str] = {}      # resolv.conf, hosts... written by the network phase
        self.workload_netns: str | None = None    # the pinned network namespace the containers join
        self.extensions: list[dict[str, Any]] = []  # mounted system extensions (zone.info, zone-level exec)
        self.ready = False
        self._stamp_stage0()

    def _stamp_stage0(self) -> None:
        """What happened before PID 1's code ran: ``stage0`` from the kernel's /init (build/stage0, which stamps
        ZONE_STAGE0_NS) through the exec and the interpreter's start to the program's entry (ZONE_ENTRY_NS), then
        ``imports`` up to here. Without the entry stamp, stage0 runs up to here."""
        stage0, entry = (os.environ.get(key, "") for key in ("ZONE_STAGE0_NS", "ZONE_ENTRY_NS"))
        started = self.timeline.init_started
        if not stage0.isdigit():
            return
        end = int(entry) / 1e9 if entry.isdigit() and int(entry) >= int(stage0) else started
        self.timeline.phases.append(Phase("stage0", int(stage0) / 1e9, end - int(stage0) / 1e9))
        if end != started:
            self.timeline.phases.append(Phase("imports", end, started - end))

    # --- reporting -----------------------------------------------------------------------------------
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

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """An IDM event, once the server runs (before that, the console line is all there is)."""
        if self.idm is not None:
            self.idm.emit(event, payload)

    def info(self) -> dict[str, Any]:
        """The ``zone.info`` payload (and most of ``zone.hello``'s and ``zone.ready``'s)."""
        from zoneinit.metrics import pid1_resources, process_rss

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
            "extensions": self.extensions,
            "components": self.plan.components,
            "init_rss": process_rss(),
            "init_memory": process_memory(),
            "pid1": self.pid1,
            **pid1_resources(),
        }

    def ready_payload(self) -> dict[str, Any]:
        payload = self.info()
        main = self.plan.main_container()
        payload["main"] = main.id if main else None
        return payload

    # --- power ---------------------------------------------------------------------------------------
    def request_shutdown(self, action: str, reason: str) -> None:
        if self.shutdown is None:
            raise RuntimeError("shutdown requested before the supervisor phase set it up")
        if not self.shutdown.in_progress:
            self.emit("zone.shutdown", {"action": action, "reason": reason})
        self.shutdown.request(action, reason)

    # --- containers ----------------------------------------------------------------------------------
    def container_manager(self) -> ContainerManager:
        """The zone's containers (made on first use: the IDM phase, or the containers phase without IDM)."""
        if self.containers is None:
            from zoneinit.containers.manager import ContainerManager

            self.containers = ContainerManager(
                self.supervisor, prepare_bundle=self._prepare_bundle, remove_bundle=self._remove_bundle,
                check=self._check_plan, runtime_factory=self._runtime, emit=self.emit, log=self.log,
                echo_output=self.cmdline.debug,
            )
            self.containers.on_main_exit.append(self._main_exited)
            if self.shutdown is not None:
                self.shutdown.containers = self.containers
        return self.containers

    def _runtime(self) -> Runtime:
        from styrolite.api import Runtime

        return Runtime(state_root=self.paths.styrolite_state)

    def disk_store(self) -> DiskStore:
        if self.disks is None:
            from zoneinit.mounts.disks import DiskStore

            self.disks = DiskStore(self.plan.disks, self.mounts, self.paths.images)
        return self.disks

    def pod_state(self) -> Pod:
        """The zone's pod (shared namespaces, volumes), made when its first pod container is."""
        if self.pod is None:
            from zoneinit.containers.pod import Pod

            self.pod = Pod(self.paths.pod, self.workload_netns, self.plan.hostname or self.plan.name, self.mounts,
                           self.sys, sysctls=self.plan.sysctls)
        return self.pod

    def _hostname(self) -> str:
        hostname = self.plan.network.hostname if self.plan.network else None
        return hostname or self.plan.name

    def _check_plan(self, plan: ContainerPlan) -> None:
        from zoneinit.containers.bundle import check_plan

        if plan.oci is not None or plan.volumes:
            check_plan(plan, self.disk_store(), self.pod_state(), hostname=self._hostname(),
                       name_files=self.name_files, netns=self.workload_netns)

    def _prepare_bundle(self, plan: ContainerPlan) -> str:
        from zoneinit.containers.bundle import prepare_bundle

        pod = self.pod_state() if plan.oci is not None or plan.volumes else None
        return prepare_bundle(plan, self.disk_store(), self.mounts, bundles=self.paths.bundles,
                              scratch=self.paths.scratch, hostname=self._hostname(),
                              name_files=self.name_files, netns=self.workload_netns, pod=pod, warn=self.log.warn)

    def _remove_bundle(self, container_id: str) -> None:
        from zoneinit.containers.bundle import remove_bundle

        remove_bundle(container_id, self.mounts, bundles=self.paths.bundles, scratch=self.paths.scratch,
                      pod=self.pod)

    def _main_exited(self, container: ManagedContainer) -> None:
        if self.plan.poweroff_on_exit and self.shutdown is not None:
            reason = f"main container {container.id} exited with {container.exit_code}"
            # from the loop's next turn: whatever reported the exit (a failed create...) finishes first
            self.supervisor.call_later(0, lambda: self.request_shutdown("poweroff", reason))
