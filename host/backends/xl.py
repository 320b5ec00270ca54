"""dom0's tools for Xen zones: the ``xl`` runner, and read-only loop devices for disk images (``xl``'s
``backendtype=phy`` needs a block device). Used by the Xen backend (xen.py) and its hot-plug (hotplug.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

from host.errors import BackendError

XL = "xl"


def xl(*args: str, timeout: float = 60.0, check: bool = True,
       error: type[BackendError] = BackendError) -> subprocess.CompletedProcess[str]:
    """Run ``xl ARGS``; ``error`` (naming the command and xl's last line) if it fails or hangs."""
    if shutil.which(XL) is None:
        raise error("xl not found (install xen-utils-4.17, and run on a Xen dom0)")
    try:
        result = subprocess.run([XL, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise error(f"xl {' '.join(args)}: no answer within {timeout:.0f} s") from e
    if check and result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise error(f"xl {' '.join(args)}: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result


LOOP_SET_FD, LOOP_CLR_FD, LOOP_CTL_GET_FREE = 0x4C00, 0x4C01, 0x4C82


def attach_loop(path: Path) -> str:
    """A read-only loop device backed by ``path`` (ioctls, so no losetup is needed on a minimal dom0)."""
    import fcntl

    for _ in range(8):
        with open("/dev/loop-control", "rb") as control:
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
        device = f"/dev/loop{number}"
        backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            loop = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, LOOP_SET_FD, backing)   # a read-only backing fd makes a read-only loop
                return device
            except OSError as e:
                if e.errno != errno.EBUSY:   # another process took it first
                    raise BackendError(f"attach {path} to {device}") from e
            finally:
                os.close(loop)
        finally:
            os.close(backing)
    raise BackendError(f"attach {path}: no free loop device")


def detach_loop(device: str) -> None:
    import fcntl

    with contextlib.suppress(OSError):
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD)
        finally:
            os.close(fd)
