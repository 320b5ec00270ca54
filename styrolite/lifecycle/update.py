"""``update``: change a live container's cgroup limits."""

from __future__ import annotations

from styrolite.errors import ContainerError
from styrolite.lifecycle.common import cgroup_of, require_status
from styrolite.spec.model import Resources
from styrolite.state import StateStore


def update(store: StateStore, container_id: str, resources: Resources) -> None:
    st = store.load(container_id)
    require_status(st, ("created", "running", "paused"), "update")
    try:
        cgroup_of(st).update(resources)
    except Exception as e:
        raise ContainerError(f"update container {container_id!r}") from e
