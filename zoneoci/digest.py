"""Content digests (``algorithm:hex``) and hashing while streaming."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from zoneoci.errors import DigestMismatchError, ReferenceFormatError

# the algorithms the OCI image spec registers, with the length of their hex encoding
ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+):([0-9a-f]+)$")


def parse_digest(text: object, what: str = "digest") -> str:
    """``text`` if it is a well-formed digest of a supported algorithm; else ReferenceFormatError."""
    if not isinstance(text, str):
        raise ReferenceFormatError(f"{what}: expected a digest string, got {type(text).__name__}")
    match = _DIGEST_RE.match(text)
    if match is None:
        raise ReferenceFormatError(f"{what}: malformed digest {text[:100]!r} (want sha256:<64 hex>)")
    algorithm, hexpart = match.groups()
    if algorithm not in ALGORITHMS:
        raise ReferenceFormatError(f"{what}: unsupported digest algorithm {algorithm!r} in {text[:100]!r}")
    if len(hexpart) != ALGORITHMS[algorithm]:
        raise ReferenceFormatError(f"{what}: {algorithm} digest must have {ALGORITHMS[algorithm]} hex digits: "
                                   f"{text[:100]!r}")
    return text


def split_digest(digest: str) -> tuple[str, str]:
    """``('sha256', '<hex>')`` of a digest already validated by :func:`parse_digest`."""
    algorithm, _, hexpart = digest.partition(":")
    return algorithm, hexpart


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def short(digest: str) -> str:
    """``sha256:0123456789ab`` for messages and tables."""
    return digest[:19]


@dataclass
class Verifier:
    """Hashes bytes as they stream past and checks them against the descriptor that vouches for them."""

    digest: str
    size: int | None = None
    what: str = "blob"

    def __post_init__(self) -> None:
        algorithm, _ = split_digest(parse_digest(self.digest, self.what))
        self._hash = hashlib.new(algorithm)
        self.count = 0

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.size is not None and self.count > self.size:
            raise DigestMismatchError(f"{self.what} {short(self.digest)}: more than the {self.size} bytes its "
                                      "descriptor says")
        self._hash.update(chunk)

    def actual(self) -> str:
        return f"{split_digest(self.digest)[0]}:{self._hash.hexdigest()}"

    def check(self) -> None:
        """Raise DigestMismatchError unless exactly the promised bytes went through."""
        if self.size is not None and self.count != self.size:
            raise DigestMismatchError(f"{self.what} {short(self.digest)}: truncated: got {self.count} of "
                                      f"{self.size} bytes")
        actual = self.actual()
        if actual != self.digest:
            raise DigestMismatchError(f"{self.what} {short(self.digest)}: digest mismatch: content hashes to "
                                      f"{actual}")
