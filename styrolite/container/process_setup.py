"""The last steps before ``execve``, shared by a container's init and by ``exec``.

Order (runc's): cwd -> rlimits -> oomScoreAdj -> personality -> umask -> [seccomp, when
noNewPrivileges is off: it needs CAP_SYS_ADMIN, which is about to go] -> additional gids, gid, uid (with
PR_SET_KEEPCAPS so the configured capabilities survive) -> capabilities -> no_new_privs -> [seccomp,
when noNewPrivileges is on: as late as possible] -> close every descriptor but stdio and the preserved
ones -> execve.
"""

from __future__ import annotations

import os
import sys as python_sys
from typing import Any

from styrolite import security
from styrolite.errors import ContainerError
from styrolite.spec.model import Capabilities, Process, Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def environment(process: Process) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def find_executable(process: Process) -> str:
    """Resolve ``args[0]`` in the container's filesystem (we are inside it) via the process's PATH."""
    name = process.args[0]
    if "/" in name:
        candidates = [name if os.path.isabs(name) else os.path.join(process.cwd, name)]
    else:
        path = environment(process).get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    where = "" if "/" in name else f" in PATH {environment(process).get('PATH', DEFAULT_PATH)!r}"
    raise ContainerError(f"exec {name!r}: executable file not found{where}")


def enter_cwd(cwd: str) -> None:
    """chdir, then make sure we really are inside the container's root (CVE-2024-21626 class)."""
    try:
        os.chdir(cwd)
        where = os.getcwd()
    except OSError as e:
        raise ContainerError(f"chdir to cwd {cwd!r}: {e.strerror}") from e
    if not where.startswith("/"):
        raise ContainerError(f"cwd {cwd!r} resolves outside the container's root")


def close_descriptors_except(keep: set[int], sys: Syscalls = LINUX) -> None:
    """Close every fd >= 3 that is not in ``keep`` (close_range over the gaps)."""
    start = 3
    for fd in sorted(f for f in keep if f >= 3):
        if fd > start:
            sys.close_range(start, fd - 1, 0)
        start = fd + 1
    sys.close_range(start, 0xFFFFFFFF, 0)


def set_oom_score_adj_early(process: Process | None) -> None:
    """``process.oomScoreAdj``, before any user namespace is entered: in there a non-dumpable process's /proc
    files belong to the host's root and cannot be written. The process inherits it (setup and exec)."""
    if process is not None and process.oom_score_adj is not None:
        security.set_oom_score_adj(process.oom_score_adj)


def become_process(
    process: Process,
    spec: Spec,
    seccomp_filter: Any,
    *,
    executable: str,
    preserve_fds: int = 0,
    keep_fds: set[int] = frozenset(),  # type: ignore[assignment]
    sys: Syscalls = LINUX,
) -> None:
    """Apply ``process`` to the calling (already namespaced, already pivoted) process and exec it."""
    preserved = set(range(3, 3 + preserve_fds))
    close_descriptors_except(preserved | set(keep_fds), sys)
    enter_cwd(process.cwd)
    security.apply_rlimits(process.rlimits, sys)
    if process.oom_score_adj is not None:
        security.set_oom_score_adj(process.oom_score_adj)
    if spec.linux and spec.linux.personality:
        security.set_personality(spec.linux.personality, sys)
    if process.user.umask is not None:
        security.set_umask(process.user.umask)

    early_seccomp = seccomp_filter is not None and not process.no_new_privileges
    if early_seccomp:
        seccomp_filter.load()
    security.keep_caps_across_setuid()
    _set_identity(process, sys)
    for warning in security.apply_capabilities(process.capabilities or Capabilities(), sys):
        print(f"styrolite: warning: {warning}", file=python_sys.stderr)
    if process.no_new_privileges:
        security.set_no_new_privs()
    if seccomp_filter is not None and not early_seccomp:
        seccomp_filter.load()

    for fd in preserved:
        os.set_inheritable(fd, True)
    sys.close_range(3 + preserve_fds, 0xFFFFFFFF, k.CLOSE_RANGE_CLOEXEC)
    try:
        os.execve(executable, process.args, environment(process))
    except OSError as e:
        raise ContainerError(f"exec {process.args[0]!r}: {e.strerror}") from e


def _set_identity(process: Process, sys: Syscalls) -> None:
    user = process.user
    try:
        sys.setgroups(list(user.additional_gids))
    except OSError as e:
        # inside a user namespace with setgroups denied, only an empty request may pass
        if user.additional_gids:
            raise ContainerError(f"set additional gids {user.additional_gids}") from e
    try:
        sys.setresgid(user.gid)
    except OSError as e:
        raise ContainerError(f"set gid {user.gid}") from e
    try:
        sys.setresuid(user.uid)
    except OSError as e:
        raise ContainerError(f"set uid {user.uid}") from e
