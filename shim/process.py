"""What the shim knows of each process: status, pid, stdio, exit — and the waiters on that exit.

Statuses follow containerd's (`containerd.v1.types.Status`): CREATED -> RUNNING <-> PAUSED -> STOPPED.
A process's exit is recorded once (later reports are ignored); `wait` blocks until then.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from datetime import datetime

from shim.stdio import ProcessIO, StdioPaths


class Status(enum.IntEnum):  # the numbers of containerd.v1.types.Status
    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5


@dataclass
class Process:
    container_id: str
    exec_id: str  # "" for the container's init process
    stdio: StdioPaths
    pid: int = 0
    status: Status = Status.CREATED
    exit_status: int = 0
    exited_at: datetime | None = None
    io: ProcessIO | None = None
    started: bool = False
    _exited: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def name(self) -> str:
        return f"{self.container_id}/{self.exec_id}" if self.exec_id else self.container_id

    def set_exited(self, exit_status: int, exited_at: datetime) -> bool:
        """Record the exit; False if it was already recorded."""
        if self._exited.is_set():
            return False
        self.exit_status, self.exited_at, self.status = exit_status, exited_at, Status.STOPPED
        self._exited.set()
        return True

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait(self, cancelled: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Block until the process has exited (True), the caller went away or `timeout` passed (False)."""
        if cancelled is None:
            return self._exited.wait(timeout)
        waited = 0.0
        while not self._exited.wait(0.25):
            if cancelled.is_set():
                return False
            waited += 0.25
            if timeout is not None and waited >= timeout:
                return False
        return True


@dataclass
class Container:
    id: str
    bundle: str
    init: Process
    is_sandbox: bool  # the pod's sandbox task: the zone itself, no process in it
    rootfs: list = field(default_factory=list)
    execs: dict[str, Process] = field(default_factory=dict)

    def process(self, exec_id: str) -> Process | None:
        return self.init if not exec_id else self.execs.get(exec_id)

    def all_processes(self) -> list[Process]:
        return [self.init, *self.execs.values()]
