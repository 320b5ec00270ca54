"""IDM streams that carry process I/O: ``exec`` (``ExecService`` + one ``ExecPump`` per process) and followed
container logs (``LogFollower``).

Flow control both ways: output is sent within the host's credit and, when credit runs out, the pipe stops
being read (the process blocks on a full pipe instead of PID 1 buffering without bound); stdin bytes are
credited back to the host only once they are written into the process's pipe.

Stream layout (docs/idm.md): channels ``stdin`` (host -> zone), ``stdout`` and ``stderr`` (zone -> host;
a tty has only ``stdout``); the stream ends with ``close`` carrying ``{"exit_code": N}``. If the host cancels
the stream or goes away, the process is killed.

The service does not start processes itself: ``spawn`` does (PID 1: in a container through the runtime; the
IDM tests: a local process), and ``watch_exit`` tells it when one was reaped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable

from idm.errors import NOT_FOUND, IdmError
from idm.server import Handler, Request
from idm.streams import Stream
from styrolite.exitstatus import exit_code_of
from zoneinit.idm.args import require, signal_number

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any, Protocol

if TYPE_CHECKING:  # for annotations only: PID 1 creates no class it does not use
    from idm.streams import StreamLink
    from zoneinit.containers.manager import ContainerManager, ManagedContainer

    class EventLoop(Protocol):
        """What the pumps need from PID 1's loop (``zoneinit.supervisor.loop.Supervisor``)."""

        def add_reader(self, fd: int, callback: Callable[[int], None]) -> None: ...

        def remove_reader(self, fd: int) -> None: ...

        def add_writer(self, fd: int, callback: Callable[[int], None]) -> None: ...

        def remove_writer(self, fd: int) -> None: ...

        def call_later(self, delay: float, callback: Callable[[], None]) -> int: ...


READ_CHUNK = 32 * 1024
MAX_FOLLOW_BACKLOG = 1 << 20   # a log follower that does not grant credit loses the oldest bytes beyond this
EXIT_LINGER = 0.5              # after an exec'd process exits, how long its output may still arrive


class ExecRequest:
    """An ``exec`` request's payload, checked (docs/idm.md section 7)."""

    __slots__ = ("additional_gids", "command", "container", "cwd", "env", "process", "size", "tty", "user", "zone")

    def __init__(self, command: list[str], env: list[str] | None = None, cwd: str | None = None,
                 user: tuple[int, int] | None = None, tty: bool = False, size: tuple[int, int] | None = None,
                 container: str | None = None, process: dict[str, Any] | None = None,
                 additional_gids: list[int] | None = None, zone: bool = False) -> None:
        self.command = command
        self.env = env or []              # "K=V", added to (or replacing in) the container's
        self.cwd = cwd
        self.user = user                  # (uid, gid)
        self.additional_gids = additional_gids or []
        self.tty = tty
        self.size = size                  # (rows, cols) of the pty
        self.container = container        # None: the zone's main container
        self.process = process            # containerd's OCI process (CRI exec): the base of the exec'd one
        self.zone = zone                  # a zone-level exec: in PID 1's namespaces, not in a container

    @classmethod
    def from_request(cls, req: Request) -> ExecRequest:
        process = req.arg("process")
        if process is not None:
            from zoneinit.containers.podspec import take_process

            warnings: list[str] = []
            process = take_process(process, "$.process", warnings)
        oci = process or {}
        command = req.arg("args") or req.arg("command") or oci.get("args")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise ValueError("exec: 'command' (or process.args) must be a non-empty list of strings")
        env = req.arg("env") or []
        if isinstance(env, dict):
            env = [f"{k}={v}" for k, v in env.items()]
        if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
            raise ValueError("exec: 'env' must be a map of strings or a list of NAME=VALUE")
        cwd = req.arg("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("exec: 'cwd' must be a string")
        container = req.arg("id") if req.arg("id") is not None else req.arg("container")
        if container is not None and (not isinstance(container, str) or not container):
            raise ValueError("exec: 'container' must be a container id")
        rows, cols = req.arg("rows"), req.arg("cols")
        size = (rows, cols) if isinstance(rows, int) and isinstance(cols, int) else None
        box = oci.get("consoleSize")
        if size is None and isinstance(box, dict) and isinstance(box.get("height"), int):
            size = (box["height"], box.get("width", 0))
        tty = req.arg("tty") if req.arg("tty") is not None else oci.get("terminal", False)
        user, gids = _user(req.arg("user"))
        zone = req.arg("zone", False) is True
        if zone and (container is not None or process is not None):
            raise ValueError("exec: a zone-level exec ('zone': true) names no container and no OCI process")
        return cls(list(command), list(env), cwd, user, tty is True, size, container, process, gids, zone)


def _user(value: Any) -> tuple[tuple[int, int] | None, list[int]]:
    """``"UID[:GID]"`` (as the CLIs take it), ``{uid, gid, additional_gids}`` or a uid; and the extra gids."""
    if value is None or value == "":
        return None, []
    if isinstance(value, str):
        uid, _, gid = value.partition(":")
        return (int(uid), int(gid or uid)), []
    if isinstance(value, dict):
        gids = value.get("additional_gids", value.get("additionalGids", []))
        if not isinstance(gids, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0
                                                 for g in gids):
            raise ValueError("exec: 'user.additional_gids' must be a list of gids")
        return (int(value.get("uid", 0)), int(value.get("gid", 0))), list(gids)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value), []
    raise ValueError(f"exec: 'user' must be UID[:GID], a uid or {{uid, gid, additional_gids}}, not {value!r}")


