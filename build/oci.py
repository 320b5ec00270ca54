"""Read OCI image layouts and docker-archive tarballs, verifying every blob's digest before it is used.

Two sources, one model:

* an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``): every blob
  (index, manifest, config, layer) is hashed and compared with its descriptor's digest and size;
* a ``docker save`` tarball (``manifest.json`` + config + layer tars): the config is checked against the
  digest in its name, each layer's *uncompressed* sha256 against the config's ``rootfs.diff_ids``.

``unpack_image`` then applies the layers in order (whiteouts included) through :mod:`zonebuild.layers`, which
refuses names that would land outside the output directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .digests import sha256_file
from .errors import BuildError
from .layers import LayerApplier, LayerError

__all__ = ["Image", "ImageError", "ImageSource", "Layer", "open_image", "sha256_file", "unpack_image"]

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
MAX_JSON_BLOB = 4 << 20


class ImageError(BuildError):
    """The image is malformed, incomplete, or a blob does not match its digest."""


@dataclass(frozen=True)
class Layer:
    digest: str  # the digest the source vouches for (blob digest, or diff_id for docker-archive)
    media_type: str
    size: int | None
    path: str  # where the bytes live inside the source


@dataclass
class Image:
    source: ImageSource
    config: dict
    config_digest: str
    layers: list[Layer] = field(default_factory=list)
    manifest_digest: str | None = None

    @property
    def runtime_config(self) -> dict:
        """The ``config`` object of the image config (Entrypoint, Cmd, Env, WorkingDir, User, ...)."""
        value = self.config.get("config") or {}
        if not isinstance(value, dict):
            raise ImageError("image config: 'config' is not an object")
        return value


def _check_digest(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ImageError(f"{what}: unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest


def _hash_stream(stream: IO[bytes], limit: int | None = None) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise ImageError(f"blob larger than {limit} bytes")
    return f"sha256:{digest.hexdigest()}", total


def _decompressed(stream: IO[bytes], media_type: str) -> IO[bytes]:
    """The layer tar stream, whatever compression the blob uses (sniffed, the media type is a hint)."""
    head = stream.read(4)
    stream.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream)  # type: ignore[return-value]
    if media_type.endswith(("+gzip", "+zstd")):
        raise ImageError(f"layer says {media_type} but is not compressed that way")
    return stream


class ImageSource:
    """Where blobs come from; subclasses open a named blob for reading."""

    def open_path(self, path: str) -> IO[bytes]:
        raise NotImplementedError

    @contextmanager
    def open_verified(self, path: str, digest: str, size: int | None, what: str) -> Iterator[IO[bytes]]:
        """Hash the blob first; yield it rewound only if digest and size match."""
        with self.open_path(path) as stream:
            actual, length = _hash_stream(stream)
            if size is not None and length != size:
                raise ImageError(f"{what} {digest}: size {length} != {size} in its descriptor (truncated?)")
            if actual != digest:
                raise ImageError(f"{what}: digest mismatch: descriptor says {digest}, content is {actual}")
            stream.seek(0)
            yield stream

    def read_json(self, path: str, digest: str | None, size: int | None, what: str) -> dict:
        if digest is None:
            with self.open_path(path) as stream:
                data = stream.read(MAX_JSON_BLOB + 1)
        else:
            with self.open_verified(path, digest, size, what) as stream:
                data = stream.read(MAX_JSON_BLOB + 1)
        if len(data) > MAX_JSON_BLOB:
            raise ImageError(f"{what}: larger than {MAX_JSON_BLOB} bytes")
        try:
            document = json.loads(data)
        except ValueError as e:
            raise ImageError(f"{what}: not valid JSON ({e})") from e
        if not isinstance(document, dict):
            raise ImageError(f"{what}: expected a JSON object")
        return document


class LayoutSource(ImageSource):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open_path(self, path: str) -> IO[bytes]:
        try:
            return open(self.directory / path, "rb")
        except FileNotFoundError as e:
            raise ImageError(f"missing blob {path}") from e

    @staticmethod
    def blob_path(digest: str) -> str:
        algorithm, hexpart = digest.split(":", 1)
        return f"blobs/{algorithm}/{hexpart}"


class TarSource(ImageSource):
    """Blobs inside a tarball (docker-archive, or an OCI layout saved as a tar)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with tarfile.open(path, "r:") as tar:
                self.members = {(m.name[2:] if m.name.startswith("./") else m.name): m
                                for m in tar.getmembers() if m.isreg()}
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ImageError(f"{path}: not a readable tar archive ({e})") from e

    def open_path(self, path: str) -> IO[bytes]:
        member = self.members.get(path)
        if member is None:
            raise ImageError(f"{self.path}: missing {path!r} in archive")
        with tarfile.open(self.path, "r:") as tar:
            stream = tar.extractfile(member)
            assert stream is not None
            data = stream.read()  # a layer tar inside a tar: read it whole so we can seek and verify first
        if len(data) != member.size:
            raise ImageError(f"{self.path}: {path!r} is truncated")
        return io.BytesIO(data)

    def has(self, path: str) -> bool:
        return path in self.members


