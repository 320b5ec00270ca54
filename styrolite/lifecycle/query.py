"""``state``, ``list`` and ``ps``: read-only views of containers."""

from __future__ import annotations

from styrolite.lifecycle.common import cgroup_of
from styrolite.state import StateStore


def state(store: StateStore, container_id: str) -> dict:
    return store.load(container_id).oci_state()


def list_containers(store: StateStore) -> list[dict]:
    rows = []
    for container_id in store.ids():
        try:
            st = store.load(container_id)
        except Exception:
            continue
        rows.append({**st.oci_state(), "pid": st.pid if st.status != "stopped" else 0, "created": st.created})
    return rows


def processes(store: StateStore, container_id: str) -> list[int]:
    st = store.load(container_id)
    if st.status == "stopped":
        return []
    return sorted(cgroup_of(st).pids())


def stats(store: StateStore, container_id: str) -> dict:
    return cgroup_of(store.load(container_id)).stats()


def cgroup_directory(store: StateStore, container_id: str) -> str | None:
    manager = cgroup_of(store.load(container_id))
    return getattr(manager, "directory", None) if manager.version == 2 else None
