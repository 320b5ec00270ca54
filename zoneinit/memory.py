"""PID 1's own memory: what the boot leaves behind that PID 1 never uses again goes back to the kernel.

* ``drop_startup_modules()``: a Nuitka program imports ``inspect`` at start-up, before any of our code runs, to
  patch it for compiled functions (Nuitka's InspectPatcher.c, unconditionally) — and with it ``ast``, ``dis``,
  ``linecache`` and ``tokenize``: about 0.7 MB of PID 1's heap. PID 1's code is bytecode and never uses them (it
  imports ``traceback``, which needs linecache, only to format a failure), so they are removed from
  ``sys.modules``, their namespaces cleared (Nuitka keeps a reference to the ``inspect`` module object, so
  dropping the name alone would free nothing) and the cycles they leave collected; the boot's own imports then
  fill the freed space. A later ``import inspect`` loads a fresh copy.
* ``datetime_from_c()``: ``datetime.py`` first defines the whole pure-Python implementation, then replaces it with
  its C module's (``from _datetime import *``), whose public names are exactly the same. PID 1 imports datetime
  only through msgpack (its Timestamp type, its C extension's datetime C API), so it takes ``_datetime`` as
  ``datetime`` directly: about 0.35 MB of heap, measured in a zone.
* ``trim_heap()``: ``malloc_trim(0)`` once the boot is done. Boot leaves free chunks in the C heap (the
  unmarshalled code of modules, transient buffers); glibc returns only the top of the heap by itself, this hands
  every free page back (about 1 MB after a boot, measured in a zone).
"""

from __future__ import annotations

import sys

# imported at start-up by Nuitka's inspect patch alone (a Nuitka build of `pass` imports exactly these on top of
# what any interpreter start imports); re, enum, collections, keyword stay: PID 1 needs them (json, signal, socket)
STARTUP_ONLY_MODULES = ("inspect", "ast", "dis", "opcode", "linecache", "tokenize", "token")


def drop_startup_modules(modules: tuple[str, ...] = STARTUP_ONLY_MODULES) -> list[str]:
    """Forget ``modules`` and free what they hold; returns the names that were loaded. Call it before anything
    imports from them: a function taken out of a cleared module would find its globals gone."""
    dropped = []
    for name in modules:
        module = sys.modules.pop(name, None)
        if module is not None:
            vars(module).clear()
            dropped.append(name)
    if dropped:
        import gc

        gc.collect()   # their classes and functions sit in reference cycles: only the collector frees them
    return dropped


def datetime_from_c() -> bool:
    """Make ``import datetime`` give the C module ``_datetime`` (its public names are the same); False if datetime
    is already imported (then nothing changes) or this interpreter has no ``_datetime``."""
    if "datetime" in sys.modules:
        return False
    try:
        import _datetime
    except ImportError:
        return False
    sys.modules["datetime"] = _datetime
    return True


def trim_heap() -> bool:
    """Give the C heap's free pages back to the kernel (``malloc_trim(0)``); False if nothing was released or the
    C library has no malloc_trim (musl)."""
    from zoneinit._memory_ffi import ffi

    try:
        return bool(ffi.dlopen(None).malloc_trim(0))
    except AttributeError:   # a C library without malloc_trim
        return False
