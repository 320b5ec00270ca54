"""``delete``: remove a stopped container (``--force``: kill it first) and run its poststop hooks."""

from __future__ import annotations

import contextlib
import os
import signal

from styrolite.errors import ContainerError
from styrolite.lifecycle.common import cgroup_of, load_snapshot, require_status, wait_for_exit
from styrolite.state import StateStore
from styrolite.syscalls import LINUX, Syscalls

KILL_TIMEOUT = 10.0


def delete(store: StateStore, container_id: str, force: bool = False, sys: Syscalls = LINUX) -> None:
    from styrolite.hooks import run_hooks

    state = store.load(container_id)
    if not force:
        require_status(state, ("stopped",), "delete")
    cgroup = cgroup_of(state)
    if state.status != "stopped":
        _kill_and_wait(state.pid, cgroup, sys)
    spec = None
    with contextlib.suppress(Exception):
        spec = load_snapshot(store, state)
    try:
        cgroup.destroy(kill=True)
    except Exception as e:
        raise ContainerError(f"delete container {container_id!r}: remove cgroup {cgroup.path}") from e
    state.status = "stopped"
    store.remove(container_id)
    if spec is not None and spec.hooks and spec.hooks.poststop:
        run_hooks("poststop", spec.hooks.poststop, state.oci_state(), must_succeed=False)


def _kill_and_wait(pid: int, cgroup, sys: Syscalls) -> None:
    pidfd = None
    with contextlib.suppress(OSError):
        pidfd = sys.pidfd_open(pid)
    with contextlib.suppress(Exception):
        if cgroup.state() == "frozen":
            cgroup.thaw()
    with contextlib.suppress(Exception):
        cgroup.kill_all(signal.SIGKILL)
    if pidfd is not None:
        with contextlib.suppress(OSError):
            sys.pidfd_send_signal(pidfd, signal.SIGKILL)
    try:
        if not wait_for_exit(pid, pidfd, KILL_TIMEOUT):
            raise ContainerError(f"container init (pid {pid}) did not die after SIGKILL")
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        if pidfd is not None:
            os.close(pidfd)
