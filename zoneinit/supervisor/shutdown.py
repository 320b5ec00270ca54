"""Graceful shutdown, driven by the supervisor loop so children keep being reaped while we wait.

    request()  -> SIGTERM to every running container (all its processes), start the grace timer
    all exited (or grace over -> SIGKILL them, short wait)
    finish()   -> SIGKILL whatever else is left (orphans, daemons), reap, announce, sync,
                  unmount in reverse order, reboot(2) with RB_POWER_OFF / RB_AUTOBOOT

Asking again while a shutdown runs is harmless. If reboot(2) itself fails the error is logged and PID 1
keeps looping (it must never exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls.constants import RB_AUTOBOOT, RB_HALT_SYSTEM, RB_POWER_OFF
from zoneinit.console import ConsoleLog
from zoneinit.mounts.table import MountTable
from zoneinit.supervisor.loop import Supervisor

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Protocol

REBOOT_COMMANDS = {"poweroff": RB_POWER_OFF, "reboot": RB_AUTOBOOT, "halt": RB_HALT_SYSTEM}

if TYPE_CHECKING:  # for annotations only
    class StoppableContainers(Protocol):
        def running(self) -> list[str]: ...
        def signal(self, container_id: str, signum: int, all_processes: bool = False) -> None: ...


def kill_every_other_process(signum: int = signal.SIGKILL) -> None:
    """kill(-1): every process but PID 1 itself. Only ever done when we *are* PID 1."""
    if os.getpid() == 1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signum)


class Shutdown:
    def __init__(
        self,
        supervisor: Supervisor,
        containers: StoppableContainers | None,
        mounts: MountTable,
        *,
        sys: Syscalls = LINUX,
        log: ConsoleLog | None = None,
        grace: float = 10.0,
        kill_wait: float = 2.0,
        kill_everything: Callable[[int], None] = kill_every_other_process,
        sync: Callable[[], None] = os.sync,
    ) -> None:
        self.supervisor = supervisor
        self.containers = containers   # None until the zone has a container manager
        self.mounts = mounts
        self.sys = sys
        self.log = log or supervisor.log
        self.grace = grace
        self.kill_wait = kill_wait
        self.kill_everything = kill_everything
        self.sync = sync
        self.before_power_off: list[Callable[[str, str], None]] = []   # (action, reason): IDM announce+flush
        self.state = "idle"          # idle -> terminating -> killing -> done
        self.action = "poweroff"
        self.reason = ""
        self._timer: int | None = None
        supervisor.on_child_exit.append(lambda _pid, _status: self.check())

    @property
    def in_progress(self) -> bool:
        return self.state != "idle"

    def request(self, action: str = "poweroff", reason: str = "requested") -> None:
        if action not in REBOOT_COMMANDS:
            raise ValueError(f"unknown shutdown action {action!r} (poweroff, reboot, halt)")
        if self.in_progress:
            return
        self.action, self.reason, self.state = action, reason, "terminating"
        running = self._running()
        self.log.info(f"{action} ({reason}): stopping {len(running)} container(s), grace {self.grace:g}s")
        self._signal_all(running, signal.SIGTERM)
        self._timer = self.supervisor.call_later(self.grace, self._grace_over)
        self.check()

    def check(self) -> None:
        """Called on every child exit: finish as soon as no container is left running."""
        if self.state in ("terminating", "killing") and not self._running():
            self.finish()

    def _running(self) -> list[str]:
        return self.containers.running() if self.containers is not None else []

    def _signal_all(self, ids: list[str], signum: int) -> None:
        if self.containers is None:
            return
        for container_id in ids:
            try:
                self.containers.signal(container_id, signum, all_processes=True)
            except Exception as e:  # an already-gone container must not stop the shutdown
                self.log.warn(f"signal {signum} to container {container_id}: {e}")

    def _grace_over(self) -> None:
        if self.state != "terminating":
            return
        self.state = "killing"
        running = self._running()
        self.log.info(f"grace period over: SIGKILL to {', '.join(running) or 'nothing'}")
        self._signal_all(running, signal.SIGKILL)
        self._timer = self.supervisor.call_later(self.kill_wait, self.finish)

    def finish(self) -> None:
        if self.state == "done":
            return
        self.state = "done"
        if self._timer is not None:
            self.supervisor.cancel(self._timer)
        self.kill_everything(signal.SIGKILL)
        self.supervisor.reap()
        for hook in self.before_power_off:
            try:
                hook(self.action, self.reason)
            except Exception as e:
                self.log.warn(f"before {self.action}: {e}")
        self.sync()
        failures = self.mounts.unmount_all()
        for target, error in failures:
            self.log.warn(f"unmount {target}: {error}")
        self.sync()
        self.log.info(f"{self.action}")
        try:
            self.sys.reboot(REBOOT_COMMANDS[self.action])
        except OSError as e:
            self.log.error(f"{self.action} failed; staying up", e)
