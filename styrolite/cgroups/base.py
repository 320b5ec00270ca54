"""The one interface both cgroup drivers (v1 and v2) implement, and the error they raise.

The runtime only ever talks to a ``CgroupManager``; which hierarchy sits underneath is decided once, by
``open_cgroup`` from the host's mounts. ``stats()`` returns the same keys on both drivers so ``styrolite
events --stats``-style callers and the zone agent never branch on the cgroup version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from styrolite.errors import StyroliteError
from styrolite.syscalls.constants import SIGKILL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from styrolite.spec.model import Device, Resources


class CgroupError(StyroliteError):
    """A cgroup operation failed; the message names the cgroup file or the offending resource."""


def empty_stats() -> dict[str, dict[str, Any]]:
    """The shape of ``stats()``: every key present, ``None`` where the host cannot tell (or unlimited)."""
    return {
        "memory": {"usage": None, "limit": None, "max_usage": None, "oom_kills": None},
        "cpu": {"usage_usec": None, "user_usec": None, "system_usec": None,
                "nr_periods": None, "nr_throttled": None, "throttled_usec": None},
        "pids": {"current": None, "limit": None},
        "io": {"read_bytes": None, "write_bytes": None, "read_ops": None, "write_ops": None},
    }


class CgroupManager(ABC):
    """One container's cgroup (on v1: its directory in every hierarchy)."""

    version: int
    path: str
    """The cgroup path inside the hierarchy (``/styrolite/web``), for display and ``state``."""

    @abstractmethod
    def create(self) -> None:
        """Make the cgroup directories (idempotent)."""

    @abstractmethod
    def add_process(self, pid: int) -> None:
        """Move ``pid`` (all its threads) into the cgroup."""

    @abstractmethod
    def join_files(self) -> list[str]:
        """The files a process writes "0" to, in order, to move itself into the cgroup (the container's
        first process does: see container.children.join_cgroup)."""

    @abstractmethod
    def apply(self, resources: Resources | None, devices: Sequence[Device] = ()) -> None:
        """Set every limit of ``resources``, including the device policy, at container creation.

        ``devices`` are the spec's ``linux.devices`` nodes: they are allowed (rwm) in the device policy.
        """

    @abstractmethod
    def update(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        """Change the limits ``resources`` names, leave the rest (``styrolite update``).

        The device policy is rebuilt only when ``resources.devices`` is non-empty (pass ``devices`` again then).
        """

    @abstractmethod
    def stats(self) -> dict[str, dict[str, Any]]:
        """Usage counters with the keys of ``empty_stats()``."""

    @abstractmethod
    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""

    @abstractmethod
    def freeze(self) -> None:
        """Stop every process and return once the kernel reports the cgroup frozen."""

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def state(self) -> str:
        """``"frozen"`` or ``"thawed"``."""

    @abstractmethod
    def kill_all(self, signal: int = SIGKILL) -> None:
        """Send ``signal`` to every process in the cgroup."""

    @abstractmethod
    def destroy(self, kill: bool = False) -> None:
        """Remove the cgroup (children first); with ``kill``, SIGKILL what is still inside first."""

    def exists(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} v{self.version} {self.path}>"
