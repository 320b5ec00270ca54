"""``pause`` / ``resume``: freeze and thaw every process of the container through its cgroup."""

from __future__ import annotations

from styrolite.errors import ContainerError
from styrolite.lifecycle.common import cgroup_of, require_status
from styrolite.state import StateStore


def pause(store: StateStore, container_id: str) -> None:
    st = store.load(container_id)
    require_status(st, ("running",), "pause")
    try:
        cgroup_of(st).freeze()
    except Exception as e:
        raise ContainerError(f"pause container {container_id!r}") from e
    st.status = "paused"
    store.save(st)


def resume(store: StateStore, container_id: str) -> None:
    st = store.load(container_id)
    require_status(st, ("paused",), "resume")
    try:
        cgroup_of(st).thaw()
    except Exception as e:
        raise ContainerError(f"resume container {container_id!r}") from e
    st.status = "running"
    store.save(st)
