"""The last steps before ``execve``, shared by a container's init and by ``exec``.

Two halves, so that everything that can fail is done (and reported) before ``create`` returns, as runc
does; ``start`` then only has to let the process go:

``prepare_process`` (before "created"): close every descriptor but stdio, the preserved and the kept
ones -> create and enter ``cwd`` (verified to be inside the root) -> rlimits -> oomScoreAdj ->
personality -> umask -> HOME from the container's /etc/passwd -> [seccomp, when noNewPrivileges is off:
loading needs CAP_SYS_ADMIN, which the identity change may take away] -> additional gids, gid, uid (with
PR_SET_KEEPCAPS so the configured capabilities survive) -> capabilities -> no_new_privs -> resolve the
executable as the new user (missing: "no such file or directory"/"executable file not found in $PATH";
not executable: "permission denied", the words podman and docker map to 127 and 126).

``execute`` (after "start"): mark the preserved descriptors inheritable, then [seccomp, when
noNewPrivileges is on] and execve in one step of the syscall seam: with every buffer built beforehand,
the only system call the filter has to allow is execve itself.
"""

from __future__ import annotations

import errno
import os
import stat
import sys as python_sys

from styrolite import security
from styrolite.errors import ContainerError
from styrolite.records import field, record
from styrolite.spec.model import Capabilities, Process, Spec
from styrolite.syscalls import LINUX, Syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecutableError(ContainerError):
    """args[0] cannot be executed; ``exit_code`` is the shell's: 127 not found, 126 found but not runnable."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@record
class ReadyProcess:
    """A process set up as far as it can be before ``start``: what is left is one execve."""

    executable: str
    args: list[str]
    env: list[str]
    preserve_fds: int = 0
    late_filter: Any = None  # a SeccompFilter loaded together with execve (noNewPrivileges), or None
    warnings: list[str] = field(default_factory=list)


def environment(process: Process) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of ``uid`` in the container's passwd file; "/" when there is none (runc's rule)."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2].isdigit() and int(fields[2]) == uid and fields[5]:
                    return fields[5]
    except OSError:
        pass
    return "/"


def find_executable(process: Process, env: dict[str, str] | None = None) -> str:
    """Resolve ``args[0]`` in the container's filesystem (we are inside it) the way execvp and Go's LookPath do."""
    name = process.args[0]
    env = environment(process) if env is None else env
    if "/" in name:
        path = name if os.path.isabs(name) else os.path.join(process.cwd, name)
        problem = _not_executable(path)
        if problem is not None:
            raise ExecutableError(f"exec {name!r}: {problem}", 126 if "permission" in problem else 127)
        return path
    search = env.get("PATH", DEFAULT_PATH)
    denied = None
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        problem = _not_executable(candidate)
        if problem is None:
            return candidate
        if "permission denied" in problem and denied is None:
            denied = candidate
    if denied is not None:
        raise ExecutableError(f"exec {name!r}: {denied}: permission denied", 126)
    raise ExecutableError(f"exec {name!r}: executable file not found in $PATH ({search})", 127)


def _not_executable(path: str) -> str | None:
    """None when ``path`` can be executed by us; else the reason, in the kernel's words."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"stat {path}: {os.strerror(e.errno or errno.ENOENT).lower()}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: is a directory (permission denied)"
    if not os.access(path, os.X_OK):  # also false on a noexec mount
        return f"{path}: permission denied"
    return None


def enter_cwd(cwd: str, create: bool = False) -> None:
    """chdir (creating it first if asked, as runc does), then make sure we really are inside the root."""
    try:
        if create and not os.path.isdir(cwd):
            os.makedirs(cwd, 0o755, exist_ok=True)
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


def prepare_process(
    process: Process,
    spec: Spec,
    seccomp_filter: Any,
    *,
    preserve_fds: int = 0,
    keep_fds: set[int] = frozenset(),  # type: ignore[assignment]
    create_cwd: bool = False,
    sys: Syscalls = LINUX,
) -> ReadyProcess:
    """Apply ``process`` to the calling (namespaced, pivoted) process, up to but not including execve."""
    close_descriptors_except(set(range(3, 3 + preserve_fds)) | set(keep_fds), sys)
    enter_cwd(process.cwd, create=create_cwd)
    security.apply_rlimits(process.rlimits, sys)
    if process.oom_score_adj is not None:
        security.set_oom_score_adj(process.oom_score_adj)
    if spec.linux and spec.linux.personality:
        security.set_personality(spec.linux.personality, sys)
    if process.user.umask is not None:
        security.set_umask(process.user.umask)
    env = environment(process)
    if "HOME" not in env:
        env["HOME"] = home_of(process.user.uid)

    early_seccomp = seccomp_filter is not None and not process.no_new_privileges
    if early_seccomp:
        seccomp_filter.load(sys)
    security.keep_caps_across_setuid()
    _set_identity(process, sys)
    warnings = security.apply_capabilities(process.capabilities or Capabilities(), sys)
    for warning in warnings:
        print(f"styrolite: warning: {warning}", file=python_sys.stderr, flush=True)
    security.set_dumpable(False)  # a uid change resets it to fs.suid_dumpable; stay hidden until execve
    if process.no_new_privileges:
        security.set_no_new_privs()
    executable = find_executable(process, env)
    return ReadyProcess(executable=executable, args=list(process.args), env=[f"{k}={v}" for k, v in env.items()],
                        preserve_fds=preserve_fds, late_filter=None if early_seccomp else seccomp_filter,
                        warnings=warnings)


def execute(ready: ReadyProcess, sys: Syscalls = LINUX) -> None:
    """execve the prepared process (loading a late seccomp filter in the same step); raises on failure."""
    for fd in range(3, 3 + ready.preserve_fds):
        os.set_inheritable(fd, True)
    program = ready.late_filter.program if ready.late_filter is not None else None
    flags = ready.late_filter.flags if ready.late_filter is not None else 0
    try:
        sys.execve(ready.executable, ready.args, ready.env, program, flags)
    except OSError as e:
        code = 126 if e.errno in (errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR) else 127
        raise ExecutableError(f"exec {ready.args[0]!r}: {os.strerror(e.errno or errno.EIO).lower()}", code) from e
    raise ExecutableError(f"exec {ready.args[0]!r}: execve returned", 127)


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
