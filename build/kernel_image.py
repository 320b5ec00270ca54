"""The zone kernel as an OCI image: build it from a Debian kernel package, and unpack it (verified) on the host.

Image filesystem (one layer)::

    /kernel/image               the bzImage the host boots (direct kernel boot)
    /kernel/metadata            KEY=VALUE lines: KERNEL_ARCH, KERNEL_VERSION, KERNEL_FLAVOR, KERNEL_CONFIG
    /kernel/config.gz           the kernel .config, gzip; KERNEL_CONFIG is the sha256 of this file
    /kernel/addons.squashfs     /modules/<version>/... the modules (all but FS_EXTRA_TREES), with modules.dep/alias
    /kernel/boot-modules.cpio   the few modules needed to reach addons.squashfs (uncompressed newc); the host
                                appends it to the initrd, so the initrd does not depend on the kernel version

Usage: ``python -m zonebuild.kernel_image --out DIR [--deb PKG.deb | --package NAME | --vmlinuz F --modules D]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from styrolite.errors import StyroliteError, describe

from . import debs
from .buildlog import logger
from .cachedir import cache_dir, cached_layout
from .cpio import CpioArchive
from .digests import sha256_file, sha256_hex
from .errors import BuildError
from .fsimage import make_fs
from .oci import ImageError, open_image, unpack_image
from .ocilayout import write_tree_image

log = logger("kernel-image")

DEFAULT_PACKAGE = "linux-image-cloud-amd64"
# Modules PID 1 needs before addons.squashfs is mounted: the block front ends (virtio under QEMU, blkfront under
# Xen), the virtio transport + console (IDM), loop, and the filesystems of the addons, root and overlay mounts;
# and the NIC drivers (loaded by the network phase, not at boot), so a networked zone needs no module from
# addons and never mounts (and hashes) that image.
BOOT_MODULES = (
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console", "xen-blkfront",
    "loop", "squashfs", "overlay", "erofs", "virtio_net", "xen-netfront",
)
# part of the cache key: the boot set shapes the image (boot-modules.cpio)
BOOT_KEY = hashlib.sha256("\n".join(BOOT_MODULES).encode()).hexdigest()[:8]
METADATA_KEYS = ("KERNEL_ARCH", "KERNEL_VERSION", "KERNEL_FLAVOR", "KERNEL_CONFIG")
# Modules left out of addons.squashfs: file systems for data volumes, which a zone needs neither to boot nor to
# run OCI images (those are squashfs, erofs, overlay, ext4, fat, isofs, fuse: they stay). They ship as the
# kernel-modules system extension "fs-extra" for the same release (zonebuild.sysext): a zone that needs btrfs or
# NFS attaches it (zonehost run --extension), every other zone verifies and carries a smaller addons image.
FS_EXTRA_TREES = ("kernel/fs/btrfs/", "kernel/fs/xfs/", "kernel/fs/exfat/", "kernel/fs/nfs/", "kernel/fs/nfsd/",
                  "kernel/fs/ceph/", "kernel/fs/smb/", "kernel/fs/orangefs/", "kernel/fs/udf/", "kernel/fs/sysv/",
                  "kernel/fs/romfs/", "kernel/fs/zonefs/")
ADDONS_KEY = hashlib.sha256("\n".join(FS_EXTRA_TREES).encode()).hexdigest()[:8]   # part of the cache key


class KernelImageError(BuildError):
    """The kernel package or kernel image is unusable."""


# --- fetching the Debian package ----------------------------------------------------------------------------------

def download_package(package: str = DEFAULT_PACKAGE) -> Path:
    """The .deb that holds the kernel: ``package`` downloaded (cached), a meta package followed to the
    versioned image package it depends on."""
    for _ in range(3):  # meta package -> versioned image package
        deb = debs.download(package)
        if "/boot/vmlinuz-" in debs.listing(deb):
            return deb
        depends = re.findall(r"(linux-image-[^\s,(]+)", debs.field(deb, "Depends"))
        if not depends:
            raise KernelImageError(f"{deb.name}: no kernel inside and no linux-image dependency to follow")
        package = depends[0]
    raise KernelImageError(f"{package}: meta package chain too long")


@dataclass(frozen=True)
class KernelTree:
    vmlinuz: Path
    modules: Path  # .../lib/modules/<version>
    config: Path | None
    version: str


def extract_deb(deb: Path, into: Path) -> KernelTree:
    debs.extract(deb, into)
    vmlinuz = sorted((into / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise KernelImageError(f"{deb.name}: no /boot/vmlinuz-* inside")
    version = vmlinuz[0].name.removeprefix("vmlinuz-")
    config = into / "boot" / f"config-{version}"
    return KernelTree(vmlinuz[0], into / "lib" / "modules" / version, config if config.exists() else None, version)


# --- modules ----------------------------------------------------------------------------------------------------

def run_depmod(modules_dir: Path, version: str, staging: Path) -> Path:
    """Copy modules to staging/lib/modules/<version> and run ``depmod -b`` there; returns that directory."""
    target = staging / "lib" / "modules" / version
    shutil.copytree(modules_dir, target, symlinks=True, ignore=shutil.ignore_patterns("build", "source"))
    subprocess.run(["depmod", "-b", str(staging), version], check=True)
    if not (target / "modules.dep").exists():
        raise KernelImageError("depmod wrote no modules.dep")
    return target


def parse_modules_dep(modules_dep: Path) -> dict[str, list[str]]:
    """module path -> its dependency paths, as depmod wrote them."""
    deps: dict[str, list[str]] = {}
    for line in modules_dep.read_text().splitlines():
        if ":" in line:
            module, _, rest = line.partition(":")
            deps[module.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    """'kernel/drivers/block/xen-blkfront.ko.xz' -> 'xen_blkfront' (the kernel's name: '-' becomes '_')."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base).replace("-", "_")


def boot_module_order(deps: dict[str, list[str]], wanted: tuple[str, ...] = BOOT_MODULES) -> list[str]:
    """Paths of the wanted modules and everything they need, dependencies first (built-ins are skipped)."""
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:
            visit(path)
    return order


def extension_only(deps: dict[str, list[str]], trees: tuple[str, ...] = FS_EXTRA_TREES) -> set[str]:
    """The module paths under ``trees`` that no module elsewhere needs: what addons.squashfs leaves out."""
    chosen = {path for path in deps if path.startswith(trees)}
    needed_elsewhere = {dep for path, needs in deps.items() if path not in chosen for dep in needs}
    return chosen - needed_elsewhere   # modules.dep lists every module's dependencies transitively


def module_closure(deps: dict[str, list[str]], paths: set[str]) -> list[str]:
    """``paths`` and every module they need, sorted."""
    return sorted(paths | {dep for path in paths for dep in deps.get(path, [])})


def boot_modules_cpio(modules_root: Path, version: str) -> bytes:
    """The uncompressed cpio of the boot-critical modules (+ modules.boot listing the load order)."""
    deps = parse_modules_dep(modules_root / "modules.dep")
    order = boot_module_order(deps)
    archive = CpioArchive()
    prefix = f"lib/modules/{version}"
    for path in order:
        archive.add_file(f"{prefix}/{path}", source=modules_root / path, mode=0o644)
    archive.add_file(f"{prefix}/modules.boot", ("\n".join(order) + "\n").encode())
    archive.add_file(f"{prefix}/modules.dep", "".join(f"{p}: {' '.join(deps[p])}\n".replace(": \n", ":\n")
                                                      for p in order).encode())
    return archive.to_bytes()


def normalize_tree(root: Path) -> None:
    """Directories 0755 and files 0644 (modules are data): the modes depmod's output and our own directories
    get from the umask must not reach addons.squashfs."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def flavor_of(version: str) -> str:
    match = re.match(r"^\d+\.\d+(\.\d+)?(-\d+)?-(.+)$", version)
    return match.group(3) if match else "unknown"


# --- building the image -----------------------------------------------------------------------------------------

def build_kernel_image(out: Path, tree: KernelTree, work: Path) -> Path:
    """Assemble the OCI layout at ``out`` from an unpacked kernel; returns ``out``."""
    root = work / "rootfs"
    kdir = root / "kernel"
    kdir.mkdir(parents=True)
    shutil.copyfile(tree.vmlinuz, kdir / "image")
    config_text = tree.config.read_bytes() if tree.config else b""
    with open(kdir / "config.gz", "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(config_text)
    log(f"depmod {tree.version}")
    addons = work / "addons"
    modules_root = run_depmod(tree.modules, tree.version, work / "depmod")
    left_out = extension_only(parse_modules_dep(modules_root / "modules.dep"))
    addons_base = work / "depmod-addons"
    addons_root = addons_base / "lib" / "modules" / tree.version
    shutil.copytree(modules_root, addons_root, symlinks=True)
    for path in left_out:
        (addons_root / path).unlink()
        parent = (addons_root / path).parent
        while parent != addons_root and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    subprocess.run(["depmod", "-b", str(addons_base), tree.version], check=True)
    (addons / "modules").mkdir(parents=True)
    shutil.copytree(addons_root, addons / "modules" / tree.version, symlinks=True)
    normalize_tree(addons)
    log(f"mksquashfs addons ({len(left_out)} file-system modules left to the fs-extra extension)")
    make_fs(addons, kdir / "addons.squashfs", "squashfs", all_root=True, all_time=0)
    (kdir / "boot-modules.cpio").write_bytes(boot_modules_cpio(modules_root, tree.version))
    metadata = {
        "KERNEL_ARCH": "x86_64",
        "KERNEL_VERSION": tree.version,
        "KERNEL_FLAVOR": flavor_of(tree.version),
        "KERNEL_CONFIG": sha256_file(kdir / "config.gz"),
    }
    (kdir / "metadata").write_text("".join(f"{k}={v}\n" for k, v in metadata.items()))
    for path in kdir.iterdir():
        path.chmod(0o644)
    kdir.chmod(0o755)
    log("layer + layout")
    write_tree_image(root, out, work, {"Labels": {f"dev.zone.kernel.{k.lower()}": v for k, v in metadata.items()}},
                     ref_name=f"kernel:{tree.version}")
    return out


def build_from_sources(out: Path, *, deb: Path | None = None, package: str | None = None,
                       vmlinuz: Path | None = None, modules: Path | None = None,
                       config: Path | None = None) -> Path:
    """One entry point for the three inputs: a local .deb, an apt package name, or vmlinuz + modules dir."""
    with tempfile.TemporaryDirectory(prefix="kernel-image-") as tmp:
        work = Path(tmp)
        if vmlinuz is not None:
            if modules is None:
                raise KernelImageError("--vmlinuz needs --modules DIR (a lib/modules/<version> directory)")
            tree = KernelTree(vmlinuz, modules, config, modules.name)
        else:
            if deb is None:
                deb = download_package(package or DEFAULT_PACKAGE)
            log(f"unpack {deb.name}")
            tree = extract_deb(deb, work / "deb")
        return build_kernel_image(out, tree, work)


def cached_kernel_image(package: str = DEFAULT_PACKAGE) -> Path:
    """The kernel image layout for ``package`` under the cache, built once per .deb content and boot set."""
    deb = download_package(package)
    digest = sha256_hex(deb)[:16]
    return cached_layout(cache_dir() / "kernel" / f"{digest}-{ADDONS_KEY}-{BOOT_KEY}",
                         lambda partial: build_from_sources(partial, deb=deb))


# --- reading it back (host side) --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelImage:
    root: Path
    metadata: dict[str, str]

    @property
    def image(self) -> Path:
        return self.root / "kernel" / "image"

    @property
    def addons(self) -> Path:
        return self.root / "kernel" / "addons.squashfs"

    @property
    def boot_modules(self) -> Path:
        return self.root / "kernel" / "boot-modules.cpio"

    @property
    def config_gz(self) -> Path:
        return self.root / "kernel" / "config.gz"


def parse_metadata(text: str) -> dict[str, str]:
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise KernelImageError(f"/kernel/metadata line {number}: expected KEY=VALUE")
        values[key.strip()] = value.strip()
    missing = [k for k in METADATA_KEYS if k not in values]
    if missing:
        raise KernelImageError(f"/kernel/metadata: missing {', '.join(missing)}")
    return values


def unpack_kernel_image(layout: str | Path, dest: str | Path) -> KernelImage:
    """Verify and unpack a kernel OCI image into ``dest``; checks the files the host needs are there."""
    try:
        root = unpack_image(open_image(layout), dest, preserve_owner=False)
    except ImageError as e:
        raise KernelImageError(f"kernel image {layout}") from e
    image = root / "kernel" / "image"
    if not image.is_file() or image.is_symlink():
        raise KernelImageError(f"kernel image {layout}: missing /kernel/image")
    meta_path = root / "kernel" / "metadata"
    if not meta_path.is_file() or meta_path.is_symlink():
        raise KernelImageError(f"kernel image {layout}: missing /kernel/metadata")
    metadata = parse_metadata(meta_path.read_text())
    config = root / "kernel" / "config.gz"
    if config.is_file() and sha256_file(config) != metadata["KERNEL_CONFIG"]:
        raise KernelImageError(f"kernel image {layout}: /kernel/config.gz does not match KERNEL_CONFIG")
    return KernelImage(root, metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.kernel_image", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="OCI layout directory to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--deb", type=Path, help="a local linux-image .deb")
    source.add_argument("--package", help=f"apt package to download (default {DEFAULT_PACKAGE})")
    source.add_argument("--vmlinuz", type=Path, help="a kernel image (needs --modules)")
    parser.add_argument("--modules", type=Path, help="lib/modules/<version> directory for --vmlinuz")
    parser.add_argument("--config", type=Path, help="kernel .config for --vmlinuz")
    args = parser.parse_args(argv)
    try:
        out = build_from_sources(args.out, deb=args.deb, package=args.package, vmlinuz=args.vmlinuz,
                                 modules=args.modules, config=args.config)
    except (StyroliteError, subprocess.CalledProcessError, OSError) as e:
        print(f"kernel-image: {describe(e)}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
