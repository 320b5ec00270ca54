"""Linux capabilities for the container process: OCI ``process.capabilities`` -> the five kernel sets.

Where this runs: in the forked container child, after ``pivot_root`` and rlimits, and AFTER the
uid/gid change. The init sequence is::

    keep_caps_across_setuid()          # PR_SET_KEEPCAPS=1: setresuid(0 -> uid) keeps the permitted set
    setgroups / setresgid / setresuid  # (the lead's user code)
    apply_capabilities(spec.process.capabilities)
    set_no_new_privs()                 # if process.noNewPrivileges
    seccomp_filter.load()              # last before execve

Why after setresuid: the kernel always clears the ambient set (and, without KEEPCAPS, the permitted and
effective sets) when a process drops from uid 0 to a non-zero uid, so capabilities set before the uid
change would not survive it. After the change the effective set is empty, so ``apply_capabilities`` first
re-raises effective to the (kept) permitted set to regain CAP_SETPCAP, then drops the bounding set, then
sets inheritable/permitted/effective in one capset, and raises ambient last (ambient needs each cap in
both permitted and inheritable). At execve the kernel computes the new sets: for a non-root uid only the
ambient set survives into permitted/effective, which is why OCI configs for non-root users list ambient.

A capability this host or kernel does not have (beyond ``/proc/sys/kernel/cap_last_cap``, or absent
from the runtime's own bounding/permitted set, e.g. CAP_SYS_RESOURCE on the dev machine) can never be
granted; it is skipped and reported as one warning line naming it, never a crash. A name that is not a
capability Styrolite knows (a newer kernel's, or a typo) is skipped with a warning too, as runc and crun
do: clients send the lists of the newest kernel they know. Only a non-string entry is a ``ConfigError``.
"""

from __future__ import annotations

import prctl  # at import time, so the forked container child does not pay for it

from styrolite.errors import ConfigError, ContainerError
from styrolite.records import field, record
from styrolite.spec.model import Capabilities, Process
from styrolite.spec.vocabulary import CAPABILITIES, CAPABILITY_NUMBERS
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

# include/uapi/linux/capability.h, in number order (index == capability number): one table, the spec's.
CAPABILITY_NAMES: tuple[str, ...] = CAPABILITIES

# Docker's default set minus CAP_NET_RAW (issue 6: no raw sockets by default).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def capability_number(name: str) -> int:
    """``CAP_SYS_ADMIN`` -> 21 (case-insensitive; the ``CAP_`` prefix may be omitted). KeyError if unknown."""
    return CAPABILITY_NUMBERS[_normalize(name)]


def capability_name(number: int) -> str:
    """21 -> ``CAP_SYS_ADMIN``; numbers newer than this table -> ``CAP_41``."""
    return CAPABILITY_NAMES[number] if 0 <= number < len(CAPABILITY_NAMES) else f"CAP_{number}"


def names_to_mask(names: list[str] | tuple[str, ...]) -> int:
    """The bit mask of the known names (unknown ones are left out; ``unknown_capability_warnings`` says so)."""
    mask = 0
    for name in names:
        number = CAPABILITY_NUMBERS.get(_normalize(name))
        if number is not None:
            mask |= 1 << number
    return mask


def _normalize(name: str) -> str:
    normalized = name.strip().upper()
    return normalized if normalized.startswith("CAP_") else "CAP_" + normalized


def unknown_capability_warnings(process: Process | None) -> list[str]:
    """One line per capability name in ``process.capabilities`` that Styrolite does not know (it is ignored)."""
    caps = process.capabilities if process is not None else None
    if caps is None:
        return []
    unknown = sorted({name for set_name in CAP_SETS for name in getattr(caps, set_name)
                      if isinstance(name, str) and _normalize(name) not in CAPABILITY_NUMBERS})
    return [f"process.capabilities: unknown capability {name!r} ignored" for name in unknown]


def mask_to_names(mask: int) -> list[str]:
    """0x3 -> ['CAP_CHOWN', 'CAP_DAC_OVERRIDE'] (number order)."""
    return [capability_name(bit) for bit in range(mask.bit_length()) if mask >> bit & 1]


