"""containerd's stdio for one process, bridged to the backend's byte streams.

containerd names a process's stdio in CreateTaskRequest / ExecProcessRequest as strings:

* `""`: not connected. Output is drained and dropped (the zone is never blocked); no stdin.
* a path to a FIFO, created by containerd's client (`cio`), which holds the other end. stdout/stderr are
  opened read-write: that never blocks and never fails with EPIPE while the client is away (runc's shim
  holds a read end for the same reason). stdin is read until its writers close it.
* a path to a regular file, or `file:///path` (stdout and stderr both, its directory created): appended to.
* `binary:///path/to/logger?key=value` (a logging binary, as `ctr run --log-uri` sends it, for stdout and
  stderr): started as containerd's shims start it — arguments `key value` from the query, environment
  CONTAINER_ID and CONTAINER_NAMESPACE only, the process's stdout on fd 3 and stderr on fd 4 (pipes), and
  fd 5 to close once it is ready, which the shim waits for (10 s). When the process is deleted the logger
  gets its pipes' EOF, then SIGTERM, then SIGKILL after 10 s.

With a terminal, stdout carries the terminal's output and there is no stderr. Stdin ends at the FIFO's
EOF (every writer closed it) or at CloseIO, whichever comes first; CloseIO first lets what the client
already wrote reach the process (up to `close_stdin`'s wait), like Kata's shim.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import stat
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

from shim.ttrpc.status import InvalidArgument
from shim.zone_backend import ByteSink, ByteSource, ProcessStreams

log = logging.getLogger("shim.stdio")

CHUNK = 32 * 1024


@dataclass(frozen=True)
class StdioPaths:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    binary: str = ""  # after resolved(): a logging binary's URI (then stdout and stderr are "")

    def resolved(self) -> StdioPaths:
        """Validate the forms containerd may send; `file://` URIs become plain paths."""
        stdout, stderr, binary = self.stdout, self.stderr, ""
        uri = urlparse(stdout) if "://" in stdout else None
        if uri is not None:
            if uri.scheme == "file":
                if not uri.path:
                    raise InvalidArgument(f"stdio: file URI without a path: {stdout!r}")
                os.makedirs(os.path.dirname(uri.path) or "/", mode=0o755, exist_ok=True)
                stdout = stderr = uri.path
            elif uri.scheme == "binary":
                if not uri.path.startswith("/"):
                    raise InvalidArgument(f"stdio: binary URI without an absolute path: {stdout!r}")
                if stderr not in ("", stdout):
                    raise InvalidArgument(f"stdio: stderr {stderr!r} differs from the logging binary {stdout!r}")
                binary, stdout, stderr = stdout, "", ""
            elif uri.scheme != "fifo":
                raise InvalidArgument(f"stdio: unknown STDIO scheme {uri.scheme!r} in {stdout!r}")
            else:
                stdout = uri.path
        for name, value in (("stdin", self.stdin), ("stderr", stderr)):
            if "://" in value and not value.startswith("fifo://"):
                raise InvalidArgument(f"stdio: {name} must be a FIFO or file path, not {value!r}")
        return StdioPaths(self.stdin.removeprefix("fifo://"), stdout, stderr.removeprefix("fifo://"),
                          self.terminal, binary)


class LoggingBinary:
    """A `binary://` logger: started with the process's stdout/stderr pipes, stopped after them."""

    READY_TIMEOUT = 10.0
    STOP_TIMEOUT = 10.0

    def __init__(self, uri: str, container_id: str, namespace: str) -> None:
        parsed = urlparse(uri)
        args = [parsed.path]
        for key, values in parse_qs(parsed.query, keep_blank_values=True).items():
            args += [key, values[0]]
        out_r, self.stdout_fd = os.pipe2(os.O_CLOEXEC)
        err_r, self.stderr_fd = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        # posix_spawn, not fork + preexec: the shim is multi-threaded. Copies above 9 first, so placing
        # them at 3, 4 and 5 never overwrites one still to be placed.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (out_r, err_r, ready_w)]
        actions = [(os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0) for n in (0, 1, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high, start=3)]
        try:
            self.pid = os.posix_spawn(parsed.path, args, {"CONTAINER_ID": container_id,
                                                          "CONTAINER_NAMESPACE": namespace},
                                      file_actions=actions, setsid=True)
        except OSError as e:
            for fd in (ready_r, self.stdout_fd, self.stderr_fd):
                os.close(fd)
            raise InvalidArgument(f"stdio: cannot start logging binary {parsed.path}: {e.strerror}") from e
        finally:
            for fd in (out_r, err_r, ready_w, *high):
                os.close(fd)
        self._exited = threading.Event()
        threading.Thread(target=self._reap, name=f"logger-{self.pid}", daemon=True).start()
        try:
            ready, _, _ = select.select([ready_r], [], [], self.READY_TIMEOUT)
        finally:
            os.close(ready_r)
        if not ready:
            for fd in (self.stdout_fd, self.stderr_fd):
                os.close(fd)
            self.stop()
            raise InvalidArgument(f"stdio: logging binary {parsed.path} was not ready within "
                                  f"{self.READY_TIMEOUT:.0f} s")

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self._exited.set()

    def stop(self) -> None:
        """SIGTERM (after the logger has had its pipes' EOF), SIGKILL after STOP_TIMEOUT; on a thread."""
        def stop() -> None:
            if self._exited.is_set():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._exited.wait(self.STOP_TIMEOUT):
                log.warning("logging binary %d ignored SIGTERM; killing it", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)

        threading.Thread(target=stop, name="logger-stop", daemon=True).start()


