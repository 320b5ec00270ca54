"""``start``: release a created container's init (it is blocked reading the exec fifo) to run the process."""

from __future__ import annotations

import errno
import os

from styrolite.errors import ContainerError
from styrolite.lifecycle.common import has_hooks, load_snapshot, require_status
from styrolite.state import StateStore


def start(store: StateStore, container_id: str) -> None:
    state = store.load(container_id)
    require_status(state, ("created",), "start")
    fifo = store.exec_fifo(container_id)
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ContainerError(f"start container {container_id!r}: its init process is gone") from None
        raise ContainerError(f"start container {container_id!r}: open exec fifo: {e.strerror}") from e
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(fifo)
    state.status = "running"
    store.save(state)
    if has_hooks(store, state, "poststart"):
        from styrolite.hooks import run_hooks

        spec = load_snapshot(store, state)
        assert spec.hooks is not None
        run_hooks("poststart", spec.hooks.poststart, state.oci_state(), must_succeed=False)
