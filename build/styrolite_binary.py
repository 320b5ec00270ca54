"""The host's ``styrolite`` command: a fast launcher script (installed by default) or a Nuitka-compiled binary.

Clients (podman, docker, containerd's shim) run the runtime 3-4 times per container, so its start-up is
what they feel. Two forms, measured side by side by bench/container_start.py:

* **launcher** (the default): a Python script whose shebang runs the interpreter with ``-I -S`` and whose
  import path is written into it at install time. ``-S`` skips ``site`` (every ``.pth`` file in
  site-packages is executed at each start-up: tens of milliseconds on a host with many packages), ``-I``
  ignores the caller's ``PYTHON*`` variables and keeps the launcher's own directory off ``sys.path``.
  With styrolite's lazy imports a ``state`` call is the interpreter's start plus a few of our modules.
* **binary**: ``styrolite/__main__.py`` compiled by Nuitka (``--standalone``, static libpython), cached
  under ``$ZONE_CACHE/styrolite-binary/<digest>`` by a digest of the sources, the toolchain and the flags.
  It starts *slower* than the launcher here: a Nuitka program imports and patches ``inspect`` at start-up
  (``patchInspectModule`` in Nuitka's MainProgram.c), which loads ``ast``, ``dis``, ``tokenize``, ``re``,
  ``enum`` and ``collections``, the modules the lean CLI avoids; a compiled "hello world" takes about twice
  as long as ``python -S`` does. Built on request, for hosts without a usable interpreter and for
  re-measuring with newer Nuitka versions.

    python -m zonebuild.styrolite_binary install [--dest /usr/local/bin/styrolite] [--binary]
    python -m zonebuild.styrolite_binary launcher PATH     # write a launcher (tests, benchmarks)
    python -m zonebuild.styrolite_binary build             # compile or find the binary; print its path

``pip install`` also creates the console script ``styrolite`` (``styrolite.cli:main`` through ``site``): the
fallback wherever neither is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zonebuild.cachedir import cache_dir, cached_compile

from .elfdeps import strip
from .errors import BuildError
from .initrd_compile import nuitka_environment

REPO = Path(__file__).resolve().parent.parent
ENTRY = REPO / "styrolite" / "__main__.py"
DEFAULT_DEST = Path("/usr/local/bin/styrolite")
BINARY_NAME = "styrolite"
RUNTIME_MODULES = ("_cffi_backend", "prctl", "_prctl")
"""Third-party modules the runtime imports (cffi's backend for the kernel seam, python-prctl)."""
NUITKA_FLAGS = (
    "--standalone",
    "--static-libpython=yes",
    "--python-flag=no_site",
    "--python-flag=no_docstrings",
    "--noinclude-setuptools-mode=nofollow",
    "--noinclude-pytest-mode=nofollow",
    "--include-package=styrolite",
    *(f"--include-module={name}" for name in RUNTIME_MODULES),
    # the C bindings are precompiled out-of-line modules: cffi's Python side and pycparser only serve the
    # *_ffi_build generators, which the runtime never imports
    "--nofollow-import-to=cffi",
    "--nofollow-import-to=pycparser",
    "--nofollow-import-to=styrolite.ffigen",
    "--nofollow-import-to=styrolite.syscalls.ffi_build",
    "--nofollow-import-to=styrolite.security.seccomp_ffi_build",
    "--nofollow-import-to=pydoc",
    "--nofollow-import-to=doctest",
    "--remove-output",
)


class StyroliteBinaryError(BuildError):
    """The binary could not be built or installed."""


def log(message: str) -> None:
    print(f"[styrolite-binary] {message}", file=sys.stderr, flush=True)


# --- the launcher ------------------------------------------------------------------------------------------

def import_paths() -> list[str]:
    """The directories the launcher puts first on ``sys.path``: where styrolite and the third-party modules
    it imports live for the installing interpreter (a source checkout, site-packages, a virtualenv)."""
    import importlib.util

    import styrolite

    paths = [str(Path(styrolite.__file__).resolve().parent.parent)]
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise StyroliteBinaryError(f"{name} is not installed for {sys.executable} (pip install cffi python-prctl)")
        paths.append(str(Path(spec.origin).resolve().parent))
    return list(dict.fromkeys(paths))


def launcher_text(python: str, paths: list[str], environment: dict[str, str] | None = None) -> str:
    defaults = "".join(f"os.environ.setdefault({key!r}, {value!r})\n" for key, value in (environment or {}).items())
    return (f"#!{python} -IS\n"
            "# styrolite, started without site and with its import path fixed at install time\n"
            "# (written by zonebuild.styrolite_binary: python -m zonebuild.styrolite_binary install)\n"
            "import sys\n"
            f"sys.path[:0] = {paths!r}\n"
            + ("import os\n" + defaults if defaults else "")
            + "from styrolite.cli import run\n"
            "run()\n")


def write_launcher(dest: Path, *, python: str | None = None, environment: dict[str, str] | None = None) -> Path:
    """Write the launcher to ``dest`` (atomically, mode 0755). ``environment``: defaults it sets when the
    caller's environment lacks them (e.g. ``STYROLITE_ROOT`` for a test's private state)."""
    text = launcher_text(python or sys.executable, import_paths(), environment)
    _write_atomically(dest, text.encode(), 0o755)
    return dest


def _write_atomically(dest: Path, data: bytes, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- the binary --------------------------------------------------------------------------------------------

def _sources() -> list[Path]:
    return sorted((REPO / "styrolite").rglob("*.py"))


def _tool_versions() -> str:
    import importlib.metadata as md

    parts = [sys.version]
    for dist in ("Nuitka", "cffi", "python-prctl"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist}=missing")
    return "\n".join(parts)


def source_digest() -> str:
    """What decides the compiled output: the runtime's sources, the toolchain versions, the Nuitka flags."""
    digest = hashlib.sha256()
    for path in _sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_tool_versions().encode())
    digest.update("\0".join(NUITKA_FLAGS).encode())
    return digest.hexdigest()[:24]


def _cache_root() -> Path:
    return cache_dir() / "styrolite-binary"


def cached_binary() -> Path | None:
    """The compiled binary for the current sources, if one is in the cache (never compiles)."""
    binary = _cache_root() / source_digest() / "dist" / BINARY_NAME
    return binary if binary.is_file() else None


def compile_binary(force: bool = False) -> tuple[Path, bool]:
    """The binary for the current sources; (path, cache_hit). Cached by content
    (:func:`zonebuild.cachedir.cached_compile`: a lock per key, retried when the sources change mid-compile)."""
    if shutil.which("gcc") is None:
        raise StyroliteBinaryError("gcc not found (Nuitka needs a C compiler)")
    return cached_compile(_cache_root(), source_digest, f"dist/{BINARY_NAME}", _compile_into,
                          error=StyroliteBinaryError, log=log, force=force)


def _compile_into(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = nuitka_environment()
    command = [sys.executable, "-m", "nuitka", *NUITKA_FLAGS, f"--jobs={os.cpu_count() or 2}",
               f"--output-dir={work}", f"--output-filename={BINARY_NAME}", "--assume-yes-for-downloads",
               f"--report={work / 'compilation-report.xml'}", str(ENTRY)]
    log(f"nuitka: compiling {ENTRY.relative_to(REPO)} (a cold build takes minutes)")
    started = time.monotonic()
    with open(work / "nuitka.log", "w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if status != 0:
        tail = (work / "nuitka.log").read_text()[-1500:]
        raise StyroliteBinaryError(f"nuitka failed (exit {status}); full log: {work / 'nuitka.log'}\n{tail}")
    dists = [d for d in work.glob("*.dist") if (d / BINARY_NAME).is_file()]
    if not dists:
        raise StyroliteBinaryError(f"nuitka produced no {BINARY_NAME} under {work}")
    dists[0].rename(work / "dist")
    strip(p for p in (work / "dist").rglob("*") if p.is_file() and not p.is_symlink())
    log(f"nuitka: done in {time.monotonic() - started:.0f} s")


def install_binary(dest: Path) -> Path:
    """Copy the compiled program (a directory: the binary and the extension modules next to it) to
    ``<dest's parent>/../lib/styrolite`` and point ``dest`` at it with a symlink: Nuitka finds its modules
    next to the resolved executable."""
    binary, _ = compile_binary()
    library = dest.parent.parent / "lib" / "styrolite"
    staging = library.with_name(f".styrolite.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(binary.parent, staging, symlinks=True)
    if library.exists():
        shutil.rmtree(library)
    staging.rename(library)
    link = dest.with_name(f".{dest.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(library / BINARY_NAME)
    os.replace(link, dest)
    return dest


def install(dest: Path = DEFAULT_DEST, binary: bool = False) -> Path:
    return install_binary(dest) if binary else write_launcher(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.styrolite_binary",
                                     description="install the host's styrolite command (launcher or binary)")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install styrolite (the launcher unless --binary)")
    inst.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    inst.add_argument("--binary", action="store_true", help="the Nuitka-compiled binary instead of the launcher")
    launch = sub.add_parser("launcher", help="write a launcher to PATH")
    launch.add_argument("path", type=Path)
    build = sub.add_parser("build", help="compile the binary (or find it in the cache) and print its path")
    build.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(install(args.dest, args.binary))
        elif args.command == "launcher":
            print(write_launcher(args.path))
        else:
            print(compile_binary(args.force)[0])
    except (StyroliteBinaryError, OSError) as e:
        print(f"styrolite-binary: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
