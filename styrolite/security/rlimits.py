"""OCI ``process.rlimits`` -> setrlimit(2) for the container process.

Where this runs: first of the process-security steps, in the forked container child after
``pivot_root`` and before the uid change and capability drop. Order matters: raising a hard limit needs
CAP_SYS_RESOURCE, which the capability step may remove, and RLIMIT_NPROC is counted per real uid, so it
must be in place before ``setresuid``. Limits are inherited across fork and execve.

Hard limits can only be lowered without CAP_SYS_RESOURCE (absent on some hosts, e.g. the dev machine):
asking for more than the current hard limit is a ``ContainerError`` naming the rlimit, the requested
and the current values, and the missing capability.
"""

from __future__ import annotations

import errno
import resource

from styrolite.errors import ConfigError, ContainerError
from styrolite.spec.model import Rlimit
from styrolite.syscalls import LINUX, Syscalls

# Linux's numbers (asm-generic/resource.h); ``resource`` lacks RLIMIT_LOCKS, so it is not the source.
RLIMIT_NUMBERS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4, "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

# The spec's values are uint64; RLIM_INFINITY is all ones there.
_UINT64_MAX = (1 << 64) - 1


def to_kernel_value(value: int) -> int:
    """OCI uint64 -> Python's setrlimit value (``RLIM_INFINITY`` for 2**64-1 and anything >= 2**63)."""
    return resource.RLIM_INFINITY if value < 0 or value >= 1 << 63 else value


def _show(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY or value >= 1 << 63 else str(value)


def validate_rlimits(rlimits: list[Rlimit], path: str = "process.rlimits") -> None:
    """Names known, no duplicates, 0 <= soft <= hard <= 2**64-1; ConfigError with the JSON path otherwise."""
    seen: dict[str, int] = {}
    for index, rlimit in enumerate(rlimits):
        where = f"{path}[{index}]"
        if rlimit.type not in RLIMIT_NUMBERS:
            raise ConfigError(f"{where}.type", f"unknown rlimit {rlimit.type!r} (known: {', '.join(RLIMIT_NUMBERS)})")
        if rlimit.type in seen:
            raise ConfigError(f"{where}.type", f"duplicate rlimit {rlimit.type} (also at {path}[{seen[rlimit.type]}])")
        seen[rlimit.type] = index
        for name in ("soft", "hard"):
            value = getattr(rlimit, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
                raise ConfigError(f"{where}.{name}", f"must be an integer in 0..2**64-1, not {value!r}")
        if _comparable(rlimit.soft) > _comparable(rlimit.hard):
            raise ConfigError(f"{where}.soft",
                              f"soft limit {_show(rlimit.soft)} exceeds hard limit {_show(rlimit.hard)}")


def _comparable(value: int) -> int:
    return _UINT64_MAX if to_kernel_value(value) == resource.RLIM_INFINITY else value


def apply_rlimits(rlimits: list[Rlimit], sys: Syscalls = LINUX) -> None:
    """Set each rlimit on the calling process, in config order."""
    validate_rlimits(rlimits)
    for rlimit in rlimits:
        number = RLIMIT_NUMBERS[rlimit.type]
        soft, hard = to_kernel_value(rlimit.soft), to_kernel_value(rlimit.hard)
        try:
            sys.setrlimit(number, soft, hard)
        except OSError as e:
            raise ContainerError(_explain(rlimit.type, number, soft, hard, e)) from e


def _explain(name: str, number: int, soft: int, hard: int, error: OSError) -> str:
    what = f"set {name} to soft={_show(soft)} hard={_show(hard)}"
    if error.errno != errno.EPERM:
        return what
    try:
        _, current_hard = resource.getrlimit(number)
    except (OSError, ValueError):
        return what
    if current_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > current_hard):
        return (f"{what}: raising the hard limit above the current {_show(current_hard)} needs CAP_SYS_RESOURCE, "
                "which this process does not have")
    return what
