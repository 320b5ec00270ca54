"""The zone's statistics -> ``ContainerStats`` (what ``shim.metrics`` turns into containerd's cgroup Metrics).

A container's come from Styrolite in the zone (its cgroup v2: ``memory.current``/``max``/``peak``,
``memory.events`` oom_kill, ``cpu.stat``, ``pids``, ``io.stat``; plus ``inactive_file`` and ``anon`` when the
zone reports ``memory.stat``, which CRI needs for the working set). The pod's (the sandbox task's Stats) are
the zone's own: its memory in use (MemTotal - MemAvailable) and its CPU time, from ``zone.metrics``.
"""

from __future__ import annotations

from typing import Any

from shim.zone_backend import ContainerStats


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def container_stats(stats: dict[str, Any]) -> ContainerStats:
    """``container.stats``: Styrolite's cgroup stats, ``memory`` extended by the zone with memory.stat's
    figures (``inactive_file``, ``anon``, ``file``, ...) CRI needs for the working set."""
    memory = stats.get("memory") or {}
    cpu = stats.get("cpu") or {}
    pids = stats.get("pids") or {}
    io = stats.get("io") or {}

    def mem(key: str) -> int | None:
        return _int(memory.get(key))

    return ContainerStats(
        cgroup_version=2,
        cpu_usage_usec=_int(cpu.get("usage_usec")), cpu_user_usec=_int(cpu.get("user_usec")),
        cpu_system_usec=_int(cpu.get("system_usec")), cpu_nr_periods=_int(cpu.get("nr_periods")),
        cpu_nr_throttled=_int(cpu.get("nr_throttled")), cpu_throttled_usec=_int(cpu.get("throttled_usec")),
        memory_usage=mem("usage"), memory_limit=mem("limit"), memory_max_usage=mem("max_usage"),
        memory_oom_kills=mem("oom_kills"), memory_inactive_file=mem("inactive_file"), memory_anon=mem("anon"),
        memory_file=mem("file"), memory_active_file=mem("active_file"), memory_pgfault=mem("pgfault"),
        memory_pgmajfault=mem("pgmajfault"),
        pids_current=_int(pids.get("current")), pids_limit=_int(pids.get("limit")),
        io_read_bytes=_int(io.get("read_bytes")), io_write_bytes=_int(io.get("write_bytes")),
        io_read_ops=_int(io.get("read_ops")), io_write_ops=_int(io.get("write_ops")))


def zone_stats(metrics: dict[str, Any]) -> ContainerStats:
    """The pod as a whole: the zone's memory in use and CPU time (``zone.metrics``)."""
    memory = metrics.get("memory") or {}
    total, available = _int(memory.get("MemTotal")), _int(memory.get("MemAvailable"))
    cpu = metrics.get("cpu") or {}
    ticks = cpu.get("ticks") or {}
    hz = _int(cpu.get("hz")) or 100
    busy = sum(_int(ticks.get(k)) or 0 for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    user = (_int(ticks.get("user")) or 0) + (_int(ticks.get("nice")) or 0)
    system = (_int(ticks.get("system")) or 0) + (_int(ticks.get("irq")) or 0) + (_int(ticks.get("softirq")) or 0)
    load = metrics.get("load") or {}
    return ContainerStats(
        cgroup_version=2,
        cpu_usage_usec=busy * 1_000_000 // hz, cpu_user_usec=user * 1_000_000 // hz,
        cpu_system_usec=system * 1_000_000 // hz,
        memory_usage=(total - available) if total is not None and available is not None else None,
        memory_limit=total, memory_inactive_file=0,
        memory_file=_int(memory.get("Cached")),
        pids_current=_int(load.get("tasks")))
