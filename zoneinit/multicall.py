"""One binary, three programs: the zone's init, the Styrolite CLI and the in-zone ``zone`` tool.

Nuitka builds this module into a single standalone executable (zonebuild.initrd, through its entry
build/entry/multicall.py; our packages go into it as bytecode, zonebuild.initrd_compile). The initramfs
installs it once as ``/lib/zone/zone-init`` and points ``/lib/zone/init``, ``/bin/styrolite`` and ``/bin/zone``
at it (symlinks); which program runs is chosen by the name it was started under (``basename(argv[0])``),
busybox style. ``zone-init APPLET ARGS...`` also works (``zone-init selftest`` checks a build's lazy imports).

Applets are imported lazily so PID 1 never pays for the CLI's imports, and a module missing from a build is a
clear one-line message, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

# applet name -> (module, function). Stage-0 (/init) execs us as /lib/zone/init. The binary's own name,
# zone-init, is deliberately not an applet: running it by hand never starts PID 1's logic.
APPLETS: dict[str, tuple[str, str]] = {
    "init": ("zoneinit.init", "main"),
    "styrolite": ("styrolite.cli", "main"),
    "zone": ("zoneinit.zonectl", "main"),
    "selftest": ("zoneinit.multicall", "selftest"),
}
# What a build must be able to import at run time, although nothing imports it at start (lazy imports,
# extension modules): the build's self-test checks each one.
LAZY_IMPORTS = ("zoneinit.rtnetlink", "msgpack", "prctl", "_cffi_backend", "zoneinit.init", "styrolite.cli",
                "zoneinit.zonectl", "idm.server", "idm.vchan", "zoneinit.idm.service", "zoneinit.boot.phases",
                "styrolite.api", "_json", "_sha256", "hashlib", "lzma", "zstandard")
EXIT_USAGE = 2
EXIT_MISSING = 127


def resolve(name: str) -> Callable[[], object]:
    """The entry function of applet ``name``; raises LookupError with a readable reason."""
    if name not in APPLETS:
        raise LookupError(f"unknown applet {name!r} (known: {', '.join(sorted(APPLETS))})")
    module_name, function_name = APPLETS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise LookupError(f"applet {name!r} is not in this build (module {module_name} is missing)") from e
        raise
    entry = getattr(module, function_name, None)
    if not callable(entry):
        raise LookupError(f"applet {name!r}: {module_name} has no {function_name}()")
    return entry


def invoked_name() -> str:
    """argv[0] exactly as execve() got it. A Nuitka standalone program reports its resolved binary path as
    sys.argv[0] (zone-init, whatever symlink started it), so the name the caller used is read from the kernel."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def applet_name(argv: list[str], invoked: str | None = None) -> tuple[str, list[str]]:
    """(applet, argv for it): by basename of argv[0] (or of the name we were exec'd under), else
    ``zone-init APPLET ...`` with argv shifted."""
    base = os.path.basename(argv[0]) if argv else ""
    if base in APPLETS:
        return base, argv
    exec_base = os.path.basename(invoked if invoked is not None else invoked_name())
    if exec_base in APPLETS:
        return exec_base, [exec_base, *argv[1:]]
    if len(argv) > 1 and argv[1] in APPLETS:
        return argv[1], argv[1:]
    return base, argv


def selftest() -> int:
    """``zone-init selftest``: import everything the applets import lazily; prints one line per module."""
    failed = 0
    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
            print(f"ok {name}")
        except Exception as e:
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    name, applet_argv = applet_name(argv)
    try:
        entry = resolve(name)
    except LookupError as e:
        print(f"zone-multicall: {e}", file=sys.stderr)
        return EXIT_MISSING if name in APPLETS else EXIT_USAGE
    sys.argv = applet_argv  # the applet's own argparse sees its name and arguments only
    result = entry()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
