"""The committed cffi module matches the declarations in ffi_build.py, and the seam reports errors well."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from styrolite.syscalls import LINUX, KernelError, ffi_build


def test_generated_module_is_up_to_date(tmp_path: Path):
    ffi_build.generate(str(tmp_path))
    committed = Path(ffi_build.__file__).with_name("_kernel_ffi.py").read_text()
    assert (tmp_path / "_kernel_ffi.py").read_text() == committed, "run: python -m styrolite.syscalls.ffi_build"


def test_kernel_error_names_call_arguments_and_errno(tmp_path: Path):
    with pytest.raises(KernelError) as info:
        LINUX.mount("none", str(tmp_path / "missing"), "tmpfs", 0)
    assert info.value.errno == errno.ENOENT
    expected = f"mount('none', '{tmp_path}/missing', 'tmpfs', 0, None): ENOENT (No such file or directory)"
    assert str(info.value) == expected


def test_pidfd_roundtrip():
    fd = LINUX.pidfd_open(os.getpid())
    try:
        LINUX.pidfd_send_signal(fd, 0)
    finally:
        os.close(fd)
