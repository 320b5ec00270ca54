"""A container's rootfs (containerd snapshot layers) -> one read-only, owner-shifted, digest-pinned disk image.

The zone cannot see the host's overlayfs snapshot directories, so the image's layers are delivered as a
block device (virtio-blk under QEMU, ``xl block-attach`` under Xen). Steps, on a cache miss:

1. **merge**: the layers are mounted as a read-only overlay (topmost first, exactly the lowerdir containerd
   gave) in a private mount namespace, and the merged view is copied with ``cp -a`` into a scratch tree.
   The kernel applies whiteouts (0/0 character devices), opaque directories (``trusted.overlay.opaque``, or
   ``user.overlay.*`` with ``userxattr``) and hides the overlay's own xattrs, so the copy is what the
   container would see -- no second implementation of overlay semantics. A single layer is mounted over an
   empty bottom layer (overlayfs wants two lowers without an upper), so its stray whiteouts vanish too.
   ``unshare``/``mount``/``cp`` run as a child process: the shim neither forks itself nor changes mounts;
2. **shift**: every owner moves into the zone's user-namespace range with :mod:`zonebuild.idshift`, as
   for today's root images (file capabilities rewritten as v3, setuid bits restored);
3. **pack**: erofs (default, lz4) or squashfs, reproducibly: fixed UUID, fixed build time, per-file mtimes kept
   (the same layers always give the same bytes);
4. **pin**: sha256 and size go into ``meta.json`` beside the image; the zone verifies the digest before it
   mounts the disk, like a root image.

The cache (``$ZONE_CACHE/host/pod-rootfs/<key>/``) is keyed by the snapshot chain's identity (each layer's
path + directory inode + ctime, in order; see :func:`host.pod.snapshot.layer_identity`), the fs type and
compression, the shift and the recipe version, so a second pod of the same image pays one ``stat`` per layer
and a small JSON read (under a millisecond). Builders of one key serialise on ``<key>.lock`` (flock): the
second waits and then finds the first one's result. Entries appear by ``rename`` of a finished directory,
so a reader never sees half an image.

The upper directory containerd made is not part of the image: the zone gives each container its own
writable layer, and containerd's upperdir stays empty and is removed with the snapshot. A non-empty upperdir
(content someone expects the container to see) is refused rather than silently dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.pod.errors import RootfsError
from host.pod.snapshot import Mount, SnapshotChain, layer_identity, snapshot_chain, upper_entries
from host.zonebuild_import import ensure_zonebuild

FSTYPES = ("erofs", "squashfs")
DEFAULT_FSTYPE = "erofs"
# compression per file system type, the first one the default (host/pod/README.md has the measurements)
COMPRESSIONS = {"erofs": ("lz4", "none", "lz4hc"), "squashfs": ("zstd", "lz4", "none")}
RECIPE = 1                      # bump when the image recipe changes: old cache entries stop matching
FIXED_UUID = "00000000-0000-0000-0000-000000000000"
IMAGE_NAME = "rootfs.img"
META_NAME = "meta.json"
OVERLAY_OPTIONS_MAX = 3800      # mount(2) data is one page; longer lowerdir lists use relative paths


@dataclass(frozen=True)
class RootfsImage:
    """A cached image, ready to attach read-only. ``sha256`` is ``sha256:<hex>`` of the whole file."""

    path: Path
    fstype: str
    compression: str
    sha256: str
    size: int
    owner_shift: int
    key: str
    cached: bool                 # True: found in the cache, nothing was built
    build_seconds: float = 0.0   # of the build that made it (0 for a cache hit)

    def disk_entry(self, name: str, device: str) -> dict[str, Any]:
        """The zone config's ``disks[]`` entry for this image (docs/zone-config.md), without rehashing."""
        entry: dict[str, Any] = {"name": name, "role": "root", "device": device, "sha256": self.sha256,
                                 "size": self.size, "fstype": self.fstype}
        if self.owner_shift:
            entry["owner_shift"] = self.owner_shift
        return entry


def default_cache_dir() -> Path:
    from host.images import cache_root

    return cache_root() / "pod-rootfs"


def default_owner_shift() -> int:
    ensure_zonebuild()
    from zonebuild.idshift import DEFAULT_SHIFT

    return int(DEFAULT_SHIFT)


def cache_key(chain: SnapshotChain, fstype: str, owner_shift: int, compression: str = "") -> str:
    import hashlib

    identity = {"recipe": RECIPE, "fstype": fstype, "compression": compression or COMPRESSIONS[fstype][0],
                "owner_shift": owner_shift, "userxattr": chain.userxattr,
                "layers": [layer_identity(layer) for layer in chain.lowers]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]


# --- the steps ------------------------------------------------------------------------------------------------

def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RootfsError(f"{tool} not found (install {package})")
    return path


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"


