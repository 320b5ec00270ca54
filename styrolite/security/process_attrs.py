"""Small per-process security attributes: no_new_privs, oom_score_adj, umask, personality, dumpable.

Where each runs in the container init (forked child, after ``pivot_root``):

- ``set_dumpable(False)`` early, before anything from the container can see the process (CVE-2019-5736
  defence: a non-dumpable process's /proc/<pid>/exe and /proc/<pid>/mem cannot be opened by other
  processes of the container's uid, so the runtime binary cannot be overwritten through them). The kernel
  makes the process dumpable again at execve of the container's binary, which is what we want.
- ``set_oom_score_adj`` and ``set_personality`` before the uid change and capability drop (lowering the
  oom score needs CAP_SYS_RESOURCE).
- ``set_umask`` anywhere before execve.
- ``set_no_new_privs()`` after ``apply_capabilities`` and just before the seccomp filter is loaded:
  a filter may be loaded without CAP_SYS_ADMIN only once no_new_privs is set.
"""

from __future__ import annotations

import errno
import os

import prctl  # at import time, so the forked container child does not pay for it

from styrolite.errors import ConfigError, ContainerError
from styrolite.spec.model import Personality
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

PERSONALITY_DOMAINS: dict[str, int] = {"LINUX": k.PER_LINUX, "LINUX32": k.PER_LINUX32}


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS=1: execve can never grant privileges again (setuid bits, file caps are ignored)."""
    try:
        prctl.set_no_new_privs(1)
    except OSError as e:
        raise ContainerError("prctl(PR_SET_NO_NEW_PRIVS, 1)") from e


def set_dumpable(dumpable: bool) -> None:
    """PR_SET_DUMPABLE: False hides /proc/self/{exe,mem,fd} of this process from same-uid processes."""
    try:
        prctl.set_dumpable(1 if dumpable else 0)
    except OSError as e:
        raise ContainerError(f"prctl(PR_SET_DUMPABLE, {int(dumpable)})") from e


def validate_oom_score_adj(value: int, path: str = "process.oomScoreAdj") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise ConfigError(path, f"must be an integer in -1000..1000, not {value!r}")


def set_oom_score_adj(value: int, proc: str = "/proc/self") -> None:
    """Write ``/proc/self/oom_score_adj``; lowering it below the current value needs CAP_SYS_RESOURCE."""
    validate_oom_score_adj(value)
    path = f"{proc}/oom_score_adj"
    current = _read_int(path)
    if current == value:
        return  # already so (set before a user namespace made the file unwritable): nothing to do
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as e:
        reason = f"write {value} to {path}"
        if e.errno in (errno.EACCES, errno.EPERM):
            if current is not None and value < current:
                reason += f": lowering the OOM score adjustment below {current} needs CAP_SYS_RESOURCE"
            else:
                reason += ": permission denied (in a user namespace a non-dumpable process's /proc files " \
                          "belong to the host's root)"
        raise ContainerError(reason) from e


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def set_umask(mask: int, path: str = "process.user.umask") -> int:
    """Set the umask; returns the previous one."""
    if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask <= 0o777:
        raise ConfigError(path, f"umask must be in 0..0o777, not {mask!r}")
    return os.umask(mask)


def validate_personality(personality: Personality, path: str = "linux.personality") -> None:
    if personality.domain not in PERSONALITY_DOMAINS:
        raise ConfigError(f"{path}.domain",
                          f"unknown domain {personality.domain!r} (known: {', '.join(PERSONALITY_DOMAINS)})")
    if personality.flags:
        # runtime-spec: "Currently no flag values are supported."
        raise ConfigError(f"{path}.flags", f"personality flags are not supported: {personality.flags!r}")


def set_personality(personality: Personality, sys: Syscalls = LINUX) -> None:
    """personality(2) with the OCI domain (LINUX32 makes ``uname -m`` report i686 on x86_64)."""
    validate_personality(personality)
    try:
        sys.personality(PERSONALITY_DOMAINS[personality.domain])
    except OSError as e:
        raise ContainerError(f"set personality {personality.domain}") from e
