"""Errors of the OCI content layer, each one line that names what was wrong.

Every layer that catches an error re-raises it with what it was doing (``raise PullError(...) from e``);
``str(error)`` then reads the whole chain, outermost first, on one line::

    pull 127.0.0.1:5000/app:1.0: layer sha256:3f2a...: digest mismatch: registry sent sha256:9c1e...

The chain is built the same way as ``styrolite.errors`` (a cause whose text is already contained in its
context is not repeated), so the host's ``describe`` prints the same line.
"""

from __future__ import annotations


class OCIError(Exception):
    """Base for every error this package raises on purpose."""

    def __str__(self) -> str:
        text = super().__str__() or type(self).__name__
        cause = self.__cause__
        if cause is not None:
            inner = str(cause) or type(cause).__name__
            if inner.startswith(text):  # the cause already names our context
                text = inner
            elif inner not in text:
                text = f"{text}: {inner}"
        return text


class ReferenceFormatError(OCIError, ValueError):
    """An image reference, digest, tag or repository name is malformed."""


class ManifestError(OCIError):
    """A manifest or index is malformed, too large, of an unsupported media type, or lacks our platform."""


class DigestMismatchError(OCIError):
    """Content does not hash to (or is not the size of) the digest that vouches for it."""


class RegistryError(OCIError):
    """The registry refused a request, answered badly, or could not be reached. ``status`` is the HTTP status
    (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class AuthError(RegistryError):
    """Authentication is required and failed (no credentials, wrong credentials, or access denied)."""


class ConfigFileError(OCIError):
    """registries.conf, auth.json or a certs.d directory cannot be used."""


class StoreError(OCIError):
    """The content store is missing content, is corrupt, or cannot be written."""


class NotFoundError(StoreError):
    """No image with that reference or digest in the content store."""
