"""Boot inputs for a zone, prepared once and cached by content hash.

* the kernel OCI image -> unpacked (every blob's digest verified by zonebuild's OCI reader) under
  ``<cache>/host/kernel/<manifest digest>/``: /kernel/image, addons.squashfs, boot-modules.cpio;
* our initrd + the kernel's boot-modules cpio -> one concatenated initrd (the kernel accepts concatenated
  cpio archives), ``<cache>/host/initrd/<sha256 of both>.img``;
* defaults (kernel image, initrd, built-in busybox app image, root images) come from zonebuild.

The cache is zonebuild's (``zonebuild.cachedir``: ``$ZONE_CACHE``, else /var/cache/zone for root), shared with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from host import output
from host.errors import HostError
from host.zonebuild_import import ensure_zonebuild

if TYPE_CHECKING:
    from zonebuild.extension import ExtensionManifest


def cache_root() -> Path:
    ensure_zonebuild()
    from zonebuild.cachedir import cache_dir
    return cache_dir() / "host"


@dataclass(frozen=True)
class PreparedKernel:
    image: Path           # bzImage for direct kernel boot
    addons: Path          # addons.squashfs (all modules)
    boot_modules: Path    # uncompressed cpio of the boot-critical modules
    metadata: dict[str, str]
    digest: str           # manifest digest of the kernel OCI image


def sha256_of(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def cached_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a private temp dir beside ``target`` and rename it into place (safe against a parallel build)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():   # a parallel build won the race: theirs is as good as ours
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def cached_file(target: Path, build: Callable[[Path], None]) -> Path:
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    scratch = Path(scratch_name)
    try:
        build(scratch)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target


def prepare_kernel(layout: str | Path) -> PreparedKernel:
    """Verify and unpack the kernel OCI image (once per manifest digest)."""
    ensure_zonebuild()
    from zonebuild.kernel_image import KernelImageError, parse_metadata, unpack_kernel_image
    from zonebuild.oci import ImageError, open_image

    try:
        digest = open_image(layout).manifest_digest or ""
    except ImageError as e:
        raise HostError(f"kernel image {layout}") from e
    if not digest:
        raise HostError(f"kernel image {layout}: no manifest digest")
    target = cache_root() / "kernel" / digest.removeprefix("sha256:")[:32]

    def unpack(scratch: Path) -> None:
        with output.step(f"verifying and unpacking kernel image {Path(layout).name}"):
            try:
                unpack_kernel_image(layout, scratch)
            except (KernelImageError, ImageError) as e:
                raise HostError(f"kernel image {layout}") from e

    root = cached_dir(target, unpack)
    kernel_dir = root / "kernel"
    for name in ("image", "addons.squashfs", "boot-modules.cpio"):
        if not (kernel_dir / name).is_file():
            raise HostError(f"kernel image {layout}: missing /kernel/{name}")
    return PreparedKernel(
        image=kernel_dir / "image",
        addons=kernel_dir / "addons.squashfs",
        boot_modules=kernel_dir / "boot-modules.cpio",
        metadata=parse_metadata((kernel_dir / "metadata").read_text()),
        digest=digest,
    )


def boot_initrd(initrd: Path, kernel: PreparedKernel) -> Path:
    """Our initrd with the kernel's boot modules appended, cached by the hash of both."""
    if not initrd.is_file():
        raise HostError(f"initrd {initrd}: no such file")
    ensure_zonebuild()
    from zonebuild.cpio import concat_for_boot

    key = sha256_of(initrd, kernel.boot_modules)[:32]

    def concat(out: Path) -> None:
        out.write_bytes(concat_for_boot(initrd.read_bytes(), kernel.boot_modules.read_bytes()))

    return cached_file(cache_root() / "initrd" / f"{key}.img", concat)


def default_kernel_image() -> Path:
    """The kernel OCI image built from Debian's linux-image-cloud-amd64 (zonebuild caches it per .deb)."""
    ensure_zonebuild()
    from zonebuild.kernel_image import cached_kernel_image
    with output.step("kernel image (linux-image-cloud-amd64)"):
        return cached_kernel_image()


