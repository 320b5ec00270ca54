"""Pull an image by reference into the content store: the path ``zonehost pull`` and ``zonehost run REF`` take.

1. resolve the reference once (by digest if pinned): a HEAD for a name the store already has, else a GET of the
   manifest itself; everything after is fetched by digest, so a tag that moves during the pull cannot mix two
   images;
2. the manifest (or index, then the manifest for our platform) comes from the store when present, else the
   registry, verified;
3. the config and layers the store lacks are fetched in parallel, each verified while streaming and renamed
   into place only when complete; blobs another pull is fetching are left to it (and waited for at the end);
4. only then is the reference written (atomically), under a store lease that keeps garbage collection out.

A second pull of the same image transfers no blob or manifest bytes (one HEAD request).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from zoneoci import mediatypes
from zoneoci.client import FetchedManifest, RegistryClient
from zoneoci.digest import short
from zoneoci.errors import ManifestError, NotFoundError, OCIError, StoreError
from zoneoci.manifest import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Platform,
    host_platform,
    parse_manifest,
)
from zoneoci.reference import Reference, parse_reference
from zoneoci.store import BlobBusy, ContentStore, ImageRecord


class PullError(OCIError):
    """A pull failed; the cause says why. Nothing it wrote is referenced."""


@dataclass(frozen=True)
class PulledImage:
    reference: Reference      # as asked, with the digest it resolved to
    record: ImageRecord
    manifest: ImageManifest   # the image manifest for the platform

    @property
    def digest(self) -> str:
        """The digest the reference resolved to (an index or a manifest): what to pin."""
        return self.record.target.digest


Progress = Callable[[str], None]
Job = tuple[str, Descriptor]   # a blob to fetch and what to call it in messages


def _manifest_bytes(store: ContentStore, client: RegistryClient, ref: Reference, desc: Descriptor,
                    fetched: FetchedManifest | None) -> bytes:
    if desc.size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {short(desc.digest)} of {desc.size} bytes exceeds the "
                            f"{MAX_MANIFEST_BYTES}-byte limit")
    if store.has(desc.digest):
        return store.read_blob(desc.digest)
    if fetched is None or fetched.descriptor.digest != desc.digest:
        fetched = client.get_manifest(ref, desc.digest)
    if fetched.descriptor.size != desc.size:
        raise ManifestError(f"manifest {short(desc.digest)}: {fetched.descriptor.size} bytes, its descriptor says "
                            f"{desc.size}")
    store.put_bytes(fetched.data, desc.digest)
    return fetched.data


def _check_media_types(image: ImageManifest) -> None:
    if image.config.media_type not in mediatypes.CONFIG_TYPES:
        raise ManifestError(f"not a container image: config media type {image.config.media_type!r}")
    if image.config.size > MAX_CONFIG_BYTES:
        raise ManifestError(f"image config of {image.config.size} bytes exceeds {MAX_CONFIG_BYTES}")
    for i, layer in enumerate(image.layers):
        if layer.media_type not in mediatypes.LAYER_TYPES:
            raise ManifestError(f"layer {i} ({short(layer.digest)}): unsupported media type {layer.media_type!r}")


def _check_config(image: ImageManifest, want: Platform, config: bytes) -> None:
    try:
        document = json.loads(config)
    except ValueError as e:
        raise ManifestError(f"image config {short(image.config.digest)} is not JSON ({e})") from None
    if not isinstance(document, dict):
        raise ManifestError(f"image config {short(image.config.digest)} is not a JSON object")
    arch, os_name = document.get("architecture"), document.get("os")
    if (os_name, arch) != (want.os, want.architecture) and arch is not None:
        raise ManifestError(f"image is {os_name}/{arch}, not {want}")


def _fetch_blobs(store: ContentStore, client: RegistryClient, ref: Reference, wanted: list[tuple[str, Descriptor]],
                 progress: Progress | None) -> None:
    """Fetch the missing blobs, ``client.parallel`` at a time; a blob another pull is fetching is skipped in
    the first round and waited for in the second, so concurrent pulls split the work instead of queueing."""

    def fetch(label: str, desc: Descriptor, wait_for_lock: bool) -> bool:
        def write(f: object) -> None:
            client.fetch_blob(ref, desc, f, label)  # type: ignore[arg-type]
        try:
            wrote = store.ingest(desc.digest, write, wait=wait_for_lock)
        except BlobBusy:
            return False
        except OCIError as e:
            raise PullError(f"{label} {short(desc.digest)}") from e
        if wrote and progress:
            progress(f"{label} {short(desc.digest)}: {desc.size} bytes")
        return True

    missing = [(label, d) for label, d in wanted if not store.has(d.digest)]
    for round_waits in (False, True):
        if not missing:
            return
        missing = _in_parallel(missing, lambda job, waits=round_waits: fetch(*job, waits), client.parallel)



def _in_parallel(jobs: list[Job], work: Callable[[Job], bool], parallel: int) -> list[Job]:
    """``work(job)`` for every job on up to ``parallel`` threads; returns the jobs for which it returned False.
    The first exception stops jobs from starting; those running finish (their files are cleaned up), then it is
    raised. Plain threads: concurrent.futures (and the logging it imports) is more than this needs."""
    lock = threading.Lock()
    pending = iter(jobs)
    declined: list[Job] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                job = None if errors else next(pending, None)
            if job is None:
                return
            try:
                done = work(job)
            except BaseException as e:  # handed to the calling thread, which raises it
                with lock:
                    errors.append(e)
                return
            if not done:
                with lock:
                    declined.append(job)

    threads = [threading.Thread(target=worker, name=f"pull-{i}") for i in range(min(parallel, len(jobs)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return declined


def pull(ref: Reference | str, store: ContentStore, client: RegistryClient, *,
         platform: Platform | None = None, progress: Progress | None = None) -> PulledImage:
    """Pull ``ref`` for ``platform`` (default: this host's) into ``store`` and name it there."""
    reference = parse_reference(ref) if isinstance(ref, str) else ref
    want = platform or host_platform()
    # pinned: named by digest (a tag next to a digest is ignored, as docker does)
    name = f"{reference.name}@{reference.digest}" if reference.digest else str(reference)
    try:
        with store.lease():
            if reference.digest and store.has(reference.digest):  # pinned and present: no registry round trip
                data = store.read_blob(reference.digest)
                document = parse_manifest(data)
                top = Descriptor(document.media_type, reference.digest, len(data))
            # a name the store has is asked with a HEAD (unchanged: nothing downloaded); a new name or a digest the
            # store lacks is fetched at once (one round trip, not a HEAD and then a GET); a GET also follows a HEAD
            # that did not say the digest
            elif isinstance(resolved := client.resolve(reference, fetch=bool(reference.digest)
                                                       or not store.has_name(name)), FetchedManifest):
                document = parse_manifest(resolved.data, resolved.descriptor.media_type)
                top = Descriptor(document.media_type, resolved.descriptor.digest, resolved.descriptor.size)
                store.put_bytes(resolved.data, top.digest)
            else:
                top = resolved
                document = _parse(_manifest_bytes(store, client, reference, top, None), top)
            manifest_desc = top
            if isinstance(document, ImageIndex):
                manifest_desc = document.select(want)
                document = _parse(_manifest_bytes(store, client, reference, manifest_desc, None), manifest_desc)
                if not isinstance(document, ImageManifest):
                    raise ManifestError(f"index entry {short(manifest_desc.digest)} for {want} is itself an index")
            image = document
            _check_media_types(image)  # before any download
            wanted = [("config", image.config)] + [(f"layer {i}", layer) for i, layer in enumerate(image.layers)]
            _fetch_blobs(store, client, reference, wanted, progress)
            _check_config(image, want, store.read_blob(image.config.digest, MAX_CONFIG_BYTES))
            record = store.set_ref(name, top, manifest_desc.digest, str(want))
    except OCIError as e:
        raise PullError(f"pull {reference}") from e
    return PulledImage(reference.with_digest(top.digest) if not reference.digest else reference, record, image)


def _parse(data: bytes, desc: Descriptor) -> ImageManifest | ImageIndex:
    document = parse_manifest(data, desc.media_type)
    if document.media_type != desc.media_type:
        raise ManifestError(f"manifest {short(desc.digest)} says {document.media_type}, its descriptor "
                            f"{desc.media_type}")
    return document


def local_image(ref: str, store: ContentStore, client: RegistryClient | None = None, *,
                policy: Literal["missing", "always", "never"] = "missing",
                platform: Platform | None = None, progress: Progress | None = None) -> tuple[ImageRecord, str]:
    """The image for ``zonehost run REF``: ``(record, layout directory)``, pulling first as ``policy`` says
    (``missing``: only if the store has no image by that name, as ``docker run`` does). The layout directory is
    a one-image OCI layout that zonebuild's reader (root images, the kernel image) opens and verifies."""
    record: ImageRecord | None = None
    if policy != "always":
        try:
            record = store.lookup(ref)
        except NotFoundError:
            if policy == "never":
                raise
    if record is None:
        if client is None:
            raise StoreError(f"image {ref!r} is not in the content store and no registry client was given")
        record = pull(ref, store, client, platform=platform, progress=progress).record
    return record, str(store.image_layout(record.manifest))
