"""Image references: ``[registry[:port]/]repository[:tag][@digest]``, normalised as docker and podman do.

* no registry part (the first component has no ``.`` or ``:`` and is not ``localhost``) means Docker Hub,
  ``docker.io``, and a one-component repository there means ``library/NAME``;
* no tag and no digest means ``:latest``; with a digest the tag is kept for display but the digest wins;
* ``index.docker.io`` is ``docker.io``; the API endpoint of ``docker.io`` is ``registry-1.docker.io``.

The grammar is the distribution project's (``reference/regexp.go``): lowercase path components separated by
``.``, ``_``, ``__`` or dashes; tags ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a name of at most 255 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zoneoci.digest import parse_digest
from zoneoci.errors import ReferenceFormatError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DEFAULT_TAG = "latest"
MAX_NAME = 255

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Reference:
    registry: str            # "docker.io", "127.0.0.1:5000", "[::1]:5000"
    repository: str          # "library/busybox", "team/app"
    tag: str | None = None   # None only when a digest is given without a tag
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What ``/v2/<repository>/manifests/<target>`` names: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, parse_digest(digest))

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, parse_tag(tag), None)

    def familiar(self) -> str:
        """The short form docker prints: ``busybox:latest`` for ``docker.io/library/busybox:latest``."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text.removeprefix(f"{DOCKER_HUB}/").removeprefix("library/")
        return text


def parse_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ReferenceFormatError(f"invalid tag {tag[:140]!r} (want [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return tag


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN.match(first):
            raise ReferenceFormatError(f"invalid registry host {first!r}")
        port = first.rpartition(":")[2] if not first.endswith("]") and ":" in first else None
        if port is not None and not 0 < int(port) < 65536:
            raise ReferenceFormatError(f"invalid port in registry {first!r}")
        domain = DOCKER_HUB if first == "index.docker.io" else first
        return domain, rest
    return DOCKER_HUB, name


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``; ReferenceFormatError names what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise ReferenceFormatError("empty image reference")
    if any(c.isspace() for c in text) or len(text) > 1024:
        raise ReferenceFormatError(f"invalid image reference {text[:140]!r}")
    remainder, at, digest = text.partition("@")
    digest_part = parse_digest(digest, f"image reference {text!r}") if at else None
    # a ':' after the last '/' separates the tag (a ':' before it belongs to host:port)
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag: str | None = None
    if colon > slash:
        remainder, tag = remainder[:colon], parse_tag(remainder[colon + 1:])
    registry, repository = _split_domain(remainder)
    if not repository:
        raise ReferenceFormatError(f"image reference {text!r} has no repository")
    for component in repository.split("/"):
        if not _COMPONENT.match(component):
            hint = " (repository names must be lowercase)" if component.lower() != component else ""
            raise ReferenceFormatError(f"invalid repository component {component[:140]!r} in {text[:140]!r}{hint}")
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if len(f"{registry}/{repository}") > MAX_NAME:
        raise ReferenceFormatError(f"image name longer than {MAX_NAME} characters: {text[:140]!r}...")
    if tag is None and digest_part is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest_part)


def endpoint_host(registry: str) -> str:
    """The host[:port] the API lives on (Docker Hub's API is not on docker.io itself)."""
    return DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry
