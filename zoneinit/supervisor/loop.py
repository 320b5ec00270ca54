"""PID 1's event loop: one ``selectors`` loop for signals, IDM, container output and timers.

Signals arrive as bytes on a pipe (``signal.set_wakeup_fd``: the C handler writes the signal number, our
Python handlers do nothing), so they are handled in the loop, never re-entrantly. On SIGCHLD every
exited child is reaped with ``waitpid(-1, WNOHANG)`` until none is left: containers, exec'd processes
and orphans reparented to PID 1 (or to us as a child subreaper) alike. Each exit is handed to the
``on_child_exit`` callbacks with the raw wait status.

A callback that raises is logged and the loop goes on: PID 1 never dies from an exception.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable

from zoneinit.console import ConsoleLog

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGPWR)
HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, *SHUTDOWN_SIGNALS)

FdCallback = Callable[[int], None]
ChildCallback = Callable[[int, int], None]


def _ignore_signal(_signum: int, _frame: object) -> None:
    """The real handling happens in the loop, from the wakeup pipe."""


class Supervisor:
    def __init__(self, log: ConsoleLog | None = None) -> None:
        self.log = log or ConsoleLog()
        self.selector = selectors.DefaultSelector()
        self.on_child_exit: list[ChildCallback] = []
        self.on_signal: dict[int, list[Callable[[int], None]]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._cancelled: set[int] = set()
        self._wakeup_r = -1
        self._wakeup_w = -1
        # Components with their own timers (the IDM server): (seconds until due or None, service to run then)
        self.timed_services: list[tuple[Callable[[], float | None], Callable[[], None]]] = []
        self.running = True

    # --- setup ---------------------------------------------------------------------------------------

    def install_signals(self, signals: tuple[int, ...] = HANDLED_SIGNALS) -> None:
        """Route ``signals`` through the wakeup pipe into the loop (main thread only)."""
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in signals:
            signal.signal(signum, _ignore_signal)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._drain_signals)

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        self.on_signal.setdefault(signum, []).append(callback)

    # --- file descriptors ----------------------------------------------------------------------------

    def add_reader(self, fd: int, callback: FdCallback) -> None:
        self._set_events(fd, selectors.EVENT_READ, callback, None)

    def add_writer(self, fd: int, callback: FdCallback) -> None:
        self._set_events(fd, selectors.EVENT_WRITE, None, callback)

    def remove_reader(self, fd: int) -> None:
        self._clear_events(fd, selectors.EVENT_READ)

    def remove_writer(self, fd: int) -> None:
        self._clear_events(fd, selectors.EVENT_WRITE)

    def _set_events(self, fd: int, event: int, reader: FdCallback | None, writer: FdCallback | None) -> None:
        try:
            key = self.selector.get_key(fd)
        except KeyError:
            self.selector.register(fd, event, (reader, writer))
            return
        old_reader, old_writer = key.data if isinstance(key.data, tuple) else (key.data, None)
        data = (reader or old_reader, writer or old_writer)
        self.selector.modify(fd, key.events | event, data)

    def _clear_events(self, fd: int, event: int) -> None:
        try:
            key = self.selector.get_key(fd)
        except (KeyError, ValueError):
            return
        events = key.events & ~event
        reader, writer = key.data
        if event == selectors.EVENT_READ:
            reader = None
        else:
            writer = None
        if events:
            self.selector.modify(fd, events, (reader, writer))
        else:
            self.selector.unregister(fd)

    # --- timers --------------------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> int:
        timer_id = next(self._timer_ids)
        heapq.heappush(self._timers, (time.monotonic() + delay, timer_id, callback))
        return timer_id

    def cancel(self, timer_id: int) -> None:
        self._cancelled.add(timer_id)

    # --- the loop ------------------------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (or the next timer) and dispatch them; exceptions are logged."""
        now = time.monotonic()
        if self._timers:
            until_timer = max(0.0, self._timers[0][0] - now)
            timeout = until_timer if timeout is None else min(timeout, until_timer)
        for source, _service in self.timed_services:
            wanted = source()
            if wanted is not None:
                timeout = wanted if timeout is None else min(timeout, wanted)
        try:
            events = self.selector.select(timeout)
        except InterruptedError:
            events = []
        for key, mask in events:
            if key.fd == self._wakeup_r:
                self._guarded("signal handling", self._drain_signals, key.fd)
                continue
            reader, writer = key.data
            if mask & selectors.EVENT_READ and reader is not None:
                self._guarded(f"reader on fd {key.fd}", reader, key.fd)
            if mask & selectors.EVENT_WRITE and writer is not None:
                self._guarded(f"writer on fd {key.fd}", writer, key.fd)
        self._run_due_timers()
        for source, service in self.timed_services:
            due = source()
            if due is not None and due <= 0:
                self._guarded("timed service", service)

    def run(self, until: Callable[[], bool] | None = None, timeout: float = 1.0) -> None:
        """Loop while ``running`` (and until ``until()`` is true). PID 1 calls this and never returns."""
        while self.running and not (until and until()):
            try:
                self.run_once(timeout)
            except Exception as e:  # belt and braces: run_once already guards each callback
                self.log.error("supervisor loop", e)

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, timer_id, callback = heapq.heappop(self._timers)
            if timer_id in self._cancelled:
                self._cancelled.discard(timer_id)
                continue
            self._guarded("timer", callback)

    def _guarded(self, what: str, function: Callable[..., None], *args: object) -> None:
        try:
            function(*args)
        except Exception as e:
            self.log.error(f"unexpected error in {what}", e)

    # --- signals and reaping -------------------------------------------------------------------------

    def _drain_signals(self, fd: int) -> None:
        received: list[int] = []
        while True:
            try:
                data = os.read(fd, 256)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            received.extend(data)
        for signum in dict.fromkeys(received):  # each signal once per wakeup, in arrival order
            if signum == signal.SIGCHLD:
                self.reap()
            for callback in self.on_signal.get(signum, []):
                self._guarded(f"handler for signal {signum}", callback, signum)

    def reap(self) -> list[tuple[int, int]]:
        """waitpid(-1, WNOHANG) until no exited child is left; every exit goes to the callbacks."""
        reaped: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            if pid == 0:
                break
            reaped.append((pid, status))
            for callback in self.on_child_exit:
                self._guarded(f"exit of pid {pid}", callback, pid, status)
        return reaped
