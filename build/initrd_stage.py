"""The initramfs tree: everything that goes into the archive, staged into a directory before it is packed.

* :func:`stage_common`: stage-0 ``/init``, ``/etc``, the mount points;
* :func:`stage_nuitka`: the compiled multi-call program as ``/lib/zone``, the applet links, and the shared
  libraries all of it loads;
* :func:`stage_dev`: the developer variant (plain interpreter, trimmed stdlib, our packages as bytecode);
* :func:`normalize_modes`: modes that depend on nothing but the file (not the umask, not the source's mode);
* :func:`add_devices`: the device nodes, added to the archive directly (staging them would need mknod).

Every ``.pyc`` is written by :mod:`zonebuild.pyc`, so the tree's bytes do not depend on the building process.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

from .buildlog import logger
from .cpio import CpioArchive
from .elfdeps import closure, is_elf, stage_libraries, strip
from .initrd_compile import OUR_PACKAGES, REPO, compile_stage0
from .pyc import write_pyc

log = logger("initrd")

DLOPENED = ("libseccomp.so.2", "libc.so.6", "libgcc_s.so.1", "libxenvchan.so.4.17")
APPLET_LINKS = ("lib/zone/init", "bin/styrolite", "bin/zone")
ZONE_INIT = "lib/zone/zone-init"
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


def stage_common(root: Path) -> None:
    for name in MOUNT_POINTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for rel, text in ETC_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    compile_stage0(root / "init")


def add_devices(archive: CpioArchive) -> None:
    archive.add_device("dev/console", "c", 5, 1, 0o600)
    archive.add_device("dev/urandom", "c", 1, 9, 0o666)
    archive.add_device("dev/null", "c", 1, 3, 0o666)


def normalize_modes(root: Path) -> None:
    """Directories 0755; files 0755 if their owner may execute them, else 0644; symlinks as they are.

    Files come from the umask (our own writes), from pip's install (the sources of the .pyc files) and from
    Nuitka's output: none of that may reach the archive. PID 1 mounts tmpfs (mode 1777) over /tmp itself."""
    for directory, dirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)


def _link_applets(root: Path) -> None:
    for link in APPLET_LINKS:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(f"/{ZONE_INIT}")


def stage_nuitka(root: Path, dist: Path) -> None:
    """Install the compiled dist as /lib/zone, the applet links, and the libraries it needs."""
    target = root / "lib" / "zone"
    shutil.copytree(dist, target, symlinks=True, ignore=lambda _d, names: [n for n in names if n in DROP_FROM_DIST])
    _link_applets(root)
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


# --- the developer initrd (no Nuitka) ------------------------------------------------------------------------------

# Large or host-only parts of the stdlib the zone never imports.
DEV_STDLIB_SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils", "unittest",
    "venv", "site-packages", "config-3.11-x86_64-linux-gnu", "__pycache__", "sqlite3", "curses", "dbm", "xmlrpc",
    "wsgiref", "email", "http", "urllib", "html", "xml", "multiprocessing", "concurrent", "asyncio", "tomllib",
}
DEV_SITE_PACKAGES = ("cffi", "_cffi_backend", "pycparser", "msgpack", "prctl", "_prctl")


def _compile_tree(source: Path, target: Path, skip: set[str]) -> None:
    """Copy a Python tree as sourceless .pyc (legacy layout) plus its extension modules."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in skip for part in rel.parts) or path.is_dir():
            continue
        if path.suffix == ".py":
            write_pyc(path, target / rel.with_suffix(".pyc"), str(rel))
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
            write_pyc(item, site_target / f"{item.stem}.pyc", item.name)
    for package in OUR_PACKAGES:
        if (REPO / package).is_dir():
            _compile_tree(REPO / package, usr_lib / "site-packages" / package, {"__pycache__"})
    launcher = root / ZONE_INIT
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/usr/bin/python3 -I\nimport sys\nfrom zoneinit.multicall import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    _link_applets(root)
    elves = [root / "usr" / "bin" / "python3", *(p for p in usr_lib.rglob("*.so"))]
    libs = stage_libraries(closure(elves, DLOPENED), root)
    strip([*libs, *elves])
