"""OCI (cgroup v1 flavoured) resource values -> cgroup v2 file values.

The OCI spec speaks v1: cpu shares, blkio weights, memory+swap. These are the conversions runc and crun
agree on, so a config.json behaves the same under every runtime.
"""

from __future__ import annotations

from styrolite.cgroups.base import CgroupError


def cpu_weight_from_shares(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000]: 1 + ((shares - 2) * 9999) / 262142."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight_from_blkio(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000]: 1 + ((weight - 10) * 9999) / 990."""
    weight = min(max(weight, 10), 1000)
    return 1 + ((weight - 10) * 9999) // 990


def swap_max(memory_swap: int | None, memory_limit: int | None) -> str | None:
    """memory.swap.max from OCI ``swap`` (memory+swap) and ``limit``; None leaves the file alone.

    -1 means unlimited. With memory unlimited and swap unset, swap follows (v1 behaviour).
    """
    if memory_swap is None or memory_swap == 0:
        return "max" if memory_limit == -1 else None
    if memory_swap == -1:
        return "max"
    if memory_swap < 0:
        raise CgroupError(f"linux.resources.memory.swap {memory_swap}: invalid (use -1 for unlimited)")
    if memory_limit is None or memory_limit <= 0:
        raise CgroupError("linux.resources.memory.swap: a swap limit needs a memory limit on cgroup v2")
    if memory_swap < memory_limit:
        raise CgroupError(f"linux.resources.memory.swap {memory_swap}: must be >= memory.limit {memory_limit} "
                          "(OCI swap is memory+swap)")
    return str(memory_swap - memory_limit)


def limit_value(value: int) -> str:
    """A v2 limit: negative means ``max``."""
    return "max" if value < 0 else str(value)


def cpu_max(quota: int | None, period: int | None) -> str | None:
    """cpu.max ``$QUOTA $PERIOD``; None when neither is given."""
    if quota is None and not period:
        return None
    quota_text = "max" if quota is None or quota <= 0 else str(quota)
    return f"{quota_text} {period}" if period else quota_text