def default_initrd(dev: bool = False) -> Path:
    """Our initrd for the current source tree (Nuitka product; ``dev``: the fast plain-interpreter packager),
    cached by zonebuild's source digest so an unchanged tree is not repacked."""
    ensure_zonebuild()
    from zonebuild.initrd import InitrdError, build_initrd, source_digest

    kind = "dev" if dev else "nuitka"
    target = cache_root() / "initrd-built" / f"{source_digest()}-{kind}.cpio.zst"

    def build(out: Path) -> None:
        work = out.parent / f"{out.name}.d"
        with output.step(f"building the zone initrd ({kind}; a cold Nuitka compile takes minutes)"):
            try:
                os.replace(build_initrd(work, dev=dev).path, out)
            except InitrdError as e:
                raise HostError("build initrd") from e
            finally:
                shutil.rmtree(work, ignore_errors=True)

    path = cached_file(target, build)
    with contextlib.suppress(OSError):
        os.utime(path)   # its last use: what prune goes by
    prune(target.parent, keep=4)
    return path


def prune(directory: Path, keep: int, unused_for: float = 24 * 3600) -> None:
    """Drop cached files (each source change makes a new initrd) beyond the ``keep`` most recently used, and only
    those unused for ``unused_for`` seconds: a zone, a shim config or a benchmark may still boot from a file
    another checkout's build made older (several trees share the one cache)."""
    files = sorted((p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime >= unused_for:
                old.unlink()


@dataclass(frozen=True)
class PreparedRoot:
    path: Path
    fstype: str
    config: dict[str, object]    # the image's runtime config: Entrypoint, Cmd, Env, WorkingDir, User...
    owner_shift: int = 0         # owners shifted for a user namespace (0: as in the image)


def default_app_image() -> Path:
    """The built-in busybox OCI image (zonebuild, from Debian's busybox-static)."""
    ensure_zonebuild()
    from zonebuild.busybox_image import cached_busybox_image
    return cached_busybox_image()


def prepare_root_image(image: Path, *, user_namespace: bool = True) -> PreparedRoot:
    """OCI image -> read-only root image (squashfs), cached by the image's config digest (zonebuild). For a
    user namespace its owners are shifted by zonebuild.idshift.DEFAULT_SHIFT (container 0 = zone 65536)."""
    ensure_zonebuild()
    from zonebuild.idshift import DEFAULT_SHIFT
    from zonebuild.rootimage import RootImageError, build_root_image

    shift = DEFAULT_SHIFT if user_namespace else 0
    with output.step(f"root image from {image.name}"):
        try:
            built = build_root_image(image, cache_root() / "root", owner_shift=shift)
        except RootImageError as e:
            raise HostError(f"image {image}") from e
    return PreparedRoot(built.path, built.fstype, dict(built.config), built.owner_shift)


@dataclass(frozen=True)
class PreparedExtension:
    name: str
    path: Path                   # the read-only disk: a squashfs of the image's /extension
    manifest: ExtensionManifest
    digest: str                  # the image's manifest digest


def prepare_extension(layout: Path, kernel_release: str, label: str) -> PreparedExtension:
    """A system extension image -> its disk (cached by the image's digest), refused unless its modules are
    built for ``kernel_release`` (before anything boots)."""
    ensure_zonebuild()
    from zonebuild.extension import ExtensionError, check_fits, extension_disk

    with output.step(f"extension disk from {label}"):
        try:
            disk = extension_disk(layout, cache_root() / "extensions")
        except ExtensionError as e:
            raise HostError(f"extension {label}") from e
    try:
        check_fits(disk.manifest, kernel_release, label)
    except ExtensionError as e:
        raise HostError(f"{e}: refused before boot") from None
    return PreparedExtension(disk.manifest.name, disk.path, disk.manifest, disk.digest)
