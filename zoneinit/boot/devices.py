"""Device nodes appear asynchronously: a just-loaded module's device shows up in devtmpfs a moment later."""

from __future__ import annotations

import os
import time

DEVICE_WAIT = 3.0   # seconds to wait for a device node that a just-loaded module creates


def wait_for_path(path: str, timeout: float = DEVICE_WAIT) -> bool:
    """True once ``path`` exists; False if it has not appeared within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
