"""The raw config disk (``ZONECFG1``): how the zone config travels from the host to PID 1.

No file system: nothing to mount, no kernel parser, no module needed. PID 1 reads it with two ``pread``
calls before any module is loaded; the header's sha256 turns a truncated or corrupted disk into a clear
error instead of half a config (docs/zone-config.md)::

    offset 0    8 bytes   magic b"ZONECFG1"
    offset 8    4 bytes   JSON length, little-endian u32 (at most MAX_JSON bytes)
    offset 12   32 bytes  sha256 of the JSON bytes
    offset 44   ...       zero up to HEADER_SIZE (512)
    offset 512  JSON (UTF-8, canonical), then zero padding to a 4096-byte multiple
"""

from __future__ import annotations

import os
import struct

from zoneinit.config.document import ZoneConfig, dumps
from zoneinit.config.parser import loads
from zoneinit.errors import ZoneConfigError

MAGIC = b"ZONECFG1"
HEADER = struct.Struct("<8sI32s")
HEADER_SIZE = 512
BLOCK = 4096
MAX_JSON = 1 << 20


def encode_config_disk(config: ZoneConfig) -> bytes:
    """The whole disk image: header, JSON, zero padding to a 4096-byte multiple."""
    import hashlib

    body = dumps(config).encode()
    if len(body) > MAX_JSON:
        raise ZoneConfigError("$", f"config is {len(body)} bytes; the disk holds at most {MAX_JSON}")
    header = HEADER.pack(MAGIC, len(body), hashlib.sha256(body).digest()).ljust(HEADER_SIZE, b"\0")
    image = header + body
    return image + b"\0" * (-len(image) % BLOCK)


def decode_config_disk(data: bytes, where: str = "config disk") -> ZoneConfig:
    import hashlib

    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise ZoneConfigError("", f"{where}: no zone config (bad magic; expected {MAGIC.decode()})")
    _, length, digest = HEADER.unpack_from(data)
    if length > MAX_JSON:
        raise ZoneConfigError("", f"{where}: config length {length} exceeds {MAX_JSON}")
    body = data[HEADER_SIZE: HEADER_SIZE + length]
    if len(body) != length:
        raise ZoneConfigError("", f"{where}: truncated ({len(body)} of {length} config bytes)")
    if hashlib.sha256(body).digest() != digest:
        raise ZoneConfigError("", f"{where}: config checksum mismatch (corrupt disk)")
    return loads(body)


def read_config_disk(path: str) -> ZoneConfig:
    """Read and validate the config straight from the block device (or an image file); nothing is mounted."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        header = os.pread(fd, HEADER_SIZE, 0)
        length = HEADER.unpack_from(header)[1] if len(header) >= HEADER.size and header[:8] == MAGIC else 0
        data = header + os.pread(fd, min(length, MAX_JSON), HEADER_SIZE) if length else header
    finally:
        os.close(fd)
    return decode_config_disk(data, path)
