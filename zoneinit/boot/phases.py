"""PID 1's boot, phase by phase, in the order of docs/boot.md; then supervision, forever.

Each phase is a small function of the ``Zone``; ``boot`` times each one on CLOCK_BOOTTIME and, when one
fails, reports it and goes on (``Zone.phase``). A phase imports what it needs when it runs, so
``import zoneinit.boot.phases`` stays cheap.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable

from zoneinit.boot.zone import Zone


def early_mounts(zone: Zone) -> None:
    """/ made pivotable, proc, sys, dev, run, tmp, cgroup2; the console on fds 0-2; cgroup controllers; PID 1
    out of the OOM killer's reach."""
    from zoneinit.console import attach_console
    from zoneinit.mounts.early import early_mounts, enable_cgroup_controllers, make_root_pivotable, root_is_rootfs

    if zone.pid1 and root_is_rootfs():
        make_root_pivotable(zone.sys)
    early_mounts(zone.mounts, mounts=zone.early)
    if zone.pid1 and zone.use_console:
        attach_console()
    enable_cgroup_controllers()
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write("-1000")
    except OSError as e:  # needs CAP_SYS_RESOURCE: a zone has it, a test host may not
        zone.log.warn(f"oom_score_adj -1000: {e.strerror}")


def cmdline(zone: Zone) -> None:
    from zoneinit.boot.cmdline import read_cmdline

    zone.cmdline = read_cmdline(zone.paths.cmdline)
    zone.log.debug = zone.cmdline.debug
    for key in zone.cmdline.unknown:
        zone.log.warn(f"unknown kernel command line key {key}")


def supervisor(zone: Zone) -> None:
    """Signals into the loop, and the shutdown sequence they (and IDM, and the main container) start."""
    from zoneinit.supervisor.loop import SHUTDOWN_SIGNALS
    from zoneinit.supervisor.shutdown import Shutdown

    zone.supervisor.install_signals()
    shutdown = Shutdown(zone.supervisor, zone.containers, zone.mounts, sys=zone.sys, log=zone.log,
                        grace=zone.plan.shutdown_grace)
    shutdown.before_power_off.append(lambda _action, _reason: _drain_idm(zone))
    zone.shutdown = shutdown
    for signum in SHUTDOWN_SIGNALS:
        zone.supervisor.add_signal_handler(signum, lambda n: zone.request_shutdown("poweroff", signal.Signals(n).name))


def _drain_idm(zone: Zone) -> None:
    if zone.idm is not None:
        zone.idm.drain_before_power_off(zone.plan.exit_ack_wait)


def boot_modules(zone: Zone) -> None:
    zone.modules.load_boot_set(zone.paths.modules_base)


def idm(zone: Zone) -> None:
    """The IDM server (the local socket at once; the host channel if its device exists now)."""
    from zoneinit.idm.service import IdmService

    zone.idm = IdmService(zone.supervisor, zone.log, zone.container_manager(), info=zone.info,
                          request_shutdown=zone.request_shutdown, socket_path=zone.paths.idm_socket,
                          disks=zone.disk_store, pod=zone.pod_state)
    zone.idm.attach_host(zone.cmdline.idm, wait=False, load_modules=zone.modules.load_named)


def config(zone: Zone) -> None:
    """The zone config from the config disk, read in a forked child: json, re, hashlib stay out of PID 1."""
    from zoneinit.mounts.disks import DiskStore

    device = zone.cmdline.config
    if device:
        from zoneinit.boot.devices import wait_for_path

        if not wait_for_path(device):
            from zoneinit.errors import ConfigDiskError

            raise ConfigDiskError(f"config disk {device} did not appear")
        from zoneinit.isolate import in_child
        from zoneinit.mounts.configdisk import read_plan

        zone.plan = in_child(read_plan, device)
    else:
        zone.log.info("no zone.config on the kernel command line: no containers to start")
    if zone.cmdline.debug:
        zone.plan.debug = True
    zone.log.debug = zone.plan.debug
    if zone.cmdline.poweroff_on_exit is not None:
        zone.plan.poweroff_on_exit = zone.cmdline.poweroff_on_exit
    if zone.shutdown is not None:
        zone.shutdown.grace = zone.plan.shutdown_grace
    zone.disks = DiskStore(zone.plan.disks, zone.mounts, zone.paths.images)


