"""The cgroup v2 driver: one directory in the unified hierarchy.

Controllers must be switched on in every ancestor's ``cgroup.subtree_control`` before their files show up
in the container's cgroup. ``create()`` enables the everyday ones the parent offers; ``apply()`` enables
whatever else the resources ask for (hugetlb, rdma, a controller named by a ``unified`` key). A controller
the host does not have gets one warning line naming it, and its settings are skipped.
"""

from __future__ import annotations

import errno
import os

from styrolite.cgroups import files
from styrolite.cgroups.base import SIGKILL, CgroupError, CgroupManager, empty_stats
from styrolite.cgroups.convert import cpu_max, cpu_weight_from_shares, io_weight_from_blkio, limit_value, swap_max
from styrolite.cgroups.waiting import wait_until
from styrolite.errors import suppress
from styrolite.logs import log
from styrolite.syscalls import LINUX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from styrolite.spec.model import Device, Resources
    from styrolite.syscalls import Syscalls

DEFAULT_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
"""Enabled at create(), when offered, so stats() has memory/cpu/io/pids numbers even without limits."""

FREEZE_TIMEOUT = 10.0


def _needed_controllers(r: Resources) -> set[str]:
    needed: set[str] = set()
    m, c = r.memory, r.cpu
    if m and any(v is not None for v in (m.limit, m.reservation, m.swap)):
        needed.add("memory")
    if c and any(v is not None for v in (c.shares, c.quota, c.period, c.burst, c.idle)):
        needed.add("cpu")
    if c and (c.cpus or c.mems):
        needed.add("cpuset")
    if r.pids is not None:
        needed.add("pids")
    b = r.block_io
    if b and (b.weight or any(d.weight for d in b.weight_device) or b.throttle_read_bps_device
              or b.throttle_write_bps_device or b.throttle_read_iops_device or b.throttle_write_iops_device):
        needed.add("io")  # weights of 0 mean "not set" (docker sends blockIO.weight 0 with every container)
    if r.hugepage_limits:
        needed.add("hugetlb")
    if r.rdma:
        needed.add("rdma")
    return needed


def unified_key_controller(key: str) -> str:
    """The controller a ``unified`` key belongs to; the key must be a plain file name."""
    if not key or "/" in key or key in (".", "..") or "\0" in key or "." not in key:
        raise CgroupError(f"linux.resources.unified key {key!r}: must be a cgroup file name like 'memory.high'")
    return key.split(".", 1)[0]