class ExecProcess:
    """A started process and PID 1's ends of its stdio (they belong to the pump from now on).

    ``outputs`` maps each read end to its channel; with a tty it is the pty master alone ("stdout") and
    ``stdin`` is a duplicate of it. The copies the child uses must already be closed here: the stream ends
    at EOF on every output, and a leftover write end would keep it open.
    """

    __slots__ = ("container", "outputs", "pid", "stdin")

    def __init__(self, pid: int, outputs: dict[int, str], stdin: int | None = None,
                 container: str | None = None) -> None:
        self.pid = pid
        self.outputs = outputs
        self.stdin = stdin
        self.container = container


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ExecPump:
    """One exec'd process: its pipes or pty, pumped to and from the stream within credit."""

    def __init__(self, loop: EventLoop, stream: Stream, process: ExecProcess, *, tty: bool,
                 size: tuple[int, int] | None = None,
                 on_exit: Callable[[int, int], None] = lambda _pid, _code: None,
                 on_done: Callable[[ExecPump], None] = lambda _pump: None) -> None:
        self.loop = loop
        self.stream = stream
        self.tty = tty
        self.pid = process.pid
        self.on_exit = on_exit
        self.on_done = on_done
        self.exit_code: int | None = None
        self.outputs = dict(process.outputs)      # fd -> channel
        self.pending: dict[str, bytearray] = {}   # channel -> bytes waiting for credit
        self.stdin_fd = process.stdin
        self.stdin_pending = bytearray()
        self.stdin_eof = False
        self.finished = False
        stream.on_data = self._on_data
        stream.on_eof = self._on_eof
        stream.on_credit = self._on_credit
        stream.on_abort = self._on_abort
        for fd in [*self.outputs, self.stdin_fd]:
            if fd is not None:
                os.set_blocking(fd, False)
        if tty and size:
            for fd in self.outputs:
                with contextlib.suppress(OSError):
                    set_window_size(fd, *size)
        for fd in self.outputs:
            loop.add_reader(fd, self._read_output)

    # --- output: process -> host --------------------------------------------------------------------
    def _read_output(self, fd: int) -> None:
        channel = self.outputs.get(fd)
        if channel is None:
            return
        if self.pending.get(channel):
            self.loop.remove_reader(fd)  # wait for credit before reading more
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
            self.loop.remove_reader(fd)

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
                    self.loop.add_reader(fd, self._read_output)
            self._maybe_finish()

    def _close_output(self, fd: int) -> None:
        self.loop.remove_reader(fd)
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
                self.loop.add_writer(fd, self._write_stdin)
                return
            except OSError:  # the process closed its stdin: discard what is left
                n = len(self.stdin_pending)
            del self.stdin_pending[:n]
            self.stream.consumed("stdin", n)
        self.loop.remove_writer(fd)
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
        self.loop.remove_writer(fd)
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")  # a tty has no half-close: EOF is ^D for the line discipline
        with contextlib.suppress(OSError):
            os.close(fd)

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ on the pty (a process without one has no window size: nothing to do)."""
        if self.tty:
            for fd in self.outputs:
                set_window_size(fd, rows, cols)

    def signal(self, signum: int) -> None:
        if self.pid and self.exit_code is None:
            os.kill(self.pid, signum)

    # --- end ----------------------------------------------------------------------------------------
    def exited(self, status: int) -> None:
        """PID 1's reaper saw the process end (raw wait status)."""
        self.exit_code = exit_code_of(status)
        self.on_exit(self.pid, self.exit_code)
        # Output written just before exit is still in the pipes; background children may keep them open.
        for fd in list(self.outputs):
            self._read_output(fd)
        self.loop.call_later(EXIT_LINGER, self._stop_waiting_for_output)
        self._maybe_finish()

    def _stop_waiting_for_output(self) -> None:
        for fd in list(self.outputs):
            channel = self.outputs[fd]
            if not self.pending.get(channel):
                self._read_output(fd)
            self.loop.remove_reader(fd)
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
        self.on_done(self)

    def _on_abort(self) -> None:
        """The host went away or cancelled: the process is killed, its descriptors closed."""
        if self.exit_code is None and self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.pending.clear()
        for fd in list(self.outputs):
            self.loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.outputs.clear()
        self._close_stdin()


