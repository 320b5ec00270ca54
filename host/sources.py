"""Where a zone's images come from: a local path, or a reference pulled into the content store.

``zonehost run`` takes the kernel (``--kernel``), each system extension (``--extension``) and the app image the
same way:

* a path that exists: an OCI layout directory (or, for the app, an OCI or docker-archive tar), read and verified
  by zonebuild; its digest is its manifest's (a docker-archive's: its config's);
* ``busybox`` (the app only): the built-in image zonebuild makes from Debian's busybox-static;
* anything else is an image reference (``127.0.0.1:5000/app:1.0``, ``...@sha256:...``): pulled into the host's
  content store (zoneoci) as the pull policy says (``missing``: only if the store has no image by that name, as
  ``docker run`` does; ``always``; ``never``) and read from the store's one-image layout view, verified again.

The result names what to pin: the digest the reference resolved to (an index's or a manifest's, as
``docker pull`` prints it), and the platform manifest chosen from it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host import output
from host.errors import HostError
from host.hostconfig import HostConfig

if TYPE_CHECKING:
    from zoneoci.client import RegistryClient
    from zoneoci.store import ContentStore

BUILTIN_APP = ("busybox", "default")


@dataclass(frozen=True)
class ImageSource:
    """One image a zone is composed from, resolved to something zonebuild can open."""

    given: str              # as the user (or the host config) wrote it
    layout: Path            # an OCI layout directory or an image tar
    digest: str             # what pins it: the index or manifest digest (local: the manifest's, or config's)
    ref: str | None = None  # the reference with the digest it resolved to (None: a local path)
    manifest: str | None = None   # the platform manifest, when the reference names an index

    def component(self, kind: str, name: str | None = None) -> dict[str, Any]:
        """Its entry in the zone config's ``components``."""
        entry: dict[str, Any] = {"kind": kind, "digest": self.digest, "ref": self.ref or str(self.given)}
        if self.manifest and self.manifest != self.digest:
            entry["manifest"] = self.manifest
        if name:
            entry["name"] = name
        return entry

    @property
    def label(self) -> str:
        return self.ref or str(self.layout)


class ImageResolver:
    """Turns image arguments into ``ImageSource``; the store and the registry client are made on first use."""

    def __init__(self, *, policy: str = "missing", store: str | None = None, authfile: str | None = None,
                 cert_dir: str | None = None, registries_conf: str | None = None) -> None:
        self.policy = policy
        self.options = argparse.Namespace(store=store, authfile=authfile, cert_dir=cert_dir,
                                          registries_conf=registries_conf)
        self._store: ContentStore | None = None
        self._client: RegistryClient | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, config: HostConfig) -> ImageResolver:
        """Command line options over the host config's ``[registry]`` and ``images.pull``."""
        def pick(name: str) -> Any:
            value = getattr(args, name, None)
            return value if value is not None else getattr(config, name)
        return cls(policy=pick("pull"), store=pick("store"), authfile=pick("authfile"), cert_dir=pick("cert_dir"),
                   registries_conf=pick("registries_conf"))

    @property
    def store(self) -> ContentStore:
        if self._store is None:
            from zoneoci.commands import store_from_args

            self._store = store_from_args(self.options)
        return self._store

    def client(self) -> RegistryClient:
        if self._client is None:
            from zoneoci.commands import client_from_args

            self._client = client_from_args(self.options)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def resolve(self, given: str, what: str, *, builtin: Callable[[], Path] | None = None) -> ImageSource:
        """``given`` as a path, the built-in image (``builtin()``, for ``busybox``), or a reference to pull."""
        if builtin is not None and given in BUILTIN_APP:
            return local_source(given, builtin())
        path = Path(given)
        if path.exists():
            return local_source(given, path.resolve())
        from zoneoci.errors import OCIError
        from zoneoci.pull import local_image
        from zoneoci.reference import parse_reference

        try:
            reference = parse_reference(given)
        except OCIError as e:
            raise HostError(f"{what} {given!r}: no such file or directory, and not an image reference ({e})") from None
        try:
            client = None if self.policy == "never" else self.client()
            record, layout = local_image(str(reference), self.store, client, policy=self.policy,
                                         progress=lambda line: output.note(f"pull {reference}: {line}"))
        except OCIError as e:
            raise HostError(f"{what} {given}: {e}") from None
        pinned = str(reference) if reference.digest else f"{record.name}@{record.target.digest}"
        return ImageSource(given, Path(layout), record.target.digest, pinned, record.manifest)


def check_image_argument(given: str, what: str) -> None:
    """Fail fast (before anything is built or pulled) on an argument that is neither a path that exists nor an
    image reference."""
    if given in BUILTIN_APP or Path(given).exists():
        return
    if given.startswith(("/", "./", "../", "~")):
        raise HostError(f"{what} {given!r}: no such file or directory")
    from zoneoci.errors import OCIError
    from zoneoci.reference import parse_reference

    try:
        parse_reference(given)
    except OCIError as e:
        raise HostError(f"{what} {given!r}: no such file or directory, and not an image reference ({e})") from None


def local_source(given: str, path: Path) -> ImageSource:
    """A local OCI layout or image tar, opened (verified) once to learn its digest."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.oci import ImageError, open_image

    try:
        image = open_image(path)
    except ImageError as e:
        raise HostError(f"image {given}") from e
    return ImageSource(given, path, image.manifest_digest or image.config_digest)
