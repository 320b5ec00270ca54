"""Device nodes and the standard /dev links inside the rootfs (runtime-spec config-linux.md "Devices").

Nodes are mknod'ed with the requested mode and owner. Inside a user namespace mknod is impossible, so
(like runc) an empty file is created and the runtime's node of the same path is bind-mounted onto it; a
mknod the kernel refuses with EPERM falls back to the same bind. A node that already exists in the
container's /dev is kept as it is (runc's EEXIST rule: a file the image or a mount put there wins).
``/dev/ptmx`` in linux.devices is never made as a node: it is the link to ``pts/ptmx`` of the container's
own devpts (runc's setupPtmx), which a privileged container's config (every host device, ptmx included)
must not turn into the runtime's own pty multiplexer.
Everything is created under a directory fd resolved inside the root, so a link planted in the image
cannot redirect a node to the host.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from styrolite.errors import ConfigError, ContainerError, StyroliteError
from styrolite.rootfs.resolve import fd_path, make_dirs, make_file
from styrolite.spec.defaults import DEFAULT_DEVICES
from styrolite.spec.model import Device, Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

# name in /dev -> link target, made after the nodes (runc's defaultSymlinks plus /dev/ptmx -> pts/ptmx)
STANDARD_LINKS: tuple[tuple[str, str], ...] = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


def devices_of(spec: Spec) -> list[Device]:
    """The default devices, then config.json's; a config entry replaces a default with the same path."""
    requested = spec.linux.devices if spec.linux else []
    by_path = {posixpath.normpath(d.path): d for d in DEFAULT_DEVICES}
    for device in requested:
        by_path[posixpath.normpath(device.path)] = device
    return list(by_path.values())


def needs_dev_setup(spec: Spec) -> bool:
    """No nodes or links when /dev is a bind of the host's /dev (runc's rule): it already has them."""
    return not any(posixpath.normpath(m.destination) == "/dev" and ("bind" in m.options or "rbind" in m.options
                                                                     or m.type == "bind") for m in spec.mounts)


PTMX = "/dev/ptmx"   # made by create_links as the link to pts/ptmx, never as a node from linux.devices


def _in_dev(path: str) -> str:
    """``path`` as one absolute normal path (normpath keeps a leading ``//``, which would hide ``//dev/ptmx``)."""
    return posixpath.normpath("/" + path.lstrip("/"))


def create_device(root_fd: int, device: Device, sys: Syscalls = LINUX, *, bind: bool = False) -> None:
    try:
        _create_device(root_fd, device, sys, bind=bind)
    except (OSError, ValueError, StyroliteError) as e:
        raise ContainerError(f"create device {device.path!r} ({_describe(device)})") from e


def _describe(device: Device) -> str:
    if device.type == "p":
        return "fifo"
    return f"{device.type} {device.major or 0}:{device.minor or 0}"


def _create_device(root_fd: int, device: Device, sys: Syscalls, *, bind: bool) -> None:
    if device.type not in _TYPES:
        raise ConfigError("linux.devices", f"{device.path}: unknown device type {device.type!r}")
    if bind:
        _bind_device(root_fd, device, sys)
        return
    parent, name = posixpath.split(_in_dev(device.path))
    try:
        parent_fd = make_dirs(root_fd, parent, sys)
    except OSError as e:
        raise ContainerError(f"create its directory {parent!r}") from e
    try:
        node = f"{fd_path(parent_fd)}/{name}"
        mode = _TYPES[device.type] | (0o666 if device.file_mode is None else device.file_mode & 0o7777)
        number = 0 if device.type == "p" else os.makedev(device.major or 0, device.minor or 0)
        old_umask = os.umask(0)
        try:
            sys.mknod(node, mode, number)
        except OSError as e:
            if e.errno == errno.EEXIST:
                return   # already in the container's /dev (the image's, or a mount's): kept, as runc does
            if e.errno != errno.EPERM:
                raise
            # mknod not allowed here (the runtime itself runs in a user namespace): bind, as runc does
        else:
            try:
                os.chown(name, device.uid or 0, device.gid or 0, dir_fd=parent_fd, follow_symlinks=False)
            except OSError as e:
                raise ContainerError(f"chown to {device.uid or 0}:{device.gid or 0}") from e
            return
        finally:
            os.umask(old_umask)
    finally:
        os.close(parent_fd)
    _bind_device(root_fd, device, sys)


def _bind_device(root_fd: int, device: Device, sys: Syscalls) -> None:
    """An empty file in the root with the runtime's node of the same path bind-mounted onto it."""
    try:
        fd = make_file(root_fd, device.path, sys, 0o000)
    except OSError as e:
        raise ContainerError("create the file to bind the node onto") from e
    try:
        sys.mount(device.path, fd_path(fd), None, k.MS_BIND)
    except OSError as e:
        raise ContainerError(f"bind-mount the runtime's {device.path} onto it (no mknod in a user namespace)") from e
    finally:
        os.close(fd)


def create_links(root_fd: int, sys: Syscalls = LINUX) -> None:
    """/dev/fd, /dev/std{in,out,err}, /dev/ptmx -> pts/ptmx, /dev/core (if the kernel has kcore),
    and the /dev/pts and /dev/shm directories their mounts (or programs) expect."""
    links = list(STANDARD_LINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("core", "/proc/kcore"))
    dev_fd = make_dirs(root_fd, "/dev", sys)
    try:
        for name, link_target in links:
            if name == "ptmx":   # whatever the image had there gives way to the devpts link (runc's setupPtmx)
                try:
                    os.unlink(name, dir_fd=dev_fd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise ContainerError(f"remove /dev/ptmx to link it to {link_target} (is it a mount point?)") from e
            try:
                os.symlink(link_target, name, dir_fd=dev_fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise ContainerError(f"symlink /dev/{name} -> {link_target}") from e
    finally:
        os.close(dev_fd)
    for directory in ("/dev/pts", "/dev/shm"):
        os.close(make_dirs(root_fd, directory, sys))


def bind_console(root_fd: int, console_path: str, sys: Syscalls = LINUX) -> None:
    """/dev/console is the container's pty slave, bind-mounted (process.terminal)."""
    try:
        fd = make_file(root_fd, "/dev/console", sys, 0o666)
        try:
            sys.mount(console_path, fd_path(fd), None, k.MS_BIND)
        finally:
            os.close(fd)
    except OSError as e:
        raise ContainerError(f'bind console "{console_path}" on "/dev/console"') from e


def mount_console(console_path: str, sys: Syscalls = LINUX) -> None:
    """bind_console after pivot_root, for a pty opened from the container's own devpts."""
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        bind_console(root_fd, console_path, sys)
    finally:
        os.close(root_fd)


def setup_dev(root_fd: int, spec: Spec, sys: Syscalls = LINUX, *, userns: bool = False,
              console_path: str | None = None) -> None:
    if needs_dev_setup(spec):
        for device in devices_of(spec):
            if _in_dev(device.path) != PTMX:
                create_device(root_fd, device, sys, bind=userns)
        create_links(root_fd, sys)
    if console_path and spec.process is not None and spec.process.terminal:
        bind_console(root_fd, console_path, sys)
