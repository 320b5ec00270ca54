"""A reproducible newc ("070701") cpio writer, the format the Linux kernel unpacks into its initramfs.

Why our own writer instead of ``find | cpio -o``: GNU cpio copies inode numbers, mtimes and owners from the
build machine, so two builds of the same tree differ byte for byte. Here every entry is sorted by path, owned
by 0:0, stamped with one fixed mtime and numbered in order, so the same inputs always give the same bytes.

Hard links follow GNU cpio's convention (every name of the inode carries the same ino and nlink; only the
last one carries the data), which both the kernel's unpacker and ``cpio -i`` accept.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
DEFAULT_MTIME = 0
COMPRESSIONS = ("zstd", "gzip", "none")


class CpioError(BuildError, ValueError):
    """An entry cannot be added (bad path, conflicting entry, dangling hard link)."""


@dataclass
class _Entry:
    path: str
    mode: int
    data: bytes | None = None
    source: Path | None = None
    rdev_major: int = 0
    rdev_minor: int = 0
    link_to: str | None = None  # hard link: the path of the entry that owns the inode
    links: list[str] = field(default_factory=list)

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is not None:
            return self.source.read_bytes()
        return b""


def _normalize(path: str) -> str:
    """'/bin//sh' -> 'bin/sh'; refuses '..' so an archive can never name something outside its root."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CpioError(f"{path!r}: '..' is not allowed in an archive path")
    if not parts:
        raise CpioError(f"{path!r}: empty path")
    return "/".join(parts)