class ExecService:
    """``exec``, ``exec.resize`` and ``exec.signal``: processes started by ``spawn``, one pump each.

    ``watch_exit(pid, callback)`` must call ``callback(wait_status)`` once the process is reaped; ``on_exit``
    hears of each exit (PID 1 emits an ``exec.exit`` event)."""

    def __init__(self, loop: EventLoop, spawn: Callable[[ExecRequest], ExecProcess],
                 watch_exit: Callable[[int, Callable[[int], None]], None],
                 on_exit: Callable[[int, int], None] = lambda _pid, _code: None) -> None:
        self.loop = loop
        self.spawn = spawn
        self.watch_exit = watch_exit
        self.on_exit = on_exit
        self.pumps: dict[tuple[StreamLink, int], ExecPump] = {}   # (its session, stream id) -> pump

    def handlers(self) -> dict[str, Handler]:
        return {"exec": self.exec, "exec.resize": self.resize, "exec.signal": self.signal}

    def exec(self, req: Request) -> None:
        request = ExecRequest.from_request(req)
        stream = req.open_stream()
        try:
            process = self.spawn(request)
        except BaseException:
            req.conn.forget_stream(stream.id)
            raise
        key = (req.conn, stream.id)
        pump = ExecPump(self.loop, stream, process, tty=request.tty, size=request.size, on_exit=self.on_exit,
                        on_done=lambda _pump: self.pumps.pop(key, None))
        self.pumps[key] = pump
        self.watch_exit(process.pid, pump.exited)
        reply: dict[str, Any] = {"pid": process.pid, "stream": stream.id, "window": stream.window,
                                 "tty": request.tty}
        if process.container is not None:
            reply["id"] = process.container
        req.reply(reply)

    def _pump(self, req: Request) -> ExecPump:
        sid = req.arg("stream")
        pump = self.pumps.get((req.conn, sid)) if isinstance(sid, int) else None
        if pump is None:
            raise IdmError(f"no exec session with stream id {sid!r}", NOT_FOUND)
        return pump

    def resize(self, req: Request) -> dict[str, Any]:
        rows, cols = require(req, "rows", int), require(req, "cols", int)
        self._pump(req).resize(rows, cols)
        return {"rows": rows, "cols": cols}

    def signal(self, req: Request) -> dict[str, Any]:
        signum = signal_number(req.arg("signal", "SIGTERM"))
        self._pump(req).signal(signum)
        return {"signal": signum}


class LogFollower:
    """``container.logs`` with ``follow``: what the ring holds, then new output, until the container stops."""

    def __init__(self, stream: Stream, container: ManagedContainer, containers: ContainerManager,
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
