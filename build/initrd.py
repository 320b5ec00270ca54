"""The zone initramfs: stage-0 /init, the Nuitka-compiled multi-call program, its libraries, /dev and /etc.

Layout of the archive::

    /init                        stage-0 (build/stage0/init.c, static): mounts /proc + /dev, execs /lib/zone/init
    /lib/zone/zone-init          zoneinit/multicall.py compiled by Nuitka (--standalone, static libpython)
    /lib/zone/init               symlink to zone-init (argv[0] "init" selects PID 1)
    /lib/zone/*.so, ...          the extension modules and data Nuitka put next to it
    /bin/styrolite, /bin/zone    symlinks to /lib/zone/zone-init (argv[0] picks the applet)
    /lib/zone/*.pyc, pyroute2/   pyroute2 and the stdlib it imports, as bytecode (zonebuild.pybytecode)
    /lib/x86_64-linux-gnu/...    the ELF closure (ldd) + dlopen()ed libraries, at the paths ldd reports
    /dev/console, /dev/urandom   device nodes (before devtmpfs is mounted the kernel needs /dev/console)
    /etc/passwd, group, hosts, nsswitch.conf
    /proc /sys /run /tmp /mnt    empty mount points

Why symlinks and not hard links for /bin/*: a Nuitka standalone program finds its extension modules next to
/proc/self/exe; a hard link in /bin would make it look for them in /bin. A symlink keeps argv[0] (the applet
name) while /proc/self/exe resolves to /lib/zone.

The compiled tree is cached under $ZONE_CACHE (default .cache/) by a digest of the sources, the Nuitka and
Python versions and the flags, so an unchanged tree only re-packs (seconds). ``--dev`` skips Nuitka: the
plain interpreter, a trimmed stdlib and our packages as .pyc, for quick iteration.

Usage: ``python -m zonebuild.initrd --out DIR [--dev] [--compression zstd|gzip|none]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from styrolite.errors import StyroliteError, describe
from zonebuild.cachedir import cache_dir

from .cpio import CpioArchive, compress, concat_for_boot
from .elfdeps import closure, is_elf, stage_libraries, strip
from .pybytecode import module_closure, stage_modules

REPO = Path(__file__).resolve().parent.parent
STAGE0_SOURCE = Path(__file__).resolve().parent / "stage0" / "init.c"
ENTRY = Path(__file__).resolve().parent / "entry" / "multicall.py"  # alone in its directory: see there
OUR_PACKAGES = ("zoneinit", "styrolite", "idm")
# Imported lazily (inside functions) by our code and shipped as bytecode next to the binary instead of being
# compiled: pyroute2 0.9 is 230 modules that, compiled to C, tripled the binary and the compile time, for code
# that runs once per boot (see zonebuild.pybytecode).
LAZY_PACKAGES: tuple[str, ...] = ()
BYTECODE_PACKAGES = ("pyroute2",)
# Submodules nothing imports on Linux (BSD/Windows ports, test fixtures, DHCP client, 9p, ...).
BYTECODE_SKIP = tuple(f"pyroute2.{name}" for name in (
    "bsd", "windows", "fixtures", "dhcp", "plan9", "wirouting", "decoder", "inotify", "nftables", "remote", "cli"))
EXTRA_MODULES = ("_cffi_backend", "msgpack", "prctl", "_prctl")
DLOPENED = ("libseccomp.so.2", "libc.so.6", "libgcc_s.so.1", "libxenvchan.so.4.17")
APPLET_LINKS = ("lib/zone/init", "bin/styrolite", "bin/zone")
ZONE_INIT = "lib/zone/zone-init"
REPORT = "compilation-report.xml"
NUITKA_FLAGS = (
    "--standalone",
    "--static-libpython=yes",
    "--python-flag=no_site",
    "--python-flag=no_docstrings",
    "--noinclude-setuptools-mode=nofollow",
    "--noinclude-pytest-mode=nofollow",
    "--noinclude-unittest-mode=allow",  # pyroute2's netlink socket imports unittest.mock (sic)
    "--nofollow-import-to=*.tests",
    "--nofollow-import-to=pyroute2",
    "--nofollow-import-to=zstandard._cffi",  # the C backend is the one used; the cffi one is a 1 MB duplicate
    "--remove-output",
    "--no-deployment-flag=excluded-module-usage",  # pyroute2 is excluded on purpose: found as bytecode
    "--nofollow-import-to=pydoc",
    "--nofollow-import-to=doctest",
    # every C binding is a precompiled out-of-line module (styrolite.ffigen): only _cffi_backend runs in the
    # zone; cffi's Python side and pycparser are needed by the *_ffi_build generators alone
    "--nofollow-import-to=cffi",
    "--nofollow-import-to=pycparser",
)
# Extension modules Nuitka copies although nothing here uses them (CJK codecs: only for those encodings);
# dropped from the initrd, an import of them fails with a clear ImportError/LookupError.
DROP_FROM_DIST = ("_codecs_cn.so", "_codecs_hk.so", "_codecs_iso2022.so", "_codecs_jp.so", "_codecs_kr.so",
                  "_codecs_tw.so", "_multibytecodec.so")
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
}
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "mnt", "root", "sbin")


class InitrdError(StyroliteError):
    """The initramfs could not be built."""


def log(message: str) -> None:
    print(f"[initrd] {message}", file=sys.stderr, flush=True)


# --- inputs and their digest ----------------------------------------------------------------------------------

def _python_sources() -> list[Path]:
    files = [ENTRY, STAGE0_SOURCE]
    for package in OUR_PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return sorted(set(files))


def _tool_versions() -> str:
    import importlib.metadata as md

    parts = [sys.version]
    for dist in ("Nuitka", "cffi", "msgpack", "pyroute2", "python-prctl"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist}=missing")
    return "\n".join(parts)


def bytecode_stdlib_modules() -> list[str]:
    """The stdlib modules the bytecode packages import. Nuitka must embed them itself: a submodule shipped
    beside the binary is not found under a package Nuitka embedded (logging.handlers under logging)."""
    prefixes = tuple(f"{p}." for p in BYTECODE_PACKAGES)
    return sorted(name for name, origin, _ in module_closure(BYTECODE_PACKAGES, BYTECODE_SKIP)
                  if name not in BYTECODE_PACKAGES and not name.startswith(prefixes) and origin.endswith(".py"))


def nuitka_flags() -> tuple[str, ...]:
    return (*NUITKA_FLAGS, *(f"--include-module={name}" for name in bytecode_stdlib_modules()))


def source_digest(flags: tuple[str, ...] | None = None) -> str:
    """What decides the compiled output: our sources, the toolchain versions and the Nuitka flags."""
    flags = nuitka_flags() if flags is None else flags
    digest = hashlib.sha256()
    for path in _python_sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_tool_versions().encode())
    digest.update("\0".join(flags).encode())
    return digest.hexdigest()[:24]


# --- slow steps, with progress --------------------------------------------------------------------------------

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
    for package in (*OUR_PACKAGES, *LAZY_PACKAGES):
        if package in OUR_PACKAGES and not (REPO / package).is_dir():
            log(f"warning: package {package} missing from the tree; its applets will report that at run time")
            continue
        command.append(f"--include-package={package}")
    command += [f"--include-module={module}" for module in EXTRA_MODULES]
    command.append(str(ENTRY))
    return command


COMPILE_ATTEMPTS = 3


def compile_zone_init(force: bool = False) -> tuple[Path, bool]:
    """The Nuitka standalone dist directory for the current tree; (path, cache_hit). Cached by content.

    Concurrent builds of the same tree wait for each other (a lock per digest) instead of clobbering one
    work directory. A compile during which the sources changed (someone is editing the tree) is neither
    trusted nor cached: it is retried on the new sources, up to COMPILE_ATTEMPTS times.
    """
    import fcntl

    if shutil.which("gcc") is None:
        raise InitrdError("gcc not found (Nuitka needs a C compiler)")
    root = cache_dir() / "nuitka"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, COMPILE_ATTEMPTS + 1):
        key = source_digest()
        with open(root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cached = root / key / "multicall.dist"
            if cached.is_dir() and (cached / "zone-init").is_file() and not force:
                log(f"nuitka: cache hit {key}")
                return cached, True
            error: InitrdError | None = None
            try:
                work = _compile_into(root / f"{key}.partial")
            except InitrdError as e:
                error = e
            if source_digest() != key:
                log(f"nuitka: sources changed during the compile (attempt {attempt}); compiling again")
                continue
            if error is not None:
                raise error
            final = root / key
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
            return final / "multicall.dist", False
    raise InitrdError(f"the sources kept changing during {COMPILE_ATTEMPTS} compiles; build again when they settle")


def _compile_into(work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(cache_dir() / "ccache"))
    env["PYTHONPATH"] = str(REPO)
    log(f"nuitka: compiling {ENTRY.relative_to(REPO)} (cold build takes minutes; ccache makes re-builds faster)")
    _run_with_heartbeat(_nuitka_command(work), "nuitka", env, work / "nuitka.log")
    dist = work / "multicall.dist"
    if not (dist / "zone-init").is_file():
        raise InitrdError(f"nuitka produced no {dist / 'zone-init'}")
    strip(p for p in dist.rglob("*") if p.is_file() and not p.is_symlink())
    return work


def compiled_modules(report: Path) -> set[str]:
    """Modules Nuitka put inside the binary (compiled or as bytecode), from its XML report; empty if absent."""
    if not report.is_file():
        return set()
    import xml.etree.ElementTree as ElementTree

    return {node.get("name", "") for node in ElementTree.parse(report).getroot().iter("module")}


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


# --- staging -------------------------------------------------------------------------------------------------

def _stage_common(root: Path) -> None:
    for name in MOUNT_POINTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for rel, text in ETC_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    compile_stage0(root / "init")


def _add_devices(archive: CpioArchive) -> None:
    archive.add_device("dev/console", "c", 5, 1, 0o600)
    archive.add_device("dev/urandom", "c", 1, 9, 0o666)
    archive.add_device("dev/null", "c", 1, 3, 0o666)


def stage_nuitka(root: Path, dist: Path) -> None:
    """Install the compiled dist as /lib/zone, the applet links, and the libraries it needs."""
    target = root / "lib" / "zone"
    shutil.copytree(dist, target, symlinks=True, ignore=lambda _d, names: [n for n in names if n in DROP_FROM_DIST])
    log(f"bytecode: {', '.join(BYTECODE_PACKAGES)} and the stdlib they import")
    embedded = compiled_modules(dist.parent / REPORT)
    stage_modules([m for m in module_closure(BYTECODE_PACKAGES, BYTECODE_SKIP) if m[0] not in embedded], target)
    for link in APPLET_LINKS:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(f"/{ZONE_INIT}")
    elves = [p for p in target.rglob("*") if p.is_file() and is_elf(p)]
    # libraries Nuitka already put next to the binary are found through its $ORIGIN rpath: not staged twice
    beside = {p.name for p in target.iterdir()}
    needed = [lib for lib in closure(elves, DLOPENED) if not lib.is_relative_to(target)]
    # a system library Nuitka also copied beside the binary (libcrypto for _hashlib) becomes a symlink to that
    # copy: one file, found both through the binary's $ORIGIN and through the default search path
    for lib in [lib for lib in needed if lib.name in beside]:
        link = root / str(lib).lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"/{ZONE_INIT.rsplit('/', 1)[0]}/{lib.name}")
    strip(stage_libraries([lib for lib in needed if lib.name not in beside], root))


# Large or host-only parts of the stdlib the zone never imports.
DEV_STDLIB_SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils", "unittest",
    "venv", "site-packages", "config-3.11-x86_64-linux-gnu", "__pycache__", "sqlite3", "curses", "dbm", "xmlrpc",
    "wsgiref", "email", "http", "urllib", "html", "xml", "multiprocessing", "concurrent", "asyncio", "tomllib",
}
DEV_SITE_PACKAGES = ("cffi", "_cffi_backend", "pycparser", "msgpack", "pyroute2", "prctl", "_prctl")


def _compile_file(source: Path, out: Path, display_name: str) -> None:
    """One sourceless .pyc; unchecked-hash pycs carry no source mtime, so they are reproducible."""
    import py_compile

    out.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(str(source), cfile=str(out), dfile=display_name, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def _compile_tree(source: Path, target: Path, skip: set[str]) -> None:
    """Copy a Python tree as sourceless .pyc (legacy layout) plus its extension modules."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in skip for part in rel.parts) or path.is_dir():
            continue
        if path.suffix == ".py":
            _compile_file(path, target / rel.with_suffix(".pyc"), str(rel))
        elif path.suffix == ".so":
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)


