"""The C declarations of the syscall seam, compiled by cffi (out-of-line ABI mode) into _kernel_ffi.py.

Regenerate after editing ``CDEF``:  python -m styrolite.syscalls.ffi_build
tests/syscalls checks that the committed module matches these declarations.
"""

from __future__ import annotations

import os
import sys

CDEF = """
long syscall(long number, ...);
int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data);
int umount2(const char *target, int flags);
int unshare(int flags);
int setns(int fd, int nstype);
int sethostname(const char *name, size_t len);
int setdomainname(const char *name, size_t len);
int reboot(int cmd);
int personality(unsigned long persona);
int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);
struct rlimit { unsigned long rlim_cur; unsigned long rlim_max; };
struct sock_fprog { unsigned short len; void *filter; };
int setrlimit(int resource, const struct rlimit *rlim);
int execve(const char *path, char *const argv[], char *const envp[]);

struct open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

struct mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
"""

MODULE = "styrolite.syscalls._kernel_ffi"


def generate(target_dir: str) -> str:
    """Write _kernel_ffi.py into target_dir; returns its path."""
    from styrolite.ffigen import emit_abi_module

    return emit_abi_module(CDEF, MODULE, os.path.join(target_dir, "_kernel_ffi.py"))


if __name__ == "__main__":
    print(generate(os.path.dirname(os.path.abspath(__file__))), file=sys.stderr)
