"""Load a cgroup device program and attach it to a cgroup v2 directory, through the ``bpf()`` seam call.

``union bpf_attr`` is built as raw bytes; the pointers it carries (instructions, license, verifier log)
point at buffers of the seam's cffi (already loaded, where ctypes would cost a long-lived process like the zone's
PID 1 another ~0.4 MB), kept alive across the call. Attaching with flags 0 means one program per cgroup:
attaching again (``styrolite update``) replaces the previous program atomically.
"""

from __future__ import annotations

import errno
import os
import struct

from styrolite.cgroups.base import CgroupError
from styrolite.syscalls import LINUX, KernelError, LinuxSyscalls, Syscalls
from styrolite.syscalls import constants as k

_ATTR_SIZE = 128
_LICENSE = b"Apache-2.0\0"
_LOG_SIZE = 1 << 16


def _buffer(init: bytes | int) -> object:
    """A C ``char[]`` (a copy of ``init``, or ``init`` zero bytes) that lives as long as the returned object."""
    from styrolite.syscalls._kernel_ffi import ffi

    return ffi.new("char[]", init)


def _address(buffer: object) -> int:
    from styrolite.syscalls._kernel_ffi import ffi

    return int(ffi.cast("uintptr_t", buffer))


def _prog_load_attr(program: bytes, license_buffer: object, log_buffer: object = None) -> tuple[object, bytes]:
    """The attr bytes, and the instruction buffer they point into (keep it alive until the call returns)."""
    insns = _buffer(program)
    attr = struct.pack(
        "<IIQQIIQ",
        k.BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8, _address(insns), _address(license_buffer),
        1 if log_buffer is not None else 0, _LOG_SIZE if log_buffer is not None else 0,
        _address(log_buffer) if log_buffer is not None else 0,
    )
    return insns, attr.ljust(_ATTR_SIZE, b"\0")


def load_device_program(program: bytes, sys: Syscalls = LINUX) -> int:
    """BPF_PROG_LOAD; returns the program fd. A verifier rejection carries the verifier's log."""
    license_buffer = _buffer(_LICENSE)
    insns, attr = _prog_load_attr(program, license_buffer)
    try:
        fd = sys.bpf(k.BPF_PROG_LOAD, attr)
        del insns
        return fd
    except KernelError as e:
        if e.errno not in (errno.EACCES, errno.EINVAL):
            raise CgroupError("load the cgroup device program") from e
        log = _buffer(_LOG_SIZE)
        insns, attr = _prog_load_attr(program, license_buffer, log)
        try:
            fd = sys.bpf(k.BPF_PROG_LOAD, attr)
            del insns
        except KernelError as retry_error:
            from styrolite.syscalls._kernel_ffi import ffi

            text = ffi.string(log).decode(errors="replace").strip().replace("\n", "; ")
            raise CgroupError(f"load the cgroup device program (verifier: {text[-600:]})") from retry_error
        return fd


def attach_device_program(cgroup_dir: str, program_fd: int, sys: Syscalls = LINUX) -> None:
    """BPF_PROG_ATTACH to the cgroup directory (BPF_CGROUP_DEVICE)."""
    dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = struct.pack("<IIIII", dir_fd, program_fd, k.BPF_CGROUP_DEVICE, 0, 0).ljust(_ATTR_SIZE, b"\0")
        sys.bpf(k.BPF_PROG_ATTACH, attr)
    except KernelError as e:
        raise CgroupError(f"attach the device program to {cgroup_dir}") from e
    finally:
        os.close(dir_fd)


def install_device_program(cgroup_dir: str, program: bytes, sys: Syscalls = LINUX) -> None:
    """Load and attach; the cgroup keeps the program alive after our fd is closed."""
    program_fd = load_device_program(program, sys)
    try:
        attach_device_program(cgroup_dir, program_fd, sys)
    finally:
        if isinstance(sys, LinuxSyscalls):  # a fake's fd numbers are not ours to close
            os.close(program_fd)
