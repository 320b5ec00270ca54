"""Precompiled cffi declarations: the one way Styrolite and the zone talk to C libraries and the kernel.

cffi's out-of-line ABI mode turns C declarations into a pure-Python module of tables at development time;
at run time only ``_cffi_backend`` is needed: no compiler when installing, and no pycparser when starting
(under TCG that parse cost PID 1 about a second). Each ``*_ffi_build.py`` holds its declarations and
calls :func:`emit_abi_module`; a test per module checks the committed file is current.
"""

from __future__ import annotations


def emit_abi_module(cdef: str, module: str, path: str) -> str:
    """Write the out-of-line ABI module ``module`` for ``cdef`` to ``path``; returns ``path``."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source(module, None)
    ffi.emit_python_code(path)
    with open(path, encoding="ascii") as f:
        text = f.read()
    with open(path, "w", encoding="ascii") as f:
        f.write("# ruff: noqa: E501\n" + text)  # generated one-line tables
    return path
