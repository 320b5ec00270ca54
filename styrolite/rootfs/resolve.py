"""Open and create paths *inside* the rootfs, the way the container will see them.

Every path is resolved with openat2(RESOLVE_IN_ROOT) against an fd of the rootfs, so a symlink
(``/x -> /etc``) or ``..`` can never lead outside it (the runc CVE-2021-30465 class), and mounts go onto
``/proc/self/fd/N`` of the opened O_PATH fd so nothing can swap the path between check and mount.
Missing directories (and the empty file a file bind needs) are created one component at a time,
each under an fd that was itself resolved in the root.
"""

from __future__ import annotations

import errno
import os
import posixpath

from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

RESOLVE = k.RESOLVE_IN_ROOT | k.RESOLVE_NO_MAGICLINKS


def fd_path(fd: int) -> str:
    """The magic link the kernel follows to exactly the object ``fd`` refers to."""
    return f"/proc/self/fd/{fd}"


def _relative(path: str) -> str:
    """``/a/./b/`` -> ``a/b``; ``..`` is clamped at the root like the kernel's RESOLVE_IN_ROOT does."""
    normal = posixpath.normpath("/" + path)
    return normal.lstrip("/") or "."


def open_in_root(root_fd: int, path: str, sys: Syscalls = LINUX, flags: int = os.O_PATH) -> int:
    """An fd of ``path`` as seen from the root ``root_fd``; raises KernelError (ENOENT...) as is."""
    return sys.openat2(root_fd, _relative(path), flags | os.O_CLOEXEC, 0, RESOLVE)


MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup


def make_dirs(root_fd: int, path: str, sys: Syscalls = LINUX, mode: int = 0o755, _links: int = 0) -> int:
    """Create each missing directory of ``path`` inside the root; returns an O_PATH fd of the last one.

    A dangling symlink on the way is followed the way the container would see it (its target is
    created inside the root, never outside), as runc's securejoin.MkdirAll does.
    """
    relative = _relative(path)
    try:
        return open_in_root(root_fd, relative, sys, os.O_PATH | os.O_DIRECTORY)
    except OSError as e:
        if e.errno != errno.ENOENT or relative == ".":
            raise
    parent, name = posixpath.split(relative)
    parent_fd = make_dirs(root_fd, parent or ".", sys, mode, _links)
    try:
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            link = _readlink(name, parent_fd)
            if link is not None:  # dangling: create what it points to, in the root's terms
                if _links >= MAX_LINKS:
                    raise OSError(errno.ELOOP, f"too many symlinks creating {path!r}") from None
                base = "/" if link.startswith("/") else _path_in_root(root_fd, parent_fd, parent)
                return make_dirs(root_fd, posixpath.join(base, link), sys, mode, _links + 1)
    finally:
        os.close(parent_fd)
    return open_in_root(root_fd, relative, sys, os.O_PATH | os.O_DIRECTORY)


def _readlink(name: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _path_in_root(root_fd: int, dir_fd: int, lexical: str) -> str:
    """Where ``dir_fd`` really is, relative to the root (the lexical path if /proc cannot tell)."""
    try:
        root, here = os.readlink(fd_path(root_fd)), os.readlink(fd_path(dir_fd))
    except OSError:
        return "/" + lexical
    if here == root or here.startswith(root.rstrip("/") + "/"):
        return "/" + posixpath.relpath(here, root)
    return "/" + lexical


def make_file(root_fd: int, path: str, sys: Syscalls = LINUX, mode: int = 0o644, _links: int = 0) -> int:
    """Create ``path`` as an empty file if missing (for binding a file or device onto); returns an O_PATH fd.

    A dangling symlink at ``path`` is followed the way the container would see it: the file is created at
    its target, inside the root (runc and crun do the same for a bind destination).
    """
    relative = _relative(path)
    try:
        return open_in_root(root_fd, relative, sys)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    parent, name = posixpath.split(relative)
    parent_fd = make_dirs(root_fd, parent or ".", sys)
    try:
        # O_NOFOLLOW|O_EXCL: never create through a symlink with the host's view of its target
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=parent_fd))
    except FileExistsError:
        link = _readlink(name, parent_fd)
        if link is not None:  # dangling: create what it points to, in the root's terms
            if _links >= MAX_LINKS:
                raise OSError(errno.ELOOP, f"too many symlinks creating {path!r}") from None
            base = "/" if link.startswith("/") else _path_in_root(root_fd, parent_fd, parent)
            os.close(parent_fd)
            parent_fd = -1
            return make_file(root_fd, posixpath.join(base, link), sys, mode, _links + 1)
    finally:
        if parent_fd >= 0:
            os.close(parent_fd)
    return open_in_root(root_fd, relative, sys)


class target:
    """``with target(root_fd, path, sys) as where``: ``/proc/self/fd/N`` of ``path`` in the root, for one
    kernel call; re-opened for each call so it always names the topmost mount at that path (a mount made
    through an fd does not change that fd)."""

    def __init__(self, root_fd: int, path: str, sys: Syscalls = LINUX) -> None:
        self.root_fd, self.path, self.sys = root_fd, path, sys
        self.fd = -1

    def __enter__(self) -> str:
        self.fd = open_in_root(self.root_fd, self.path, self.sys)
        return fd_path(self.fd)

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)
