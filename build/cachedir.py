"""Where every slow build output is cached by content hash: one rule for the CLI, the tests and the benchmarks.

1. ``$ZONE_CACHE`` when it is set and not empty;
2. else ``/var/cache/zone`` for root (the README's commands, ``.ci/test`` and CI all run as root, so a zone
   started by hand and the test suite share one kernel image, one Nuitka compile, one ccache);
3. else ``$XDG_CACHE_HOME/zone`` (default ``~/.cache/zone``) for an unprivileged user.

Entries are keyed by the digest of what produced them, so one cache serves every checkout on the machine.
Layout: docs/images.md.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

SYSTEM_CACHE = Path("/var/cache/zone")


def cache_dir() -> Path:
    override = os.environ.get("ZONE_CACHE")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zone"


def cached_layout(out: Path, build: Callable[[Path], object]) -> Path:
    """``out``, an OCI layout in the cache: built the first time into ``<out>.partial`` and renamed into place
    once complete, so a crashed or concurrent build never leaves a half-written layout under the real name."""
    if not (out / "index.json").is_file():
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        build(partial)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    return out
