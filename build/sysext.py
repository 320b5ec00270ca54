"""The system extensions this project builds from Debian packages (format: zonebuild.extension, docs/images.md).

``debug-tools``  strace, iproute2 (ip, ss, tc, bridge), tcpdump, and busybox (a shell and the usual applets: the
                 zone's initramfs has none) for the zone-level exec (``zonehost exec --zone``). Debian's dynamic
                 busybox, not busybox-static: the static build's shell prefers its own applets to PATH, so ``ip``
                 in a script would be busybox's instead of iproute2's
``fs-extra``     the kernel-modules extension: the file-system modules the kernel image's addons leave out
                 (zonebuild.kernel_image.FS_EXTRA_TREES: btrfs, xfs, exfat, NFS, CIFS...) for that kernel
                 release, with every module they need, plus their tools (mkfs.btrfs, btrfs, mkfs.exfat, fsck.exfat)

Tools are taken from their packages (``apt-get download`` + ``dpkg-deb -x``, zonebuild.debs) with their ELF
closure resolved in the packages they depend on, never on the build host (zonebuild.elfdeps). They run with the
extension's own loader and C library: each program's interpreter is set to
``/run/zone/extensions/<name>/lib/ld-linux-x86-64.so.2`` and its DT_RPATH to ``$ORIGIN/../lib`` (patchelf), so
they work whatever the zone's initramfs carries. Images are cached by the builder's source and every package's
digest.

Usage: ``python -m zonebuild.sysext debug-tools|fs-extra [--out DIR]`` (prints the OCI layout's path)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from styrolite.errors import StyroliteError, describe

from . import debs, elfdeps, kernel_image
from .buildlog import logger
from .busybox_image import applet_paths
from .cachedir import cache_dir, cached_layout
from .digests import sha256_hex
from .errors import BuildError
from .extension import LOADER, MOUNT_BASE, ExtensionManifest, write_extension_image

log = logger("sysext")

# tool name -> (package, path in the package)
DEBUG_TOOLS = {
    "strace": ("strace", "usr/bin/strace"),
    "ip": ("iproute2", "bin/ip"),
    "ss": ("iproute2", "bin/ss"),
    "tc": ("iproute2", "sbin/tc"),
    "bridge": ("iproute2", "sbin/bridge"),
    "tcpdump": ("tcpdump", "usr/bin/tcpdump"),
    "busybox": ("busybox", "bin/busybox"),
}
FS_TOOLS = {
    "mkfs.btrfs": ("btrfs-progs", "sbin/mkfs.btrfs"),
    "btrfs": ("btrfs-progs", "bin/btrfs"),
    "mkfs.exfat": ("exfatprogs", "usr/sbin/mkfs.exfat"),
    "fsck.exfat": ("exfatprogs", "usr/sbin/fsck.exfat"),
}
SOURCES = ("sysext.py", "extension.py", "elfdeps.py", "kernel_image.py", "debs.py")


class SysextError(BuildError):
    """A system extension could not be built."""


# --- packages ------------------------------------------------------------------------------------------------

def _depends(deb: Path) -> list[str]:
    """The library packages a package depends on (Depends, Pre-Depends; first alternative, no versions)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        for clause in debs.field(deb, field).split(","):
            first = clause.split("|")[0].strip()
            name = re.sub(r"\s*\(.*\)", "", first).split(":")[0].strip()
            if name and re.match(r"^(lib|zlib)", name):
                names.append(name)
    return names


def package_trees(packages: list[str]) -> dict[str, tuple[Path, Path]]:
    """package -> (.deb, unpacked tree) for the packages and, transitively, the libraries they depend on."""
    found: dict[str, tuple[Path, Path]] = {}
    todo = list(packages)
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        deb = debs.download(name)
        found[name] = (deb, debs.unpacked(deb))
        todo += [dep for dep in _depends(deb) if dep not in found]
    return found


def _version(deb: Path) -> str:
    return debs.field(deb, "Version")


# --- tools with their libraries ------------------------------------------------------------------------------

def stage_tools(tree: Path, name: str, tools: dict[str, tuple[str, str]],
                packages: dict[str, tuple[Path, Path]]) -> list[str]:
    """bin/<tool> for each tool, lib/ with their closure and the loader; programs relocated to them."""
    bin_dir, lib_dir = tree / "bin", tree / "lib"
    bin_dir.mkdir(parents=True, exist_ok=True)
    lib_dir.mkdir(exist_ok=True)
    for tool, (package, path) in tools.items():
        root = packages[package][1]
        source = elfdeps._inside(root, root / path)
        if not source.is_file():
            raise SysextError(f"{package}: no {path}")
        shutil.copyfile(source, bin_dir / tool)
        (bin_dir / tool).chmod(0o755)
    programs = sorted(bin_dir.iterdir())
    try:
        libraries = elfdeps.closure_in_trees(programs, [t for _, t in packages.values()])
    except FileNotFoundError as e:
        raise SysextError(f"extension {name}: {e}") from None
    for soname, path in libraries.items():
        shutil.copyfile(path, lib_dir / soname)
        (lib_dir / soname).chmod(0o755)
    if LOADER not in libraries and any(elfdeps.needed(p) for p in programs):
        raise SysextError(f"extension {name}: no {LOADER} among the libraries")
    interpreter = f"{MOUNT_BASE}/{name}/lib/{LOADER}"
    try:
        for program in programs:
            if elfdeps.is_elf(program) and elfdeps.needed(program):
                elfdeps.relocate(program, interpreter=interpreter, rpath="$ORIGIN/../lib")
        for library in sorted(lib_dir.iterdir()):
            if library.name != LOADER and elfdeps.has_runpath(library):
                elfdeps.relocate(library, interpreter=None, rpath="$ORIGIN")
    except OSError as e:
        raise SysextError(f"extension {name}") from e
    return list(tools)


