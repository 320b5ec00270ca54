"""Everything PID 1 mounts: the early file systems, read-only images, overlays, and the table that
unmounts them in reverse order at shutdown."""

from zoneinit.mounts.early import EARLY_MOUNTS, early_mounts, enable_cgroup_controllers
from zoneinit.mounts.images import detect_fstype, mount_image, mount_overlay
from zoneinit.mounts.table import MountRecord, MountTable

__all__ = [
    "EARLY_MOUNTS",
    "MountRecord",
    "MountTable",
    "detect_fstype",
    "early_mounts",
    "enable_cgroup_controllers",
    "mount_image",
    "mount_overlay",
]
