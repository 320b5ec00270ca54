"""The backend seam: everything the Task service needs from the pod's zone, as one Protocol.

The shim speaks containerd on one side (ttrpc, FIFOs, events) and this interface on the other. The real
implementation, `shim.zone.backend`, boots the pod's zone and drives it over IDM (`container.create`/
`attach`/`start`/`signal`/`delete`, `exec` streams with credit, `container.stats`...); the containerd-side
tests use a recording double. The Task service holds one backend per shim, i.e. per pod, and calls it from
many threads: an implementation is thread-safe.

Errors: raise the `shim.ttrpc.status` errors that say what went wrong — NotFound (no such container or
process), AlreadyExists, InvalidArgument (a spec the zone cannot honour), FailedPrecondition (wrong state),
Unavailable (the zone is gone or not booted), Unimplemented. Any other exception reaches containerd as
Internal with its text.

Processes are named by (container_id, exec_id); exec_id "" is the container's own (init) process. Pids a
backend returns are the zone's (for logs); containerd is shown the VMM's pid, which start_zone returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class ByteSource(Protocol):
    """Output of a process in the zone (stdout, stderr, or a terminal's output)."""

    def read(self, max_bytes: int) -> bytes:
        """Block until some bytes are available; b"" once the stream has ended."""
        ...

    def close(self) -> None:
        """The shim no longer wants the data (the zone side may discard it)."""
        ...


class ByteSink(Protocol):
    """Input of a process in the zone (stdin, or a terminal's input)."""

    def write(self, data: bytes) -> None:
        """Deliver all of `data`; block while the zone grants no credit. BrokenPipeError if the process
        no longer reads its input."""
        ...

    def close(self) -> None:
        """End of input (EOF for the process; ^D on a terminal)."""
        ...


@dataclass
class ProcessStreams:
    """A process's stdio as the backend offers it. With a terminal there is no stderr."""

    stdin: ByteSink | None = None
    stdout: ByteSource | None = None
    stderr: ByteSource | None = None


@dataclass(frozen=True)
class Mount:
    """One snapshot mount of a container's root filesystem, as containerd hands it over."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxSpec:
    """What the zone is booted from: the pod sandbox's bundle (its config.json is the pause container's
    OCI spec, with the pod's annotations and resources)."""

    sandbox_id: str
    bundle: str
    spec: dict[str, Any]
    namespace: str
    config_path: str = ""  # the runtime handler's options.ConfigPath (runtimeoptions.v1.Options), if any


@dataclass(frozen=True)
class ContainerSpec:
    container_id: str
    bundle: str
    spec: dict[str, Any]  # the bundle's config.json (OCI runtime spec)
    rootfs: tuple[Mount, ...]
    terminal: bool
    stdin: bool  # the process's stdin is connected (containerd named a stdin FIFO)
    is_sandbox: bool  # the pod's sandbox (pause) container, which booted the zone


@dataclass(frozen=True)
class ExecSpec:
    container_id: str
    exec_id: str
    process: dict[str, Any]  # OCI runtime spec "process" object
    terminal: bool
    stdin: bool


@dataclass
class ContainerStats:
    """One container's resource usage (cgroup v2 names; None where the zone did not report a value)."""

    cgroup_version: int = 2
    cpu_usage_usec: int | None = None
    cpu_user_usec: int | None = None
    cpu_system_usec: int | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_usec: int | None = None
    memory_usage: int | None = None
    memory_limit: int | None = None
    memory_max_usage: int | None = None
    memory_anon: int | None = None
    memory_file: int | None = None
    memory_inactive_file: int | None = None
    memory_active_file: int | None = None
    memory_pgfault: int | None = None
    memory_pgmajfault: int | None = None
    memory_oom_kills: int | None = None
    pids_current: int | None = None
    pids_limit: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    io_read_ops: int | None = None
    io_write_ops: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BackendEvents(Protocol):
    """What the backend reports on its own, from any thread, in the order it happened."""

    def process_exited(self, container_id: str, exec_id: str, exit_status: int, exited_at: datetime) -> None:
        """A process ended. exit_status is 128+signo for a signal death (as containerd expects)."""
        ...

    def oom(self, container_id: str) -> None:
        """The zone's kernel OOM-killed a process of this container."""
        ...

    def zone_stopped(self, reason: str) -> None:
        """The zone is gone (powered off, crashed, VMM killed): every process in it has ended. The
        backend reports process_exited for each process it knew first, where it can."""
        ...


class ZoneBackend(Protocol):
    def start_zone(self, sandbox: SandboxSpec, events: BackendEvents) -> int:
        """Boot the pod's zone and keep its link; return the pid of the process that runs it on this host
        (the VMM), which containerd sees as the sandbox's task pid."""
        ...

    def stop_zone(self, timeout: float) -> None:
        """Shut the zone down (clean power-off, then kill after `timeout` s) and release everything it
        held on the host (VMM, disks, sockets, taps). Idempotent."""
        ...

    def create_container(self, spec: ContainerSpec) -> tuple[int, ProcessStreams]:
        """Create (not start) a container in the zone; return its pid and its stdio streams."""
        ...

    def start_container(self, container_id: str) -> int:
        """Start a created container; return its pid."""
        ...

    def delete_container(self, container_id: str) -> None:
        """Remove a stopped (or never started) container and what it held in the zone."""
        ...

    def exec_process(self, spec: ExecSpec) -> ProcessStreams:
        """Prepare an exec (containerd's Exec); it runs at start_exec. Streams are usable from here on."""
        ...

    def start_exec(self, container_id: str, exec_id: str) -> int:
        """Run a prepared exec; return its pid."""
        ...

    def delete_exec(self, container_id: str, exec_id: str) -> None:
        """Forget an exec (exited, or never started)."""
        ...

    def signal(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        """Send `signal` to a process (`all`: to every process of the container). NotFound if it has
        already exited."""
        ...

    def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        ...

    def stats(self, container_id: str) -> ContainerStats:
        ...

    def pause(self, container_id: str) -> None:
        ...

    def resume(self, container_id: str) -> None:
        ...

    def update(self, container_id: str, resources: dict[str, Any], annotations: dict[str, str]) -> None:
        """Apply new OCI linux.resources (the JSON containerd sends) to a running container."""
        ...

    def cleanup_after_crash(self, bundle: str, container_id: str) -> None:
        """Called by `containerd-shim-zone-v2 delete` in a fresh process after the shim died: release what
        the dead shim held for this container or pod on the host (VMM, disks, taps). Idempotent."""
        ...