def addons(zone: Zone) -> None:
    """The addons image (the config's ``addons`` disk, verified like every disk, else ``zone.addons=``): its
    modules tree and firmware. Mounted now when the boot loads modules by name (``zone.modules=``, the config's
    ``modules``); otherwise when a module is first looked for beyond the initramfs (a NIC driver, a file system,
    a later request), so a zone that needs none never hashes the whole image (20 MB: ~1 s under QEMU TCG)."""
    if not (zone.plan.addons and zone.plan.addons in zone.disk_store().disks) and not zone.cmdline.addons:
        return
    if zone.cmdline.modules or zone.plan.modules:
        _attach_addons(zone)
    else:
        zone.modules.defer_addons(lambda: _attach_addons(zone))


def _attach_addons(zone: Zone) -> None:
    disks = zone.disk_store()
    if zone.plan.addons and zone.plan.addons in disks.disks:
        addons_dir = disks.path(zone.plan.addons, target=zone.paths.addons)
    else:
        from zoneinit.boot.devices import wait_for_path
        from zoneinit.mounts.images import mount_image

        if not wait_for_path(zone.cmdline.addons):
            raise FileNotFoundError(f"addons device {zone.cmdline.addons} did not appear")
        mount_image(zone.mounts, zone.cmdline.addons, zone.paths.addons)
        addons_dir = zone.paths.addons
    zone.modules.use_addons(addons_dir)
    _use_firmware(zone, f"{addons_dir}/firmware")


def _use_firmware(zone: Zone, firmware: str) -> None:
    """The addons' firmware on the kernel's search path. When the extensions phase already made the joined tree
    (addons mounted later than it, on first need), the addons' files are linked into that tree, which stays the
    search path (a file an extension also carries is then the extension's); otherwise the path is the addons'
    own ``firmware/``."""
    import os

    if not os.path.isdir(firmware):
        return
    try:
        if os.path.isdir(zone.paths.firmware) and os.listdir(zone.paths.firmware):
            from zoneinit.modules.firmware import link_tree

            link_tree([firmware], zone.paths.firmware)
        else:
            with open("/sys/module/firmware_class/parameters/path", "w") as f:
                f.write(firmware)
    except OSError as e:
        zone.log.warn(f"firmware from {firmware}: {e}")


def extensions(zone: Zone) -> None:
    """System extension images: each verified and mounted at /run/zone/extensions/<name>, its modules indexed
    and the ones the config asks for loaded, its firmware searched, its tools kept for zone-level exec."""
    from zoneinit.mounts.extensions import attach_all

    zone.extensions = attach_all(zone.plan.extensions, zone.disk_store(), zone.modules, base=zone.paths.extensions,
                                 firmware_path=zone.paths.firmware, addons_dir=zone.paths.addons, report=zone.report)


def modules(zone: Zone) -> None:
    zone.modules.load_named([*zone.cmdline.modules, *zone.plan.modules])


def idm_retry(zone: Zone) -> None:
    """The IDM device was not there before the modules (virtio_console as a module): wait for it now."""
    if zone.idm is not None:
        zone.idm.attach_host(zone.cmdline.idm, wait=True, load_modules=zone.modules.load_named)


def hostname(zone: Zone) -> None:
    if zone.plan.hostname:
        zone.sys.sethostname(zone.plan.hostname)


def netns(zone: Zone) -> None:
    """The network namespace the containers share (never PID 1's own), made and pinned in a helper."""
    from zoneinit.isolate import in_child
    from zoneinit.network import create_workload_namespace

    zone.workload_netns = in_child(create_workload_namespace, zone.paths.workload_netns, zone.sys)


