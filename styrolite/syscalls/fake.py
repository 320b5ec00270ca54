"""A recording fake of the syscall seam: logic above it is tested without root.

    fake = RecordingSyscalls()
    fake.fail_on("mount", errno.EPERM, lambda args: args[1].endswith("/proc"))
    setup_rootfs(spec, sys=fake)
    assert fake.names() == ["mount", "mount", ...]
"""

from __future__ import annotations

import errno as errno_module

from styrolite.records import field, record
from styrolite.syscalls.linux import LINUX, KernelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


@record
class Call:
    name: str
    args: tuple[Any, ...]


@record
class RecordingSyscalls:
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[str, int, Callable[[tuple[Any, ...]], bool]]] = field(default_factory=list)
    next_fd: int = 1000

    def fail_on(self, name: str, err: int = errno_module.EPERM,
                when: Callable[[tuple[Any, ...]], bool] = lambda _args: True) -> None:
        self.failures.append((name, err, when))

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [c.args for c in self.calls if c.name == name]

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        for fail_name, err, when in self.failures:
            if fail_name == name and when(args):
                raise KernelError(err, name, ", ".join(repr(a) for a in args))

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def mount(self, source, target, fstype, flags, data=None) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def mount_setattr(self, path, flags, attr_set, attr_clr=0, propagation=0, dirfd=-100) -> None:
        self._record("mount_setattr", path, flags, attr_set, attr_clr, propagation, dirfd)

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        self._record("open_tree", dirfd, path, flags)
        self.next_fd += 1
        return self.next_fd

    def move_mount(self, from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
        self._record("move_mount", from_dirfd, from_path, to_dirfd, to_path, flags)

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        """Records, then really opens (openat2 needs no privilege) so callers get a usable, confined fd."""
        self._record("openat2", dirfd, path, flags, mode, resolve)
        return LINUX.openat2(dirfd, path, flags, mode, resolve)

    def chroot(self, path: str) -> None:
        self._record("chroot", path)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._record("mknod", path, mode, device)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def setgroups(self, groups: list[int]) -> None:
        self._record("setgroups", list(groups))

    def setresgid(self, gid: int) -> None:
        self._record("setresgid", gid)

    def setresuid(self, uid: int) -> None:
        self._record("setresuid", uid)

    def personality(self, persona: int) -> int:
        self._record("personality", persona)
        return 0

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def pidfd_open(self, pid: int, flags: int = 0) -> int:
        self._record("pidfd_open", pid, flags)
        self.next_fd += 1
        return self.next_fd

    def pidfd_send_signal(self, pidfd: int, sig: int, flags: int = 0) -> None:
        self._record("pidfd_send_signal", pidfd, sig, flags)

    def close_range(self, first: int, last: int, flags: int = 0) -> None:
        self._record("close_range", first, last, flags)

    def setrlimit(self, resource_id: int, soft: int, hard: int) -> None:
        self._record("setrlimit", resource_id, soft, hard)

    def execve(self, path: str, argv: list[str], envp: list[str], seccomp_program: bytes | None = None,
               seccomp_flags: int = 0) -> None:
        """Records the call and returns (a real execve never does): callers treat a return as a failure."""
        self._record("execve", path, list(argv), list(envp), seccomp_program, seccomp_flags)

    def bpf(self, cmd: int, attr: bytes) -> int:
        """Records the call; BPF_PROG_LOAD (5) returns a fresh fake fd, every other command 0."""
        self._record("bpf", cmd, bytes(attr))
        if cmd == 5:
            self.next_fd += 1
            return self.next_fd
        return 0

    def seccomp_set_mode_filter(self, program: bytes, flags: int = 0) -> int:
        self._record("seccomp_set_mode_filter", bytes(program), flags)
        return 0

    def finit_module(self, fd: int, params: str = "", flags: int = 0) -> None:
        self._record("finit_module", fd, params, flags)

    def reboot(self, cmd: int) -> None:
        self._record("reboot", cmd)
