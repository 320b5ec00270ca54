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
