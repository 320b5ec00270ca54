"""Errors of the host side. They extend the project's chain (``styrolite.errors``) so ``describe`` works."""

from __future__ import annotations

from styrolite.errors import StyroliteError


class HostError(StyroliteError):
    """Base for every error the host side raises on purpose; the CLI prints ``describe(err)`` on one line."""


class ZoneDefError(HostError):
    """A zone definition (user input) is invalid; the message names the bad field."""


class ZoneNotFoundError(HostError):
    """No zone with that name in the state directory."""


class ZoneExistsError(HostError):
    """A zone with that name already exists."""


class BackendError(HostError):
    """Starting, stopping or talking to the hypervisor failed."""


class HotplugError(BackendError):
    """A disk could not be attached to or detached from a running zone."""
