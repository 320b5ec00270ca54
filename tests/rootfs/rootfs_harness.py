"""Helpers for tests/rootfs: a busybox bundle, and a forked child that really sets the rootfs up.

``in_container(spec, bundle, check)`` forks; the child unshares a mount namespace (plus ``extra_ns``),
runs ``before()`` (host-side setup inside that namespace), then prepare_rootfs, pivot_into and
finalize_rootfs, then ``check()`` from inside the new root. Modules ``check`` uses must already be
imported: after the pivot the host's Python library is gone. The result (or the flattened error)
comes back as JSON through a pipe.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from styrolite.errors import describe
from styrolite.mountinfo import MountEntry, parse_mountinfo
from styrolite.rootfs import finalize_rootfs, pivot_into, prepare_rootfs
from styrolite.spec.defaults import default_config
from styrolite.spec.model import Spec
from styrolite.spec.parse import parse_config
from styrolite.syscalls import LINUX
from styrolite.syscalls import constants as k

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "mount", "echo", "stat", "touch", "mkdir", "test", "true", "head")

__all__ = ["MountEntry", "errno", "stat"]  # re-exported so checks running after the pivot find them imported


def make_busybox_rootfs(rootfs: str) -> None:
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    for directory in ("proc", "sys", "dev", "etc", "tmp"):
        os.makedirs(os.path.join(rootfs, directory), exist_ok=True)
    with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
        f.write("busybox\n")


def spec_from(config: dict[str, Any]) -> Spec:
    return parse_config(config)


def base_config() -> dict[str, Any]:
    """``styrolite spec``'s default config, without the extras a plain mount-namespace child lacks."""
    config = default_config()
    config["root"]["readonly"] = False
    return config


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None
    error_type: str | None = None

    def ok(self) -> Any:
        assert self.error is None, self.error
        return self.value


def _map_user_namespace(pid: int) -> None:
    """What the lead's parent does for a user namespace: container 0..65535 -> host 0..65535."""
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 65536\n")


def _enter_user_namespace(ready_w: int, mapped_r: int) -> None:
    """unshare(CLONE_NEWUSER), let the parent write the maps, then continue as pid 1 of a new pid
    namespace (proc can only be mounted by a user namespace that owns its pid namespace)."""
    LINUX.unshare(k.CLONE_NEWUSER)
    os.write(ready_w, b"u")
    assert os.read(mapped_r, 1) == b"m"
    LINUX.unshare(k.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status))


def in_container(spec: Spec, bundle: str, check: Callable[[], Any], *, extra_ns: int = 0,
                 before: Callable[[], None] | None = None, console_path: str | None = None,
                 userns: bool = False) -> Outcome:
    read_end, write_end = os.pipe()
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            if userns:
                _enter_user_namespace(ready_w, mapped_r)
            LINUX.unshare(k.CLONE_NEWNS | extra_ns)
            if before is not None:
                before()
            prepared = prepare_rootfs(spec, bundle, LINUX, console_path)
            pivot_into(prepared.rootfs, LINUX)
            finalize_rootfs(spec, LINUX, prepared)
            payload = {"value": check()}
        except BaseException as e:
            payload = {"error": describe(e), "error_type": type(e).__name__}
        try:
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(0)
    os.close(write_end)
    if userns:
        assert os.read(ready_r, 1) == b"u"
        _map_user_namespace(pid)
        os.write(mapped_w, b"m")
    for fd in (ready_r, ready_w, mapped_r, mapped_w):
        os.close(fd)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read():
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return Outcome(**json.loads(b"".join(chunks)))


def mount_table() -> list[MountEntry]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def mounts_at(point: str) -> list[dict[str, Any]]:
    """JSON-able view of the mounts at ``point`` (last = topmost)."""
    return [{"options": sorted(e.options), "optional": e.optional, "fstype": e.fstype, "root": e.root}
            for e in mount_table() if e.mount_point == point]


def write_error(path: str) -> str | None:
    """errno name of writing ``path`` (None when it worked)."""
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as e:
        return errno.errorcode[e.errno]
    return None