def stage_dev(root: Path) -> None:
    """Plain interpreter + trimmed stdlib + our packages and dependencies as .pyc (no Nuitka)."""
    import sysconfig

    python = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    usr_lib = root / "usr" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copyfile(python, root / "usr" / "bin" / "python3")
    (root / "usr" / "bin" / "python3").chmod(0o755)
    log("dev: compiling stdlib subset")
    _compile_tree(stdlib, usr_lib, DEV_STDLIB_SKIP)
    site_target = usr_lib / "site-packages"
    site_target.mkdir(parents=True, exist_ok=True)
    for item in sorted(site.iterdir()):
        if item.name.split(".")[0] not in DEV_SITE_PACKAGES:
            continue
        if item.is_dir():
            _compile_tree(item, site_target / item.name, {"__pycache__", "tests"})
        elif item.suffix == ".so":
            shutil.copyfile(item, site_target / item.name)
        elif item.suffix == ".py":  # a single-module distribution (prctl.py)
            _compile_file(item, site_target / f"{item.stem}.pyc", item.name)
    for package in OUR_PACKAGES:
        if (REPO / package).is_dir():
            _compile_tree(REPO / package, usr_lib / "site-packages" / package, {"__pycache__"})
    launcher = root / ZONE_INIT
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/usr/bin/python3 -I\nimport sys\nfrom zoneinit.multicall import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    for link in APPLET_LINKS:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(f"/{ZONE_INIT}")
    elves = [root / "usr" / "bin" / "python3", *(p for p in usr_lib.rglob("*.so"))]
    libs = stage_libraries(closure(elves, DLOPENED), root)
    strip([*libs, *elves])


