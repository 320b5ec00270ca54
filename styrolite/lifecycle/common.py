"""Pieces every lifecycle operation needs: the loaded container, its cgroup, its config snapshot.

Imported by every CLI call: the cgroup drivers and the config parser are imported only by the functions
that need them.
"""

from __future__ import annotations

import os

from styrolite.errors import StateError
from styrolite.state import ContainerState, StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from styrolite.cgroups import CgroupManager
    from styrolite.spec.model import Spec

CONFIG_SNAPSHOT = "config.json"


def become_subreaper() -> None:
    """Orphaned descendants (a container's init once its setup process exits) become our children."""
    import prctl

    prctl.set_child_subreaper(True)


def cgroup_of(state: ContainerState) -> CgroupManager:
    """The container's cgroup: from the directories ``create`` recorded, else (a record written by an older
    styrolite) resolved again from ``linux.cgroupsPath`` and this host's mounts."""
    from styrolite.cgroups import from_record, open_cgroup

    if state.cgroup:
        return from_record(state.cgroup)
    return open_cgroup(state.cgroups_path_config, state.id)


def load_snapshot(store: StateStore, state: ContainerState) -> Spec:
    """The config the container was created with (the bundle may have changed or gone since)."""
    from styrolite.spec import load_config

    return load_config(os.path.join(store.container_dir(state.id), CONFIG_SNAPSHOT))


def has_hooks(store: StateStore, state: ContainerState, phase: str) -> bool:
    """Whether the container's config has ``phase`` hooks (e.g. "poststart"), without parsing it when the
    record says which phases it has."""
    if state.hooks is not None:
        return phase in state.hooks
    spec = load_snapshot(store, state)
    return bool(spec.hooks and getattr(spec.hooks, HOOK_FIELDS[phase]))


HOOK_FIELDS = {"prestart": "prestart", "createRuntime": "create_runtime", "createContainer": "create_container",
               "startContainer": "start_container", "poststart": "poststart", "poststop": "poststop"}
"""OCI hook phase -> its field in ``spec.model.Hooks``."""


def hook_phases(spec: Spec) -> list[str]:
    """The hook phases ``spec`` has at least one hook for (recorded by create)."""
    if spec.hooks is None:
        return []
    return [phase for phase, field in HOOK_FIELDS.items() if getattr(spec.hooks, field)]


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