def _open_output(path: str) -> int:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if stat.S_ISFIFO(mode):
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ProcessIO:
    """The pumps of one process: stdout/stderr from the zone into containerd's FIFOs, stdin the other way."""

    def __init__(self, name: str, paths: StdioPaths, streams: ProcessStreams, container_id: str = "",
                 namespace: str = "") -> None:
        self.name = name
        self.paths = paths.resolved()
        self.logger: LoggingBinary | None = None
        self.streams = streams
        self._threads: list[threading.Thread] = []
        self._output_threads: list[threading.Thread] = []
        self._stdin_closed = threading.Event()
        self._stdin_done = threading.Event()
        self._stdin_lock = threading.Lock()
        self._stdin_sink_closed = False
        self._output_fds: list[int] = []
        # open the outputs now, so a bad path fails the Create/Exec call itself
        if self.paths.binary:
            self.logger = LoggingBinary(self.paths.binary, container_id or name, namespace)
            self._output_fds += [self.logger.stdout_fd, self.logger.stderr_fd]
            self._stdout_fd: int | None = self.logger.stdout_fd
            self._stderr_fd: int | None = self.logger.stderr_fd
            return
        self._stdout_fd = self._open_or_none(self.paths.stdout)
        self._stderr_fd = None if self.paths.terminal else self._open_or_none(self.paths.stderr)

    def _open_or_none(self, path: str) -> int | None:
        if not path:
            return None
        try:
            fd = _open_output(path)
        except OSError as e:
            self._close_fds()
            raise InvalidArgument(f"stdio of {self.name}: cannot open {path}: {e.strerror}") from e
        self._output_fds.append(fd)
        return fd

    def start(self) -> None:
        for label, source, fd in (("stdout", self.streams.stdout, self._stdout_fd),
                                  ("stderr", self.streams.stderr, self._stderr_fd)):
            if source is not None:
                thread = threading.Thread(target=self._pump_out, args=(label, source, fd),
                                          name=f"stdio-{label}-{self.name}", daemon=True)
                self._output_threads.append(thread)
            elif fd is not None:  # nothing will ever be written there (e.g. stderr with a terminal)
                self._close_output(fd)
        if self.streams.stdin is not None:
            if self.paths.stdin:
                self._threads.append(threading.Thread(target=self._pump_in, args=(self.streams.stdin,),
                                                      name=f"stdio-stdin-{self.name}", daemon=True))
            else:
                self._close_sink()
                self._stdin_done.set()
        else:
            self._stdin_done.set()
        for thread in [*self._output_threads, *self._threads]:
            thread.start()

    # output ------------------------------------------------------------------------------------------
    def _pump_out(self, label: str, source: ByteSource, fd: int | None) -> None:
        failed = False
        try:
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                if fd is None or failed:
                    continue  # nobody listens: keep draining so the zone is never blocked
                try:
                    _write_all(fd, data)
                except OSError as e:
                    failed = True
                    log.warning("%s %s: writing to %s failed (%s); dropping further output", self.name, label,
                                self.paths.stdout if label == "stdout" else self.paths.stderr, e)
        except Exception:
            log.exception("%s %s: reading from the zone failed", self.name, label)
        finally:
            with contextlib.suppress(Exception):
                source.close()
            if fd is not None:
                self._close_output(fd)

    def _close_output(self, fd: int) -> None:
        with contextlib.suppress(ValueError):
            self._output_fds.remove(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def wait_output(self, timeout: float) -> bool:
        """Wait until every output stream reached its end (so containerd has all output before the exit is
        reported). False if it did not within `timeout` (e.g. a daemonised child still holds stdout)."""
        deadline = time.monotonic() + timeout
        for thread in self._output_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
        return True

    # input -------------------------------------------------------------------------------------------
    def _pump_in(self, sink: ByteSink) -> None:
        fd = -1
        try:
            fd = os.open(self.paths.stdin, os.O_RDONLY | os.O_CLOEXEC)  # waits for containerd's writer
            while not self._stdin_closed.is_set():
                data = os.read(fd, CHUNK)
                if not data or self._stdin_closed.is_set():
                    break
                sink.write(data)
        except BrokenPipeError:
            pass  # the process no longer reads its input
        except OSError as e:
            if e.errno != errno.EBADF:
                log.warning("%s stdin: %s", self.name, e)
        except Exception:
            log.exception("%s stdin: writing to the zone failed", self.name)
        finally:
            if fd >= 0:
                os.close(fd)
            self._close_sink()
            self._stdin_done.set()

    def _close_sink(self) -> None:
        with self._stdin_lock:
            if self._stdin_sink_closed or self.streams.stdin is None:
                return
            self._stdin_sink_closed = True
        try:
            self.streams.stdin.close()
        except Exception as e:
            log.warning("%s stdin: closing: %s", self.name, e)

    def close_stdin(self, wait: float = 2.0) -> None:
        """containerd's CloseIO(stdin): what the client wrote gets through (up to `wait` s), then EOF."""
        if self._stdin_done.wait(wait):
            return
        self._stdin_closed.set()
        self._close_sink()
        self._unblock_stdin_reader()

    def _unblock_stdin_reader(self) -> None:
        """Wake a pump blocked opening or reading the stdin FIFO: become a writer for a moment."""
        if not self.paths.stdin:
            return
        with contextlib.suppress(OSError):
            os.close(os.open(self.paths.stdin, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))

    # teardown ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop bridging (process deleted): close stdin, stop reading output, release descriptors."""
        self._stdin_closed.set()
        self._close_sink()
        self._unblock_stdin_reader()
        for source in (self.streams.stdout, self.streams.stderr):
            if source is not None:
                with contextlib.suppress(Exception):
                    source.close()
        if self.logger is not None:
            logger, self.logger = self.logger, None

            def stop_logger() -> None:
                self.wait_output(5.0)  # the logger gets its pipes' EOF first, then SIGTERM
                for fd in list(self._output_fds):
                    self._close_output(fd)
                logger.stop()

            threading.Thread(target=stop_logger, name=f"logger-{self.name}", daemon=True).start()

    def _close_fds(self) -> None:
        for fd in self._output_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._output_fds.clear()
