"""The zone's containers as PID 1 sees them: Styrolite containers plus their output, exit and waiters.

Each container's stdout/stderr are pipes (or its pty) read by the supervisor loop into a bounded ring;
its exit, learned from the reaper through ``rt.child_exited``, becomes a ``container.exit`` event, wakes
the ``container.wait`` callers and, for the zone's main container, may power the zone off. A pod's
container may also keep its output for the host's attach stream (``stdio.AttachBuffer``: the pipes are
read only while there is room) and take stdin from it; its OOM kills become ``container.oom`` events.
Styrolite is imported lazily, the first time a container is created.
"""

from __future__ import annotations

import contextlib
import os
import signal as signal_module
import time
from collections.abc import Callable

from styrolite.errors import NotFoundError, StateError, describe
from styrolite.exitstatus import exit_code_of
from styrolite.records import field, record
from zoneinit.config.plan import ContainerPlan
from zoneinit.console import ConsoleLog
from zoneinit.containers.output import OutputRing
from zoneinit.supervisor.loop import Supervisor

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any, Protocol

if TYPE_CHECKING:
    from zoneinit.containers.oom import OomWatcher
    from zoneinit.containers.stdio import AttachBuffer, StdinPipe

READ_CHUNK = 64 * 1024
EXIT_CREATE_FAILED = 125   # docker's convention: the container could not be created/started

if TYPE_CHECKING:  # for annotations only: PID 1 creates no class it does not use
    from styrolite.api import Stdio
    from styrolite.lifecycle.create import Created
    from styrolite.lifecycle.exec import Executed
    from styrolite.spec.model import Process

    class ContainerRuntime(Protocol):
        """What PID 1 uses of the OCI runtime: ``styrolite.api.Runtime`` (a fork/exec fake in the tests)."""

        def create(self, container_id: str, bundle: str, *, stdio: Stdio | None = None,
                   terminal: bool = False) -> Created: ...

        def start(self, container_id: str) -> None: ...

        def exec(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                 terminal: bool = False) -> Executed: ...

        def signal(self, container_id: str, signum: int, all_processes: bool = False) -> None: ...

        def stats(self, container_id: str) -> dict: ...

        def pause(self, container_id: str) -> None: ...

        def resume(self, container_id: str) -> None: ...

        def update(self, container_id: str, resources: Any) -> None: ...

        def cgroup_directory(self, container_id: str) -> str | None: ...

        def delete(self, container_id: str, force: bool = False) -> None: ...

        def child_exited(self, pid: int, wait_status: int) -> str | None: ...

        def exit_code(self, container_id: str) -> int | None: ...

EventSink = Callable[[str, "dict[str, Any]"], None]


@record
class ManagedContainer:
    plan: ContainerPlan
    bundle: str = ""
    pid: int = 0
    status: str = "creating"     # creating, created, running, paused, stopped, failed
    exit_code: int | None = None
    error: str | None = None
    output: OutputRing = field(default_factory=OutputRing)
    stdin: StdinPipe | None = None
    console_fd: int | None = None
    output_fds: dict[int, str] = field(default_factory=dict)   # fd -> "stdout" / "stderr"
    attach: AttachBuffer | None = None   # output kept for the host's attach stream
    waiting_fds: set[int] = field(default_factory=set)   # output pipes not read while the attach buffer is full
    waiters: list[Callable[[ManagedContainer], None]] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> str:
        return self.plan.id

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "pid": self.pid, "main": self.plan.main,
            "exit_code": self.exit_code, "error": self.error, "image": self.plan.image, "args": self.plan.args,
            "terminal": self.plan.terminal, "created": self.created_at, "started": self.started_at,
            "finished": self.finished_at, "output_bytes": self.output.total,
        }


