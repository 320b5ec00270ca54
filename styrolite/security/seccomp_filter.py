"""A compiled seccomp filter: the BPF program and how to load it (the half that runs in the container child).

Its own module so that the on-disk filter cache (seccomp_cache) and the compiler (seccomp) both build on it
without importing each other.
"""

from __future__ import annotations

import errno as errno_module

from styrolite.errors import ContainerError
from styrolite.records import field, record
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k


@record(frozen=True)
class SeccompFilter:
    """A compiled filter: the BPF program and the seccomp(2) flags to load it with."""

    program: bytes
    flags: int = 0
    warnings: tuple[str, ...] = field(default=())

    @property
    def instructions(self) -> int:
        return len(self.program) // 8

    def export_bpf(self) -> bytes:
        """The classic-BPF program (``struct sock_filter`` array), as libseccomp's seccomp_export_bpf wrote it."""
        return self.program

    def load(self, sys: Syscalls = LINUX) -> None:
        """Install the filter on the calling process (needs no_new_privs or CAP_SYS_ADMIN; see module doc)."""
        try:
            result = sys.seccomp_set_mode_filter(self.program, self.flags)
        except OSError as e:
            hint = ""
            if e.errno == errno_module.EACCES:
                hint = ": set no_new_privs first or keep CAP_SYS_ADMIN until the filter is loaded"
            raise ContainerError(f"load the seccomp filter ({self.instructions} instructions){hint}") from e
        if result > 0 and self.flags & k.SECCOMP_FILTER_FLAG_TSYNC:
            # With TSYNC the kernel reports the thread it could not synchronise instead of failing.
            raise ContainerError(f"load the seccomp filter: SECCOMP_FILTER_FLAG_TSYNC could not synchronise "
                                 f"thread {result}")
