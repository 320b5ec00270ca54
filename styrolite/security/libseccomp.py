"""The slice of libseccomp (2.5) Styrolite uses, through cffi in out-of-line ABI mode: the declarations
(seccomp_ffi_build.py) are precompiled into _seccomp_ffi.py, so neither a compiler at install time nor
pycparser at run time is needed (parsing them cost PID 1 about a second per boot under TCG).

Only the compiler side is used: building a filter context and exporting it as classic BPF. Loading the
exported program is one ``seccomp(2)`` call through the syscall seam, so the container child does not
run libseccomp at all. The library is opened lazily (first use), keeping PID 1's start-up lean.
"""

from __future__ import annotations

import errno as errno_module
import os

from styrolite.security._seccomp_ffi import ffi as _ffi

LIBRARY = "libseccomp.so.2"

# seccomp.h
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_NOTIFY = 0x7FC00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000


def act_errno(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


def act_trace(value: int) -> int:
    return 0x7FF00000 | (value & 0xFFFF)


CMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
           "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3
FLTATR_CTL_TSYNC = 4
FLTATR_CTL_LOG = 6
FLTATR_CTL_SSB = 7
FLTATR_CTL_OPTIMIZE = 8

NR_SCMP_ERROR = -1


class LibseccompError(OSError):
    """A libseccomp call returned ``-errno``: ``seccomp_rule_add_array(mkdir): EINVAL (Invalid argument)``."""

    def __init__(self, err: int, call: str) -> None:
        name = errno_module.errorcode.get(err, str(err))
        super().__init__(err, f"{call}: {name} ({os.strerror(err)})")

    def __str__(self) -> str:
        return str(self.strerror)


class _Library:
    def __init__(self) -> None:
        self.ffi = _ffi
        try:
            self.lib = self.ffi.dlopen(LIBRARY)
        except OSError as e:
            raise LibseccompError(errno_module.ENOENT, f"dlopen({LIBRARY!r}) (install libseccomp2)") from e


_library: _Library | None = None


def library() -> _Library:
    global _library
    if _library is None:
        _library = _Library()
    return _library


def check(result: int, call: str) -> int:
    """libseccomp returns ``-errno`` on failure."""
    if result < 0:
        raise LibseccompError(-result, call)
    return result


def version() -> tuple[int, int, int]:
    v = library().lib.seccomp_version()
    return (v.major, v.minor, v.micro)


def resolve_syscall(name: str) -> int:
    """Syscall number on the native arch (negative pseudo-numbers for other arches'), NR_SCMP_ERROR if unknown."""
    return library().lib.seccomp_syscall_resolve_name(name.encode())


def resolve_arch(name: str) -> int:
    """libseccomp's arch name (``x86_64``, ``aarch64``...) -> audit token; 0 if unknown."""
    return library().lib.seccomp_arch_resolve_name(name.encode())


def native_arch() -> int:
    return library().lib.seccomp_arch_native()
