"""The C library call PID 1 uses to give freed heap back to the kernel, compiled by cffi (out-of-line ABI mode)
into _memory_ffi.py, like the syscall seam (styrolite/syscalls/ffi_build.py). Regenerate after editing ``CDEF``:
python -m zoneinit.memory_ffi_build
"""

from __future__ import annotations

import os
import sys

CDEF = """
int malloc_trim(size_t pad);
"""

MODULE = "zoneinit._memory_ffi"


def generate(target_dir: str) -> str:
    """Write _memory_ffi.py into target_dir; returns its path."""
    from styrolite.ffigen import emit_abi_module

    return emit_abi_module(CDEF, MODULE, os.path.join(target_dir, "_memory_ffi.py"))


if __name__ == "__main__":
    print(generate(os.path.dirname(os.path.abspath(__file__))), file=sys.stderr)