def merge_layers(chain: SnapshotChain, dest: Path, scratch: Path) -> None:
    """The merged view of ``chain.lowers`` copied into the empty directory ``dest`` (owners, modes, xattrs,
    hard links, devices, mtimes kept). ``scratch`` holds the mount point and, for one layer, the empty
    bottom layer."""
    lowers = [str(layer) for layer in chain.lowers]
    if not lowers:   # an image without layers: an empty root directory
        os.chmod(dest, 0o755)
        return
    if len(lowers) == 1:
        empty = scratch / "empty-layer"
        empty.mkdir()
        lowers.append(str(empty))
    mountpoint = scratch / "merged"
    mountpoint.mkdir()
    cwd = None
    lowerdir = ":".join(lowers)
    if len(lowerdir) > OVERLAY_OPTIONS_MAX:   # containerd's own trick: paths relative to their common parent
        cwd = os.path.commonpath(lowers)
        lowerdir = ":".join(os.path.relpath(layer, cwd) for layer in lowers)
        if len(lowerdir) > OVERLAY_OPTIONS_MAX:
            raise RootfsError(f"{len(lowers)} layers: the lowerdir option is too long even with relative paths")
    options = f"ro,lowerdir={lowerdir}" + (",userxattr" if chain.userxattr else "")
    script = 'mount -t overlay overlay -o "$1" "$2" && exec cp -a "$2/." "$3"'
    command = [_require("unshare", "util-linux"), "--mount", "--propagation", "private", "sh", "-c", script,
               "merge", options, str(mountpoint), str(dest)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False,
                            env={**os.environ, "LC_ALL": "C"})
    if result.returncode != 0:
        problems = _real_copy_errors(result.stderr, f"{mountpoint}/./", chain)
        if problems or not result.stderr.strip():
            raise RootfsError(f"merge {chain.describe()}: {_last_lines(chr(10).join(problems) or result.stderr)}")


_CANNOT_STAT = re.compile(r"^cp: cannot stat '(.*)': No such file or directory$")


def _is_whiteout(path: str) -> bool:
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    for name in ("trusted.overlay.whiteout", "user.overlay.whiteout"):   # kernel >= 6.7 "xwhiteouts"
        with contextlib.suppress(OSError):
            os.getxattr(path, name, follow_symlinks=False)
            return True
    return False


def _real_copy_errors(stderr: str, prefix: str, chain: SnapshotChain) -> list[str]:
    """cp's complaints that are not whiteouts. overlayfs lists a whiteout that sits in a directory only one
    layer has (it merges nothing there), yet says "no such file" when it is looked up -- correctly, as it is
    deleted; cp reports it and carries on. Any other complaint is real."""
    problems = []
    for line in stderr.splitlines():
        match = _CANNOT_STAT.match(line)
        if match and match.group(1).startswith(prefix):
            relative = match.group(1)[len(prefix):]
            topmost = next((os.path.join(layer, relative) for layer in chain.lowers
                            if os.path.lexists(os.path.join(layer, relative))), None)
            if topmost is not None and _is_whiteout(topmost):
                continue
        if line.strip():
            problems.append(line)
    return problems


def shift_owners(tree: Path, owner_shift: int, chain: SnapshotChain) -> None:
    ensure_zonebuild()
    from styrolite.errors import StyroliteError
    from zonebuild.idshift import shift_ownership

    try:
        shift_ownership(tree, owner_shift)
    except (StyroliteError, OSError) as e:
        raise RootfsError(f"shift the owners of {chain.describe()} by {owner_shift}") from e


def newest_mtime(tree: Path) -> int:
    """The newest mtime (whole seconds) of anything in ``tree``, the root included; 0 for an empty tree."""
    newest = int(os.lstat(tree).st_mtime)
    for directory, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
    return max(newest, 0)


def resolve_compression(fstype: str, compression: str | None) -> str:
    if fstype not in FSTYPES:
        raise RootfsError(f"rootfs image type {fstype!r}: choose {' or '.join(FSTYPES)}")
    choices = COMPRESSIONS[fstype]
    if compression in (None, "", "default"):
        return choices[0]
    if compression not in choices:
        raise RootfsError(f"{fstype} compression {compression!r}: choose {', '.join(choices)}")
    return compression


def make_image(tree: Path, out: Path, fstype: str, compression: str | None = None) -> None:
    """One reproducible read-only image of ``tree`` (``compression``: see COMPRESSIONS; host/pod/README.md
    has the measurements behind the defaults)."""
    compression = resolve_compression(fstype, compression)
    if fstype == "erofs":
        # The build time must be fixed and file mtimes kept (Python's .pyc checks, make, caches read them).
        # erofs-utils 1.5 sets every mtime to -T's time; with SOURCE_DATE_EPOCH it clamps mtimes to it, so the
        # epoch is one second past the newest mtime in the tree: nothing is clamped, the output is a function
        # of the tree alone.
        command = [_require("mkfs.erofs", "erofs-utils"), *([f"-z{compression}"] if compression != "none" else []),
                   "--preserve-mtime", f"-U{FIXED_UUID}", "--quiet", str(out), str(tree)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(newest_mtime(tree) + 1)}
    elif fstype == "squashfs":
        packing = ["-noI", "-noD", "-noF", "-noX"] if compression == "none" else ["-comp", compression]
        command = [_require("mksquashfs", "squashfs-tools"), str(tree), str(out), "-noappend", *packing,
                   "-mkfs-time", "0", "-quiet", "-no-progress"]
        # mksquashfs refuses SOURCE_DATE_EPOCH next to -mkfs-time
        env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RootfsError(f"{Path(command[0]).name} failed: {_last_lines(result.stderr or result.stdout)}")


