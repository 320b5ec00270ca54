"""``container.oom``: the zone kernel's OOM kills in a container's cgroup, as they happen.

cgroup v2 counts them in ``memory.events`` (``oom_kill``) and signals a change of that file to poll/epoll
as ``EPOLLPRI`` (kernfs); reading the file again re-arms it. One epoll set holds every container's file
and its own descriptor sits in PID 1's loop, so nothing is polled on a timer. The count is also read once
more when a container stops, so an OOM kill of its init is reported before its ``container.exit``.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinit.supervisor.loop import Supervisor


def oom_kills(fd: int) -> int | None:
    """``oom_kill`` of an open memory.events (read from the start, which also re-arms its notification)."""
    try:
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


class OomWatcher:
    """Calls ``report(container_id, oom_kills)`` whenever a watched container's count goes up."""

    def __init__(self, loop: Supervisor, report: Callable[[str, int], None]) -> None:
        self.loop = loop
        self.report = report
        self._epoll: select.epoll | None = None
        self._fds: dict[str, int] = {}         # container id -> its memory.events
        self._owners: dict[int, str] = {}
        self._counts: dict[str, int] = {}

    def watch(self, container_id: str, cgroup_directory: str | None) -> None:
        if cgroup_directory is None or container_id in self._fds:
            return
        try:
            fd = os.open(os.path.join(cgroup_directory, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return   # no memory controller: nothing to watch (stats say so too)
        self._fds[container_id] = fd
        self._owners[fd] = container_id
        self._counts[container_id] = oom_kills(fd) or 0
        try:
            if self._epoll is None:
                self._epoll = select.epoll()
                self.loop.add_reader(self._epoll.fileno(), self._ready)
            self._epoll.register(fd, select.EPOLLPRI)
        except OSError:
            pass   # not pollable here: the check at exit still reports

    def check(self, container_id: str) -> None:
        fd = self._fds.get(container_id)
        if fd is None:
            return
        count = oom_kills(fd)
        if count is not None and count > self._counts.get(container_id, 0):
            self._counts[container_id] = count
            self.report(container_id, count)

    def unwatch(self, container_id: str) -> None:
        fd = self._fds.pop(container_id, None)
        self._counts.pop(container_id, None)
        if fd is None:
            return
        self._owners.pop(fd, None)
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        os.close(fd)

    def _ready(self, _fd: int) -> None:
        assert self._epoll is not None
        for fd, _events in self._epoll.poll(0):
            owner = self._owners.get(fd)
            if owner is not None:
                self.check(owner)
