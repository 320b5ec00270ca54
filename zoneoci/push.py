"""Push an image to a registry from the content store or from an OCI image layout directory (what zonebuild
writes: the kernel image, extension images).

Order: for each image manifest, its config and layers (each skipped if the repository has it, mounted from
another repository of the same registry when the store knows one, else uploaded, verified as it is read),
then the manifest by digest; an index last, by the destination's tag (or by digest). Children of an index
that are not present locally (platforms never pulled) cannot be pushed: then only the local platform's
manifest is pushed, and the result says so.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from zoneoci.client import RegistryClient
from zoneoci.digest import Verifier, digest_bytes, parse_digest, short, split_digest
from zoneoci.errors import ManifestError, NotFoundError, OCIError
from zoneoci.manifest import MAX_MANIFEST_BYTES, Descriptor, ImageIndex, ImageManifest, parse_descriptor, parse_manifest
from zoneoci.reference import Reference, parse_reference
from zoneoci.store import REF_NAME, ContentStore


class PushError(OCIError):
    """A push failed; the cause says why."""


class LayoutSource:
    """Blobs of an OCI image layout directory (the content store is one too)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "oci-layout").is_file():
            raise NotFoundError(f"{self.root}: not an OCI image layout (no oci-layout file)")

    def path(self, digest: str) -> Path:
        algorithm, hexpart = split_digest(parse_digest(digest))
        return self.root / "blobs" / algorithm / hexpart

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> IO[bytes]:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{self.root}: blob {short(digest)} is missing") from None

    def read(self, desc: Descriptor) -> bytes:
        with self.open(desc.digest) as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        verifier = Verifier(desc.digest, desc.size, f"{self.root}: blob")
        verifier.update(data)
        verifier.check()
        return data

    def root_descriptor(self, name: str | None = None) -> Descriptor:
        """The index.json entry named ``name`` (ref.name annotation), or the only entry."""
        try:
            entries = json.loads((self.root / "index.json").read_bytes()).get("manifests") or []
        except (OSError, ValueError, AttributeError) as e:
            raise NotFoundError(f"{self.root}: unreadable index.json ({e})") from None
        descriptors = [parse_descriptor(e, f"{self.root}/index.json manifests[{i}]") for i, e in enumerate(entries)]
        if name is not None:
            named = [d for d in descriptors if d.annotations.get(REF_NAME) == name]
            if not named:
                raise NotFoundError(f"{self.root}: no image named {name!r} in index.json")
            return named[0]
        if len(descriptors) != 1:
            raise NotFoundError(f"{self.root}: index.json names {len(descriptors)} images; say which (ref name)")
        return descriptors[0]


@dataclass
class PushResult:
    reference: Reference                  # destination, with the pushed digest
    digest: str
    blobs: dict[str, str] = field(default_factory=dict)   # digest -> "exists" | "mounted" | "uploaded"
    skipped_platforms: list[str] = field(default_factory=list)


def _push_manifest_tree(source: LayoutSource, client: RegistryClient, dest: Reference, desc: Descriptor,
                        result: PushResult, mount_from: str | None, chunk_size: int | None,
                        progress: Callable[[str], None] | None) -> tuple[Descriptor, bytes]:
    """Push what ``desc`` reaches, then ``desc`` itself by digest; returns the descriptor and bytes actually
    pushed (an index reduced to its local platforms is re-serialised, so its digest changes)."""
    data = source.read(desc)
    document = parse_manifest(data, desc.media_type)
    if isinstance(document, ImageIndex):
        present = [m for m in document.manifests if source.has(m.digest)]
        if not present:
            raise ManifestError(f"index {short(desc.digest)}: none of its manifests is present locally")
        pushed = [_push_manifest_tree(source, client, dest, m, result, mount_from, chunk_size, progress)
                  for m in present]
        if len(present) != len(document.manifests):
            result.skipped_platforms += [str(m.platform) for m in document.manifests if not source.has(m.digest)]
            if len(pushed) == 1:  # one platform left: push its manifest, not an index of one
                return pushed[0]
            index = json.loads(data)
            index["manifests"] = [m.to_json() for m, _ in pushed]
            data = json.dumps(index, separators=(",", ":")).encode()
    else:
        assert isinstance(document, ImageManifest)
        for blob in (document.config, *document.layers):
            outcome = client.push_blob(dest, blob, lambda d=blob.digest: source.open(d), mount_from=mount_from,
                                       chunk_size=chunk_size)
            result.blobs[blob.digest] = outcome
            if progress:
                progress(f"{short(blob.digest)}: {outcome} ({blob.size} bytes)")
    digest = client.put_manifest(dest, data, document.media_type, target=digest_bytes(data))
    return Descriptor(document.media_type, digest, len(data), desc.platform), data


def push(dest: Reference | str, client: RegistryClient, *, store: ContentStore | None = None,
         image: str | None = None, layout: str | Path | None = None, layout_name: str | None = None,
         chunk_size: int | None = None, progress: Callable[[str], None] | None = None) -> PushResult:
    """Push ``image`` (a name or digest in ``store``) or the image of an OCI ``layout`` directory to ``dest``;
    the destination's tag (if any) is set last, so readers never see a tag whose content is incomplete."""
    reference = parse_reference(dest) if isinstance(dest, str) else dest
    try:
        mount_from: str | None = None
        if layout is not None:
            source = LayoutSource(layout)
            root = source.root_descriptor(layout_name)
            lease: contextlib.AbstractContextManager[None] | None = None
        else:
            if store is None or image is None:
                raise PushError("push needs a store image or a layout directory")
            record = store.lookup(image)
            source = LayoutSource(store.root)
            root = record.target
            lease = store.lease()
            if "@" not in record.name:
                origin = parse_reference(record.name)
                if origin.registry == reference.registry and origin.repository != reference.repository:
                    mount_from = origin.repository
        result = PushResult(reference, "")
        with lease or contextlib.nullcontext():
            pushed, data = _push_manifest_tree(source, client, reference, root, result, mount_from, chunk_size,
                                               progress)
        if reference.tag:
            client.put_manifest(reference, data, pushed.media_type, target=reference.tag)
        if reference.digest and reference.digest != pushed.digest:
            raise PushError(f"pushed {pushed.digest}, but the destination names {reference.digest}")
    except OCIError as e:
        raise PushError(f"push {reference}") from e
    result.digest = pushed.digest
    result.reference = Reference(reference.registry, reference.repository, reference.tag, pushed.digest)
    return result
