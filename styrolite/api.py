"""The library the zone's PID 1 calls in-process: no re-exec of Python, containers forked from a warm process.

    rt = Runtime("/run/styrolite")
    c = rt.create("web", "/run/zone/bundles/web", stdio=Stdio(stdout=w, stderr=w))
    rt.start("web")
    ...  # the caller's waitpid(-1) loop reaps; it reports each death:
    rt.child_exited(pid, status)   # -> "web"; rt.exit_code("web") -> 0..255 (128+signo for signals)
"""

from __future__ import annotations

import os

from styrolite.container.stdio import Pipes, Stdio
from styrolite.errors import ContainerError, NotFoundError
from styrolite.exitstatus import exit_code_of
from styrolite.lifecycle import create as _create
from styrolite.lifecycle import delete as _delete
from styrolite.lifecycle import exec as _exec
from styrolite.lifecycle import kill as _kill
from styrolite.lifecycle import pause as _pause
from styrolite.lifecycle import query as _query
from styrolite.lifecycle import start as _start
from styrolite.lifecycle import update as _update
from styrolite.lifecycle.common import become_subreaper
from styrolite.spec.model import Process, Resources
from styrolite.state import DEFAULT_ROOT, ContainerState, StateStore
from styrolite.syscalls import LINUX, Syscalls

__all__ = ["Pipes", "Runtime", "Stdio", "become_subreaper", "exit_code_of"]


class Runtime:
    def __init__(self, state_root: str = DEFAULT_ROOT, sys: Syscalls = LINUX, subreaper: bool = True) -> None:
        self.store = StateStore(state_root)
        self.sys = sys
        self._owners: dict[int, str] = {}  # pid -> container id, for child_exited
        self._exit_codes: dict[str, int] = {}
        if subreaper:
            become_subreaper()

    def create(self, container_id: str, bundle: str, *, stdio: Stdio | None = None, terminal: bool = False,
               preserve_fds: int = 0) -> _create.Created:
        created = _create.create(self.store, container_id, bundle, stdio=stdio, terminal=terminal,
                                 preserve_fds=preserve_fds, sys=self.sys)
        self._owners[created.state.pid] = container_id
        self._exit_codes.pop(container_id, None)
        return created

    def start(self, container_id: str) -> None:
        _start.start(self.store, container_id)

    def exec(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
             terminal: bool = False) -> _exec.Executed:
        executed = _exec.exec_process(self.store, container_id, process, stdio=stdio, terminal=terminal,
                                      sys=self.sys)
        self._owners[executed.pid] = f"{container_id}/exec"
        return executed

    def signal(self, container_id: str, signum: int, all_processes: bool = False) -> None:
        _kill.kill(self.store, container_id, signum, all_processes, sys=self.sys)

    def state(self, container_id: str) -> dict:
        return _query.state(self.store, container_id)

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(container_id)

    def list(self) -> list[dict]:
        return _query.list_containers(self.store)

    def stats(self, container_id: str) -> dict:
        return _query.stats(self.store, container_id)

    def processes(self, container_id: str) -> list[int]:
        return _query.processes(self.store, container_id)

    def pause(self, container_id: str) -> None:
        _pause.pause(self.store, container_id)

    def resume(self, container_id: str) -> None:
        _pause.resume(self.store, container_id)

    def update(self, container_id: str, resources: Resources) -> None:
        _update.update(self.store, container_id, resources)

    def delete(self, container_id: str, force: bool = False) -> None:
        _delete.delete(self.store, container_id, force, sys=self.sys)
        self._exit_codes.pop(container_id, None)

    def child_exited(self, pid: int, wait_status: int) -> str | None:
        """Record the death of a process the caller reaped; returns the container id if it was an init.

        ContainerError if the container's state could not be updated (its exit code is recorded anyway)."""
        owner = self._owners.pop(pid, None)
        if owner is None or owner.endswith("/exec"):
            return owner
        code = exit_code_of(wait_status)
        self._exit_codes[owner] = code
        try:
            state = self.store.load(owner)
        except NotFoundError:
            return owner  # deleted already: nothing to record
        state.exit_code = code
        state.status = "stopped"
        try:
            self.store.save(state)
        except FileNotFoundError:
            return owner  # deleted meanwhile
        except OSError as e:  # the exit code is known (exit_code()); its state file could not say so
            raise ContainerError(f"record the exit ({code}) of container {owner!r}") from e
        return owner

    def exit_code(self, container_id: str) -> int | None:
        return self._exit_codes.get(container_id)

    def wait(self, container_id: str) -> int:
        """Block until the container's init exits (for callers that do not run their own reaper)."""
        if container_id in self._exit_codes:
            return self._exit_codes[container_id]
        pid = self.store.load(container_id).pid
        _, status = os.waitpid(pid, 0)
        self.child_exited(pid, status)
        return self._exit_codes[container_id]
