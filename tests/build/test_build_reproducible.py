"""Every image is bit-for-bit reproducible: two builds from empty caches, one of them in a process with another
umask, hash seed, SOURCE_DATE_EPOCH, interning state and build order (zonebuild.reproduce), give one digest.

The Nuitka initrd is proved the same way by ``python -m zonebuild.reproduce`` (a cold compile takes minutes per
build, see docs/images.md); here the developer initrd covers the same staging, bytecode and packing code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zonebuild import debs
from zonebuild.reproduce import main

pytestmark = pytest.mark.slow


@pytest.mark.root
def test_images_are_reproducible_across_processes(small_kernel: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("mksquashfs") is None or shutil.which("mkfs.erofs") is None:
        pytest.skip("needs squashfs-tools and erofs-utils")
    try:
        busybox_deb = debs.download("busybox-static")
    except debs.DebError as e:
        pytest.skip(f"busybox-static unavailable: {e}")
    caches = [tmp_path / "a", tmp_path / "b"]
    for cache in caches:  # empty caches, but no second download of the package
        (cache / "debs").mkdir(parents=True)
        shutil.copyfile(busybox_deb, cache / "debs" / busybox_deb.name)
    vmlinuz, modules = small_kernel
    status = main(["--artefacts", "initrd,kernel,busybox,rootimage,configdisk", "--dev", "--parallel", "--warm",
                   "--vmlinuz", str(vmlinuz), "--modules", str(modules),
                   "--cache-a", str(caches[0]), "--cache-b", str(caches[1])])
    output = capsys.readouterr().out
    assert status == 0, output
    for artefact in ("initrd", "kernel", "busybox", "root-squashfs", "root-erofs", "root-squashfs-shifted",
                     "configdisk"):
        assert f"{artefact} " in output and "DIFFERENT" not in output