def last_cap() -> int:
    """The running kernel's highest capability number (40 on 5.9+ kernels)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITY_NAMES) - 1


def current_capabilities(pid: int | str = "self") -> dict[str, int]:
    """The five sets of a process as bit masks: ``{"CapInh": 0, "CapPrm": ..., "CapEff", "CapBnd", "CapAmb"}``."""
    result: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                result[key] = int(value.strip(), 16)
    return result


@record
class CapabilityPlan:
    """What to set, as bit masks, after checking the request against what the process can have."""

    bounding: int = 0
    effective: int = 0
    inheritable: int = 0
    permitted: int = 0
    ambient: int = 0
    warnings: list[str] = field(default_factory=list)


def validate_capabilities(caps: Capabilities, path: str = "process.capabilities") -> None:
    """Every entry must be a string; ConfigError names the JSON path of the first bad entry."""
    for set_name in CAP_SETS:
        for index, name in enumerate(getattr(caps, set_name)):
            if not isinstance(name, str):
                raise ConfigError(f"{path}.{set_name}[{index}]", f"capability must be a string, not {name!r}")


def plan_capabilities(caps: Capabilities, current: dict[str, int], kernel_last_cap: int) -> CapabilityPlan:
    """Pure: the requested sets, minus what can never be granted (each such cap -> one warning line).

    ``current`` is ``current_capabilities()`` of the process about to apply the plan. A cap can be in the
    new bounding and permitted sets only if it is in the current ones (sets only shrink), inheritable only
    if it stays in bounding, effective only if permitted, ambient only if permitted and inheritable.
    """
    validate_capabilities(caps)
    kernel_mask = (1 << (kernel_last_cap + 1)) - 1
    requested = {set_name: names_to_mask(getattr(caps, set_name)) for set_name in CAP_SETS}
    plan = CapabilityPlan()
    plan.bounding = requested["bounding"] & current["CapBnd"] & kernel_mask
    plan.permitted = requested["permitted"] & current["CapPrm"] & kernel_mask
    plan.inheritable = requested["inheritable"] & (plan.bounding | current["CapInh"]) & kernel_mask
    plan.effective = requested["effective"] & plan.permitted
    plan.ambient = requested["ambient"] & plan.permitted & plan.inheritable

    skipped: dict[int, list[str]] = {}
    for set_name in CAP_SETS:
        missing = requested[set_name] & ~getattr(plan, set_name)
        for bit in range(missing.bit_length()):
            if missing >> bit & 1:
                skipped.setdefault(bit, []).append(set_name)
    for bit, set_names in sorted(skipped.items()):
        plan.warnings.append(f"capability {capability_name(bit)} skipped from {', '.join(set_names)}: "
                             f"{_why_unavailable(bit, set_names, requested, current, kernel_last_cap)}")
    return plan


def _why_unavailable(bit: int, set_names: list[str], requested: dict[str, int], current: dict[str, int],
                     kernel_last_cap: int) -> str:
    if bit > kernel_last_cap:
        return f"the running kernel does not know it (cap_last_cap={kernel_last_cap})"
    if not current["CapBnd"] >> bit & 1 or not current["CapPrm"] >> bit & 1:
        return "this host does not grant it to the runtime"
    if set_names == ["ambient"]:
        return "ambient needs it in permitted and inheritable too"
    if "effective" in set_names and not requested["permitted"] >> bit & 1:
        return "effective needs it in permitted too"
    return "inheritable needs it in bounding too"


def keep_caps_across_setuid() -> None:
    """PR_SET_KEEPCAPS=1: keep the permitted set when setresuid drops uid 0 (call just before the uid change).

    The kernel resets the flag at execve; ``apply_capabilities`` clears it once the sets are final.
    """
    try:
        prctl.set_keepcaps(True)
    except OSError as e:
        raise ContainerError("prctl(PR_SET_KEEPCAPS, 1)") from e


def apply_capabilities(caps: Capabilities | None, sys: Syscalls = LINUX) -> list[str]:
    """Make this process's five capability sets exactly ``caps`` (as far as the host allows).

    Returns the warning lines for capabilities that had to be skipped. ``None`` leaves the sets alone
    (runc's behaviour for a config without ``process.capabilities``). Raises ConfigError for unknown
    names, ContainerError (with the kernel's reason as cause) if the kernel refuses a change.
    """
    if caps is None:
        return []
    current, kernel_last_cap = current_capabilities(), last_cap()
    plan = plan_capabilities(caps, current, kernel_last_cap)
    all_caps = range(kernel_last_cap + 1)
    try:
        # After setresuid with KEEPCAPS, effective is empty: regain CAP_SETPCAP etc. from permitted.
        permitted = [bit for bit in _bits(current["CapPrm"]) if bit < len(CAPABILITY_NAMES)]
        prctl.set_caps((permitted, prctl.CAP_EFFECTIVE, True))
    except OSError as e:
        raise ContainerError("raise the effective capabilities to the permitted set") from e

    for bit in all_caps:
        if current["CapBnd"] >> bit & 1 and not plan.bounding >> bit & 1:
            try:
                prctl.capbset_drop(bit)
            except OSError as e:
                raise ContainerError(f"drop {capability_name(bit)} from the bounding set") from e

    # Only caps this kernel knows and this table names can be passed to python-prctl.
    known = [bit for bit in all_caps if bit < len(CAPABILITY_NAMES)]
    changes = []
    for flag, mask in ((prctl.CAP_INHERITABLE, plan.inheritable), (prctl.CAP_PERMITTED, plan.permitted),
                       (prctl.CAP_EFFECTIVE, plan.effective)):
        changes.append(([bit for bit in known if mask >> bit & 1], flag, True))
        changes.append(([bit for bit in known if not mask >> bit & 1], flag, False))
    try:
        prctl.set_caps(*changes)
    except OSError as e:
        raise ContainerError(
            f"set capabilities (permitted={mask_to_names(plan.permitted)}, "
            f"inheritable={mask_to_names(plan.inheritable)}, effective={mask_to_names(plan.effective)})"
        ) from e

    _set_ambient(plan.ambient, sys)
    try:
        prctl.set_keepcaps(False)
    except OSError as e:
        raise ContainerError("prctl(PR_SET_KEEPCAPS, 0)") from e
    return plan.warnings


def _set_ambient(mask: int, sys: Syscalls) -> None:
    try:
        sys.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    except OSError as e:
        if mask:  # kernels before 4.3 have no ambient set; only an error if we needed one
            raise ContainerError("clear the ambient capability set") from e
        return
    for bit in _bits(mask):
        try:
            sys.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_RAISE, bit, 0, 0)
        except OSError as e:
            raise ContainerError(f"raise {capability_name(bit)} in the ambient set") from e


def _bits(mask: int) -> list[int]:
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]
