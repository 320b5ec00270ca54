"""Errors of the pod-facing host side. Each names what was wrong (the netns, the mount, the device)."""

from __future__ import annotations

from host.errors import HostError


class PodError(HostError):
    """Base for every error raised on purpose by host.pod."""


class PodNetworkError(PodError):
    """The pod network namespace cannot be inspected, connected to a zone NIC or cleaned up."""


class RootfsError(PodError):
    """containerd's rootfs mounts cannot be turned into a zone disk image."""
