"""The kernel accepts our initramfs: boot the Debian cloud kernel under QEMU TCG with a busybox /init.

The initrd is our zstd cpio followed by the kernel image's uncompressed boot-modules cpio (as the host joins
them), so this also proves the concatenation and that a boot-critical module loads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from zonebuild.cpio import CpioArchive, compress, concat_for_boot
from zonebuild.kernel_image import build_from_sources, unpack_kernel_image

BUSYBOX = Path("/bin/busybox")
MARKER = "ZONE-CPIO-BOOT-OK"
INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
v=$(/bin/busybox uname -r)
/bin/busybox insmod /lib/modules/$v/kernel/drivers/virtio/virtio_ring.ko
/bin/busybox grep -q '^virtio_ring ' /proc/modules && echo MODULE-LOADED
echo {MARKER} $(/bin/busybox cat /etc/marker)
/bin/busybox poweroff -f
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or not BUSYBOX.exists(),
                    reason="needs qemu-system-x86_64 and busybox-static")
def test_cloud_kernel_boots_our_cpio(small_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    vmlinuz, modules = small_kernel
    kernel = unpack_kernel_image(build_from_sources(tmp_path / "k", vmlinuz=vmlinuz, modules=modules),
                                 tmp_path / "kernel")
    archive = CpioArchive()
    archive.add_file("bin/busybox", source=BUSYBOX, mode=0o755)
    archive.add_hardlink("bin/sh", "bin/busybox")
    archive.add_file("init", INIT_SCRIPT.encode(), mode=0o755)
    archive.add_file("etc/marker", b"from-etc\n")
    archive.add_device("dev/console", "c", 5, 1)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(concat_for_boot(compress(archive.to_bytes(), "zstd"), kernel.boot_modules.read_bytes()))
    result = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", str(kernel.image), "-initrd", str(initrd),
         "-append", "console=ttyS0 panic=-1 quiet"],
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert f"{MARKER} from-etc" in output, output[-3000:]
    assert "MODULE-LOADED" in output, output[-3000:]
