"""Copy a directory tree between two directory descriptors, keeping what a container image cares about.

Used for the ``tmpcopyup`` mount option: the image's directory (reached through a descriptor opened before
the tmpfs covered it) is copied into the fresh tmpfs. Everything is done relative to the two descriptors
and never follows a symlink, so a link in the image cannot make the copy read or write anything else.
Kept per entry: type (directory, file, symlink, device, fifo, socket), mode including setuid/sticky bits,
owner, and modification times.
"""

from __future__ import annotations

import os
import stat

_CHUNK = 1 << 20


def copy_tree(source_fd: int, target_fd: int) -> None:
    """Copy the contents of the directory ``source_fd`` into the (empty) directory ``target_fd``."""
    for entry in os.scandir(source_fd):
        _copy_entry(entry.name, source_fd, target_fd)


def _copy_entry(name: str, source_fd: int, target_fd: int) -> None:
    st = os.stat(name, dir_fd=source_fd, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(name, 0o700, dir_fd=target_fd)
        child_source = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_fd)
        try:
            child_target = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   dir_fd=target_fd)
            try:
                copy_tree(child_source, child_target)
            finally:
                os.close(child_target)
        finally:
            os.close(child_source)
    elif stat.S_ISREG(st.st_mode):
        _copy_file(name, source_fd, target_fd)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=source_fd), name, dir_fd=target_fd)
    else:  # character or block device, fifo, socket
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=target_fd)
    os.chown(name, st.st_uid, st.st_gid, dir_fd=target_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, mode, dir_fd=target_fd)  # after chown, which clears setuid/setgid
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=target_fd, follow_symlinks=False)


def _copy_file(name: str, source_fd: int, target_fd: int) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_fd)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=target_fd)
        try:
            while True:
                # copy_file_range cannot cross file systems on older kernels; sendfile can
                copied = os.sendfile(dst, src, None, _CHUNK)
                if copied == 0:
                    break
        finally:
            os.close(dst)
    finally:
        os.close(src)
