"""Pieces every lifecycle operation needs: the loaded container, its cgroup, its config snapshot."""

from __future__ import annotations

import os

from styrolite.errors import StateError
from styrolite.spec.model import Spec
from styrolite.state import ContainerState, StateStore

CONFIG_SNAPSHOT = "config.json"


def cgroup_of(state: ContainerState):
    from styrolite.cgroups import open_cgroup

    return open_cgroup(state.cgroups_path_config, state.id)


def load_snapshot(store: StateStore, state: ContainerState) -> Spec:
    """The config the container was created with (the bundle may have changed or gone since)."""
    from styrolite.spec import load_config

    return load_config(os.path.join(store.container_dir(state.id), CONFIG_SNAPSHOT))


def require_status(state: ContainerState, allowed: tuple[str, ...], action: str) -> None:
    if state.status not in allowed:
        raise StateError(
            f"cannot {action} container {state.id!r}: it is {state.status} (must be {' or '.join(allowed)})"
        )


def wait_for_exit(pid: int, pidfd: int | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited, whether or not it is our child. True when it did."""
    import select
    import time

    from styrolite.state import process_start_time

    if pidfd is not None:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    deadline = time.monotonic() + timeout
    while process_start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
