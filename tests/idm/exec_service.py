"""A protocol-level ``exec`` handler for the IDM tests: local processes pumped through a stream, within credit.

This is a test double. PID 1's real exec is zoneinit/execs.py (run by the agent, tested through
tests/zoneinit and in real zones); this one lets the IDM tests (streams, the event channel, vchan,
``zone`` CLI attach) exercise the wire protocol against plain local processes. The test provides
``spawn(payload) -> ExecProcess``; ``ExecService`` validates the request, opens the stream, moves bytes without ever
blocking, answers ``exec.resize``/``exec.signal``, and ends the stream with the exit code once PID 1's
reaper reports the process (``process_exited``) and its output is drained. Output is read from the
pipes only while the host has granted credit, so a process writing gigabytes to a slow host simply
blocks in write(2) and the zone's memory stays at one window per channel.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from idm.errors import INVALID_ARGUMENT, NOT_FOUND, IdmError
from idm.server import IdmServer, Request
from idm.streams import Stream
from styrolite.exitstatus import exit_code_of

READ_CHUNK = 64 * 1024


@dataclass
class ExecProcess:
    """What ``spawn`` returns: the child and the parent's ends of its stdio (ownership passes to the bridge).

    With a tty, ``tty`` is the pty master (stdin and stdout both go through it) and the pipes are None.
    The parent must have closed its copies of the child's ends (pipe write ends, the pty slave): the
    stream ends at EOF on every output, after the exit, so a leftover copy would keep it open.
    """

    pid: int
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    tty: int | None = None


def validate_exec_payload(payload: Any) -> dict[str, Any]:
    """Check the exec request fields (docs/idm.md); IdmError(invalid-argument) names the bad one."""
    if not isinstance(payload, dict):
        raise IdmError("exec payload must be a map", INVALID_ARGUMENT)
    command = payload.get("command", payload.get("args"))
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise IdmError("exec: 'command' must be a non-empty list of strings", INVALID_ARGUMENT)
    env = payload.get("env")
    if env is not None and not (
        (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()))
        or (isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env))
    ):
        raise IdmError("exec: 'env' must be a map of strings or a list of NAME=VALUE", INVALID_ARGUMENT)
    for key, kinds in (("cwd", (str,)), ("user", (str, int, dict)), ("container", (str,)), ("tty", (bool,)),
                       ("rows", (int,)), ("cols", (int,))):
        value = payload.get(key)
        if value is not None and not isinstance(value, kinds):
            raise IdmError(f"exec: {key!r} has the wrong type", INVALID_ARGUMENT)
    return payload


class ExecBridge:
    """Moves bytes between one process and one stream; all callbacks run on the server's loop."""

    def __init__(self, server: IdmServer, stream: Stream, proc: ExecProcess,
                 on_done: Callable[[ExecBridge], None] | None = None) -> None:
        self.server = server
        self.stream = stream
        self.proc = proc
        self.on_done = on_done
        self.exit_code: int | None = None
        self.finished = False
        self._outputs: dict[str, int] = {}
        if proc.tty is not None:
            self._outputs["stdout"] = proc.tty
            self._stdin_fd: int | None = proc.tty
        else:
            if proc.stdout is not None:
                self._outputs["stdout"] = proc.stdout
            if proc.stderr is not None:
                self._outputs["stderr"] = proc.stderr
            self._stdin_fd = proc.stdin
        self._owned = {fd for fd in (proc.stdin, proc.stdout, proc.stderr, proc.tty) if fd is not None}
        for fd in self._owned:
            os.set_blocking(fd, False)
        self._stdin_buf = bytearray()
        self._stdin_eof = False
        self._watched: dict[int, int] = {}
        stream.on_data = self._on_stdin
        stream.on_eof = self._on_eof
        stream.on_credit = lambda _ch: self._update()
        stream.on_abort = self._on_abort
        self._update()

    # --- called by PID 1 / the service -------------------------------------------------------------
    def exited(self, status: int) -> None:
        """PID 1's reaper saw the process end (raw waitpid status)."""
        self.exit_code = exit_code_of(status)
        self._maybe_finish()

    def resize(self, rows: int, cols: int) -> None:
        if self.proc.tty is None:
            raise IdmError(f"exec {self.stream.id} has no tty", INVALID_ARGUMENT)
        termios.tcsetwinsize(self.proc.tty, (rows, cols))

    # --- stdin -----------------------------------------------------------------------------------
    def _on_stdin(self, channel: str, data: bytes) -> None:
        if channel != "stdin" or self._stdin_fd is None or self._stdin_eof:
            self.stream.consumed(channel, len(data))
            return
        self._stdin_buf += data
        self._write_stdin()

    def _on_eof(self, channel: str) -> None:
        if channel == "stdin":
            self._stdin_eof = True
            self._write_stdin()

    def _write_stdin(self) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        written = 0
        while self._stdin_buf:
            try:
                n = os.write(fd, self._stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # the process closed its stdin: drop what is left
                n = len(self._stdin_buf)
            del self._stdin_buf[:n]
            written += n
        self.stream.consumed("stdin", written)
        if self._stdin_eof and not self._stdin_buf:
            if self.proc.tty is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, b"\x04")  # end of input on a terminal is ^D
            else:
                self._close_fd(fd)
            self._stdin_fd = None
        self._update()

    # --- stdout / stderr -------------------------------------------------------------------------
    def _pump(self, channel: str) -> None:
        fd = self._outputs.get(channel)
        if fd is None:
            return
        room = READ_CHUNK if self.stream.aborted else min(self.stream.credit(channel), READ_CHUNK)
        if room <= 0:
            self._update()
            return
        try:
            data = os.read(fd, room)
        except BlockingIOError:
            return
        except OSError:  # EIO on a pty master once the last slave fd closed
            data = b""
        if not data:
            del self._outputs[channel]
            if fd != self._stdin_fd:
                self._close_fd(fd)
            self.stream.close_channel(channel)
            self._update()
            self._maybe_finish()
            return
        self.stream.send(channel, data)  # within credit, so all of it is accepted
        self._update()

    def _on_fd(self, fd: int, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and fd == self._stdin_fd:
            self._write_stdin()
        if mask & selectors.EVENT_READ:
            for channel, out_fd in list(self._outputs.items()):
                if out_fd == fd:
                    self._pump(channel)

    def _update(self) -> None:
        """Watch each fd for exactly what can make progress now (read only with credit)."""
        want: dict[int, int] = {}
        for channel, fd in self._outputs.items():
            if self.stream.aborted or self.stream.credit(channel) > 0:
                want[fd] = want.get(fd, 0) | selectors.EVENT_READ
        if self._stdin_fd is not None and self._stdin_buf:
            want[self._stdin_fd] = want.get(self._stdin_fd, 0) | selectors.EVENT_WRITE
        for fd in list(self._watched):
            if fd not in want:
                self.server.unwatch(fd)
                del self._watched[fd]
        for fd, events in want.items():
            if self._watched.get(fd) != events:
                self.server.watch(fd, events, lambda mask, fd=fd: self._on_fd(fd, mask))
                self._watched[fd] = events

    # --- ending ----------------------------------------------------------------------------------
    def _on_abort(self) -> None:
        """The host went away: stop feeding stdin, keep draining output (discarded) so the process runs on."""
        self._stdin_buf.clear()
        if self._stdin_fd is not None and self.proc.tty is None:
            self._close_fd(self._stdin_fd)
            self._stdin_fd = None
        self._update()

    def _maybe_finish(self) -> None:
        if self.finished or self.exit_code is None:
            return
        if self._outputs:
            return  # wait for EOF (EIO on a pty): the last output must reach the host before the exit code
        self.finished = True
        for fd in list(self._watched):
            self.server.unwatch(fd)
        self._watched.clear()
        for fd in list(self._owned):
            self._close_fd(fd)
        self._outputs.clear()
        self._stdin_fd = None
        self.stream.finish({"exit_code": self.exit_code})
        if self.on_done:
            self.on_done(self)

    def _close_fd(self, fd: int) -> None:
        if fd in self._owned:
            self._owned.discard(fd)
            self.server.unwatch(fd)
            self._watched.pop(fd, None)
            with contextlib.suppress(OSError):
                os.close(fd)


class ExecService:
    """Registers ``exec``, ``exec.resize`` and ``exec.signal`` on the server around PID 1's ``spawn``."""

    def __init__(self, server: IdmServer, spawn: Callable[[dict[str, Any]], ExecProcess]) -> None:
        self.server = server
        self.spawn = spawn
        self.by_pid: dict[int, ExecBridge] = {}
        server.register("exec", self._exec)
        server.register("exec.resize", self._resize)
        server.register("exec.signal", self._signal)

    def process_exited(self, pid: int, status: int) -> bool:
        """Tell the service a child was reaped; True if it was an exec process."""
        bridge = self.by_pid.get(pid)
        if bridge is None:
            return False
        bridge.exited(status)
        return True

    def _exec(self, req: Request) -> None:
        payload = validate_exec_payload(req.payload)
        payload.setdefault("command", payload.get("args"))
        proc = self.spawn(payload)
        stream = req.open_stream()
        req.reply({"pid": proc.pid, "stream": stream.id, "window": stream.window, "tty": proc.tty is not None})
        bridge = ExecBridge(self.server, stream, proc, on_done=lambda b: self.by_pid.pop(b.proc.pid, None))
        self.by_pid[proc.pid] = bridge

    def _find(self, req: Request) -> ExecBridge:
        sid = req.arg("stream")
        for bridge in self.by_pid.values():
            if bridge.stream.id == sid and bridge.stream.conn is req.conn:
                return bridge
        raise IdmError(f"no running exec with id {sid!r}", NOT_FOUND)

    def _resize(self, req: Request) -> dict[str, Any]:
        rows, cols = req.arg("rows"), req.arg("cols")
        if type(rows) is not int or type(cols) is not int or not (0 < rows < 65536 and 0 < cols < 65536):
            raise IdmError("exec.resize needs integer 'rows' and 'cols' in 1..65535", INVALID_ARGUMENT)
        self._find(req).resize(rows, cols)
        return {}

    def _signal(self, req: Request) -> dict[str, Any]:
        signo = req.arg("signal")
        if type(signo) is not int or signo not in signal.valid_signals():
            raise IdmError(f"exec.signal: {signo!r} is not a signal number", INVALID_ARGUMENT)
        os.kill(self._find(req).proc.pid, signo)
        return {}
