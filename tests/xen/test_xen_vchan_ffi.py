"""The committed out-of-line cffi module for libxenvchan matches the declarations in vchan_ffi_build.py."""

from __future__ import annotations

from pathlib import Path

from idm import vchan_ffi_build


def test_committed_vchan_ffi_is_current(tmp_path: Path) -> None:
    vchan_ffi_build.generate(str(tmp_path))
    committed = Path(vchan_ffi_build.__file__).with_name("_vchan_ffi.py").read_text()
    assert (tmp_path / "_vchan_ffi.py").read_text() == committed, "run: python -m idm.vchan_ffi_build"


def test_vchan_module_needs_no_pycparser() -> None:
    from idm._vchan_ffi import ffi

    assert ffi.sizeof("struct libxenvchan_head") >= 28
