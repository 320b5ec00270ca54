"""A real QEMU TCG guest for host.pod tests and bench/pod_rootfs.py: the zone kernel (the cached kernel OCI
image) with a busybox initrd whose /init loads the boot modules (+ any extra ones) and then runs a shell on
the serial console, which the test drives command by command. QMP listens on a unix socket in ``workdir``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for dir in /lib/modules/*; do
  [ -f "$dir/modules.boot" ] || continue
  while read -r mod; do insmod "$dir/$mod" 2>/dev/null; done < "$dir/modules.boot"
done
for mod in /lib/extra/*.ko; do [ -f "$mod" ] && insmod "$mod"; done
mkdir -p /mnt
stty -echo 2>/dev/null
echo "GUEST-READY $(cut -d' ' -f1 /proc/uptime)"
export PS1='' PS2=''
exec sh 2>&1
"""


def available() -> str | None:
    """Why a guest cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed"
    if not BUSYBOX.exists():
        return "busybox-static not installed"
    return None


def zone_kernel() -> Any:
    """The cached kernel OCI image, unpacked (host.images; builds it on a cold cache)."""
    from host.images import default_kernel_image, prepare_kernel

    return prepare_kernel(default_kernel_image())


def extract_modules(kernel: Any, names: Sequence[str], dest: Path) -> list[Path]:
    """``names`` (paths under modules/<version>/kernel/, in load order) from the kernel's addons.squashfs."""
    version = kernel.metadata["KERNEL_VERSION"]
    wanted = [f"modules/{version}/kernel/{name}" for name in names]
    scratch = dest / "addons"
    subprocess.run(["unsquashfs", "-f", "-q", "-d", str(scratch), str(kernel.addons), *wanted], check=True,
                   capture_output=True)
    return [scratch / path for path in wanted]


def build_initrd(out: Path, *, boot_modules: Path | None = None, extra_modules: Sequence[Path] = (),
                 programs: Sequence[Path] = (), init: str = INIT) -> Path:
    """The busybox initrd, followed by a kernel image's boot-modules cpio if given; ``extra_modules`` are
    loaded in this order after the boot modules; ``programs`` (host binaries) come with their libraries;
    ``init`` replaces the console-driven /init."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.cpio import CpioArchive, compress, concat_for_boot

    archive = CpioArchive()
    for directory in ("bin", "proc", "sys", "dev", "tmp", "mnt", "lib/extra"):
        archive.add_dir(directory)
    archive.add_device("dev/console", "c", 5, 1)
    archive.add_file("bin/busybox", source=BUSYBOX, mode=0o755)
    archive.add_symlink("bin/sh", "busybox")
    archive.add_file("init", init.encode(), mode=0o755)
    if programs:
        from zonebuild.elfdeps import closure

        staged = {str(path).lstrip("/"): path for path in [*programs, *closure(programs)]}
        staged.setdefault("lib64/ld-linux-x86-64.so.2", Path("/lib64/ld-linux-x86-64.so.2"))
        for name, path in sorted(staged.items()):
            archive.add_file(name, source=path.resolve(), mode=0o755)
    for number, module in enumerate(extra_modules):
        archive.add_file(f"lib/extra/{number:02d}-{module.name}", source=module, mode=0o644)
    parts = [compress(archive.to_bytes(), "zstd", 3)]
    if boot_modules is not None:
        parts.append(boot_modules.read_bytes())
    out.write_bytes(concat_for_boot(*parts))
    return out


class Guest:
    """One QEMU process; ``run`` types a command on the serial console and returns (status, output)."""

    def __init__(self, kernel_image: Path, initrd: Path, workdir: Path, *, extra_args: Sequence[str] = (),
                 pass_fds: Sequence[int] = (), memory_mib: int = 256, append: str = "") -> None:
        self.workdir = workdir
        self.qmp = workdir / "qmp.sock"
        self.log = workdir / "console.log"
        argv = [QEMU, "-accel", "tcg", "-machine", "pc", "-m", str(memory_mib), "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot", "-kernel", str(kernel_image), "-initrd", str(initrd),
                "-append", f"console=ttyS0 panic=-1 quiet {append}".strip(), "-serial", "stdio",
                "-qmp", f"unix:{self.qmp},server=on,wait=off", *extra_args]
        self._output = ""
        self._cond = threading.Condition()
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, pass_fds=tuple(pass_fds))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with open(self.log, "a", errors="replace") as log:
            while True:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    break
                text = chunk.decode(errors="replace").replace("\r", "")
                log.write(text)
                log.flush()
                with self._cond:
                    self._output += text
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._output)
                if match:
                    self._output = self._output[match.end():]
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                    raise TimeoutError(f"guest: no {pattern!r} within {timeout:.0f} s; console tail:\n{tail}")
                self._cond.wait(min(remaining, 0.5))

    def boot(self, timeout: float = 180.0) -> float:
        """Wait for the shell; returns the guest's uptime when it was ready."""
        uptime = float(self.wait_for(r"GUEST-READY ([0-9.]+)\n", timeout).group(1))
        self.run("true")   # swallows the shell's banner and its job-control notice
        return uptime

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        token = uuid.uuid4().hex[:12]
        assert self.process.stdin is not None
        with self._cond:
            self._output = ""
        self.process.stdin.write(f"{command}; echo \"@@{token} $?@@\"\n".encode())
        self.process.stdin.flush()
        match = self.wait_for(rf"(?s)(.*?)@@{token} (\d+)@@\n", timeout)
        return int(match.group(2)), match.group(1)

    def check(self, command: str, timeout: float = 60.0) -> str:
        status, output = self.run(command, timeout)
        if status != 0:
            raise AssertionError(f"guest: {command!r} exited {status}: {output}")
        return output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._reader.join(5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