def network(zone: Zone) -> None:
    """The NIC's driver if it is missing (virtio_net or xen_netfront, from the boot-modules cpio: no addons
    needed), then links, addresses, routes and the name files, in a forked child: the rtnetlink client
    (zoneinit.rtnetlink) never becomes resident in PID 1."""
    import os

    from zoneinit.isolate import in_child
    from zoneinit.network import configure_network

    plan = zone.plan.network
    if plan is None:
        return
    for iface in plan.interfaces:
        if not os.path.exists(f"/sys/class/net/{iface.name}"):
            _load_nic_driver(zone, iface.name)
    zone.name_files = in_child(configure_network, plan, zone.paths.net, zone.workload_netns, zone.sys)


def _load_nic_driver(zone: Zone, name: str) -> None:
    from zoneinit.boot.devices import wait_for_path
    from zoneinit.modules.policy import on_xen

    driver = "xen_netfront" if on_xen() else "virtio_net"
    zone.modules.load_named([driver])
    if not wait_for_path(f"/sys/class/net/{name}"):
        from zoneinit.errors import ZoneInitError

        raise ZoneInitError(f"network interface {name} did not appear (driver {driver})")


def containers(zone: Zone) -> None:
    """Each container: verify and mount its image, its bundle, create and start it. One that fails is
    reported (exit 125 on its container.exit) and the others go on."""
    if not zone.plan.containers:
        return
    manager = zone.container_manager()
    main = zone.plan.main_container()
    if main is not None:
        main.main = True
    for plan in zone.plan.containers:
        if manager.launch(plan) is None:
            zone.errors.append({"phase": f"container {plan.id}", "error": manager.containers[plan.id].error
                                or "failed"})


def ready(zone: Zone) -> None:
    """A mark, not a phase: the durable ``zone.ready`` event (the zone.info payload and the main container). The
    C heap's free pages go back to the kernel first: the boot's transient buffers are done with (zoneinit.memory)."""
    from zoneinit.memory import trim_heap

    trim_heap()
    zone.timeline.mark("ready")
    zone.ready = True
    zone.log.info(f"ready in {zone.timeline.phases[-1].start:.3f}s since kernel start"
                  + (f" with {len(zone.errors)} error(s)" if zone.errors else ""))
    zone.emit("zone.ready", zone.ready_payload())


def _always(_zone: Zone) -> bool:
    return True


class BootPhase:
    """One phase: its name on the timeline, what it does, and whether this zone needs it."""

    __slots__ = ("name", "run", "wanted")   # a plain class: PID 1 pays for each class it creates

    def __init__(self, name: str, run: Callable[[Zone], None], wanted: Callable[[Zone], bool] = _always) -> None:
        self.name = name
        self.run = run
        self.wanted = wanted


PHASES: tuple[BootPhase, ...] = (
    BootPhase("early-mounts", early_mounts),
    BootPhase("cmdline", cmdline),
    BootPhase("supervisor", supervisor),
    BootPhase("boot-modules", boot_modules),
    BootPhase("idm", idm),
    BootPhase("config", config),
    BootPhase("addons", addons),
    BootPhase("extensions", extensions, wanted=lambda zone: bool(zone.plan.extensions)),
    BootPhase("modules", modules),
    BootPhase("idm-retry", idm_retry, wanted=lambda zone: zone.idm is not None and zone.idm.channel is None
              and bool(zone.cmdline.idm)),
    BootPhase("hostname", hostname),
    BootPhase("netns", netns),
    BootPhase("network", network, wanted=lambda zone: zone.plan.network is not None),
    BootPhase("containers", containers),
)


def boot(zone: Zone) -> None:
    """Every phase in order, each timed and guarded; then the ready mark."""
    for phase in PHASES:
        if phase.wanted(zone):
            with zone.phase(phase.name):
                phase.run(zone)
    ready(zone)


def supervise(zone: Zone) -> None:
    """PID 1: loop forever. Not PID 1 (tests): return once a shutdown has completed."""
    def done() -> bool:
        return not zone.pid1 and zone.shutdown is not None and zone.shutdown.state == "done"

    while True:
        try:
            zone.supervisor.run(until=done)
        except BaseException as e:  # PID 1 must survive even KeyboardInterrupt/SystemExit
            with contextlib.suppress(BaseException):
                zone.report("supervisor", e)
            continue
        if not zone.pid1:
            return
