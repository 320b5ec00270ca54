"""The initrd cache's pruning: the most recently used stay, and nothing used lately goes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from host.images import prune


def _cached(directory: Path, name: str, age: float) -> Path:
    path = directory / name
    path.write_bytes(b"x")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_prune_keeps_the_most_recent_and_what_was_used_lately(tmp_path: Path) -> None:
    day = 24 * 3600
    recent = [_cached(tmp_path, f"recent{i}", i) for i in range(4)]
    used_today = _cached(tmp_path, "used-today", 3600)     # beyond the newest four, but another tree uses it
    stale = _cached(tmp_path, "stale", 2 * day)
    partial = _cached(tmp_path, ".partial", 3 * day)       # a build in progress is never touched
    prune(tmp_path, keep=4)
    assert all(p.exists() for p in recent) and used_today.exists() and partial.exists()
    assert not stale.exists()
