"""Polling a cgroup file until the kernel reports a state (frozen, empty), with a bounded wait."""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, retry: Callable[[], None] | None = None) -> bool:
    """Poll ``condition`` with a short back-off; ``retry`` runs between polls (v1 freezer re-asks FROZEN)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        if retry is not None:
            retry()
