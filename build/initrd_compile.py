"""The compiled parts of the initramfs: the multi-call program (Nuitka) and the stage-0 init (gcc).

The Nuitka product (``build/entry/multicall.py``, which runs ``zoneinit.multicall``, with ``zoneinit``,
``styrolite`` and ``idm``, standalone, static libpython) is cached under ``<cache>/nuitka/<key>/`` where the key
(:func:`compile_key`) covers our sources, the toolchain versions and the flags. Nuitka runs with ccache and its
own caches under the zone cache too, so a small source change recompiles only the C of the modules that changed.
Stage-0 is cached by its source digest under ``<cache>/stage0/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .buildlog import logger
from .cachedir import cache_dir, cached_compile
from .elfdeps import strip
from .errors import BuildError
from .initrd_stdlib import imports_of_left_out, nofollow_flags

log = logger("initrd")

REPO = Path(__file__).resolve().parent.parent
STAGE0_SOURCE = Path(__file__).resolve().parent / "stage0" / "init.c"
ENTRY = Path(__file__).resolve().parent / "entry" / "multicall.py"  # alone in its directory: see there
OUR_PACKAGES = ("zoneinit", "styrolite", "idm")
# imported only at run time (the C bindings, the applets' lazy imports), or left out by Nuitka unless asked for
# (_json, json's C accelerator: without it styrolite and PID 1 parse and write config.json in pure Python)
EXTRA_MODULES = ("_cffi_backend", "msgpack", "prctl", "_prctl", "_json")
# Inside the binary as bytecode, not compiled to C. PID 1 runs nearly all of this code once, at boot; under QEMU
# TCG every new block of machine code is translated before it first runs, so compiled modules (5-10x the size of
# their bytecode) cost far more than the interpreter's loop, translated once, running their bytecode. Measured
# with bench/zone_boot.py on the same tree (docs/images.md, "Compiled or bytecode"): the binary shrank from 20.3 to
# 14.6 MB and the phases after stage0 ran 1.5-2.5x faster (idm 0.26 -> 0.14 s, config 0.67 -> 0.24 s, containers
# 1.0-3.1 -> 1.1 s); the compile takes 1 minute instead of 5-10.
EMBEDDED_AS_BYTECODE = ("zoneinit", "styrolite", "idm", "msgpack", "zstandard", "prctl")
REPORT = "compilation-report.xml"
NUITKA_FLAGS = (
    "--standalone",
    "--static-libpython=yes",
    "--python-flag=no_site",
    "--python-flag=no_docstrings",
    "--noinclude-setuptools-mode=nofollow",
    "--noinclude-pytest-mode=nofollow",
    "--noinclude-unittest-mode=nofollow",
    "--nofollow-import-to=*.tests",
    "--nofollow-import-to=zstandard._cffi",  # the C backend is the one used; the cffi one is a 1 MB duplicate
    "--remove-output",
    "--nofollow-import-to=pydoc",
    "--nofollow-import-to=doctest",
    # every C binding is a precompiled out-of-line module (styrolite.ffigen): only _cffi_backend runs in the
    # zone; cffi's Python side and pycparser are needed by the *_ffi_build generators alone
    "--nofollow-import-to=cffi",
    "--nofollow-import-to=pycparser",
    *(f"--noinclude-custom-mode={package}:bytecode" for package in EMBEDDED_AS_BYTECODE),
    *nofollow_flags(),  # the standard library the zone never imports (zonebuild.initrd_stdlib)
)
# The environment Nuitka runs in, where it decides the product.
# - PYTHONNODEBUGRANGES: Nuitka compiles the bytecode it embeds in its own process; without column positions
#   (PEP 657's fine-grained locations, 3.11's per-instruction column table) the bytecode is ~8% smaller, so the
#   binary is, and so is every code object PID 1 unmarshals and keeps. What it costs: a traceback marks the
#   failing line without its ^^^^ column underline.
# - LDFLAGS (Nuitka passes them to the link): the binary's ~39,000 relative relocations (a position-independent
#   executable: its addresses are randomized) packed as DT_RELR, 20 KB instead of 0.9 MB of .rela.dyn that the
#   dynamic loader reads through at every start, so every page of it was resident in PID 1 (glibc >= 2.36 and
#   binutils >= 2.38 have it; Debian 12: 2.36 and 2.40).
NUITKA_ENV = {"PYTHONNODEBUGRANGES": "1", "LDFLAGS": "-Wl,-z,pack-relative-relocs"}


class InitrdError(BuildError):
    """The initramfs could not be built."""


# --- inputs and their digest ----------------------------------------------------------------------------------

def _python_sources() -> list[Path]:
    files = [ENTRY, STAGE0_SOURCE]
    for package in OUR_PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return sorted(set(files))


def _tool_versions() -> str:
    import importlib.metadata as md

    parts = [sys.version]
    for dist in ("Nuitka", "cffi", "msgpack", "python-prctl", "zstandard"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist}=missing")
    return "\n".join(parts)


def nuitka_flags() -> tuple[str, ...]:
    return NUITKA_FLAGS


def compile_key(flags: tuple[str, ...] | None = None) -> str:
    """What decides the compiled program: our sources, the toolchain versions, the Nuitka flags and environment."""
    flags = nuitka_flags() if flags is None else flags
    digest = hashlib.sha256()
    for path in _python_sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_tool_versions().encode())
    digest.update("\0".join(flags).encode())
    digest.update("\0".join(f"{key}={value}" for key, value in sorted(NUITKA_ENV.items())).encode())
    return digest.hexdigest()[:24]


# --- the Nuitka compile, with progress --------------------------------------------------------------------------

def _run_with_heartbeat(command: list[str], what: str, env: dict[str, str], log_file: Path) -> None:
    """Run a slow command, echo its progress lines, and say we are alive every 30 s."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            log(f"{what}: still running ({time.monotonic() - started:.0f} s)")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        with open(log_file, "w") as out:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=env, cwd=REPO)
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                if line.startswith(("Nuitka:", "Nuitka-Scons:")) or "ERROR" in line or "FATAL" in line:
                    log(f"{what}: {line.rstrip()[:160]}")
            status = process.wait()
    finally:
        done.set()
    if status != 0:
        tail = log_file.read_text()[-1500:]
        raise InitrdError(f"{what} failed (exit {status}); full log: {log_file}\n{tail}")
    log(f"{what}: done in {time.monotonic() - started:.0f} s")


