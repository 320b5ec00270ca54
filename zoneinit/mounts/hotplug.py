"""Finding a disk the host hot-plugged into the running zone (IDM ``disk.attach``).

QEMU gives each disk a virtio-blk serial; the kernel shows it in ``/sys/block/vdX/serial`` and devtmpfs
makes ``/dev/vdX``. Xen's blkfront has no serial: the host names the ``/dev/xvdX`` it attached. Either way the
device appears a moment after the host's attach returns (ACPI hotplug, xenbus), so PID 1 polls from its
loop (``DiskWaiter``) instead of sleeping in it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinit.supervisor.loop import Supervisor

SYS_BLOCK = "/sys/block"
DEV = "/dev"
DEVICE_RE = re.compile(r"^/dev/[a-z][a-z0-9]{0,31}$")
POLL_INTERVAL = 0.02
DEFAULT_WAIT = 10.0


def device_by_serial(serial: str, sys_block: str | None = None, dev: str | None = None) -> str | None:
    """``/dev/vdX`` of the disk whose serial is ``serial``, once both its sysfs entry and its node exist."""
    sys_block, dev = sys_block or SYS_BLOCK, dev or DEV
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(sys_block, name, "serial"), encoding="ascii", errors="replace") as f:
                found = f.read().strip()
        except OSError:
            continue
        if found == serial:
            node = os.path.join(dev, name)
            return node if os.path.exists(node) else None
    return None


def device_size(device: str, sys_block: str | None = None) -> int | None:
    """Bytes of a block device (sysfs counts 512-byte sectors whatever the block size); None if unknown."""
    try:
        with open(os.path.join(sys_block or SYS_BLOCK, os.path.basename(device), "size"), encoding="ascii") as f:
            return int(f.read().strip()) * 512
    except (OSError, ValueError):
        return None


class DiskWaiter:
    """Poll on the loop until ``locate()`` finds the device, or ``timeout`` passes; then call ``done`` once with
    the device path or None."""

    def __init__(self, loop: Supervisor, locate: Callable[[], str | None], done: Callable[[str | None], None],
                 timeout: float = DEFAULT_WAIT) -> None:
        self.loop = loop
        self.locate = locate
        self.done = done
        self.deadline = time.monotonic() + timeout
        self._check()

    def _check(self) -> None:
        device = self.locate()
        if device is not None or time.monotonic() >= self.deadline:
            self.done(device)
            return
        self.loop.call_later(POLL_INTERVAL, self._check)
