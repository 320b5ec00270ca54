"""Fail-closed integrity: a disk is hashed in full and compared to the sha256 the config pins, before it
is mounted. hashlib is imported here, on this path only (PID 1 stays lean when nothing is pinned)."""

from __future__ import annotations

import os

from zoneinit.errors import DigestMismatch, ZoneInitError

CHUNK = 1 << 20


def normalize_digest(expected: str) -> str:
    value = expected.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ZoneInitError(f"not a sha256 digest: {expected!r}")
    return value


def sha256_of(path: str, size: int | None = None) -> str:
    """The sha256 of ``path`` (a block device or file); ``size`` limits it to the image's first bytes
    (a block device can be longer than the image it holds)."""
    import hashlib

    digest = hashlib.sha256()
    remaining = size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ZoneInitError(f"open {path} to verify it") from e
    try:
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            block = os.read(fd, want)
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    finally:
        os.close(fd)
    if remaining:
        raise DigestMismatch(f"{path}: shorter than the {size} bytes the config says")
    return digest.hexdigest()


def verify_sha256(path: str, expected: str, size: int | None = None) -> str:
    """Raise DigestMismatch unless ``path`` hashes to ``expected``; returns the digest."""
    want = normalize_digest(expected)
    got = sha256_of(path, size)
    if got != want:
        raise DigestMismatch(f"{path}: sha256 is {got}, the config pins {want}: refusing to mount it")
    return got
