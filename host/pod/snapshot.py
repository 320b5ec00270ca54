"""containerd's rootfs mounts -> the snapshot's layer chain.

Task Create hands the shim the container's rootfs as a list of mounts, made by the snapshotter. With the
overlayfs snapshotter (containerd's default) that is one of:

* ``overlay`` with ``lowerdir=L1:L2:...`` (topmost layer first), ``upperdir=U``, ``workdir=W``: an active
  snapshot over a chain of committed layers -- what every Kubernetes container gets;
* ``bind`` with ``ro``: a view of one committed snapshot (a single-layer image viewed read-only);
* ``bind`` with ``rw``: an active snapshot without parents (an image with no layers): only ``U``.

Committed layers never change (containerd's contract), which is what lets host.pod.rootfs cache an image per
chain. Other snapshotters (devmapper, native, zfs...) hand out other mounts and are refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.pod.errors import RootfsError

OVERLAY_OPTIONS_IGNORED = ("index", "redirect_dir", "metacopy", "volatile", "xino", "nfs_export", "uuid")


@dataclass(frozen=True)
class Mount:
    """One containerd mount (``containerd.types.Mount``): type, source, target, options."""

    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""

    @classmethod
    def of(cls, value: Mount | Mapping[str, Any] | Any) -> Mount:
        """From a Mount, a dict, or any object with ``type``/``source``/``options`` (a protobuf message)."""
        if isinstance(value, Mount):
            return value
        get = value.get if isinstance(value, Mapping) else lambda key, default=None: getattr(value, key, default)
        kind, source = get("type", None), get("source", None)
        if not isinstance(kind, str) or not kind or not isinstance(source, str):
            raise RootfsError(f"rootfs mount {value!r}: needs a 'type' and a 'source'")
        options = get("options", ()) or ()
        if isinstance(options, str) or not all(isinstance(o, str) for o in options):
            raise RootfsError(f"rootfs mount {kind} {source}: options must be a list of strings")
        return cls(kind, source, tuple(options), get("target", "") or "")


@dataclass(frozen=True)
class SnapshotChain:
    """The read-only layers of a container's rootfs, topmost first (overlayfs' lowerdir order), and the
    writable upper directory containerd made (None for a read-only view)."""

    lowers: tuple[Path, ...]
    upper: Path | None = None
    userxattr: bool = False     # the snapshotter marks whiteouts with user.overlay.* xattrs (rootless)

    def describe(self) -> str:
        return f"{len(self.lowers)} layer(s), top {self.lowers[0]}" if self.lowers else "no layers"


def _directory(path: str, what: str) -> Path:
    if not path or not os.path.isabs(path):
        raise RootfsError(f"rootfs {what} {path!r}: not an absolute path")
    if any(c in path for c in ",:\\\n"):
        raise RootfsError(f"rootfs {what} {path!r}: contains ',', ':', '\\' or a newline")
    resolved = Path(path)
    if not resolved.is_dir():
        raise RootfsError(f"rootfs {what} {path}: no such directory")
    return resolved


def _overlay(mount: Mount) -> SnapshotChain:
    lowers: list[Path] = []
    upper: Path | None = None
    userxattr = False
    for option in mount.options:
        key, _, value = option.partition("=")
        if key == "lowerdir":
            if not value:
                raise RootfsError("rootfs overlay mount: empty lowerdir")
            lowers = [_directory(part, "lowerdir") for part in value.split(":")]
        elif key == "upperdir":
            upper = _directory(value, "upperdir")
        elif key == "workdir":
            _directory(value, "workdir")
        elif key == "userxattr":
            userxattr = True
        elif key in ("ro", "rw") or key in OVERLAY_OPTIONS_IGNORED:
            continue
        else:
            raise RootfsError(f"rootfs overlay mount: option {option!r} is not understood")
    if not lowers:
        raise RootfsError("rootfs overlay mount: no lowerdir= option")
    if len(set(lowers)) != len(lowers):
        raise RootfsError("rootfs overlay mount: a lowerdir is listed twice")
    return SnapshotChain(tuple(lowers), upper, userxattr)


def snapshot_chain(mounts: Sequence[Mount | Mapping[str, Any] | Any]) -> SnapshotChain:
    """The layer chain behind containerd's rootfs mounts; RootfsError names the mount it cannot use."""
    parsed = [Mount.of(m) for m in mounts]
    if not parsed:
        raise RootfsError("no rootfs mounts: containerd prepared the bundle's rootfs itself, which a zone cannot "
                          "use (configure the CRI plugin with snapshotter = \"overlayfs\")")
    if len(parsed) > 1:
        kinds = ", ".join(m.type for m in parsed)
        raise RootfsError(f"{len(parsed)} rootfs mounts ({kinds}): an overlayfs snapshot is one mount")
    mount = parsed[0]
    if mount.type == "overlay":
        return _overlay(mount)
    if mount.type in ("bind", "rbind"):
        source = _directory(mount.source, "bind source")
        if "ro" in mount.options:
            return SnapshotChain((source,), None)
        return SnapshotChain((), source)
    raise RootfsError(f"rootfs mount type {mount.type!r} from {mount.source}: only the overlayfs snapshotter's "
                      "overlay and bind mounts are supported (set snapshotter = \"overlayfs\" for this runtime)")


def layer_identity(layer: Path) -> dict[str, Any]:
    """What names one committed layer: its path and the directory inode behind it. containerd never reuses
    a snapshot directory for other content while it exists; if its state is wiped and an id comes back, the
    new directory is a new inode with a new ctime, so the identity changes with it."""
    st = os.stat(layer)
    return {"path": os.path.realpath(layer), "dev": st.st_dev, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}


def upper_entries(chain: SnapshotChain, limit: int = 3) -> list[str]:
    """Up to ``limit`` names found in the upper directory (empty for a freshly created container)."""
    if chain.upper is None:
        return []
    names = []
    with os.scandir(chain.upper) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) >= limit:
                break
    return names
