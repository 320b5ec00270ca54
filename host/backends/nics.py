"""The extra network cards a backend boots a zone with: tap devices the caller made (a pod's network,
``host.pod.network.ZoneNic``), whose queue fd the VMM inherits."""

from __future__ import annotations

from typing import Protocol


class TapNic(Protocol):
    fd: int | None          # the tap's queue; the VMM inherits it, the caller closes its copy after boot

    def qemu_args(self, netdev_id: str = "pod0", fd_number: int | None = None) -> list[str]:
        """``-netdev tap,fd=N`` + ``-device virtio-net-pci,...`` for this NIC."""
        ...