class V2Manager(CgroupManager):
    version = 2

    def __init__(self, mountpoint: str, directory: str, path: str, sys: Syscalls = LINUX,
                 manage_devices: bool = True) -> None:
        self.mountpoint = mountpoint.rstrip("/") or "/"
        self.directory = directory
        self.path = path
        self.sys = sys
        self.manage_devices = manage_devices
        """False in hybrid mode, where the v1 devices controller owns the policy."""

    # lifecycle -------------------------------------------------------------------------------------------
    def create(self) -> None:
        if os.path.commonpath([self.mountpoint, self.directory]) != self.mountpoint or \
                os.path.normpath(self.directory) == self.mountpoint:
            raise CgroupError(f"cgroup {self.directory} is not below {self.mountpoint}")
        files.make_dirs(self.directory)
        self.enable_controllers(set(DEFAULT_CONTROLLERS), quiet=True)

    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    def join_files(self) -> list[str]:
        return [os.path.join(self.directory, "cgroup.procs")]

    def add_process(self, pid: int) -> None:
        files.write(self.directory, "cgroup.procs", pid)

    def destroy(self, kill: bool = False) -> None:
        if self.remove_empty() or not self.exists():
            return
        if kill:
            self.kill_all(SIGKILL)
            wait_until(lambda: not self.pids(), 2.0)
        files.remove_tree(self.directory)

    def remove_empty(self) -> bool:
        """One rmdir when the cgroup is empty and has no children (the usual case at ``delete``); False
        when the kernel says it is busy."""
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            raise CgroupError(f"rmdir {self.directory}: {files.os_error_text(e)}") from None
        return True

    # controllers -----------------------------------------------------------------------------------------
    def _ancestors(self) -> list[str]:
        """The mount root down to the container's parent: the directories whose subtree_control matters."""
        relative = os.path.relpath(self.directory, self.mountpoint)
        parts = [] if relative == "." else relative.split(os.sep)
        return [os.path.join(self.mountpoint, *parts[:i]) for i in range(len(parts))]

    def available_controllers(self) -> set[str]:
        return set((files.read(self.directory, "cgroup.controllers") or "").split())

    def enable_controllers(self, wanted: set[str], quiet: bool = False) -> set[str]:
        """Enable ``wanted`` top-down where offered; returns the ones now available in the container."""
        for ancestor in self._ancestors():
            offered = set((files.read(ancestor, "cgroup.controllers") or "").split())
            enabled = set((files.read(ancestor, "cgroup.subtree_control") or "").split())
            missing = sorted((wanted & offered) - enabled)
            if not missing:
                continue
            try:
                files.write(ancestor, "cgroup.subtree_control", " ".join("+" + c for c in missing))
            except CgroupError:
                for controller in missing:  # one at a time, so one refusal does not block the others
                    try:
                        files.write(ancestor, "cgroup.subtree_control", "+" + controller)
                    except CgroupError as e:
                        (log.debug if quiet else log.warning)("cgroup v2: cannot enable %s: %s", controller, e)
        return self.available_controllers()

    # resources -------------------------------------------------------------------------------------------
    def apply(self, resources: Resources | None, devices: Sequence[Device] = ()) -> None:
        if resources is None:
            from styrolite.spec.model import Resources

            resources = Resources()
        self._set(resources, initial=True, devices=devices)

    def update(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        self._set(resources, initial=False, devices=devices)

    def _set(self, r: Resources, initial: bool, devices: Sequence[Device] = ()) -> None:
        needed = _needed_controllers(r)
        for key in r.unified:
            controller = unified_key_controller(key)
            if controller != "cgroup":
                needed.add(controller)
        available = self.enable_controllers(needed) if needed else self.available_controllers()
        for controller in sorted(needed - available):
            if not any(unified_key_controller(key) == controller for key in r.unified):
                log.warning("cgroup v2 %s: controller %r not available on this host; its limits are ignored",
                            self.path, controller)
        self._set_memory(r, available)
        self._set_cpu(r, available, initial)
        if r.pids is not None and r.pids.limit != 0 and "pids" in available:  # 0: not set (runc)
            files.write(self.directory, "pids.max", r.pids.limit if r.pids.limit > 0 else "max")
        self._set_io(r, available)
        self.set_hugetlb(r, available)
        self._set_rdma(r, available)
        if r.network is not None and (r.network.class_id is not None or r.network.priorities):
            log.warning("cgroup v2 %s: net_cls/net_prio do not exist on cgroup v2; network resources are ignored",
                        self.path)
        if self.manage_devices and (initial or r.devices):
            from styrolite.cgroups.bpf import install_device_program
            from styrolite.cgroups.devicefilter import device_filter_program
            from styrolite.cgroups.devices import effective_rules

            install_device_program(self.directory, device_filter_program(effective_rules(r.devices, devices)), self.sys)
        self.set_unified(r.unified, available)

    def _set_memory(self, r: Resources, available: set[str]) -> None:
        m = r.memory
        if m is None:
            return
        for name, value in (("kernel", m.kernel), ("kernelTCP", m.kernel_tcp)):
            if value is not None:
                log.warning("cgroup v2 %s: memory.%s has no cgroup v2 equivalent; ignored", self.path, name)
        if m.swappiness is not None and m.swappiness != 0:
            log.warning("cgroup v2 %s: memory.swappiness has no cgroup v2 equivalent; ignored", self.path)
        if m.disable_oom_killer:
            log.warning("cgroup v2 %s: memory.disableOOMKiller has no cgroup v2 equivalent; ignored", self.path)
        if "memory" not in available:
            return
        if m.limit is not None:
            if m.check_before_update and m.limit > 0:
                usage = files.read_int(self.directory, "memory.current")
                if usage is not None and m.limit < usage:
                    raise CgroupError(f"memory.limit {m.limit} is below the current usage {usage} "
                                      "(checkBeforeUpdate)")
            files.write(self.directory, "memory.max", limit_value(m.limit))
        swap = swap_max(m.swap, m.limit)
        if swap is not None:
            if files.exists(self.directory, "memory.swap.max"):
                files.write(self.directory, "memory.swap.max", swap)
            else:
                log.warning("cgroup v2 %s: memory.swap.max missing (no swap accounting); swap limit ignored",
                            self.path)
        if m.reservation is not None:
            files.write(self.directory, "memory.low", limit_value(m.reservation))

    def _set_cpu(self, r: Resources, available: set[str], initial: bool) -> None:
        c = r.cpu
        if c is None:
            return
        if c.realtime_runtime is not None or c.realtime_period is not None:
            log.warning("cgroup v2 %s: cpu realtimeRuntime/realtimePeriod are not supported on cgroup v2; ignored",
                        self.path)
        if "cpu" in available:
            if c.shares:
                files.write(self.directory, "cpu.weight", cpu_weight_from_shares(c.shares))
            quota = c.quota
            if quota is None and c.period and not initial:  # keep the current quota when only the period changes
                current = (files.read(self.directory, "cpu.max") or "max").split()[0]
                quota = -1 if current == "max" else int(current)
            value = cpu_max(quota, c.period)
            if value is not None:
                files.write(self.directory, "cpu.max", value)
            if c.burst is not None:
                files.write(self.directory, "cpu.max.burst", c.burst)
            if c.idle is not None:
                files.write(self.directory, "cpu.idle", c.idle)
        if "cpuset" in available:
            if c.cpus:
                files.write(self.directory, "cpuset.cpus", c.cpus)
            if c.mems:
                files.write(self.directory, "cpuset.mems", c.mems)

    def _set_io(self, r: Resources, available: set[str]) -> None:
        b = r.block_io
        if b is None or "io" not in available:
            return
        if b.leaf_weight:
            log.warning("cgroup v2 %s: blockIO.leafWeight has no cgroup v2 equivalent; ignored", self.path)
        # io.weight takes the v2 range; BFQ's io.bfq.weight takes the blkio range unchanged.
        if files.exists(self.directory, "io.weight"):
            weight_file, convert = "io.weight", io_weight_from_blkio
        else:
            weight_file, convert = "io.bfq.weight", (lambda w: w)
        if b.weight:
            self._write_io_weight(weight_file, f"default {convert(b.weight)}")
        for device in b.weight_device:
            if device.weight:
                self._write_io_weight(weight_file, f"{device.major}:{device.minor} {convert(device.weight)}")
        for key, devices in (("rbps", b.throttle_read_bps_device), ("wbps", b.throttle_write_bps_device),
                             ("riops", b.throttle_read_iops_device), ("wiops", b.throttle_write_iops_device)):
            for device in devices:
                files.write(self.directory, "io.max", f"{device.major}:{device.minor} {key}={device.rate}")

    def _write_io_weight(self, weight_file: str, value: str) -> None:
        if not files.exists(self.directory, weight_file):
            log.warning("cgroup v2 %s: no io.weight or io.bfq.weight (no proportional io scheduler); "
                        "blockIO weight ignored", self.path)
            return
        files.write(self.directory, weight_file, value)

    def set_hugetlb(self, r: Resources, available: set[str]) -> None:
        if not r.hugepage_limits or "hugetlb" not in available:
            return
        for limit in r.hugepage_limits:
            name = f"hugetlb.{limit.page_size}.max"
            if not files.exists(self.directory, name):
                raise CgroupError(f"linux.resources.hugepageLimits: page size {limit.page_size!r} not supported "
                                  f"(no {name})")
            files.write(self.directory, name, limit_value(limit.limit))

    def _set_rdma(self, r: Resources, available: set[str]) -> None:
        if not r.rdma or "rdma" not in available:
            return
        for device, limits in r.rdma.items():
            parts = [device]
            if limits.get("hcaHandles") is not None:
                parts.append(f"hca_handle={limits['hcaHandles']}")
            if limits.get("hcaObjects") is not None:
                parts.append(f"hca_object={limits['hcaObjects']}")
            if len(parts) > 1:
                files.write(self.directory, "rdma.max", " ".join(parts))

    def set_unified(self, unified: dict[str, str], available: set[str]) -> None:
        """``linux.resources.unified`` written verbatim, last, so it overrides the converted values."""
        for key, value in unified.items():
            controller = unified_key_controller(key)
            if controller != "cgroup" and controller not in available:
                raise CgroupError(f"linux.resources.unified key {key!r}: controller {controller!r} is not "
                                  f"available in {self.directory}")
            try:
                files.write(self.directory, key, value)
            except CgroupError as e:
                raise CgroupError(f"linux.resources.unified key {key!r}") from e

    # observation -----------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return files.pids_recursive(self.directory)

    def stats(self) -> dict[str, dict[str, Any]]:
        d = self.directory
        result = empty_stats()
        memory = result["memory"]
        memory["usage"] = files.read_int(d, "memory.current")
        memory["limit"] = files.read_int(d, "memory.max")
        memory["max_usage"] = files.read_int(d, "memory.peak")
        if files.exists(d, "memory.events"):
            memory["oom_kills"] = files.read_keyed(d, "memory.events").get("oom_kill", 0)
        cpu_stat = files.read_keyed(d, "cpu.stat")
        for key in ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec"):
            result["cpu"][key] = cpu_stat.get(key)
        result["pids"]["current"] = files.read_int(d, "pids.current")
        result["pids"]["limit"] = files.read_int(d, "pids.max")
        io_stat = files.read(d, "io.stat")
        if io_stat is not None:
            totals = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
            for line in io_stat.splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key in totals and value.isdigit():
                        totals[key] += int(value)
            result["io"] = {"read_bytes": totals["rbytes"], "write_bytes": totals["wbytes"],
                            "read_ops": totals["rios"], "write_ops": totals["wios"]}
        return result

    # freezer and signals ---------------------------------------------------------------------------------
    def _frozen(self) -> bool:
        events = files.read_keyed(self.directory, "cgroup.events")
        if "frozen" not in events:
            raise CgroupError(f"{self.directory}/cgroup.events has no 'frozen' key (kernel without cgroup v2 freezer)")
        return events["frozen"] == 1

    def freeze(self) -> None:
        files.write(self.directory, "cgroup.freeze", 1)
        if not wait_until(self._frozen, FREEZE_TIMEOUT):
            raise CgroupError(f"freeze {self.directory}: not frozen after {FREEZE_TIMEOUT:.0f}s")

    def thaw(self) -> None:
        files.write(self.directory, "cgroup.freeze", 0)
        if not wait_until(lambda: not self._frozen(), FREEZE_TIMEOUT):
            raise CgroupError(f"thaw {self.directory}: still frozen after {FREEZE_TIMEOUT:.0f}s")

    def state(self) -> str:
        return "frozen" if self._frozen() else "thawed"

    def kill_all(self, signal: int = SIGKILL) -> None:
        if signal == SIGKILL and files.exists(self.directory, "cgroup.kill"):
            files.write(self.directory, "cgroup.kill", 1)
            return
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal)