# --- the product ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitrdResult:
    path: Path
    size: int
    files: int
    uncompressed: int
    seconds: float
    cache_hit: bool


def build_initrd(out_dir: str | Path, *, dev: bool = False, compression: str = "zstd") -> InitrdResult:
    """Build the initramfs into ``out_dir``/initrd.cpio.<ext>; the same tree gives the same bytes."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_hit = False
    with tempfile.TemporaryDirectory(prefix="initrd-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _stage_common(root)
        if dev:
            stage_dev(root)
        else:
            dist, cache_hit = compile_zone_init()  # once: the digest must not be recomputed mid-build
            stage_nuitka(root, dist)
        archive = CpioArchive()
        archive.add_tree(root)
        _add_devices(archive)
        log("packing cpio")
        raw = archive.to_bytes()
        data = compress(raw, compression, level=3 if dev else 19)  # dev: pack fast, it is rebuilt often
    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[compression]
    path = out_dir / f"initrd{'-dev' if dev else ''}.cpio{suffix}"
    path.write_bytes(data)
    result = InitrdResult(path, len(data), len(archive.paths()), len(raw), time.monotonic() - started, cache_hit)
    log(f"{path}: {result.size / 1e6:.2f} MB {compression} ({result.uncompressed / 1e6:.1f} MB raw), "
        f"{result.files} entries, {result.seconds:.1f} s{' (compile cached)' if cache_hit else ''}")
    return result


def boot_initrd(initrd: str | Path, boot_modules: str | Path, out: str | Path) -> Path:
    """Concatenate our initrd and the kernel image's boot-modules cpio into the file QEMU/Xen loads."""
    out = Path(out)
    out.write_bytes(concat_for_boot(Path(initrd).read_bytes(), Path(boot_modules).read_bytes()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.initrd", description="Build the zone initramfs.")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--dev", action="store_true", help="plain interpreter + .pyc instead of Nuitka (fast)")
    parser.add_argument("--compression", choices=("zstd", "gzip", "none"), default="zstd")
    args = parser.parse_args(argv)
    try:
        result = build_initrd(args.out, dev=args.dev, compression=args.compression)
    except (StyroliteError, subprocess.CalledProcessError, OSError) as e:
        print(f"initrd: {describe(e)}", file=sys.stderr)
        return 1
    print(result.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
