"""Progress lines on stderr for the slow steps (building images, booting), so stdout stays the workload's."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def note(message: str) -> None:
    if not _quiet:
        print(f"zonehost: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(message: str) -> Iterator[None]:
    """``zonehost: <message>...`` then ``done in 1.23 s`` (or ``failed``) on the same logical step."""
    start = time.monotonic()
    if not _quiet:
        print(f"zonehost: {message}...", file=sys.stderr, flush=True)
    try:
        yield
    except BaseException:
        if not _quiet:
            print(f"zonehost: {message}: failed after {time.monotonic() - start:.2f} s", file=sys.stderr, flush=True)
        raise
    if not _quiet:
        print(f"zonehost: {message}: done in {time.monotonic() - start:.2f} s", file=sys.stderr, flush=True)
