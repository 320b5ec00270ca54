"""IDM streams that carry process I/O: ``exec`` sessions and followed container logs.

Flow control both ways: output is sent within the host's credit and, when credit runs out, the pipe stops
being read (the process blocks on a full pipe instead of PID 1 buffering without bound); stdin bytes are
credited back to the host only once they are written into the process's pipe.

Stream layout (docs/idm.md): channels ``stdin`` (host -> zone), ``stdout`` and ``stderr`` (zone -> host;
a tty has only ``stdout``); the stream ends with ``close`` carrying ``{"exit_code": N}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
from typing import Any

from styrolite.exitstatus import exit_code_of
from zoneinit.containers.manager import ContainerManager, ManagedContainer
from zoneinit.supervisor.loop import Supervisor

READ_CHUNK = 32 * 1024
MAX_FOLLOW_BACKLOG = 1 << 20   # a log follower that does not grant credit loses the oldest bytes beyond this
EXIT_LINGER = 0.5              # after an exec'd process exits, how long its output may still arrive


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ExecSession:
    """One ``exec``: the process, its pipes or pty, and the stream to the host."""

    def __init__(self, supervisor: Supervisor, containers: ContainerManager, stream: Any, *, tty: bool) -> None:
        self.supervisor = supervisor
        self.containers = containers
        self.stream = stream
        self.tty = tty
        self.pid = 0
        self.exit_code: int | None = None
        self.outputs: dict[int, str] = {}          # fd -> channel
        self.pending: dict[str, bytearray] = {}    # channel -> bytes waiting for credit
        self.stdin_fd: int | None = None
        self.stdin_pending = bytearray()
        self.stdin_eof = False
        self.finished = False
        stream.on_data = self._on_data
        stream.on_eof = self._on_eof
        stream.on_credit = self._on_credit
        stream.on_abort = self._on_abort

    # --- start ------------------------------------------------------------------------------------
    def start(self, container_id: str, process: Any, size: tuple[int, int] | None = None) -> int:
        from styrolite.api import Stdio

        child_fds: list[int] = []
        try:
            if self.tty:
                stdio = None
            else:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                child_fds = [in_r, out_w, err_w]
                self.stdin_fd = in_w
                self.outputs = {out_r: "stdout", err_r: "stderr"}
                stdio = Stdio(stdin=in_r, stdout=out_w, stderr=err_w)
            executed = self.containers.runtime.exec(container_id, process, stdio=stdio, terminal=self.tty)
        except BaseException:
            for fd in [*self.outputs, *([self.stdin_fd] if self.stdin_fd is not None else [])]:
                os.close(fd)
            self.outputs, self.stdin_fd = {}, None
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        self.pid = executed.pid
        self.containers.exec_exits[self.pid] = self._exited
        if executed.console_fd is not None:
            self.stdin_fd = os.dup(executed.console_fd)
            self.outputs = {executed.console_fd: "stdout"}
            if size:
                with contextlib.suppress(OSError):
                    set_window_size(executed.console_fd, *size)
        for fd in [*self.outputs, self.stdin_fd]:
            if fd is not None:
                os.set_blocking(fd, False)
        for fd in self.outputs:
            self.supervisor.add_reader(fd, self._read_output)
        return self.pid

    # --- output: process -> host --------------------------------------------------------------------
    def _read_output(self, fd: int) -> None:
        channel = self.outputs.get(fd)
        if channel is None:
            return
        if self.pending.get(channel):
            self.supervisor.remove_reader(fd)  # wait for credit before reading more
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:   # EIO from a pty master once the process side is closed
            data = b""
        if not data:
            self._close_output(fd)
            return
        self._send(channel, data)
        if self.pending.get(channel):
            self.supervisor.remove_reader(fd)

    def _send(self, channel: str, data: bytes) -> None:
        sent = self.stream.send(channel, data)
        if sent < len(data):
            self.pending.setdefault(channel, bytearray()).extend(data[sent:])

    def _on_credit(self, channel: str) -> None:
        backlog = self.pending.get(channel)
        if backlog:
            sent = self.stream.send(channel, bytes(backlog))
            del backlog[:sent]
        if not backlog:
            for fd, ch in self.outputs.items():
                if ch == channel:
                    self.supervisor.add_reader(fd, self._read_output)
            self._maybe_finish()

    def _close_output(self, fd: int) -> None:
        self.supervisor.remove_reader(fd)
        self.outputs.pop(fd, None)
        with contextlib.suppress(OSError):
            os.close(fd)
        self._maybe_finish()

    # --- input: host -> process -------------------------------------------------------------------
    def _on_data(self, channel: str, data: bytes) -> None:
        if channel != "stdin" or self.stdin_fd is None:
            self.stream.consumed(channel, len(data))  # nowhere to put it: drop, but keep credit flowing
            return
        self.stdin_pending += data
        self._write_stdin(self.stdin_fd)

    def _write_stdin(self, fd: int) -> None:
        while self.stdin_pending and self.stdin_fd is not None:
            try:
                n = os.write(fd, self.stdin_pending)
            except BlockingIOError:
                self.supervisor.add_writer(fd, self._write_stdin)
                return
            except OSError:  # the process closed its stdin: discard what is left
                n = len(self.stdin_pending)
            del self.stdin_pending[:n]
            self.stream.consumed("stdin", n)
        self.supervisor.remove_writer(fd)
        if self.stdin_eof:
            self._close_stdin()

    def _on_eof(self, channel: str) -> None:
        if channel != "stdin":
            return
        self.stdin_eof = True
        if not self.stdin_pending:
            self._close_stdin()

    def _close_stdin(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is None:
            return
        self.supervisor.remove_writer(fd)
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")  # a tty has no half-close: EOF is ^D for the line discipline
        with contextlib.suppress(OSError):
            os.close(fd)

    def resize(self, rows: int, cols: int) -> None:
        for fd in self.outputs:
            if self.tty:
                set_window_size(fd, rows, cols)

    def signal(self, signum: int) -> None:
        if self.pid and self.exit_code is None:
            os.kill(self.pid, signum)

    # --- end ----------------------------------------------------------------------------------------
    def _exited(self, status: int) -> None:
        self.exit_code = exit_code_of(status)
        self.containers.emit("exec.exit", {"pid": self.pid, "exit_code": self.exit_code})
        # Output written just before exit is still in the pipes; background children may keep them open.
        for fd in list(self.outputs):
            self._read_output(fd)
        self.supervisor.call_later(EXIT_LINGER, self._stop_waiting_for_output)
        self._maybe_finish()

    def _stop_waiting_for_output(self) -> None:
        for fd in list(self.outputs):
            channel = self.outputs[fd]
            if not self.pending.get(channel):
                self._read_output(fd)
            self.supervisor.remove_reader(fd)
            self.outputs.pop(fd, None)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.finished or self.exit_code is None or self.outputs or any(self.pending.values()):
            return
        self.finished = True
        self._close_stdin()
        for channel in (("stdout",) if self.tty else ("stdout", "stderr")):
            self.stream.close_channel(channel)
        self.stream.finish({"exit_code": self.exit_code})

    def _on_abort(self) -> None:
        """The host went away or cancelled: the process is killed, its descriptors closed."""
        if self.exit_code is None and self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.pending.clear()
        for fd in list(self.outputs):
            self.supervisor.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.outputs.clear()
        self._close_stdin()


class LogFollower:
    """``container.logs`` with ``follow``: what the ring holds, then new output, until the container stops."""

    def __init__(self, stream: Any, container: ManagedContainer, containers: ContainerManager,
                 tail: int | None = None) -> None:
        self.stream = stream
        self.container = container
        self.pending: dict[str, bytearray] = {}
        self.dropped = 0
        self.done = False
        stream.on_credit = self._on_credit
        stream.on_abort = self._detach
        self._send("stdout", container.output.snapshot(tail))
        container.output.followers.append(self._on_output)
        containers.wait(container.id, lambda _c: self._maybe_finish())

    def _send(self, channel: str, data: bytes) -> None:
        backlog = self.pending.setdefault(channel, bytearray())
        if not backlog:
            sent = self.stream.send(channel, data)
            data = data[sent:]
        backlog += data
        excess = len(backlog) - MAX_FOLLOW_BACKLOG
        if excess > 0:
            del backlog[:excess]
            self.dropped += excess

    def _on_output(self, channel: str, data: bytes) -> None:
        self._send(channel, data)

    def _on_credit(self, channel: str) -> None:
        backlog = self.pending.get(channel)
        if backlog:
            del backlog[:self.stream.send(channel, bytes(backlog))]
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.done or self.container.status not in ("stopped", "failed") or any(self.pending.values()):
            return
        self.done = True
        self._detach()
        self.stream.finish({"exit_code": self.container.exit_code, "dropped": self.dropped,
                            "error": self.container.error})

    def _detach(self) -> None:
        with contextlib.suppress(ValueError):
            self.container.output.followers.remove(self._on_output)
