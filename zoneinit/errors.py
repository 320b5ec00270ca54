"""zoneinit's typed errors (all are ``StyroliteError`` so ``describe()`` flattens their chains)."""

from __future__ import annotations

from styrolite.errors import StyroliteError


class ZoneInitError(StyroliteError):
    """A boot or supervision step failed; the cause chain says why."""


class ModuleError(ZoneInitError):
    """A kernel module could not be found, ordered or loaded."""


class DigestMismatch(ZoneInitError):
    """A disk's content does not match the sha256 the config pinned: it is never mounted."""


class ConfigDiskError(ZoneInitError):
    """The zone config disk is missing or unreadable."""


class ZoneConfigError(ZoneInitError):
    """The zone config (the config disk, or a container definition sent over IDM) is invalid; ``path`` is the
    JSON path of the bad field (``$.containers[0].limits.memory``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