class ContainerManager:
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        prepare_bundle: Callable[[ContainerPlan], str],
        remove_bundle: Callable[[str], None] = lambda _cid: None,
        check: Callable[[ContainerPlan], None] = lambda _plan: None,
        runtime_factory: Callable[[], ContainerRuntime] | None = None,
        emit: EventSink = lambda _type, _payload: None,
        log: ConsoleLog | None = None,
        echo_output: bool = False,
    ) -> None:
        self.supervisor = supervisor
        self.prepare_bundle = prepare_bundle
        self.remove_bundle = remove_bundle
        self.check = check   # refuses a plan before anything of it exists (a pod's OCI config...)
        self._oom: OomWatcher | None = None
        self._runtime_factory = runtime_factory or _default_runtime
        self._runtime: ContainerRuntime | None = None
        self.emit = emit
        self.log = log or supervisor.log
        self.echo_output = echo_output
        self.containers: dict[str, ManagedContainer] = {}
        self.exec_exits: dict[int, Callable[[int], None]] = {}   # exec pid -> callback(wait status)
        self.on_main_exit: list[Callable[[ManagedContainer], None]] = []
        supervisor.on_child_exit.append(self.child_exited)

    @property
    def runtime(self) -> ContainerRuntime:
        if self._runtime is None:
            self._runtime = self._runtime_factory()
        return self._runtime

    # --- queries ---------------------------------------------------------------------------------

    def get(self, container_id: str) -> ManagedContainer:
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFoundError(f"no container {container_id!r} in this zone") from None

    def running(self) -> list[str]:
        return [c.id for c in self.containers.values() if c.status in ("created", "running", "paused")]

    def using_image(self, image: str) -> list[str]:
        """The containers whose root is disk ``image`` (until they are deleted, their overlay holds it)."""
        return [c.id for c in self.containers.values() if c.plan.image == image]

    def list(self) -> list[dict[str, Any]]:
        return [c.summary() for c in self.containers.values()]

    # --- lifecycle -------------------------------------------------------------------------------

    def create(self, plan: ContainerPlan) -> ManagedContainer:
        if plan.id in self.containers:
            raise StateError(f"container {plan.id!r} already exists in this zone")
        self.check(plan)
        container = ManagedContainer(plan, created_at=time.time())
        self.containers[plan.id] = container
        try:
            container.bundle = self.prepare_bundle(plan)
            self._create_in_runtime(container)
        except Exception as e:
            self._failed(container, e)
            raise
        container.status = "created"
        return container

    def _create_in_runtime(self, container: ManagedContainer) -> None:
        from styrolite.api import Stdio
        from zoneinit.containers.stdio import StdinPipe

        plan = container.plan
        if plan.attach:
            self._attach_buffer(container, ("stdout",) if plan.terminal else ("stdout", "stderr"))
        child_fds: list[int] = []
        try:
            if plan.terminal:
                stdio = None
            else:
                if plan.stdin:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    container.stdin = StdinPipe(self.supervisor, in_w, terminal=False)
                else:
                    in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                child_fds = [in_r, out_w, err_w]
                stdio = Stdio(stdin=in_r, stdout=out_w, stderr=err_w)
                self._watch_output(container, out_r, "stdout")
                self._watch_output(container, err_r, "stderr")
            created = self.runtime.create(plan.id, container.bundle, stdio=stdio, terminal=plan.terminal)
        finally:
            for fd in child_fds:
                os.close(fd)
        container.pid = created.state.pid
        if created.console_fd is not None:
            container.console_fd = created.console_fd
            if plan.stdin:
                container.stdin = StdinPipe(self.supervisor, os.dup(created.console_fd), terminal=True)
            self._watch_output(container, created.console_fd, "stdout")
        if plan.oci is not None or plan.attach:   # a pod's container: report its OOM kills
            self._watch_oom(container)

    def _attach_buffer(self, container: ManagedContainer, channels: tuple[str, ...]) -> AttachBuffer:
        from zoneinit.containers.stdio import AttachBuffer

        container.attach = AttachBuffer(channels)
        container.attach.on_room = lambda: self._read_again(container)
        return container.attach

    def attach_output(self, container_id: str) -> ManagedContainer:
        """The container with an attach buffer: from its first byte if it was created with ``attach``, else
        from now on."""
        container = self.get(container_id)
        if container.attach is None:
            self._attach_buffer(container, ("stdout",) if container.console_fd is not None or
                                container.plan.terminal else ("stdout", "stderr"))
            if container.status in ("stopped", "failed") or not container.output_fds:
                for channel in container.attach.channels:
                    container.attach.close(channel)
        return container

    def start(self, container_id: str) -> ManagedContainer:
        container = self.get(container_id)
        if container.status != "created":
            raise StateError(f"container {container_id!r} is {container.status}, not created")
        try:
            self.runtime.start(container_id)
        except Exception as e:
            self._failed(container, e)
            raise
        container.status = "running"
        container.started_at = time.time()
        self.emit("container.start", {"id": container_id, "pid": container.pid})
        return container

    def launch(self, plan: ContainerPlan) -> ManagedContainer | None:
        """Create and start; a failure is logged and reported (the zone goes on). Used at boot."""
        try:
            self.create(plan)
            return self.start(plan.id)
        except Exception as e:
            known = self.containers.get(plan.id)
            if known is None:   # refused before it existed: a boot container still gets its failed exit
                known = self.containers[plan.id] = ManagedContainer(plan, created_at=time.time())
                self._failed(known, e)
            elif known.status != "failed":  # else _failed has reported it already
                self.log.error(f"container {plan.id}", e)
            return None

    def signal(self, container_id: str, signum: int, all_processes: bool = False) -> None:
        container = self.get(container_id)
        if container.status not in ("created", "running", "paused"):
            raise StateError(f"container {container_id!r} is {container.status}: nothing to signal")
        self.runtime.signal(container_id, signum, all_processes=all_processes)

    def wait(self, container_id: str, callback: Callable[[ManagedContainer], None]) -> None:
        """``callback(container)`` once it has stopped (at once if it already has)."""
        container = self.get(container_id)
        if container.status in ("stopped", "failed"):
            callback(container)
        else:
            container.waiters.append(callback)

    def pause(self, container_id: str) -> ManagedContainer:
        container = self.get(container_id)
        if container.status != "running":
            raise StateError(f"container {container_id!r} is {container.status}: only a running one can be paused")
        self.runtime.pause(container_id)
        container.status = "paused"
        return container

    def resume(self, container_id: str) -> ManagedContainer:
        container = self.get(container_id)
        if container.status != "paused":
            raise StateError(f"container {container_id!r} is {container.status}, not paused")
        self.runtime.resume(container_id)
        container.status = "running"
        return container

    def update(self, container_id: str, resources: Any) -> ManagedContainer:
        container = self.get(container_id)
        if container.status not in ("created", "running", "paused"):
            raise StateError(f"container {container_id!r} is {container.status}: its cgroup is gone")
        self.runtime.update(container_id, resources)
        return container

    def stats(self, container_id: str) -> dict[str, Any]:
        """Styrolite's cgroup stats plus memory.stat's working-set figures (CRI's working set: usage minus
        inactive file pages)."""
        container = self.get(container_id)
        if container.status in ("stopped", "failed", "creating"):
            raise StateError(f"container {container_id!r} is {container.status}: it has no cgroup to measure")
        stats = self.runtime.stats(container_id)
        directory = self.runtime.cgroup_directory(container_id)
        if directory is not None:
            from zoneinit.metrics import memory_stat

            memory = stats.setdefault("memory", {})
            extra = memory_stat(directory)
            memory.update(extra)
            usage = memory.get("usage")
            if isinstance(usage, int):
                memory["working_set"] = max(usage - extra.get("inactive_file", 0), 0)
        return stats

    def delete(self, container_id: str, force: bool = False) -> None:
        container = self.get(container_id)
        if container.status in ("created", "running", "paused") and not force:
            raise StateError(f"container {container_id!r} is {container.status}: stop it first or use force")
        if container.status != "failed":
            try:
                self.runtime.delete(container_id, force=force)
            except NotFoundError:
                pass  # unknown to the runtime already: nothing to remove there
            except Exception as e:  # reported; the zone forgets the container all the same
                self.log.error(f"delete container {container_id} from the runtime", e)
        self._close_fds(container)
        if self._oom is not None:
            self._oom.unwatch(container_id)
        try:
            self.remove_bundle(container_id)
        except Exception as e:
            self.log.error(f"remove the bundle of container {container_id}", e)
        del self.containers[container_id]

    # --- exits -----------------------------------------------------------------------------------

    def child_exited(self, pid: int, status: int) -> None:
        """Every reaped child comes here (supervisor callback)."""
        exec_callback = self.exec_exits.pop(pid, None)
        owner = None
        if self._runtime is not None:
            try:
                owner = self._runtime.child_exited(pid, status)
            except Exception as e:  # e.g. its state file could not be written; the exit itself is known
                self.log.error(f"record the exit of pid {pid}", e)
        if exec_callback is not None:
            exec_callback(status)
            return
        container = self.containers.get(owner) if owner else None
        if container is None:
            container = next((c for c in self.containers.values() if c.pid == pid and c.status != "stopped"), None)
        if container is None:
            return  # an orphan or a helper process: reaped, nothing else to do
        code = self._runtime.exit_code(container.id) if self._runtime is not None else None
        self._stopped(container, exit_code_of(status) if code is None else code, status)

    def _stopped(self, container: ManagedContainer, code: int, status: int | None) -> None:
        for fd in list(container.output_fds):
            self._drain(container, fd, everything=True)
        if self._oom is not None:
            self._oom.check(container.id)   # an OOM kill of its init is reported before its exit
        container.status = "stopped"
        container.exit_code = code
        container.finished_at = time.time()
        payload: dict[str, Any] = {"id": container.id, "exit_code": code, "main": container.plan.main}
        if status is not None and os.WIFSIGNALED(status):
            payload["signal"] = signal_module.Signals(os.WTERMSIG(status)).name
        self.log.info(f"container {container.id} exited with {code}")
        self.emit("container.exit", payload)
        self._notify(container)
        if container.attach is not None and container.attach.on_data is not None:
            container.attach.on_data()   # the attached stream may end now

    def _failed(self, container: ManagedContainer, error: BaseException) -> None:
        container.status = "failed"
        container.error = describe(error)
        self.log.error(f"container {container.id} failed", error)
        container.exit_code = EXIT_CREATE_FAILED
        container.finished_at = time.time()
        self._close_fds(container)
        self.emit("container.exit", {"id": container.id, "exit_code": EXIT_CREATE_FAILED,
                                     "main": container.plan.main, "error": container.error})
        self._notify(container)

    def _notify(self, container: ManagedContainer) -> None:
        waiters, container.waiters = container.waiters, []
        for waiter in waiters:
            try:
                waiter(container)
            except Exception as e:
                self.log.error(f"waiter of container {container.id}", e)
        if container.plan.main:
            for hook in self.on_main_exit:
                hook(container)

    # --- output ----------------------------------------------------------------------------------

    def _watch_output(self, container: ManagedContainer, fd: int, channel: str) -> None:
        os.set_blocking(fd, False)
        container.output_fds[fd] = channel
        self.supervisor.add_reader(fd, lambda ready_fd: self._drain(container, ready_fd))

    def _drain(self, container: ManagedContainer, fd: int, everything: bool = False) -> None:
        """Read what the pipe holds into the ring (and the attach buffer: while it has room, unless the
        container has stopped and ``everything`` it wrote is wanted now)."""
        attach = container.attach
        while fd in container.output_fds:
            channel = container.output_fds[fd]
            if attach is not None and attach.full(channel) and not everything:
                self.supervisor.remove_reader(fd)   # the container waits in write(2) until the host takes some
                container.waiting_fds.add(fd)
                return
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:  # EIO: a pty whose other side is gone
                data = b""
            if not data:
                self._close_output(container, fd)
                return
            container.output.append(data, channel)
            if attach is not None:
                attach.feed(channel, data)
            if self.echo_output:
                with contextlib.suppress(OSError):
                    os.write(2, data)

    def _read_again(self, container: ManagedContainer) -> None:
        """The attach buffer has room again: read the pipes it made wait."""
        waiting, container.waiting_fds = container.waiting_fds, set()
        for fd in waiting:
            if fd in container.output_fds:
                self.supervisor.add_reader(fd, lambda ready_fd: self._drain(container, ready_fd))

    def _close_output(self, container: ManagedContainer, fd: int) -> None:
        self.supervisor.remove_reader(fd)
        channel = container.output_fds.pop(fd, None)
        container.waiting_fds.discard(fd)
        if fd == container.console_fd:
            container.console_fd = None
        with contextlib.suppress(OSError):
            os.close(fd)
        if container.attach is not None and channel is not None:
            container.attach.close(channel)

    def _close_fds(self, container: ManagedContainer) -> None:
        for fd in list(container.output_fds):
            self._close_output(container, fd)
        if container.stdin is not None:
            container.stdin.close()
            container.stdin = None
        if container.console_fd is not None:
            with contextlib.suppress(OSError):
                os.close(container.console_fd)
        container.console_fd = None

    # --- OOM kills -------------------------------------------------------------------------------

    def _watch_oom(self, container: ManagedContainer) -> None:
        try:
            directory = self.runtime.cgroup_directory(container.id)
        except Exception as e:   # no cgroup to watch is not a reason to fail the container
            self.log.error(f"watch container {container.id} for OOM kills", e)
            return
        if self._oom is None:
            from zoneinit.containers.oom import OomWatcher

            self._oom = OomWatcher(self.supervisor, self._oom_killed)
        self._oom.watch(container.id, directory)

    def _oom_killed(self, container_id: str, count: int) -> None:
        self.log.info(f"container {container_id}: the kernel killed a process for lack of memory ({count} so far)")
        self.emit("container.oom", {"id": container_id, "oom_kills": count})


def _default_runtime() -> ContainerRuntime:
    from styrolite.api import Runtime

    return Runtime(state_root="/run/styrolite")
