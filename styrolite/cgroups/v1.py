"""The cgroup v1 driver (legacy and hybrid hosts): one directory per hierarchy, the way runc and crun do it.

On a hybrid host the container also gets a directory in the cgroup2 hierarchy (``<root>/unified``): the
controllers bound there (here: hugetlb) and ``linux.resources.unified`` keys are driven through it.
Every controller the resources ask for but the host lacks produces one warning line naming it.
"""

from __future__ import annotations

import errno
import os

from styrolite.cgroups import files
from styrolite.cgroups.base import SIGKILL, CgroupError, CgroupManager, empty_stats
from styrolite.cgroups.v2 import V2Manager, unified_key_controller
from styrolite.cgroups.waiting import wait_until
from styrolite.errors import suppress
from styrolite.logs import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from styrolite.spec.model import Device, Resources

FREEZE_TIMEOUT = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class V1Manager(CgroupManager):
    version = 1

    def __init__(self, directories: dict[str, str], path: str, unified: V2Manager | None = None) -> None:
        self.directories = directories
        """Controller (``memory``, ``name=systemd``...) -> the container's directory in its hierarchy."""
        self.path = path
        self.unified = unified

    def _dir(self, controller: str) -> str | None:
        return self.directories.get(controller)

    def _distinct_dirs(self) -> list[str]:
        return list(dict.fromkeys(self.directories.values()))

    # lifecycle -------------------------------------------------------------------------------------------
    def create(self) -> None:
        cpuset_dir = self._dir("cpuset")
        for directory in self._distinct_dirs():
            created = files.make_dirs(directory)
            if directory == cpuset_dir:
                for new_dir in created:
                    self._seed_cpuset(new_dir)
        if self.unified is not None:
            self.unified.create()

    @staticmethod
    def _seed_cpuset(directory: str) -> None:
        """A new v1 cpuset starts with empty cpus/mems and refuses tasks: copy the parent's."""
        parent = os.path.dirname(directory)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (files.read(directory, name) or "").strip():
                files.write(directory, name, files.read(parent, name) or "")

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._distinct_dirs())

    def join_files(self) -> list[str]:
        # a thread writing "0" to v1's ``tasks`` moves itself without the kernel's global threadgroup lock,
        # whose every write otherwise waits for an RCU grace period (milliseconds): for a single-threaded
        # process that is the whole process
        own = [os.path.join(directory, "tasks") for directory in self._distinct_dirs()]
        return own + (self.unified.join_files() if self.unified is not None else [])

    def add_process(self, pid: int) -> None:
        for directory in self._distinct_dirs():
            files.write(directory, "cgroup.procs", pid)
        if self.unified is not None:
            self.unified.add_process(pid)

    def destroy(self, kill: bool = False) -> None:
        if self._remove_empty():
            return
        if kill and self.exists():
            self.kill_all(SIGKILL)
            wait_until(lambda: not self.pids(), 2.0)
        errors: list[CgroupError] = []
        for directory in self._distinct_dirs():
            try:
                files.remove_tree(directory)
            except CgroupError as e:
                errors.append(e)
        if self.unified is not None:
            try:
                self.unified.destroy()
            except CgroupError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _remove_empty(self) -> bool:
        """The usual case at ``delete``: the container's processes are gone and it made no sub-cgroups, so
        one rmdir per hierarchy removes it (the kernel refuses with EBUSY while a task or a child cgroup is
        left). True when everything is gone; False at the first busy directory, leaving the freezer for last
        so the careful path can still freeze what is left."""
        freezer = self._dir("freezer")
        ordered = [d for d in self._distinct_dirs() if d != freezer] + ([freezer] if freezer else [])
        for directory in ordered:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    return False
                raise CgroupError(f"rmdir {directory}: {files.os_error_text(e)}") from None
        if self.unified is not None:
            return self.unified.remove_empty()
        return True

    # resources -------------------------------------------------------------------------------------------
    def apply(self, resources: Resources | None, devices: Sequence[Device] = ()) -> None:
        if resources is None:
            from styrolite.spec.model import Resources

            resources = Resources()
        self._set(resources, initial=True, devices=devices)

    def update(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        self._set(resources, initial=False, devices=devices)

    def _missing(self, controller: str, what: str) -> bool:
        """True (after one warning line) when the host has no v1 ``controller``."""
        if controller in self.directories:
            return False
        log.warning("cgroup v1 %s: controller %r not available on this host; %s ignored", self.path, controller, what)
        return True

    def _set(self, r: Resources, initial: bool, devices: Sequence[Device] = ()) -> None:
        if r.memory is not None and not self._missing("memory", "memory limits"):
            self._set_memory(r)
        if r.cpu is not None:
            self._set_cpu(r)
        if r.pids is not None and r.pids.limit != 0 and not self._missing("pids", "pids.limit"):  # 0: unset
            files.write(self._dir("pids"), "pids.max", r.pids.limit if r.pids.limit > 0 else "max")
        if r.block_io is not None and _sets_blkio(r) and not self._missing("blkio", "blockIO limits"):
            self._set_blkio(r)
        if r.hugepage_limits:
            self._set_hugetlb(r)
        if r.network is not None and (r.network.class_id is not None or r.network.priorities):
            self._set_network(r)
        if r.rdma and not self._missing("rdma", "rdma limits"):
            for device, limits in r.rdma.items():
                parts = [device] + [f"{name}={limits[key]}" for key, name in
                                    (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")) if key in limits]
                files.write(self._dir("rdma"), "rdma.max", " ".join(parts))
        if (initial or r.devices) and not self._missing("devices", "the device policy"):
            self._set_devices(r, devices)
        if r.unified:
            self._set_unified(r)

    def _set_memory(self, r: Resources) -> None:
        m, d = r.memory, self._dir("memory")
        limit, swap = m.limit, m.swap
        if limit == -1 and swap is None:
            swap = -1
        if m.check_before_update and limit is not None and limit > 0:
            usage = files.read_int(d, "memory.usage_in_bytes")
            if usage is not None and limit < usage:
                raise CgroupError(f"memory.limit {limit} is below the current usage {usage} (checkBeforeUpdate)")
        has_memsw = files.exists(d, "memory.memsw.limit_in_bytes")
        if swap is not None and not has_memsw:
            log.warning("cgroup v1 %s: memory.memsw.limit_in_bytes missing (swap accounting off); swap limit "
                        "ignored", self.path)
            swap = None
        if limit is not None and swap is not None:
            # The kernel insists on limit <= memsw at every step: raise memsw first when growing.
            current = files.read_int(d, "memory.limit_in_bytes")
            if swap == -1 or (current is not None and current < swap):
                files.write(d, "memory.memsw.limit_in_bytes", swap)
                files.write(d, "memory.limit_in_bytes", limit)
            else:
                files.write(d, "memory.limit_in_bytes", limit)
                files.write(d, "memory.memsw.limit_in_bytes", swap)
        elif limit is not None:
            files.write(d, "memory.limit_in_bytes", limit)
        elif swap is not None:
            files.write(d, "memory.memsw.limit_in_bytes", swap)
        if m.reservation is not None:
            files.write(d, "memory.soft_limit_in_bytes", m.reservation)
        if m.kernel is not None:
            log.warning("cgroup v1 %s: memory.kernel (kmem limit) is deprecated by the kernel; ignored", self.path)
        if m.kernel_tcp is not None:
            files.write(d, "memory.kmem.tcp.limit_in_bytes", m.kernel_tcp)
        if m.swappiness is not None:
            files.write(d, "memory.swappiness", m.swappiness)
        if m.disable_oom_killer is not None:
            files.write(d, "memory.oom_control", 1 if m.disable_oom_killer else 0)

    def _set_cpu(self, r: Resources) -> None:
        c = r.cpu
        wants_cpu = any(v is not None for v in (c.shares, c.quota, c.period, c.burst, c.realtime_period,
                                                 c.realtime_runtime, c.idle))
        if wants_cpu and not self._missing("cpu", "cpu limits"):
            d = self._dir("cpu")
            if c.shares:
                files.write(d, "cpu.shares", c.shares)
            if c.period:
                files.write(d, "cpu.cfs_period_us", c.period)
            if c.quota is not None:
                files.write(d, "cpu.cfs_quota_us", c.quota if c.quota > 0 else -1)
            if c.burst is not None:
                files.write(d, "cpu.cfs_burst_us", c.burst)
            if c.realtime_period:
                files.write(d, "cpu.rt_period_us", c.realtime_period)
            if c.realtime_runtime is not None:
                if c.realtime_runtime > 0:
                    grant_rt_budget(d, c.realtime_runtime)
                files.write(d, "cpu.rt_runtime_us", c.realtime_runtime)
            if c.idle is not None:
                files.write(d, "cpu.idle", c.idle)
        if (c.cpus or c.mems) and not self._missing("cpuset", "cpus/mems"):
            if c.cpus:
                files.write(self._dir("cpuset"), "cpuset.cpus", c.cpus)
            if c.mems:
                files.write(self._dir("cpuset"), "cpuset.mems", c.mems)

    def _set_blkio(self, r: Resources) -> None:
        b, d = r.block_io, self._dir("blkio")
        weighted = [device for device in b.weight_device if device.weight]
        if b.weight or weighted:
            weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight") if files.exists(d, f)), None)
            if weight_file is None:
                log.warning("cgroup v1 %s: no blkio.weight or blkio.bfq.weight (no proportional io scheduler); "
                            "blockIO weight ignored", self.path)
            else:
                if b.weight:  # 0 is "not set": docker sends it with every container
                    files.write(d, weight_file, b.weight)
                for device in weighted:
                    files.write(d, weight_file + "_device" if weight_file == "blkio.weight" else weight_file,
                                f"{device.major}:{device.minor} {device.weight}")
        if b.leaf_weight:
            if files.exists(d, "blkio.leaf_weight"):
                files.write(d, "blkio.leaf_weight", b.leaf_weight)
            else:
                log.warning("cgroup v1 %s: blkio.leaf_weight not available; ignored", self.path)
        for name, devices in (("read_bps_device", b.throttle_read_bps_device),
                              ("write_bps_device", b.throttle_write_bps_device),
                              ("read_iops_device", b.throttle_read_iops_device),
                              ("write_iops_device", b.throttle_write_iops_device)):
            for device in devices:
                files.write(d, f"blkio.throttle.{name}", f"{device.major}:{device.minor} {device.rate}")

    def _set_hugetlb(self, r: Resources) -> None:
        if "hugetlb" in self.directories:
            d = self._dir("hugetlb")
            for limit in r.hugepage_limits:
                name = f"hugetlb.{limit.page_size}.limit_in_bytes"
                if not files.exists(d, name):
                    raise CgroupError(f"linux.resources.hugepageLimits: page size {limit.page_size!r} not supported "
                                      f"(no {name})")
                files.write(d, name, limit.limit)
        elif self.unified is not None and "hugetlb" in self.unified.enable_controllers({"hugetlb"}):
            self.unified.set_hugetlb(r, {"hugetlb"})
        else:
            self._missing("hugetlb", "hugepageLimits")

    def _set_network(self, r: Resources) -> None:
        n = r.network
        if n.class_id is not None and not self._missing("net_cls", "network.classID"):
            files.write(self._dir("net_cls"), "net_cls.classid", n.class_id)
        if n.priorities and not self._missing("net_prio", "network.priorities"):
            for priority in n.priorities:
                files.write(self._dir("net_prio"), "net_prio.ifpriomap", f"{priority.name} {priority.priority}")

    def _set_devices(self, r: Resources, devices: Sequence[Device]) -> None:
        from styrolite.cgroups.devices import effective_rules, v1_rule_texts

        d = self._dir("devices")
        rules = effective_rules(r.devices, devices)
        for rule in rules:
            for text in v1_rule_texts(rule):
                files.write(d, "devices.allow" if rule.allow else "devices.deny", text)

    def _set_unified(self, r: Resources) -> None:
        """``unified`` keys on a v1 host: only for controllers the hybrid cgroup2 hierarchy owns."""
        if self.unified is None:
            key = next(iter(r.unified))
            raise CgroupError(f"linux.resources.unified key {key!r}: this host has no cgroup v2 hierarchy "
                              "(legacy cgroup v1)")
        wanted = {unified_key_controller(key) for key in r.unified} - {"cgroup"}
        available = self.unified.enable_controllers(wanted)
        self.unified.set_unified(r.unified, available)

    # observation -----------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self._distinct_dirs():
            found.update(files.pids_recursive(directory))
        if self.unified is not None:
            found.update(self.unified.pids())
        return sorted(found)

    def stats(self) -> dict[str, dict[str, Any]]:
        result = empty_stats()
        d = self._dir("memory")
        if d:
            memory = result["memory"]
            memory["usage"] = files.read_int(d, "memory.usage_in_bytes")
            memory["limit"] = files.read_int(d, "memory.limit_in_bytes")
            memory["max_usage"] = files.read_int(d, "memory.max_usage_in_bytes")
            oom = files.read_keyed(d, "memory.oom_control")
            memory["oom_kills"] = oom.get("oom_kill")
        d = self._dir("cpuacct")
        if d:
            cpu = result["cpu"]
            usage = files.read_int(d, "cpuacct.usage")
            cpu["usage_usec"] = None if usage is None else usage // 1000
            user, system = files.read_int(d, "cpuacct.usage_user"), files.read_int(d, "cpuacct.usage_sys")
            if user is not None and system is not None:
                cpu["user_usec"], cpu["system_usec"] = user // 1000, system // 1000
            else:
                ticks = files.read_keyed(d, "cpuacct.stat")
                if "user" in ticks:
                    cpu["user_usec"] = ticks["user"] * 1_000_000 // _CLOCK_TICKS
                    cpu["system_usec"] = ticks.get("system", 0) * 1_000_000 // _CLOCK_TICKS
        d = self._dir("cpu")
        if d:
            throttling = files.read_keyed(d, "cpu.stat")
            result["cpu"]["nr_periods"] = throttling.get("nr_periods")
            result["cpu"]["nr_throttled"] = throttling.get("nr_throttled")
            if "throttled_time" in throttling:
                result["cpu"]["throttled_usec"] = throttling["throttled_time"] // 1000
        d = self._dir("pids")
        if d:
            result["pids"]["current"] = files.read_int(d, "pids.current")
            result["pids"]["limit"] = files.read_int(d, "pids.max")
        d = self._dir("blkio")
        if d:
            result["io"] = _blkio_totals(d)
        return result

    # freezer and signals ---------------------------------------------------------------------------------
    def _freezer_dir(self) -> str:
        d = self._dir("freezer")
        if d is None:
            raise CgroupError("cgroup v1: the freezer controller is not available on this host")
        return d

    def freeze(self) -> None:
        d = self._freezer_dir()
        files.write(d, "freezer.state", "FROZEN")
        # FREEZING can stall on a task in an uninterruptible sleep; asking again makes the kernel retry.
        if not wait_until(lambda: files.read(d, "freezer.state") == "FROZEN", FREEZE_TIMEOUT,
                          retry=lambda: files.write(d, "freezer.state", "FROZEN")):
            files.write(d, "freezer.state", "THAWED")
            raise CgroupError(f"freeze {d}: not frozen after {FREEZE_TIMEOUT:.0f}s (thawed again)")

    def thaw(self) -> None:
        d = self._freezer_dir()
        files.write(d, "freezer.state", "THAWED")
        if not wait_until(lambda: files.read(d, "freezer.state") == "THAWED", FREEZE_TIMEOUT):
            raise CgroupError(f"thaw {d}: still not thawed after {FREEZE_TIMEOUT:.0f}s")

    def state(self) -> str:
        d = self._dir("freezer")
        return "frozen" if d is not None and files.read(d, "freezer.state") == "FROZEN" else "thawed"

    def kill_all(self, signal: int = SIGKILL) -> None:
        """SIGKILL runs frozen so nothing forks away from the list; frozen tasks die once thawed."""
        freezer = self._dir("freezer")
        frozen_here = False
        if signal == SIGKILL and freezer is not None and self.state() == "thawed":
            try:
                self.freeze()
                frozen_here = True
            except CgroupError as e:
                log.debug("kill_all: could not freeze %s first: %s", self.path, e)
        try:
            for pid in self.pids():
                with suppress(ProcessLookupError):
                    os.kill(pid, signal)
        finally:
            if signal == SIGKILL and freezer is not None and (frozen_here or self.state() == "frozen"):
                self.thaw()


def _sets_blkio(r: Resources) -> bool:
    """Whether ``blockIO`` asks for anything: weights of 0 mean "not set" (runc's reading)."""
    b = r.block_io
    return b is not None and bool(b.weight or b.leaf_weight or any(d.weight for d in b.weight_device)
                                  or b.throttle_read_bps_device or b.throttle_write_bps_device
                                  or b.throttle_read_iops_device or b.throttle_write_iops_device)


def grant_rt_budget(directory: str, runtime: int) -> None:
    """Make room for ``runtime`` µs of realtime budget in the v1 cgroup ``directory``.

    The kernel caps the sum of the children's ``cpu.rt_runtime_us`` by the parent's, and a cgroup made by
    ``create`` (the ``styrolite`` or ``libpod_parent`` level) starts at 0, so a container asking for a
    budget would get EINVAL. Like runc, raise every ancestor below the hierarchy's root to what its
    children need, top-down so each parent has granted enough before its child asks.
    """
    ancestors: list[str] = []
    parent = os.path.dirname(directory)
    while files.exists(os.path.dirname(parent), "cpu.rt_runtime_us"):  # the root's parent is no cgroup
        ancestors.append(parent)
        parent = os.path.dirname(parent)
    needs: list[tuple[str, int]] = []
    child, need = directory, runtime
    for ancestor in ancestors:  # bottom-up: what the siblings already hold plus our path's need
        siblings = 0
        for entry in os.scandir(ancestor):
            if entry.is_dir(follow_symlinks=False) and entry.path != child:
                siblings += max(files.read_int(entry.path, "cpu.rt_runtime_us") or 0, 0)
        need += siblings
        needs.append((ancestor, need))
        child = ancestor
    for ancestor, wanted in reversed(needs):
        current = files.read_int(ancestor, "cpu.rt_runtime_us")
        if current is not None and 0 <= current < wanted:
            files.write(ancestor, "cpu.rt_runtime_us", wanted)


def _blkio_totals(directory: str) -> dict[str, int | None]:
    """Read/Write totals over all devices from the throttle accounting (present with every io scheduler)."""
    def totals(name: str) -> tuple[int | None, int | None]:
        text = files.read(directory, name)
        if text is None:
            return None, None
        read_total = write_total = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                if parts[1] == "Read":
                    read_total += int(parts[2])
                elif parts[1] == "Write":
                    write_total += int(parts[2])
        return read_total, write_total

    read_bytes, write_bytes = totals("blkio.throttle.io_service_bytes_recursive")
    read_ops, write_ops = totals("blkio.throttle.io_serviced_recursive")
    return {"read_bytes": read_bytes, "write_bytes": write_bytes, "read_ops": read_ops, "write_ops": write_ops}
