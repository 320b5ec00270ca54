"""The kernel OCI image: layout shape, metadata, boot-module closure, reproducibility, verified unpacking."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from zonebuild.kernel_image import (
    KernelImageError,
    boot_module_order,
    build_from_sources,
    module_name,
    unpack_kernel_image,
)
from zonebuild.ocilayout import MEDIA_LAYER_TAR, LayoutWriter, tar_diff_id, write_tree_tar


def _layout_digests(layout: Path) -> set[str]:
    return {p.name for p in (layout / "blobs" / "sha256").iterdir()}


def test_build_and_unpack(small_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    vmlinuz, modules = small_kernel
    layout = build_from_sources(tmp_path / "k1", vmlinuz=vmlinuz, modules=modules)
    for blob in (layout / "blobs" / "sha256").iterdir():  # every blob is named by its content
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    kernel = unpack_kernel_image(layout, tmp_path / "unpacked")
    assert kernel.image.read_bytes() == vmlinuz.read_bytes()
    assert kernel.metadata["KERNEL_VERSION"] == modules.name
    assert kernel.metadata["KERNEL_FLAVOR"] == "cloud-amd64"
    assert kernel.metadata["KERNEL_ARCH"] == "x86_64"
    assert kernel.metadata["KERNEL_CONFIG"].startswith("sha256:")

    listing = subprocess.run(["unsquashfs", "-l", str(kernel.addons)], capture_output=True, text=True,
                             check=True).stdout
    assert f"modules/{modules.name}/modules.dep" in listing
    assert f"modules/{modules.name}/modules.alias" in listing
    assert "squashfs.ko" in listing

    names = subprocess.run(["cpio", "-t", "--quiet"], input=kernel.boot_modules.read_bytes(), capture_output=True,
                           check=True).stdout.decode().split()
    assert f"lib/modules/{modules.name}/modules.boot" in names
    assert any(n.endswith("virtio_blk.ko") for n in names)

    again = build_from_sources(tmp_path / "k2", vmlinuz=vmlinuz, modules=modules)
    assert _layout_digests(layout) == _layout_digests(again)
    assert (layout / "index.json").read_bytes() == (again / "index.json").read_bytes()


def test_boot_module_order_puts_dependencies_first() -> None:
    deps = {
        "kernel/drivers/block/virtio_blk.ko": ["kernel/drivers/virtio/virtio.ko",
                                               "kernel/drivers/virtio/virtio_ring.ko"],
        "kernel/drivers/virtio/virtio.ko": ["kernel/drivers/virtio/virtio_ring.ko"],
        "kernel/drivers/virtio/virtio_ring.ko": [],
        "kernel/fs/unrelated.ko": [],
    }
    order = boot_module_order(deps, ("virtio_blk",))
    assert order == ["kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
                     "kernel/drivers/block/virtio_blk.ko"]
    assert module_name("kernel/drivers/block/xen-blkfront.ko.xz") == "xen_blkfront"


def test_missing_kernel_image_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "root" / "kernel"
    root.mkdir(parents=True)
    (root / "metadata").write_text("KERNEL_ARCH=x86_64\n")
    writer = LayoutWriter(tmp_path / "layout")
    tar = write_tree_tar(tmp_path / "root", tmp_path / "layer.tar")
    diff_id = tar_diff_id(tar)
    layer = writer.add_file(tar, MEDIA_LAYER_TAR)
    writer.add_image({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}},
                     [layer])
    with pytest.raises(KernelImageError, match="missing /kernel/image"):
        unpack_kernel_image(tmp_path / "layout", tmp_path / "out")


def test_tampered_blob_is_refused(small_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    vmlinuz, modules = small_kernel
    layout = build_from_sources(tmp_path / "k", vmlinuz=vmlinuz, modules=modules)
    biggest = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    with pytest.raises(KernelImageError) as info:
        unpack_kernel_image(layout, tmp_path / "out")
    from styrolite.errors import describe

    assert "digest mismatch" in describe(info.value)
    assert not (tmp_path / "out" / "kernel" / "image").exists()
