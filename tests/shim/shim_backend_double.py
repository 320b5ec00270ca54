"""A ZoneBackend double for the shim's tests: it records every call and runs each container's process on
this host (no zone, no isolation) so stdio, exits, signals and terminals are real. Tests only.

The "zone" is a `sleep` process whose pid stands in for the VMM's; `crash_zone()` kills it and everything
as a dying VMM would. containerd-driven tests load it with ZONE_SHIM_BACKEND=shim_backend_double:create.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
from datetime import UTC, datetime
from typing import Any

from shim.ttrpc.status import FailedPrecondition, NotFound
from shim.zone_backend import (
    BackendEvents,
    ContainerSpec,
    ContainerStats,
    ExecSpec,
    ProcessStreams,
    SandboxSpec,
)


class FdSource:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EBADF):  # a pty whose other side is closed; or closed by us
                return b""
            raise

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = -1


class FdSink:
    def __init__(self, fd: int, eof: bytes | None = None) -> None:
        self.fd = fd
        self.eof = eof  # a terminal gets ^D instead of a close
        self.received = bytearray()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.received += data

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.eof is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, self.eof)
            return
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


class LocalProcess:
    def __init__(self, container_id: str, exec_id: str, process: dict[str, Any], terminal: bool,
                 stdin: bool) -> None:
        self.container_id, self.exec_id = container_id, exec_id
        self.args = list(process.get("args") or [])
        self.env = dict(item.split("=", 1) for item in process.get("env") or [] if "=" in item)
        self.terminal = terminal
        self.popen: subprocess.Popen | None = None
        self.exit_status: int | None = None
        self.paused = False
        self._child_fds: list[int] = []
        if terminal:
            master, slave = pty.openpty()
            self.master = master
            self.streams = ProcessStreams(stdin=FdSink(os.dup(master), eof=b"\x04"), stdout=FdSource(master))
            self._stdio = (slave, slave, slave)
            self._child_fds = [slave]
        else:
            self.master = -1
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            in_r, in_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), -1)
            self.streams = ProcessStreams(stdin=FdSink(in_w) if in_w >= 0 else None, stdout=FdSource(out_r),
                                          stderr=FdSource(err_r))
            self._stdio = (in_r, out_w, err_w)
            self._child_fds = [in_r, out_w, err_w]

    def start(self, on_exit: Any) -> int:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        self.popen = subprocess.Popen(self.args, stdin=self._stdio[0], stdout=self._stdio[1], stderr=self._stdio[2],
                                      env=env, start_new_session=True)
        for fd in self._child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        threading.Thread(target=self._reap, args=(on_exit,), daemon=True).start()
        return self.popen.pid

    def _reap(self, on_exit: Any) -> None:
        assert self.popen is not None
        code = self.popen.wait()
        self.exit_status = 128 - code if code < 0 else code
        on_exit(self.container_id, self.exec_id, self.exit_status, datetime.now(UTC))

    def kill(self, signo: int, all: bool = False) -> None:
        if self.popen is None:
            raise FailedPrecondition(f"{self.container_id}/{self.exec_id} is not started")
        if self.exit_status is not None:
            raise NotFound("process already finished")
        try:
            if all:
                os.killpg(self.popen.pid, signo)
            else:
                os.kill(self.popen.pid, signo)
        except ProcessLookupError as e:
            raise NotFound("process already finished") from e


class LocalBackend:
    """Records calls in `calls`; runs processes on the host."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.processes: dict[tuple[str, str], LocalProcess] = {}
        self.events: BackendEvents | None = None
        self.zone: subprocess.Popen | None = None
        self.sandbox: SandboxSpec | None = None
        self.fail: dict[str, Exception] = {}  # method name -> exception to raise
        self._lock = threading.Lock()

    def _record(self, name: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.calls]

    def _get(self, container_id: str, exec_id: str = "") -> LocalProcess:
        process = self.processes.get((container_id, exec_id))
        if process is None:
            raise NotFound(f"no process {container_id}/{exec_id}")
        return process

    def _exited(self, container_id: str, exec_id: str, status: int, at: datetime) -> None:
        if self.events is not None:
            self.events.process_exited(container_id, exec_id, status, at)

    # ZoneBackend -------------------------------------------------------------------------------------
    def start_zone(self, sandbox: SandboxSpec, events: BackendEvents) -> int:
        self._record("start_zone", sandbox.sandbox_id)
        self.sandbox, self.events = sandbox, events
        self.zone = subprocess.Popen(["sleep", "3600"], start_new_session=True)
        return self.zone.pid

    def stop_zone(self, timeout: float) -> None:
        self._record("stop_zone", timeout)
        self._kill_everything()

    def _kill_everything(self) -> None:
        for process in list(self.processes.values()):
            if process.popen is not None and process.exit_status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
        if self.zone is not None and self.zone.poll() is None:
            self.zone.kill()
            self.zone.wait()

    def crash_zone(self) -> None:
        """The VMM dies: processes die with it, unreported; the zone reports itself stopped."""
        events, self.events = self.events, None
        self._kill_everything()
        if events is not None:
            events.zone_stopped("the VMM died")

    def create_container(self, spec: ContainerSpec) -> tuple[int, ProcessStreams]:
        self._record("create_container", spec.container_id)
        process = LocalProcess(spec.container_id, "", spec.spec.get("process") or {}, spec.terminal, spec.stdin)
        self.processes[(spec.container_id, "")] = process
        return 0, process.streams

    def start_container(self, container_id: str) -> int:
        self._record("start_container", container_id)
        return self._get(container_id).start(self._exited)

    def delete_container(self, container_id: str) -> None:
        self._record("delete_container", container_id)
        self.processes.pop((container_id, ""), None)

    def exec_process(self, spec: ExecSpec) -> ProcessStreams:
        self._record("exec_process", spec.container_id, spec.exec_id)
        process = LocalProcess(spec.container_id, spec.exec_id, spec.process, spec.terminal, spec.stdin)
        self.processes[(spec.container_id, spec.exec_id)] = process
        return process.streams

    def start_exec(self, container_id: str, exec_id: str) -> int:
        self._record("start_exec", container_id, exec_id)
        return self._get(container_id, exec_id).start(self._exited)

    def delete_exec(self, container_id: str, exec_id: str) -> None:
        self._record("delete_exec", container_id, exec_id)
        self.processes.pop((container_id, exec_id), None)

    def signal(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        self._record("signal", container_id, exec_id, signal, all)
        self._get(container_id, exec_id).kill(signal, all)

    def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        self._record("resize_pty", container_id, exec_id, width, height)
        process = self._get(container_id, exec_id)
        fcntl.ioctl(process.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def stats(self, container_id: str) -> ContainerStats:
        self._record("stats", container_id)
        process = self._get(container_id)
        if process.popen is None:
            return ContainerStats()
        with open(f"/proc/{process.popen.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        user, system = int(fields[11]) * 1_000_000 // ticks, int(fields[12]) * 1_000_000 // ticks
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return ContainerStats(cpu_usage_usec=user + system, cpu_user_usec=user, cpu_system_usec=system,
                              memory_usage=rss, memory_anon=rss, memory_inactive_file=0, pids_current=1)

    def pause(self, container_id: str) -> None:
        self._record("pause", container_id)
        self._get(container_id).kill(signal.SIGSTOP, all=True)

    def resume(self, container_id: str) -> None:
        self._record("resume", container_id)
        self._get(container_id).kill(signal.SIGCONT, all=True)

    def update(self, container_id: str, resources: dict[str, Any], annotations: dict[str, str]) -> None:
        self._record("update", container_id, resources, annotations)

    def cleanup_after_crash(self, bundle: str, container_id: str) -> None:
        self._record("cleanup_after_crash", bundle, container_id)


def create() -> LocalBackend:
    return LocalBackend()