class CpioArchive:
    """Collects entries, then serializes them deterministically with :meth:`to_bytes` / :meth:`write`.

    Parent directories are created implicitly (mode 0755). Adding the same path twice replaces the earlier
    entry, so a tree can be overlaid by later additions.
    """

    def __init__(self, mtime: int = DEFAULT_MTIME) -> None:
        self.mtime = mtime
        self._entries: dict[str, _Entry] = {}

    # --- adding entries -------------------------------------------------------------------------------------

    def _put(self, entry: _Entry) -> None:
        parent = entry.path.rpartition("/")[0]
        if parent:
            existing = self._entries.get(parent)
            if existing is None:
                self.add_dir(parent)
            elif not stat.S_ISDIR(existing.mode):
                raise CpioError(f"{entry.path!r}: parent {parent!r} is not a directory")
        self._entries[entry.path] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        path = _normalize(path)
        existing = self._entries.get(path)
        if existing is not None and stat.S_ISDIR(existing.mode):
            existing.mode = stat.S_IFDIR | (mode & 0o7777)
            return
        self._put(_Entry(path, stat.S_IFDIR | (mode & 0o7777)))

    def add_file(self, path: str, data: bytes | None = None, *, source: str | Path | None = None,
                 mode: int = 0o644) -> None:
        """A regular file from ``data`` or (read lazily at write time) from ``source``."""
        if (data is None) == (source is None):
            raise CpioError(f"{path!r}: give exactly one of data or source")
        self._put(_Entry(_normalize(path), stat.S_IFREG | (mode & 0o7777), data=data,
                         source=Path(source) if source is not None else None))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(_Entry(_normalize(path), stat.S_IFLNK | 0o777, data=target.encode()))

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        """``kind`` is 'c' (character) or 'b' (block)."""
        type_bits = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}.get(kind)
        if type_bits is None:
            raise CpioError(f"{path!r}: device kind must be 'c' or 'b', not {kind!r}")
        self._put(_Entry(_normalize(path), type_bits | (mode & 0o7777), rdev_major=major, rdev_minor=minor))

    def add_hardlink(self, path: str, existing: str) -> None:
        """Another name for the regular file already added at ``existing``."""
        target = _normalize(existing)
        owner = self._entries.get(target)
        if owner is None or not stat.S_ISREG(owner.mode):
            raise CpioError(f"{path!r}: hard link target {existing!r} is not a regular file in the archive")
        while owner.link_to is not None:
            owner = self._entries[owner.link_to]
        self._put(_Entry(_normalize(path), owner.mode, link_to=owner.path))

    def add_tree(self, root: str | Path, prefix: str = "") -> None:
        """Add everything under ``root`` (modes, symlinks, devices, hard links kept; owners and times not)."""
        root = Path(root)
        seen_inodes: dict[tuple[int, int], str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(prefix, rel_dir, name))
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    self.add_dir(rel, st.st_mode)
                elif stat.S_ISLNK(st.st_mode):
                    self.add_symlink(rel, os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in seen_inodes:
                        self.add_hardlink(rel, seen_inodes[key])
                    else:
                        seen_inodes[key] = _normalize(rel)
                        self.add_file(rel, source=full, mode=st.st_mode)
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                    self.add_device(rel, kind, os.major(st.st_rdev), os.minor(st.st_rdev), st.st_mode)
                # sockets and fifos are not boot material: skipped on purpose

    def paths(self) -> list[str]:
        return sorted(self._entries)

    # --- serializing ----------------------------------------------------------------------------------------

    def _header(self, ino: int, mode: int, nlink: int, size: int, rmaj: int, rmin: int, name: bytes) -> bytes:
        fields = (ino, mode, 0, 0, nlink, self.mtime, size, 0, 0, rmaj, rmin, len(name) + 1, 0)
        header = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields) + name + b"\0"
        return header + b"\0" * (-len(header) % 4)

    def _records(self) -> Iterable[bytes]:
        # Resolve hard-link groups: owner path -> every name (sorted); the data goes with the last name.
        groups: dict[str, list[str]] = {}
        for path, entry in self._entries.items():
            if entry.link_to is not None:
                owner = self._entries.get(entry.link_to)
                if owner is None or owner.link_to is not None or not stat.S_ISREG(owner.mode):
                    raise CpioError(f"{path!r}: hard link target {entry.link_to!r} is gone")
                groups.setdefault(entry.link_to, [entry.link_to]).append(path)
        ino_of_owner: dict[str, int] = {}
        ino = 0
        for path in sorted(self._entries):
            entry = self._entries[path]
            owner = entry.link_to or path
            names = sorted(groups.get(owner, [owner]))
            if owner not in ino_of_owner:
                ino += 1
                ino_of_owner[owner] = ino
            owner_entry = self._entries[owner]
            data = b""
            if stat.S_ISREG(entry.mode):
                if path == names[-1]:
                    data = owner_entry.content()
            elif stat.S_ISLNK(entry.mode):
                data = entry.content()
            nlink = len(names) if stat.S_ISREG(entry.mode) else (2 if stat.S_ISDIR(entry.mode) else 1)
            mode = owner_entry.mode if entry.link_to else entry.mode
            yield self._header(ino_of_owner[owner], mode, nlink, len(data), entry.rdev_major, entry.rdev_minor,
                               path.encode())
            if data:
                yield data + b"\0" * (-len(data) % 4)
        yield self._header(0, 0, 1, 0, 0, 0, TRAILER.encode())

    def to_bytes(self) -> bytes:
        """The uncompressed archive, padded to a 512-byte block like GNU cpio does."""
        out = b"".join(self._records())
        return out + b"\0" * (-len(out) % 512)

    def write(self, path: str | Path, compression: str = "zstd", level: int = 19) -> Path:
        """Write the archive compressed with 'zstd' (default), 'gzip' or 'none'; returns the path."""
        path = Path(path)
        path.write_bytes(compress(self.to_bytes(), compression, level))
        return path


def compress(raw: bytes, compression: str = "zstd", level: int = 19) -> bytes:
    """Deterministic compression (no timestamps, no file names in the output)."""
    if compression == "none":
        return raw
    if compression == "gzip":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(raw)
        return buf.getvalue()
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            return subprocess.run(["zstd", "-q", f"-{level}", "-c"], input=raw, stdout=subprocess.PIPE,
                                  check=True).stdout
        # One frame with the content size; the kernel's unzstd needs no dictionary and a bounded window.
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    raise CpioError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def concat_for_boot(*archives: bytes) -> bytes:
    """Join initramfs archives into one initrd the kernel accepts.

    The kernel looks for an uncompressed cpio only at 4-byte aligned offsets, and skips zero bytes between
    archives, so each part is padded to a multiple of 4 (512 for good measure).
    """
    out = bytearray()
    for part in archives:
        out += part
        out += b"\0" * (-len(out) % 512)
    return bytes(out)
