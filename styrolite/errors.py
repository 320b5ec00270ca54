"""Errors that carry context up one chain (the crun way).

Every layer that catches an error re-raises it with what it was doing::

    try:
        mount_all(...)
    except OSError as e:
        raise ContainerError(f"create container {cid!r}") from e

``describe(error)`` flattens the chain into the single line the CLI prints:
``create container 'web': mount proc on /rootfs/proc: mount(...): EPERM (Operation not permitted)``.
"""

from __future__ import annotations


class StyroliteError(Exception):
    """Base for every error Styrolite raises on purpose."""


class ConfigError(StyroliteError):
    """config.json (or another input document) is invalid; ``path`` is the JSON path of the bad field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ContainerError(StyroliteError):
    """A lifecycle operation failed; the cause chain says why."""


class NotFoundError(StyroliteError):
    """No container with that id."""


class StateError(StyroliteError):
    """The operation is not allowed in the container's current status."""


class suppress:
    """``contextlib.suppress``: importing contextlib brings collections and functools, milliseconds of every
    ``styrolite create``, for the one-liners that ignore an expected error."""

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self.exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: object) -> bool:
        return kind is not None and issubclass(kind, self.exceptions)


def describe(error: BaseException) -> str:
    """One line: each context in the chain, outermost first, then the root cause."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current) or type(current).__name__
        if not parts or text not in parts[-1]:
            parts.append(text)
        current = current.__cause__
    return ": ".join(parts)
