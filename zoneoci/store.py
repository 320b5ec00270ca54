"""The host's content store, shared by every zone and every process on the host.

Layout on disk (the store is itself a valid OCI image layout, so any OCI tool can read it)::

    <root>/oci-layout
    <root>/index.json              references: one descriptor per name, ref.name annotation = full reference
    <root>/blobs/sha256/<hex>      content (indexes, manifests, configs, layers), mode 0444
    <root>/ingest/<hex>.lock       per-blob lock (flock); <hex>.<pid>.<random>.partial while downloading
    <root>/locks/store.lock        pulls, pushes and readers hold it shared; garbage collection exclusive
    <root>/locks/refs.lock         serialises index.json updates
    <root>/views/<hex>/            a one-image OCI layout per manifest (blobs -> ../../blobs) for readers that
                                   take a layout directory (zonebuild's image reader)

Rules: a blob appears under its digest only after it was verified and fsynced (temp file + fsync + rename), so
nothing half-written is ever visible; the renames are made durable by one fsync of the blob directory before a
name is written (:meth:`ContentStore.set_ref`), not one per blob, so no name outlives a crash that lost a blob
it reaches (such a blob is just absent: the next pull fetches it); index.json is replaced atomically too. A
per-blob ``flock`` makes concurrent pulls, in threads or in processes, download each blob once: the second
waits for the first and then finds the blob present. Locks die with their process, so a crashed pull leaves
only ``ingest/`` debris, which the next garbage collection removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from zoneoci import mediatypes
from zoneoci.digest import digest_bytes, parse_digest, short, split_digest
from zoneoci.errors import ManifestError, NotFoundError, OCIError, StoreError
from zoneoci.manifest import MAX_MANIFEST_BYTES, Descriptor, ImageIndex, ImageManifest, parse_descriptor, parse_manifest

DEFAULT_ROOT = Path("/var/lib/zone/content")
REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_MANIFEST = "zone.image.manifest"     # the platform manifest chosen from an index
ANNOTATION_PLATFORM = "zone.image.platform"
ANNOTATION_PULLED = "zone.image.pulled"         # UTC time of the pull, RFC 3339


def default_root() -> Path:
    return Path(os.environ.get("ZONE_CONTENT_STORE") or DEFAULT_ROOT)


class BlobBusy(OCIError):
    """Another pull holds this blob's lock (only raised when asked not to wait)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(target: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, mode: int, wait: bool = True) -> Iterator[None]:
    """An flock on ``path`` through a private open file description: it excludes other threads of this
    process as well as other processes, and the kernel drops it if the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BlobBusy(f"{path.name} is locked") from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ImageRecord:
    """One reference in the store."""

    name: str                 # full reference, e.g. "127.0.0.1:5000/app:1.0" or "...app@sha256:..."
    target: Descriptor        # what the name points at (an index or a manifest), as the registry served it
    manifest: str             # the image manifest for our platform (== target.digest for a plain manifest)
    platform: str
    pulled: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "digest": self.target.digest, "mediaType": self.target.media_type,
                "manifest": self.manifest, "platform": self.platform, "pulled": self.pulled}


def _repository_of(name: str) -> str | None:
    from zoneoci.reference import parse_reference

    try:
        return parse_reference(name).name
    except OCIError:
        return None


@dataclass(frozen=True)
class GCResult:
    blobs_removed: int
    bytes_freed: int
    kept: int


class ContentStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.blobs = self.root / "blobs"
        self.ingest_dir = self.root / "ingest"
        self.locks = self.root / "locks"
        self.views = self.root / "views"
        self.index_path = self.root / "index.json"
        try:
            for directory in (self.blobs / "sha256", self.ingest_dir, self.locks, self.views):
                directory.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                _write_atomically(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        except OSError as e:
            raise StoreError(f"content store {self.root}: cannot create it ({e.strerror})") from None

    # ---- blobs -------------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = split_digest(parse_digest(digest))
        return self.blobs / algorithm / hexpart

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {short(digest)} is not in the store") from None

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold while pulling, pushing or reading: garbage collection waits until every lease is gone, so it
        never removes a blob an in-progress pull has written but not yet referenced."""
        with _flock(self.locks / "store.lock", fcntl.LOCK_SH):
            yield

    def ingest(self, digest: str, write: Callable[[IO[bytes]], object], *, wait: bool = True) -> bool:
        """Make blob ``digest`` present: ``write(file)`` must fill the file with exactly the verified bytes (the
        registry client checks while streaming). Returns False if the blob was (or became) present without us
        writing it, True if this call wrote it. With ``wait=False`` a blob another pull is writing raises
        BlobBusy instead of waiting. Call inside :meth:`lease`."""
        target = self.blob_path(digest)
        if target.is_file():
            return False
        hexpart = target.name
        with _flock(self.ingest_dir / f"{hexpart}.lock", fcntl.LOCK_EX, wait):
            if target.is_file():  # the pull we waited for wrote it
                return False
            partial = self.ingest_dir / f"{hexpart}.{os.getpid()}.{secrets.token_hex(4)}.partial"
            try:
                with open(partial, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(partial, 0o444)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(partial, target)  # the directory is fsynced once, before a name refers to it (set_ref)
            except OSError as e:
                raise StoreError(f"content store: cannot write blob {short(digest)} ({e.strerror or e})") from None
            finally:
                partial.unlink(missing_ok=True)
        return True

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store small content (a manifest, a config) after checking it hashes to ``digest``."""
        actual = digest_bytes(data, split_digest(digest)[0] if digest else "sha256")
        if digest is not None and actual != digest:
            raise StoreError(f"refusing to store content as {short(digest)}: it hashes to {actual}")
        self.ingest(actual, lambda f: f.write(data))
        return actual

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob's bytes, verified (verification on use)."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise NotFoundError(f"blob {short(digest)} is not in the store") from None
        if len(data) > limit:
            raise StoreError(f"blob {short(digest)} is larger than {limit} bytes")
        if digest_bytes(data, split_digest(digest)[0]) != digest:
            self._quarantine(digest)
        return data

    def verify_blob(self, digest: str) -> None:
        """Hash a blob on disk; a corrupt blob is removed (so the next pull fetches it again) and reported."""
        algorithm, _ = split_digest(digest)
        hasher = hashlib.new(algorithm)
        try:
            with open(self.blob_path(digest), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    hasher.update(chunk)
        except FileNotFoundError:
            raise NotFoundError(f"blob {short(digest)} is not in the store") from None
        if f"{algorithm}:{hasher.hexdigest()}" != digest:
            self._quarantine(digest)

    def _quarantine(self, digest: str) -> None:
        with _flock(self.ingest_dir / f"{split_digest(digest)[1]}.lock", fcntl.LOCK_EX):
            self.blob_path(digest).unlink(missing_ok=True)
        raise StoreError(f"blob {short(digest)} in {self.root} is corrupt (its content no longer matches its "
                         "digest); it was removed: pull the image again")

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {short(digest)} is not in the store") from None

    def manifest(self, digest: str) -> ImageManifest | ImageIndex:
        data = self.read_blob(digest)
        try:
            return parse_manifest(data)
        except ManifestError as e:
            raise StoreError(f"manifest {short(digest)} in the store") from e

    # ---- references --------------------------------------------------------------------------------------

    def _read_index(self) -> list[dict]:
        try:
            document = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise StoreError(f"content store {self.index_path}: unreadable ({e})") from None
        entries = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise StoreError(f"content store {self.index_path}: no manifests list")
        return [e for e in entries if isinstance(e, dict)]

    def _write_index(self, entries: list[dict]) -> None:
        entries = sorted(entries, key=lambda e: (e.get("annotations") or {}).get(REF_NAME, ""))
        document = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
        _write_atomically(self.index_path, json.dumps(document, indent=1, sort_keys=True).encode())

    def records(self) -> list[ImageRecord]:
        out = []
        for i, entry in enumerate(self._read_index()):
            try:
                target = parse_descriptor(entry, f"{self.index_path} manifests[{i}]")
            except ManifestError as e:
                raise StoreError(str(e)) from None
            notes = target.annotations
            name = notes.get(REF_NAME, "")
            out.append(ImageRecord(name, target, notes.get(ANNOTATION_MANIFEST, target.digest),
                                   notes.get(ANNOTATION_PLATFORM, ""), notes.get(ANNOTATION_PULLED, "")))
        return out

    def has_name(self, name: str) -> bool:
        """Is there an image named exactly ``name`` (a full reference, as :meth:`set_ref` was given it)?"""
        return any((entry.get("annotations") or {}).get(REF_NAME) == name for entry in self._read_index())

    def lookup(self, name: str) -> ImageRecord:
        """By full reference, familiar name (``busybox:latest``), digest, or a unique digest prefix."""
        records = self.records()
        exact = [r for r in records if r.name == name]
        if exact:
            return exact[0]
        if name.startswith("sha256:") or (len(name) >= 6 and all(c in "0123456789abcdef" for c in name)):
            wanted = name if name.startswith("sha256:") else f"sha256:{name}"
            found = {r.target.digest: r for r in records if r.target.digest.startswith(wanted)
                     or r.manifest.startswith(wanted)}
            if len(found) == 1:
                return next(iter(found.values()))
            if len(found) > 1:
                raise NotFoundError(f"digest prefix {name!r} is ambiguous ({len(found)} images)")
        from zoneoci.reference import parse_reference
        try:
            parsed = parse_reference(name)
        except OCIError:
            parsed = None
        for record in records:
            if parsed is not None and record.name == str(parsed):
                return record
        if parsed is not None and parsed.digest:   # pinned: a tag beside the digest does not matter (as pull names it)
            for record in records:
                if record.target.digest == parsed.digest and _repository_of(record.name) == parsed.name:
                    return record
        raise NotFoundError(f"no image {name!r} in the content store {self.root}")

    def set_ref(self, name: str, target: Descriptor, manifest: str, platform: str) -> ImageRecord:
        """Point ``name`` at ``target`` (atomically replacing what it pointed at). The content must be present.
        First the blob directories are fsynced: the renames that made the blobs present (by this process or by a
        concurrent pull) are then durable before the name is."""
        if not self.has(target.digest) or not self.has(manifest):
            raise StoreError(f"cannot name {name}: its manifest is not in the store")
        for algorithm_dir in self.blobs.iterdir():
            if algorithm_dir.is_dir():
                _fsync_dir(algorithm_dir)
        pulled = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        annotations = {REF_NAME: name, ANNOTATION_MANIFEST: manifest, ANNOTATION_PLATFORM: platform,
                       ANNOTATION_PULLED: pulled}
        entry = Descriptor(target.media_type, target.digest, target.size, None, annotations).to_json()
        with _flock(self.locks / "refs.lock", fcntl.LOCK_EX):
            entries = [e for e in self._read_index() if (e.get("annotations") or {}).get(REF_NAME) != name]
            self._write_index([*entries, entry])
        return ImageRecord(name, Descriptor(target.media_type, target.digest, target.size, None, annotations),
                           manifest, platform, pulled)

    def remove_refs(self, names: set[str]) -> int:
        with _flock(self.locks / "refs.lock", fcntl.LOCK_EX):
            entries = self._read_index()
            kept = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) not in names]
            if len(kept) != len(entries):
                self._write_index(kept)
        return len(entries) - len(kept)

    def image_layout(self, manifest: str) -> Path:
        """A one-image OCI layout (``views/<hex>``) whose index names ``manifest``, blobs shared with the store.
        The manifest and config are verified first; layers are verified by whoever unpacks them."""
        image = self.manifest(manifest)
        if not isinstance(image, ImageManifest):
            raise StoreError(f"{short(manifest)} is an index, not an image manifest")
        self.read_blob(image.config.digest)
        for layer in image.layers:
            if not self.has(layer.digest):
                raise StoreError(f"image {short(manifest)}: layer {short(layer.digest)} is missing from the store")
        view = self.views / split_digest(manifest)[1]
        if view.is_dir():
            return view
        scratch = self.views / f".{view.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            scratch.mkdir()
            (scratch / "blobs").symlink_to("../../blobs")
            (scratch / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
            entry = Descriptor(image.media_type, manifest, self.size(manifest), None).to_json()
            (scratch / "index.json").write_bytes(json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                                                             "manifests": [entry]}).encode())
            os.rename(scratch, view)
        except OSError as e:
            if not view.is_dir():
                raise StoreError(f"content store: cannot make a layout view of {short(manifest)} ({e})") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return view

    # ---- garbage collection ------------------------------------------------------------------------------

    def _reachable(self) -> set[str]:
        """Every digest a reference reaches (index -> manifests -> config and layers). Only descriptors whose
        media type is a manifest or index are opened; a reference whose manifest is unreadable stops the GC."""
        marked: set[str] = set()
        stack = [(r.target.digest, r.target.media_type) for r in self.records()]
        while stack:
            digest, media_type = stack.pop()
            if digest in marked:
                continue
            marked.add(digest)
            if media_type not in mediatypes.MANIFEST_TYPES or not self.has(digest):
                continue  # a config or layer; or an index entry for a platform we never pulled
            document = self.manifest(digest)
            if isinstance(document, ImageIndex):
                stack += [(m.digest, m.media_type) for m in document.manifests]
            else:
                stack += [(d.digest, d.media_type) for d in (document.config, *document.layers)]
        return marked

    def gc(self, *, wait: bool = True) -> GCResult:
        """Remove every blob no reference reaches, stale views and ingest debris. Waits for (or, with
        ``wait=False``, gives up on, raising BlobBusy) in-progress pulls, whose blobs are not referenced yet."""
        with _flock(self.locks / "store.lock", fcntl.LOCK_EX, wait):
            marked = self._reachable()
            removed = freed = kept = 0
            for algorithm_dir in self.blobs.iterdir():
                for blob in algorithm_dir.iterdir():
                    if f"{algorithm_dir.name}:{blob.name}" in marked:
                        kept += 1
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        freed += blob.stat().st_size
                        blob.unlink()
                        removed += 1
            for view in self.views.iterdir():
                if f"sha256:{view.name}" not in marked:
                    shutil.rmtree(view, ignore_errors=True)
            for debris in self.ingest_dir.iterdir():  # no pull runs while we hold the store lock exclusively
                with contextlib.suppress(OSError):
                    debris.unlink()
            _fsync_dir(self.blobs / "sha256")
        return GCResult(removed, freed, kept)

    def usage(self, record: ImageRecord) -> int:
        """Bytes on disk of the image's blobs (the platform manifest, its config and layers, and the index)."""
        total = 0
        for digest in {record.target.digest, record.manifest}:
            with contextlib.suppress(OSError):
                total += self.blob_path(digest).stat().st_size
        try:
            image = self.manifest(record.manifest)
        except OCIError:
            return total
        if isinstance(image, ImageManifest):
            for desc in (image.config, *image.layers):
                with contextlib.suppress(OSError):
                    total += self.blob_path(desc.digest).stat().st_size
        return total
