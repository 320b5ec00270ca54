"""Progress lines of the image builders: ``[initrd] packing cpio`` on stderr, flushed at once.

Builds take minutes (a cold Nuitka compile, depmod, mksquashfs); each builder names itself so interleaved
output from the host side stays readable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def logger(name: str) -> Callable[[str], None]:
    """A ``log(message)`` function that prefixes every line with ``[name]``."""

    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log
