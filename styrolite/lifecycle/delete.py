"""``delete``: remove a stopped or created container (``--force``: also a running one, killed first), then
run its poststop hooks. ``--force`` of a container that does not exist succeeds, as with runc and crun:
callers use it to make sure a container is gone."""

from __future__ import annotations

import os

from styrolite.errors import ContainerError, NotFoundError, suppress
from styrolite.lifecycle.common import cgroup_of, load_snapshot, require_status, wait_for_exit
from styrolite.state import StateStore
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

KILL_TIMEOUT = 10.0


def delete(store: StateStore, container_id: str, force: bool = False, sys: Syscalls = LINUX) -> None:
    try:
        state = store.load(container_id)
    except NotFoundError:
        if force:
            return
        raise
    if not force:
        # a created container has not run anything of its own yet: deleting it just ends the waiting init
        require_status(state, ("stopped", "created"), "delete")
    cgroup = cgroup_of(state)
    if state.status != "stopped":
        _kill_and_wait(state.pid, cgroup, sys)
    spec = None
    if state.hooks is None or state.own_mount_namespace is None or "poststop" in state.hooks:
        with suppress(Exception):  # the record does not say enough: the config snapshot does
            spec = load_snapshot(store, state)
    try:
        cgroup.destroy(kill=True)
    except Exception as e:
        raise ContainerError(f"delete container {container_id!r}: remove cgroup {cgroup.path}") from e
    shares_mounts = (state.own_mount_namespace is False if state.own_mount_namespace is not None
                     else spec is not None and spec.namespace("mount") is None)
    if shares_mounts and state.rootfs:
        _detach_mounts_under(state.rootfs, sys)
    state.status = "stopped"
    store.remove(container_id)
    if spec is not None and spec.hooks and spec.hooks.poststop:
        from styrolite.hooks import run_hooks

        run_hooks("poststop", spec.hooks.poststop, state.oci_state(), must_succeed=False)


def _kill_and_wait(pid: int, cgroup, sys: Syscalls) -> None:
    pidfd = None
    with suppress(OSError):
        pidfd = sys.pidfd_open(pid)
    with suppress(Exception):
        if cgroup.state() == "frozen":
            cgroup.thaw()
    with suppress(Exception):
        cgroup.kill_all(k.SIGKILL)
    if pidfd is not None:
        with suppress(OSError):
            sys.pidfd_send_signal(pidfd, k.SIGKILL)
    try:
        if not wait_for_exit(pid, pidfd, KILL_TIMEOUT):
            raise ContainerError(f"container init (pid {pid}) did not die after SIGKILL")
        with suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _detach_mounts_under(rootfs: str, sys: Syscalls) -> None:
    """A container without a mount namespace of its own mounted its entries where the host sees them
    (under its rootfs): detach them, deepest first, so the bundle can be removed."""
    from styrolite.mountinfo import read_mountinfo

    root = os.path.realpath(rootfs)
    points = [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(root.rstrip("/") + "/")]
    for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
        with suppress(OSError):
            sys.umount2(point, k.MNT_DETACH)
