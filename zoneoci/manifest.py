"""Manifests and indexes: parsed from untrusted bytes, checked for shape, and the platform chosen.

An image manifest (OCI or Docker v2 schema 2) names a config and layers; an index (OCI image index or Docker
manifest list) names manifests per platform. Every digest is validated here, so later code can use a
descriptor's digest as a file name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from zoneoci import mediatypes
from zoneoci.digest import parse_digest
from zoneoci.errors import ManifestError, OCIError

# containerd and the distribution registry refuse manifests above 4 MiB; so do we
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise OCIError(f"invalid platform {text!r} (want os/arch[/variant], e.g. linux/amd64)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def matches(self, other: Platform) -> bool:
        """Does ``other`` (from an index) fit us? arm64's default variant is v8, arm's v7; an unset variant in
        the index is taken as the default."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        default = {"arm64": "v8", "arm": "v7"}.get(self.architecture, "")
        return (self.variant or default) == (other.variant or default)


def host_platform() -> Platform:
    machine = os.uname().machine.lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i686": "386",
            "i386": "386", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
    return Platform("linux", arch.get(machine, machine))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture,
                               **({"variant": self.platform.variant} if self.platform.variant else {})}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def parse_descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{what}: not a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(f"{what}: missing mediaType")
    try:
        digest = parse_digest(value.get("digest"), what)
    except OCIError as e:
        raise ManifestError(str(e)) from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{what}: size must be a non-negative integer, got {size!r}")
    plat = None
    raw_platform = value.get("platform")
    if raw_platform is not None:
        if not isinstance(raw_platform, dict) or not isinstance(raw_platform.get("os"), str) \
                or not isinstance(raw_platform.get("architecture"), str):
            raise ManifestError(f"{what}: platform needs string os and architecture")
        variant = raw_platform.get("variant") or ""
        plat = Platform(raw_platform["os"], raw_platform["architecture"], variant if isinstance(variant, str) else "")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in annotations.items()):
        raise ManifestError(f"{what}: annotations must map strings to strings")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{what}: urls must be a list of strings")
    return Descriptor(media_type, digest, size, plat, dict(annotations), tuple(urls))


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes

    def select(self, want: Platform) -> Descriptor:
        """The first manifest for ``want``; ManifestError names the platforms on offer if there is none."""
        for entry in self.manifests:
            if entry.platform is not None and want.matches(entry.platform) \
                    and entry.media_type in mediatypes.IMAGE_MANIFEST_TYPES:
                return entry
        offered = sorted({str(m.platform) for m in self.manifests if m.platform is not None})
        raise ManifestError(f"no manifest for platform {want} in the index (it offers: "
                            f"{', '.join(offered) or 'no platforms'})")


def parse_manifest(data: bytes, content_type: str | None = None) -> ImageManifest | ImageIndex:
    """Parse manifest bytes; ``content_type`` is what the registry said (its parameters are ignored).

    The media type comes from the document's ``mediaType`` field, else the Content-Type; when both are
    present they must agree. Docker schema 1 and anything that is not an image manifest or index is refused.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(data)} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit")
    header = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("manifest mediaType is not a string")
    if header in mediatypes.DOCKER_SCHEMA1 or declared in mediatypes.DOCKER_SCHEMA1 \
            or document.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported (deprecated and unverifiable); "
                            "re-push the image as OCI or Docker v2 schema 2")
    generic = {"", "application/json", "application/octet-stream", "text/plain"}
    if declared and header not in generic and header != declared:
        raise ManifestError(f"registry says Content-Type {header!r} but the manifest says mediaType {declared!r}")
    media_type = declared or (header if header not in generic else "")
    if not media_type:  # OCI allows an unset mediaType: infer from the shape
        media_type = mediatypes.OCI_INDEX if "manifests" in document else mediatypes.OCI_MANIFEST
    if media_type not in mediatypes.MANIFEST_TYPES:
        raise ManifestError(f"unsupported manifest media type {media_type!r}")
    if document.get("schemaVersion") != 2:
        raise ManifestError(f"manifest schemaVersion must be 2, got {document.get('schemaVersion')!r}")
    if media_type in mediatypes.INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no manifests list")
        return ImageIndex(media_type, tuple(parse_descriptor(m, f"index manifests[{i}]")
                                            for i, m in enumerate(entries)), data)
    if "manifests" in document:
        raise ManifestError(f"{media_type} document carries a manifests list (an index disguised as a manifest)")
    config = parse_descriptor(document.get("config"), "manifest config")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no layers list")
    parsed = tuple(parse_descriptor(layer, f"manifest layers[{i}]") for i, layer in enumerate(layers))
    return ImageManifest(media_type, config, parsed, data)