def _pick_manifest(source: ImageSource, index: dict, ref: str | None, what: str) -> dict:
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{what}: no manifests")
    candidates = manifests
    if ref is not None:
        candidates = [m for m in manifests
                      if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref]
        if not candidates:
            raise ImageError(f"{what}: no manifest named {ref!r}")
    for entry in candidates:
        platform = entry.get("platform") or {}
        if platform and (platform.get("os"), platform.get("architecture")) != ("linux", "amd64"):
            continue
        digest = _check_digest(entry.get("digest"), f"{what} manifest")
        document = source.read_json(LayoutSource.blob_path(digest), digest, entry.get("size"), "manifest")
        if entry.get("mediaType") in INDEX_TYPES or document.get("mediaType") in INDEX_TYPES:
            return _pick_manifest(source, document, None, f"index {digest}")
        document["_digest"] = digest
        return document
    raise ImageError(f"{what}: no linux/amd64 manifest")


def _open_layout(source: ImageSource, ref: str | None) -> Image:
    index = source.read_json("index.json", None, None, "index.json")
    manifest = _pick_manifest(source, index, ref, "index.json")
    config_desc = manifest.get("config") or {}
    config_digest = _check_digest(config_desc.get("digest"), "manifest config")
    config = source.read_json(LayoutSource.blob_path(config_digest), config_digest, config_desc.get("size"),
                              "image config")
    layers = []
    for i, desc in enumerate(manifest.get("layers") or []):
        digest = _check_digest(desc.get("digest"), f"manifest layers[{i}]")
        layers.append(Layer(digest, str(desc.get("mediaType", "")), desc.get("size"), LayoutSource.blob_path(digest)))
    return Image(source, config, config_digest, layers, manifest["_digest"])


def _open_docker_archive(source: TarSource) -> Image:
    with source.open_path("manifest.json") as stream:
        try:
            entries = json.loads(stream.read())
        except ValueError as e:
            raise ImageError(f"{source.path}: manifest.json is not valid JSON") from e
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ImageError(f"{source.path}: manifest.json has no image")
    entry = entries[0]
    config_path = entry.get("Config")
    if not isinstance(config_path, str):
        raise ImageError(f"{source.path}: manifest.json: missing Config")
    hexpart = re.sub(r"\.json$", "", config_path.rsplit("/", 1)[-1])
    config_digest = _check_digest(f"sha256:{hexpart}", f"docker-archive config {config_path!r}")
    config = source.read_json(config_path, config_digest, None, "image config")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layer_paths = entry.get("Layers") or []
    if len(diff_ids) != len(layer_paths):
        raise ImageError(f"{source.path}: {len(layer_paths)} layers but {len(diff_ids)} diff_ids in the config")
    layers = [Layer(_check_digest(d, f"diff_ids[{i}]"), "docker-archive", None, p)
              for i, (d, p) in enumerate(zip(diff_ids, layer_paths, strict=True))]
    return Image(source, config, config_digest, layers)


def open_image(path: str | Path, ref: str | None = None) -> Image:
    """Open an OCI layout directory, an OCI layout tar, or a docker-archive tar; manifests are verified."""
    path = Path(path)
    if path.is_dir():
        if not (path / "oci-layout").is_file():
            raise ImageError(f"{path}: not an OCI image layout (no oci-layout file)")
        try:
            return _open_layout(LayoutSource(path), ref)
        except (AttributeError, TypeError, KeyError, ValueError) as e:
            raise ImageError(f"{path}: malformed image metadata ({type(e).__name__}: {e})") from e
    if not path.exists():
        raise ImageError(f"{path}: no such image")
    source = TarSource(path)
    try:
        if source.has("manifest.json"):
            return _open_docker_archive(source)
        if source.has("oci-layout") and source.has("index.json"):
            return _open_layout(source, ref)
    except (AttributeError, TypeError, KeyError, ValueError) as e:  # JSON of the wrong shape somewhere inside
        raise ImageError(f"{path}: malformed image metadata ({type(e).__name__}: {e})") from e
    raise ImageError(f"{path}: neither a docker-archive (manifest.json) nor an OCI layout (oci-layout)")


def unpack_image(image: Image, dest: str | Path, *, preserve_owner: bool | None = None) -> Path:
    """Verify each layer and apply it onto ``dest`` in order (whiteouts honoured); returns ``dest``."""
    applier = LayerApplier(dest, preserve_owner=preserve_owner)
    for i, layer in enumerate(image.layers):
        label = f"layer {i} ({layer.digest[:19]})"
        if layer.media_type == "docker-archive":
            # docker-archive names layers by path: the uncompressed bytes must hash to the diff_id
            with image.source.open_path(layer.path) as raw:
                tar_stream = _decompressed(raw, "")
                actual, _ = _hash_stream(tar_stream)
                if actual != layer.digest:
                    raise ImageError(f"{label}: digest mismatch: diff_id {layer.digest}, content {actual}")
                raw.seek(0)
                _apply(applier, _decompressed(raw, ""), label)
        else:
            with image.source.open_verified(layer.path, layer.digest, layer.size, label) as raw:
                _apply(applier, _decompressed(raw, layer.media_type), label)
    applier.finish()
    return Path(dest)


def _apply(applier: LayerApplier, stream: IO[bytes], label: str) -> None:
    try:
        applier.apply(stream, label)
    except LayerError as e:
        raise ImageError(f"unpack {label}") from e
    except (OSError, EOFError) as e:
        raise ImageError(f"{label}: cannot decompress ({e})") from e
