"""The committed out-of-line cffi module for libseccomp matches the declarations in seccomp_ffi_build.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from styrolite.security import seccomp_ffi_build


def test_committed_seccomp_ffi_is_current(tmp_path: Path) -> None:
    seccomp_ffi_build.generate(str(tmp_path))
    committed = Path(seccomp_ffi_build.__file__).with_name("_seccomp_ffi.py").read_text()
    assert (tmp_path / "_seccomp_ffi.py").read_text() == committed, \
        "run: python styrolite/security/seccomp_ffi_build.py"


def test_compiling_a_filter_never_loads_pycparser() -> None:
    """PID 1 builds every container's filter: the C parser must stay out of it (seconds under TCG)."""
    code = ("import sys; from styrolite.security import default_profile, compile_filter; "
            "compile_filter(default_profile()); print(sorted(m for m in sys.modules if 'pycparser' in m "
            "or m == 'cffi.cparser'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
