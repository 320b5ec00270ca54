"""sha256 of files, streamed: the content digests every builder keys its cache and its OCI blobs by."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_hex(path: str | Path) -> str:
    """The file's sha256 as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The file's digest in OCI form, ``sha256:<64 hex>``."""
    return f"sha256:{sha256_hex(path)}"