def _busybox_applets(bin_dir: Path, applets: list[str]) -> None:
    """bin/<applet> -> busybox for each applet no real tool already provides."""
    for applet in applets:
        if not (bin_dir / applet).exists():
            (bin_dir / applet).symlink_to("busybox")


# --- the two extensions ---------------------------------------------------------------------------------------

def build_debug_tools(out: Path, work: Path) -> Path:
    packages = package_trees(sorted({p for p, _ in DEBUG_TOOLS.values()}))
    tree = work / "tree"
    package, path = DEBUG_TOOLS["busybox"]   # listed before relocation: afterwards it runs in a zone only
    applets = sorted({Path(p).name for p in applet_paths(elfdeps._inside(packages[package][1],
                                                                         packages[package][1] / path))})
    tools = stage_tools(tree, "debug-tools", DEBUG_TOOLS, packages)
    _busybox_applets(tree / "bin", applets)
    roots = {p for p, _ in DEBUG_TOOLS.values()}
    sources = {name: _version(deb) for name, (deb, _) in sorted(packages.items()) if name in roots}
    version = "deb12-" + hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:8]
    manifest = ExtensionManifest(
        name="debug-tools", version=version, tools=(*tools, "sh"),
        description="strace, iproute2, tcpdump and busybox for the zone-level exec (zonehost exec --zone)",
        sources=sources)
    return write_extension_image(tree, manifest, out, work)


def build_fs_extra(out: Path, work: Path, kernel_deb: Path | None = None) -> Path:
    deb = kernel_deb or kernel_image.download_package()
    kernel = kernel_image.extract_deb(deb, work / "deb")
    log(f"depmod {kernel.version}")
    full = kernel_image.run_depmod(kernel.modules, kernel.version, work / "depmod")
    deps = kernel_image.parse_modules_dep(full / "modules.dep")
    chosen = kernel_image.extension_only(deps)
    if not chosen:
        raise SysextError(f"{deb.name}: none of the modules under {', '.join(kernel_image.FS_EXTRA_TREES)}")
    staging = work / "ext-depmod"
    target = staging / "lib" / "modules" / kernel.version
    for path in kernel_image.module_closure(deps, chosen):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(full / path, target / path)
    for listing in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (full / listing).is_file():
            shutil.copyfile(full / listing, target / listing)
    subprocess.run(["depmod", "-b", str(staging), kernel.version], check=True)
    tree = work / "tree"
    (tree / "modules").mkdir(parents=True)
    shutil.copytree(target, tree / "modules" / kernel.version, symlinks=True)
    packages = package_trees(sorted({p for p, _ in FS_TOOLS.values()}))
    tools = stage_tools(tree, "fs-extra", FS_TOOLS, packages)
    sources = {deb.name.split("_", 1)[0]: _version(deb)}
    sources |= {name: _version(d) for name, (d, _) in sorted(packages.items()) if name in {"btrfs-progs", "exfatprogs"}}
    manifest = ExtensionManifest(
        name="fs-extra", version=kernel.version, kernel_releases=(kernel.version,),
        modules=tuple(sorted(kernel_image.module_name(p) for p in chosen)), tools=tuple(tools),
        description="file-system modules the kernel image's addons leave out (btrfs, xfs, exfat, NFS, CIFS...) "
                    "and mkfs/fsck for btrfs and exfat",
        sources=sources)
    return write_extension_image(tree, manifest, out, work)


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {"debug-tools": build_debug_tools, "fs-extra": build_fs_extra}
ROOT_PACKAGES = {"debug-tools": sorted({p for p, _ in DEBUG_TOOLS.values()}),
                 "fs-extra": sorted({p for p, _ in FS_TOOLS.values()})}


def build(name: str, out: Path) -> Path:
    if name not in BUILDERS:
        raise SysextError(f"no extension named {name!r} (have: {', '.join(BUILDERS)})")
    with tempfile.TemporaryDirectory(prefix=f"sysext-{name}-") as tmp:
        return BUILDERS[name](out, Path(tmp))


def cache_key(name: str) -> str:
    """The builder's code and every package the extension is made from (the kernel's too, for fs-extra)."""
    digest = hashlib.sha256(name.encode())
    here = Path(__file__).resolve().parent
    for source in SOURCES:
        digest.update(hashlib.sha256((here / source).read_bytes()).digest())
    packages = package_trees(ROOT_PACKAGES[name])
    debs_used = [deb for deb, _ in packages.values()]
    if name == "fs-extra":
        debs_used.append(kernel_image.download_package())
    for deb in sorted(debs_used):
        digest.update(sha256_hex(deb).encode())
    return digest.hexdigest()[:16]


def cached_extension(name: str) -> Path:
    """The extension's OCI layout under ``<cache>/images/``, built once per cache key."""
    if name not in BUILDERS:
        raise SysextError(f"no extension named {name!r} (have: {', '.join(BUILDERS)})")
    return cached_layout(cache_dir() / "images" / f"ext-{name}-{cache_key(name)}", lambda out: build(name, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.sysext", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--out", type=Path, help="OCI layout directory to write (default: the cached one)")
    args = parser.parse_args(argv)
    try:
        print(build(args.name, args.out) if args.out else cached_extension(args.name))
    except (StyroliteError, subprocess.CalledProcessError, OSError) as e:
        print(f"sysext: {describe(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
