"""Apply OCI/docker layer tarballs onto a directory, safely and with whiteout semantics.

Images are hostile input. Every entry name is checked before anything is written: no absolute names, no
``..``, never write through a symlink (a parent component that is a symlink is an error, not something to
follow), hard links only to files already inside the root, and relative symlink targets that climb above the
root are refused. Absolute symlink targets stay legal: inside the zone they resolve against the container's
root, and nothing here ever follows them.

Whiteouts (OCI image spec, "Representing Changes"): ``dir/.wh.NAME`` deletes ``dir/NAME`` from the lower
layers; ``dir/.wh..wh..opq`` hides everything the lower layers had in ``dir``. Neither marker is written.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

from .errors import BuildError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
XATTR_PAX_PREFIX = "SCHILY.xattr."


class LayerError(BuildError):
    """A layer is corrupt, truncated or tries to escape the output directory."""


def clean_member_name(name: str) -> str:
    """The entry's path relative to the root ('./usr//bin/' -> 'usr/bin'); hostile names raise LayerError."""
    if name.startswith("/"):
        raise LayerError(f"entry {name!r}: absolute path in layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"entry {name!r}: '..' in layer path")
    return "/".join(parts)


def check_symlink_target(name: str, target: str) -> None:
    """A relative target must stay inside the root when resolved lexically from the link's directory."""
    if target.startswith("/"):
        return
    depth = len(posixpath.dirname(name).split("/")) if posixpath.dirname(name) else 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise LayerError(f"entry {name!r}: symlink target {target!r} points outside the root")
        elif part not in ("", "."):
            depth += 1


class LayerApplier:
    """Applies layers in order onto ``root``; one instance per root so directory mtimes are kept at the end."""

    def __init__(self, root: str | Path, *, preserve_owner: bool | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.preserve_owner = os.geteuid() == 0 if preserve_owner is None else preserve_owner
        self._dir_mtimes: dict[str, int] = {}
        self._root_mode = 0o755  # unless a layer lists the root ('./') with its own mode

    # --- path safety ----------------------------------------------------------------------------------------

    def _parent_dir(self, rel: str) -> Path:
        """The host path of ``rel``'s parent, created as needed, never passing through a symlink."""
        current = self.root
        parts = rel.split("/")[:-1]
        for i, part in enumerate(parts):
            current = current / part
            try:
                st = current.lstat()
            except FileNotFoundError:
                current.mkdir()
                current.chmod(0o755)  # not the umask's mode: the image must not depend on the builder
                continue
            if stat.S_ISLNK(st.st_mode):
                raise LayerError(f"entry {rel!r}: parent {'/'.join(parts[: i + 1])!r} is a symlink; refusing to "
                                 "write through it")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"entry {rel!r}: parent {'/'.join(parts[: i + 1])!r} is not a directory")
        return current

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()

    # --- applying -------------------------------------------------------------------------------------------

    def apply(self, fileobj: IO[bytes], label: str = "layer") -> None:
        """Apply one uncompressed layer tar read sequentially from ``fileobj``."""
        created: set[str] = set()
        try:
            with tarfile.open(fileobj=fileobj, mode="r|") as tar:
                for member in tar:
                    self._apply_member(tar, member, created)
        except LayerError as e:
            raise LayerError(f"{label}: {e}") from e
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise LayerError(f"{label}: corrupt or truncated layer tarball ({e or type(e).__name__})") from e

    def finish(self, default_mtime: int = 0) -> None:
        """Give every directory a reproducible mtime: the one its tar entry asked for (writing children
        changed it), else ``default_mtime`` (the root and parents no layer listed); and the root its mode."""
        os.chmod(self.root, self._root_mode)
        for dirpath, _, _ in sorted(os.walk(self.root), reverse=True):
            rel = os.path.relpath(dirpath, self.root)
            mtime = self._dir_mtimes.get("" if rel == "." else rel, default_mtime)
            os.utime(dirpath, (mtime, mtime), follow_symlinks=False)

    def _apply_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, created: set[str]) -> None:
        rel = clean_member_name(member.name)
        if not rel:  # the root itself ('./')
            if member.isdir():
                self._dir_mtimes[""] = int(member.mtime)
                self._root_mode = member.mode & 0o7777
            return
        base = posixpath.basename(rel)
        if base == OPAQUE_MARKER:
            self._make_opaque(posixpath.dirname(rel), created)
            return
        if base.startswith(WHITEOUT_PREFIX):
            if base[len(WHITEOUT_PREFIX):] in ("", ".", ".."):  # '.wh..' would remove the root's parent
                raise LayerError(f"entry {member.name!r}: whiteout of {base[len(WHITEOUT_PREFIX):]!r} is not allowed")
            hidden = posixpath.join(posixpath.dirname(rel), base[len(WHITEOUT_PREFIX):])
            self._remove(self._parent_dir(hidden) / posixpath.basename(hidden))
            return
        parent = self._parent_dir(rel)
        target = parent / base
        created.add(rel)
        if member.isdir():
            if not (target.is_dir() and not target.is_symlink()):
                self._remove(target)
                target.mkdir(mode=0o700)
            self._dir_mtimes[rel] = int(member.mtime)
        else:
            self._remove(target)
            if member.isreg():
                self._write_file(tar, member, target)
            elif member.issym():
                check_symlink_target(rel, member.linkname)
                os.symlink(member.linkname, target)
            elif member.islnk():
                self._hardlink(rel, member.linkname, target)
                return  # the link shares the existing inode's metadata
            elif member.ischr() or member.isblk():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            elif member.isfifo():
                os.mkfifo(target, 0o600)
            else:
                raise LayerError(f"entry {rel!r}: unsupported tar entry type {member.type!r}")
        self._set_metadata(member, target)

    def _make_opaque(self, rel_dir: str, created: set[str]) -> None:
        directory = self._parent_dir(rel_dir + "/x") if rel_dir else self.root
        prefix = rel_dir + "/" if rel_dir else ""
        for child in sorted(os.listdir(directory)):
            if prefix + child not in created:
                self._remove(directory / child)

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            if out.tell() != member.size:
                raise LayerError(f"entry {member.name!r}: truncated file data")

    def _hardlink(self, rel: str, linkname: str, target: Path) -> None:
        source_rel = clean_member_name(linkname)
        if not source_rel:
            raise LayerError(f"entry {rel!r}: hard link to the root")
        source = self._parent_dir(source_rel) / posixpath.basename(source_rel)
        try:
            st = source.lstat()
        except FileNotFoundError as e:
            raise LayerError(f"entry {rel!r}: hard link target {linkname!r} does not exist") from e
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            raise LayerError(f"entry {rel!r}: hard link target {linkname!r} is not a file")
        os.link(source, target, follow_symlinks=False)

    def _set_metadata(self, member: tarfile.TarInfo, target: Path) -> None:
        if self.preserve_owner:
            os.chown(target, member.uid, member.gid, follow_symlinks=False)
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PAX_PREFIX):
                raw = value.encode("utf-8", "surrogateescape")
                try:
                    os.setxattr(target, key[len(XATTR_PAX_PREFIX):], raw, follow_symlinks=False)
                except OSError as e:
                    raise LayerError(f"entry {member.name!r}: set xattr {key[len(XATTR_PAX_PREFIX):]!r}") from e
        if not member.issym():
            os.chmod(target, member.mode & 0o7777)  # after chown: chown clears setuid bits
        os.utime(target, (int(member.mtime), int(member.mtime)), follow_symlinks=False)