def _nuitka_command(output_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "nuitka", *nuitka_flags(), f"--jobs={os.cpu_count() or 2}",
               f"--output-dir={output_dir}", "--output-filename=zone-init", "--assume-yes-for-downloads",
               f"--report={output_dir / REPORT}"]
    for package in OUR_PACKAGES:
        if not (REPO / package).is_dir():
            log(f"warning: package {package} missing from the tree; its applets will report that at run time")
            continue
        command.append(f"--include-package={package}")
    command += [f"--include-module={module}" for module in EXTRA_MODULES]
    command.append(str(ENTRY))
    return command


def compile_zone_init(force: bool = False) -> tuple[Path, bool]:
    """The Nuitka standalone dist directory for the current tree; (path, cache_hit). Cached by content
    (:func:`zonebuild.cachedir.cached_compile`: a lock per key, retried when the sources change mid-compile)."""
    if shutil.which("gcc") is None:
        raise InitrdError("gcc not found (Nuitka needs a C compiler)")
    binary, hit = cached_compile(cache_dir() / "nuitka", compile_key, "multicall.dist/zone-init", _compile_into,
                                 error=InitrdError, log=lambda message: log(f"nuitka: {message}"), force=force)
    return binary.parent, hit


def nuitka_environment() -> dict[str, str]:
    """The environment a Nuitka compile of this tree runs in: our packages importable from the tree, and every
    cache Nuitka keeps in the zone cache (cachedir's one rule), not in ~/.cache."""
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(cache_dir() / "ccache"))
    env.setdefault("NUITKA_CACHE_DIR", str(cache_dir() / "nuitka-cache"))
    env["PYTHONPATH"] = str(REPO)
    return env


def _compile_into(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**nuitka_environment(), **NUITKA_ENV}
    log(f"nuitka: compiling {ENTRY.relative_to(REPO)} (cold build takes minutes; ccache makes re-builds faster)")
    _run_with_heartbeat(_nuitka_command(work), "nuitka", env, work / "nuitka.log")
    dist = work / "multicall.dist"
    if not (dist / "zone-init").is_file():
        raise InitrdError(f"nuitka produced no {dist / 'zone-init'}")
    wrong = imports_of_left_out(work / REPORT, (*OUR_PACKAGES, *EMBEDDED_AS_BYTECODE))
    if wrong:
        raise InitrdError("the zone's code imports standard-library modules the binary leaves out "
                          "(zonebuild.initrd_stdlib): " + "; ".join(wrong))
    strip(p for p in dist.rglob("*") if p.is_file() and not p.is_symlink())


def compiled_modules(report: Path) -> set[str]:
    """Modules Nuitka put inside the binary (compiled or as bytecode), from its XML report; empty if absent."""
    if not report.is_file():
        return set()
    import xml.etree.ElementTree as ElementTree

    return {node.get("name", "") for node in ElementTree.parse(report).getroot().iter("module")}


# --- stage 0 ---------------------------------------------------------------------------------------------------

def compile_stage0(out: Path) -> Path:
    """gcc -static -Os the stage-0 init (cached next to its source digest)."""
    digest = hashlib.sha256(STAGE0_SOURCE.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / "stage0" / f"init-{digest}"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["gcc", "-static", "-Os", "-s", "-Wall", "-o", f"{cached}.tmp", str(STAGE0_SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise InitrdError(f"compile {STAGE0_SOURCE.name}: {result.stderr.strip()[-800:]} "
                              "(static linking needs libc6-dev's libc.a)")
        os.replace(f"{cached}.tmp", cached)
    shutil.copyfile(cached, out)
    out.chmod(0o755)
    return out
