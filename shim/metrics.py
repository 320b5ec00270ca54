"""A container's statistics as the cgroup `Metrics` containerd 1.6's CRI decodes from Stats.

CRI unpacks the Any by type_url and reads, for `io.containerd.cgroups.v2.Metrics`: cpu.usage_usec (CPU
usage, nano-cores from its rate), memory.usage, memory.inactive_file (working set = usage -
inactive_file), memory.anon (rss), memory.pgfault/pgmajfault; for `io.containerd.cgroups.v1.Metrics`:
cpu.usage.total (ns), memory.usage.usage, memory.total_inactive_file, memory.rss, pg_fault/pg_maj_fault.
A zone's containers live in cgroup v2, so v2 is what the shim normally sends; v1 when the backend says so.
"""

from __future__ import annotations

from google.protobuf import any_pb2

from shim.zone_backend import ContainerStats


def _n(value: int | None) -> int:
    return max(0, int(value)) if value is not None else 0


def to_v2(stats: ContainerStats):  # -> cgroups_v2_pb2.Metrics
    from shim.protos import cgroups_v2_pb2 as v2

    metrics = v2.Metrics(
        pids=v2.PidsStat(current=_n(stats.pids_current), limit=_n(stats.pids_limit)),
        cpu=v2.CPUStat(usage_usec=_n(stats.cpu_usage_usec), user_usec=_n(stats.cpu_user_usec),
                       system_usec=_n(stats.cpu_system_usec), nr_periods=_n(stats.cpu_nr_periods),
                       nr_throttled=_n(stats.cpu_nr_throttled), throttled_usec=_n(stats.cpu_throttled_usec)),
        memory=v2.MemoryStat(usage=_n(stats.memory_usage), usage_limit=_n(stats.memory_limit),
                             anon=_n(stats.memory_anon), file=_n(stats.memory_file),
                             inactive_file=_n(stats.memory_inactive_file),
                             active_file=_n(stats.memory_active_file), pgfault=_n(stats.memory_pgfault),
                             pgmajfault=_n(stats.memory_pgmajfault)),
        memory_events=v2.MemoryEvents(oom_kill=_n(stats.memory_oom_kills)),
    )
    if stats.io_read_bytes is not None or stats.io_write_bytes is not None:
        metrics.io.usage.add(rbytes=_n(stats.io_read_bytes), wbytes=_n(stats.io_write_bytes),
                             rios=_n(stats.io_read_ops), wios=_n(stats.io_write_ops))
    return metrics


def to_v1(stats: ContainerStats):  # -> cgroups_v1_pb2.Metrics
    from shim.protos import cgroups_v1_pb2 as v1

    usec = 1000
    return v1.Metrics(
        pids=v1.PidsStat(current=_n(stats.pids_current), limit=_n(stats.pids_limit)),
        cpu=v1.CPUStat(
            usage=v1.CPUUsage(total=_n(stats.cpu_usage_usec) * usec, user=_n(stats.cpu_user_usec) * usec,
                              kernel=_n(stats.cpu_system_usec) * usec),
            throttling=v1.Throttle(periods=_n(stats.cpu_nr_periods), throttled_periods=_n(stats.cpu_nr_throttled),
                                   throttled_time=_n(stats.cpu_throttled_usec) * usec)),
        memory=v1.MemoryStat(
            usage=v1.MemoryEntry(usage=_n(stats.memory_usage), limit=_n(stats.memory_limit),
                                 max=_n(stats.memory_max_usage)),
            rss=_n(stats.memory_anon), total_rss=_n(stats.memory_anon), cache=_n(stats.memory_file),
            total_cache=_n(stats.memory_file), inactive_file=_n(stats.memory_inactive_file),
            total_inactive_file=_n(stats.memory_inactive_file), active_file=_n(stats.memory_active_file),
            total_active_file=_n(stats.memory_active_file), pg_fault=_n(stats.memory_pgfault),
            total_pg_fault=_n(stats.memory_pgfault), pg_maj_fault=_n(stats.memory_pgmajfault),
            total_pg_maj_fault=_n(stats.memory_pgmajfault)),
        memory_oom_control=v1.MemoryOomControl(oom_kill=_n(stats.memory_oom_kills)),
    )


def metrics_any(stats: ContainerStats) -> any_pb2.Any:
    from shim.events import to_any

    return to_any(to_v1(stats) if stats.cgroup_version == 1 else to_v2(stats))