# --- the cache ------------------------------------------------------------------------------------------------

class _Lock:
    """An exclusive flock on ``path``, waited for up to ``timeout`` seconds."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise RootfsError(f"{self.path}: another builder held the lock for {self.timeout:.0f} s") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)   # releases the flock


def _load(entry: Path, key: str) -> RootfsImage | None:
    try:
        meta = json.loads((entry / META_NAME).read_text())
        image = entry / IMAGE_NAME
        if image.stat().st_size != meta["size"]:
            raise RootfsError(f"rootfs cache entry {entry}: image size {image.stat().st_size} != {meta['size']}")
        os.utime(entry)   # last use, for prune_cache
        return RootfsImage(image, meta["fstype"], meta["compression"], meta["sha256"], meta["size"],
                           meta["owner_shift"], key, cached=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        raise RootfsError(f"rootfs cache entry {entry} is damaged (remove it)") from e


def _build(chain: SnapshotChain, cache: Path, key: str, fstype: str, compression: str,
           owner_shift: int) -> RootfsImage:
    ensure_zonebuild()
    from zonebuild.oci import sha256_file

    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache))
    try:
        tree, out = scratch / "tree", scratch / "out"
        tree.mkdir()
        out.mkdir()
        merge_layers(chain, tree, scratch)
        if owner_shift:
            shift_owners(tree, owner_shift, chain)
        image = out / IMAGE_NAME
        make_image(tree, image, fstype, compression)
        digest, size = sha256_file(image), image.stat().st_size
        seconds = round(time.monotonic() - started, 3)
        meta = {"sha256": digest, "size": size, "fstype": fstype, "compression": compression,
                "owner_shift": owner_shift, "recipe": RECIPE,
                "layers": [str(layer) for layer in chain.lowers], "build_seconds": seconds}
        (out / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.chmod(out, 0o755)
        os.rename(out, cache / key)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RootfsImage(cache / key / IMAGE_NAME, fstype, compression, digest, size, owner_shift, key, cached=False,
                       build_seconds=seconds)


def rootfs_image(mounts: Sequence[Mount | Mapping[str, Any] | Any], *, owner_shift: int | None = None,
                 fstype: str = DEFAULT_FSTYPE, compression: str | None = None, cache_dir: Path | None = None,
                 lock_timeout: float = 900.0) -> RootfsImage:
    """containerd's rootfs mounts -> the cached read-only image of the container's layers.

    ``owner_shift``: the zone's user-namespace offset (default zonebuild.idshift.DEFAULT_SHIFT; 0 keeps the
    owners, for a container without a user namespace)."""
    compression = resolve_compression(fstype, compression)
    shift = default_owner_shift() if owner_shift is None else owner_shift
    if shift:
        ensure_zonebuild()
        from styrolite.errors import StyroliteError
        from zonebuild.idshift import check_shift
        try:
            check_shift(shift)
        except StyroliteError as e:
            raise RootfsError(f"owner shift {shift}") from e
    chain = snapshot_chain(mounts)
    leftovers = upper_entries(chain)
    if leftovers:
        raise RootfsError(f"rootfs upperdir {chain.upper} is not empty ({', '.join(leftovers)}...): the zone "
                          "keeps the container's writes itself and would not show these files")
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(chain, fstype, shift, compression)
    found = _load(cache / key, key)
    if found is not None:
        return found
    with _Lock(cache / f"{key}.lock", lock_timeout):
        found = _load(cache / key, key)   # built by the holder we waited for
        if found is not None:
            return found
        return _build(chain, cache, key, fstype, compression, shift)


def prune_cache(cache_dir: Path | None = None, *, keep_bytes: int) -> list[str]:
    """Remove the least recently used entries until the cache holds at most ``keep_bytes``; returns the
    removed keys. An image still attached to a zone stays readable (QEMU or the loop device holds it open)."""
    cache = cache_dir or default_cache_dir()
    if not cache.is_dir():
        return []
    entries = []
    for entry in cache.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and (entry / META_NAME).exists():
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            entries.append((entry.stat().st_mtime, size, entry))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in sorted(entries, key=lambda row: row[0]):
        if total <= keep_bytes:
            break
        with _Lock(cache / f"{entry.name}.lock", 60):
            shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry.name)
    return removed
