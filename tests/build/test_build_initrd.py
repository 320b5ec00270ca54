"""The Nuitka-built initramfs: contents, the compiled multi-call binary, and a boot to PID 1's ready line.

Slow: the first run compiles with Nuitka (minutes); later runs reuse the cache (zonebuild.cachedir).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from zonebuild.initrd import boot_initrd, build_initrd
from zonebuild.kernel_image import build_from_sources, unpack_kernel_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for Nuitka and stage-0"),
]


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nuitka")
    return build_initrd(tmp_path_factory.mktemp("initrd")).path


def test_initrd_contents(initrd: Path) -> None:
    listing = subprocess.run(f"zstd -dc {initrd} | cpio -t --quiet", shell=True, capture_output=True, text=True,
                             check=True).stdout.split()
    for required in ("init", "lib/zone/zone-init", "lib/zone/init", "bin/styrolite", "bin/zone", "dev/console",
                     "dev/urandom", "etc/passwd", "etc/nsswitch.conf", "lib/x86_64-linux-gnu/libc.so.6",
                     "lib/x86_64-linux-gnu/libseccomp.so.2", "lib/x86_64-linux-gnu/libgcc_s.so.1"):
        assert required in listing, required
    assert any(name.startswith("lib64/ld-linux") for name in listing)
    assert any("_cffi_backend" in name for name in listing)
    # what no zone path loads stays out (zonebuild.initrd_stdlib): OpenSSL, SQLite, the Unicode database, pyroute2
    for absent in ("libcrypto.so.3", "libssl.so.3", "libsqlite3.so.0", "unicodedata", "_ssl", "_hashlib",
                   "pyroute2", "_asyncio", "_decimal", "pyexpat"):
        assert not [name for name in listing if absent in name], absent


def test_initrd_is_reproducible(initrd: Path, tmp_path: Path) -> None:
    again = build_initrd(tmp_path).path  # compile cached: only staging and packing run again
    assert again.read_bytes() == initrd.read_bytes()


@pytest.mark.root
def test_compiled_binary_imports_everything(initrd: Path, tmp_path: Path) -> None:
    """Run the product's self-test on the host from the unpacked initrd: lazy imports and bytecode resolve."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc {initrd} | cpio -idm --quiet", shell=True, cwd=root, check=True)
    binary = root / "lib" / "zone" / "zone-init"
    result = subprocess.run([str(binary), "selftest"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok zoneinit.rtnetlink" in result.stdout and "ok _sha256" in result.stdout
    bare = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "unknown applet 'zone-init'" in bare.stderr


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_boots_to_pid1(initrd: Path, small_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    vmlinuz, modules = small_kernel
    kernel = unpack_kernel_image(build_from_sources(tmp_path / "k", vmlinuz=vmlinuz, modules=modules),
                                 tmp_path / "kernel")
    image = boot_initrd(initrd, kernel.boot_modules, tmp_path / "boot.img")
    process = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", str(kernel.image), "-initrd", str(image),
         "-append", "console=ttyS0 panic=-1 quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    output = b""
    deadline = time.monotonic() + 120
    try:
        assert process.stdout is not None
        while time.monotonic() < deadline and b"ready" not in output and process.poll() is None:
            if select.select([process.stdout], [], [], 1)[0]:
                output += os.read(process.stdout.fileno(), 65536)
    finally:
        process.kill()
        process.wait()
    text = output.decode(errors="replace")
    assert "stage0: cannot exec" not in text
    assert "zoneinit" in text and "ready" in text, text[-3000:]
