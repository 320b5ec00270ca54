"""Where every slow build output is cached by content hash: $ZONE_CACHE, else the repository's .cache/."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("ZONE_CACHE") or Path(__file__).resolve().parent.parent / ".cache")
