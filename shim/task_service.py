"""The shim's Task service (containerd.task.v2.Task), for one pod, over the backend seam.

One shim serves one pod: containers whose bundles carry the same `io.kubernetes.cri.sandbox-id` share it,
and they share one zone. How each call maps onto the backend (`shim.zone_backend.ZoneBackend`):

| Task call | sandbox task (container-type "sandbox") | a container | an exec |
| --- | --- | --- | --- |
| Create | `start_zone`; pid: the VMM's; no process in the zone | zone booted if none (1); `create_container` | — |
| Start | nothing more to do: the zone runs | `start_container` | `start_exec` |
| Exec | refused (FailedPrecondition): no process to exec in | `exec_process` | — |
| Kill | SIGTERM/INT/HUP/QUIT: clean zone stop; SIGKILL: the same within 2 s; others: no-op | `signal` | `signal` |
| Wait | until the zone stopped | until the exit the backend reported | same |
| Delete | forget the task (the zone goes at Shutdown) | `delete_container` | `delete_exec` |
| Pause/Resume | refused (FailedPrecondition) | `pause`/`resume` | — |
| Stats / Update | `stats`/`update` of the sandbox id (pod-level) | `stats`/`update` | — |
| Pids | the VMM's pid | the VMM's pid (2) | — |
| ResizePty / CloseIO | — | `resize_pty` / stdin EOF | same |
| Shutdown | once no task is left: `stop_zone`, then the shim exits | | |

(1) a container without a pod (`ctr run`) boots a zone of its own. Its stdio is bridged (`shim.stdio`).
(2) Every pid containerd sees (Create, Start, State, Pids, events) is the VMM's, as in Kata: a pid inside
the zone means nothing on the host and may name an unrelated host process. Zone pids go to the log.

Events, in call order (a process's TaskExit never precedes its TaskStart/TaskExecStarted): TaskCreate,
TaskStart, TaskExecAdded, TaskExecStarted, TaskExit, TaskDelete, TaskPaused, TaskResumed, TaskOOM.
Errors use containerd's kinds: NotFound for an unknown container/exec (and Kill of a finished process, as
runc's shim answers), AlreadyExists, InvalidArgument, FailedPrecondition for a call in the wrong state,
Unimplemented for checkpoints, Unavailable once the zone has stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal as signals
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import empty_pb2

from shim import bundle
from shim.bundle import read_spec
from shim.events import EventSink, timestamp
from shim.metrics import metrics_any
from shim.process import Container, Process, Status
from shim.protos import events_pb2, shim_pb2, task_pb2
from shim.runtime_options import config_path
from shim.stdio import ProcessIO, StdioPaths
from shim.ttrpc.server import CallContext
from shim.ttrpc.status import (
    AlreadyExists,
    Code,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    RpcError,
    Unavailable,
    Unimplemented,
)
from shim.zone_backend import ContainerSpec, ExecSpec, Mount, SandboxSpec, ZoneBackend

log = logging.getLogger("shim.task")

VERSION = "containerd-shim-zone-v2 0.1.0"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
IGNORED_BY_DEFAULT = {signals.SIGCHLD, signals.SIGCONT, signals.SIGURG, signals.SIGWINCH}
ZONE_STOP_SIGNALS = {signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT, signals.SIGKILL}
# SIGKILL to the sandbox (what CRI's StopPodSandbox sends, after it stopped the pod's containers): the zone
# gets this long to power off cleanly before its VMM is killed
KILL_GRACE = 2.0
EMPTY = empty_pb2.Empty


def _json_any(any_value: Any, type_url: str, what: str) -> dict[str, Any]:
    if any_value.type_url != type_url:
        raise InvalidArgument(f"{what}: expected an Any of type {type_url}, got {any_value.type_url!r}")
    try:
        value = json.loads(any_value.value)
    except ValueError as e:
        raise InvalidArgument(f"{what}: not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return value


def _check_id(value: str, what: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if len(value) > 1024 or "/" in value or "\0" in value or value in (".", ".."):
        raise InvalidArgument(f"{what} {value[:80]!r} is not a valid identifier")


class TaskService:
    """containerd.task.v2.Task; also the backend's `BackendEvents` listener."""

    def __init__(self, backend: ZoneBackend, events: EventSink, namespace: str, *,
                 on_shutdown: Callable[[], None] = lambda: None, exit_output_timeout: float = 5.0,
                 stop_timeout: float = 10.0) -> None:
        self.backend = backend
        self.events = events
        self.namespace = namespace
        self.on_shutdown = on_shutdown
        self.exit_output_timeout = exit_output_timeout
        self.stop_timeout = stop_timeout
        self._lock = threading.RLock()  # containers, reservations, zone state
        self._event_lock = threading.Lock()  # orders start events before exit events
        self._zone_lock = threading.Lock()  # one zone boot at a time
        self._containers: dict[str, Container] = {}
        self._reserved: set[str] = set()
        self.vmm_pid = 0
        self.zone_stopped_reason: str | None = None
        self._zone_kill_signal = 0
        self._shutdown_started = False

    # helpers -----------------------------------------------------------------------------------------
    def _container(self, container_id: str) -> Container:
        with self._lock:
            container = self._containers.get(container_id)
        if container is None:
            raise NotFound(f"container {container_id!r} not created")
        return container

    def _process(self, container_id: str, exec_id: str) -> tuple[Container, Process]:
        container = self._container(container_id)
        with self._lock:
            process = container.process(exec_id)
        if process is None:
            raise NotFound(f"process {exec_id!r} of container {container_id!r} does not exist")
        return container, process

    @staticmethod
    def _backend_call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except RpcError:
            raise
        except Exception as e:
            raise Internal(f"{what}: {type(e).__name__}: {e}") from e

    def _publish(self, event: Any) -> None:
        try:
            self.events.publish(event)
        except Exception:
            log.exception("publishing %s failed", type(event).__name__)

    def _boot_zone(self, sandbox_id: str, bundle_dir: str, spec: dict[str, Any], config_path: str) -> int:
        with self._zone_lock:
            if self.zone_stopped_reason is not None:
                raise Unavailable(f"the pod's zone has stopped ({self.zone_stopped_reason}); "
                                  "no new containers in it")
            if not self.vmm_pid:
                sandbox = SandboxSpec(sandbox_id=sandbox_id, bundle=bundle_dir, spec=spec, namespace=self.namespace,
                                      config_path=config_path)
                pid = self._backend_call(f"boot the zone for pod {sandbox_id}", self.backend.start_zone,
                                         sandbox, self)
                self.vmm_pid = int(pid)
            return self.vmm_pid

    # Task service ------------------------------------------------------------------------------------
    def Create(self, request: shim_pb2.CreateTaskRequest, ctx: CallContext) -> shim_pb2.CreateTaskResponse:
        _check_id(request.id, "container id")
        if request.checkpoint or request.parent_checkpoint:
            raise Unimplemented("checkpoint/restore is not supported by zones")
        if not request.bundle:
            raise InvalidArgument(f"container {request.id}: no bundle")
        spec = read_spec(request.bundle)
        is_sandbox = bundle.is_sandbox(spec)
        stdio = StdioPaths(request.stdin, request.stdout, request.stderr, request.terminal)
        with self._lock:
            if request.id in self._containers or request.id in self._reserved:
                raise AlreadyExists(f"container {request.id!r} already exists")
            self._reserved.add(request.id)
        try:
            vmm_pid = self._boot_zone(bundle.pod_of(spec, request.id), request.bundle, spec,
                                      config_path(request.options if request.HasField("options") else None))
            process = Process(request.id, "", stdio, pid=vmm_pid)
            if not is_sandbox:
                rootfs = tuple(Mount(m.type, m.source, m.target, tuple(m.options)) for m in request.rootfs)
                container_spec = ContainerSpec(request.id, request.bundle, spec, rootfs, request.terminal,
                                               bool(request.stdin), is_sandbox)
                zone_pid, streams = self._backend_call(f"create container {request.id}",
                                                       self.backend.create_container, container_spec)
                log.info("created %s (pid %s in the zone)", request.id, zone_pid)
                try:
                    process.io = ProcessIO(request.id, stdio, streams, request.id, self.namespace)
                except BaseException:
                    self._backend_call(f"delete container {request.id}", self.backend.delete_container,
                                       request.id)
                    raise
                process.io.start()
            container = Container(request.id, request.bundle, process, is_sandbox, list(request.rootfs))
            with self._event_lock:
                with self._lock:
                    self._containers[request.id] = container
                self._publish(events_pb2.TaskCreate(
                    container_id=request.id, bundle=request.bundle, rootfs=request.rootfs,
                    io=events_pb2.TaskIO(stdin=request.stdin, stdout=request.stdout, stderr=request.stderr,
                                         terminal=request.terminal),
                    checkpoint=request.checkpoint, pid=process.pid))
        finally:
            with self._lock:
                self._reserved.discard(request.id)
        return shim_pb2.CreateTaskResponse(pid=process.pid)

    def Start(self, request: shim_pb2.StartRequest, ctx: CallContext) -> shim_pb2.StartResponse:
        container, process = self._process(request.id, request.exec_id)
        with self._event_lock:
            if process.started or process.status != Status.CREATED:
                raise FailedPrecondition(f"cannot start {process.name}: it is {process.status.name.lower()}")
            if request.exec_id:
                zone_pid = self._backend_call(f"start exec {process.name}", self.backend.start_exec, request.id,
                                              request.exec_id)
                log.info("started %s (pid %s in the zone)", process.name, zone_pid)
            elif not container.is_sandbox:
                zone_pid = self._backend_call(f"start container {request.id}", self.backend.start_container,
                                              request.id)
                log.info("started %s (pid %s in the zone)", process.name, zone_pid)
            process.pid, process.started = self.vmm_pid, True
            if not process.exited:
                process.status = Status.RUNNING
            if request.exec_id:
                self._publish(events_pb2.TaskExecStarted(container_id=request.id, exec_id=request.exec_id,
                                                         pid=process.pid))
            else:
                self._publish(events_pb2.TaskStart(container_id=request.id, pid=process.pid))
        return shim_pb2.StartResponse(pid=process.pid)

    def Delete(self, request: shim_pb2.DeleteRequest, ctx: CallContext) -> shim_pb2.DeleteResponse:
        container, process = self._process(request.id, request.exec_id)
        if process.started and not process.exited:
            raise FailedPrecondition(f"cannot delete {process.name}: it is {process.status.name.lower()}")
        if request.exec_id:
            self._backend_call(f"delete exec {process.name}", self.backend.delete_exec, request.id,
                               request.exec_id)
        elif not container.is_sandbox and self.zone_stopped_reason is None:
            self._backend_call(f"delete container {request.id}", self.backend.delete_container, request.id)
        if process.io is not None:
            process.io.close()
        exited_at = process.exited_at or datetime.now(UTC)
        with self._lock:
            if request.exec_id:
                container.execs.pop(request.exec_id, None)
            else:
                for exec_process in container.execs.values():
                    if exec_process.io is not None:
                        exec_process.io.close()
                self._containers.pop(request.id, None)
        if not request.exec_id:
            self._publish(events_pb2.TaskDelete(container_id=request.id, pid=process.pid,
                                                exit_status=process.exit_status, exited_at=timestamp(exited_at)))
        return shim_pb2.DeleteResponse(pid=process.pid, exit_status=process.exit_status,
                                       exited_at=timestamp(exited_at))

    def Exec(self, request: shim_pb2.ExecProcessRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        _check_id(request.exec_id, "exec id")
        if container.is_sandbox:
            raise FailedPrecondition(f"{request.id} is the pod sandbox: it runs no process to exec in")
        if container.init.status not in (Status.CREATED, Status.RUNNING):
            raise FailedPrecondition(f"cannot exec in {request.id}: it is {container.init.status.name.lower()}")
        process_spec = _json_any(request.spec, PROCESS_TYPE_URL, f"exec {request.exec_id} spec")
        args = process_spec.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise InvalidArgument(f"exec {request.exec_id}: process.args must be a non-empty list of strings")
        stdio = StdioPaths(request.stdin, request.stdout, request.stderr, request.terminal)
        with self._lock:
            if request.exec_id in container.execs or f"{request.id}/{request.exec_id}" in self._reserved:
                raise AlreadyExists(f"exec {request.exec_id!r} already exists in {request.id}")
            self._reserved.add(f"{request.id}/{request.exec_id}")
        try:
            process = Process(request.id, request.exec_id, stdio, pid=self.vmm_pid)
            exec_spec = ExecSpec(request.id, request.exec_id, process_spec, request.terminal, bool(request.stdin))
            streams = self._backend_call(f"exec {process.name}", self.backend.exec_process, exec_spec)
            try:
                process.io = ProcessIO(process.name, stdio, streams, request.id, self.namespace)
            except BaseException:
                self._backend_call(f"delete exec {process.name}", self.backend.delete_exec, request.id,
                                   request.exec_id)
                raise
            process.io.start()
            with self._event_lock:
                with self._lock:
                    container.execs[request.exec_id] = process
                self._publish(events_pb2.TaskExecAdded(container_id=request.id, exec_id=request.exec_id))
        finally:
            with self._lock:
                self._reserved.discard(f"{request.id}/{request.exec_id}")
        return EMPTY()

    def ResizePty(self, request: shim_pb2.ResizePtyRequest, ctx: CallContext) -> empty_pb2.Empty:
        _, process = self._process(request.id, request.exec_id)
        if process.stdio.terminal and not process.exited:
            self._backend_call(f"resize {process.name}", self.backend.resize_pty, request.id, request.exec_id,
                               request.width, request.height)
        return EMPTY()

    def State(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        container, process = self._process(request.id, request.exec_id)
        response = shim_pb2.StateResponse(
            id=request.exec_id or request.id, bundle=container.bundle, pid=process.pid,
            status=int(process.status), stdin=process.stdio.stdin, stdout=process.stdio.stdout,
            stderr=process.stdio.stderr, terminal=process.stdio.terminal, exit_status=process.exit_status,
            exec_id=request.exec_id)
        if process.exited_at is not None:
            response.exited_at.CopyFrom(timestamp(process.exited_at))
        return response

    def Pause(self, request: shim_pb2.PauseRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        if container.is_sandbox:
            raise FailedPrecondition(f"{request.id} is the pod sandbox: pause its containers instead")
        process = container.init
        with self._lock:
            if process.status != Status.RUNNING:
                raise FailedPrecondition(f"cannot pause {request.id}: it is {process.status.name.lower()}")
            process.status = Status.PAUSING
        try:
            self._backend_call(f"pause {request.id}", self.backend.pause, request.id)
        except BaseException:
            with self._lock:
                if process.status == Status.PAUSING:
                    process.status = Status.RUNNING
            raise
        with self._lock:
            if process.status == Status.PAUSING:
                process.status = Status.PAUSED
        self._publish(events_pb2.TaskPaused(container_id=request.id))
        return EMPTY()

    def Resume(self, request: shim_pb2.ResumeRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        if container.is_sandbox:
            raise FailedPrecondition(f"{request.id} is the pod sandbox: resume its containers instead")
        process = container.init
        if process.status != Status.PAUSED:
            raise FailedPrecondition(f"cannot resume {request.id}: it is {process.status.name.lower()}")
        self._backend_call(f"resume {request.id}", self.backend.resume, request.id)
        with self._lock:
            if process.status == Status.PAUSED:
                process.status = Status.RUNNING
        self._publish(events_pb2.TaskResumed(container_id=request.id))
        return EMPTY()

    def Checkpoint(self, request: shim_pb2.CheckpointTaskRequest, ctx: CallContext) -> empty_pb2.Empty:
        raise Unimplemented("checkpoint is not supported by zones")

    def Kill(self, request: shim_pb2.KillRequest, ctx: CallContext) -> empty_pb2.Empty:
        container, process = self._process(request.id, request.exec_id)
        if not 0 < request.signal < 65:
            raise InvalidArgument(f"signal {request.signal} is not a valid signal number")
        if process.exited:
            raise NotFound(f"{process.name}: process already finished")
        if container.is_sandbox:
            if request.signal in ZONE_STOP_SIGNALS:
                self._stop_zone_async(request.signal)
            return EMPTY()
        if not process.started:
            # never started: nothing runs in the zone yet. As with runc (whose waiting init dies of the
            # signal), a signal that would end a process ends this one; Delete then removes it.
            if request.signal not in IGNORED_BY_DEFAULT:
                self._record_exit(process, 128 + request.signal, datetime.now(UTC), output_timeout=0.0)
            return EMPTY()
        self._backend_call(f"signal {process.name}", self.backend.signal, request.id, request.exec_id,
                           request.signal, request.all)
        return EMPTY()

    def Pids(self, request: shim_pb2.PidsRequest, ctx: CallContext) -> shim_pb2.PidsResponse:
        self._container(request.id)
        return shim_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=self.vmm_pid)])

    def CloseIO(self, request: shim_pb2.CloseIORequest, ctx: CallContext) -> empty_pb2.Empty:
        _, process = self._process(request.id, request.exec_id)
        if request.stdin and process.io is not None:
            process.io.close_stdin()
        return EMPTY()

    def Update(self, request: shim_pb2.UpdateTaskRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        if container.init.exited:
            raise FailedPrecondition(f"cannot update {request.id}: it has stopped")
        resources = _json_any(request.resources, RESOURCES_TYPE_URL, f"update {request.id} resources")
        self._backend_call(f"update {request.id}", self.backend.update, request.id, resources,
                           dict(request.annotations))
        return EMPTY()

    def Wait(self, request: shim_pb2.WaitRequest, ctx: CallContext) -> shim_pb2.WaitResponse:
        _, process = self._process(request.id, request.exec_id)
        if not process.wait(ctx.cancelled):
            raise RpcError("wait cancelled: the caller went away", Code.CANCELLED)
        response = shim_pb2.WaitResponse(exit_status=process.exit_status)
        if process.exited_at is not None:
            response.exited_at.CopyFrom(timestamp(process.exited_at))
        return response

    def Stats(self, request: shim_pb2.StatsRequest, ctx: CallContext) -> shim_pb2.StatsResponse:
        self._container(request.id)
        stats = self._backend_call(f"stats of {request.id}", self.backend.stats, request.id)
        return shim_pb2.StatsResponse(stats=metrics_any(stats))

    def Connect(self, request: shim_pb2.ConnectRequest, ctx: CallContext) -> shim_pb2.ConnectResponse:
        with self._lock:
            container = self._containers.get(request.id)
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=container.init.pid if container else 0,
                                        version=VERSION)

    def Shutdown(self, request: shim_pb2.ShutdownRequest, ctx: CallContext) -> empty_pb2.Empty:
        with self._lock:
            if self._containers or self._reserved or self._shutdown_started:
                return EMPTY()
            self._shutdown_started = True
        threading.Thread(target=self._shutdown, name="shutdown", daemon=True).start()
        return EMPTY()

    # zone lifecycle ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the zone and end the shim whatever still runs (SIGTERM to the shim)."""
        with self._lock:
            if self._shutdown_started:
                return
            self._shutdown_started = True
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self.vmm_pid and self.zone_stopped_reason is None:
                self.backend.stop_zone(self.stop_timeout)
                self._zone_stopped("the shim shut down")
        except Exception:
            log.exception("stopping the zone at shutdown failed")
        finally:
            self.on_shutdown()

    def _stop_zone_async(self, signal: int) -> None:
        with self._lock:
            if self._zone_kill_signal and (signal != signals.SIGKILL or self._zone_kill_signal == signals.SIGKILL):
                return
            self._zone_kill_signal = signal
        timeout = min(KILL_GRACE, self.stop_timeout) if signal == signals.SIGKILL else self.stop_timeout

        def stop() -> None:
            try:
                self.backend.stop_zone(timeout)
            except Exception:
                log.exception("stopping the zone failed")
            self._zone_stopped(f"the sandbox task got signal {signal}")

        threading.Thread(target=stop, name="zone-stop", daemon=True).start()

    # BackendEvents -----------------------------------------------------------------------------------
    def process_exited(self, container_id: str, exec_id: str, exit_status: int, exited_at: datetime) -> None:
        with self._lock:
            container = self._containers.get(container_id)
            process = container.process(exec_id) if container else None
        if process is None:
            log.warning("exit of unknown process %s/%s (status %d) ignored", container_id, exec_id, exit_status)
            return
        threading.Thread(target=self._record_exit, args=(process, exit_status, exited_at),
                         name=f"exit-{process.name}", daemon=True).start()

    def _record_exit(self, process: Process, exit_status: int, exited_at: datetime,
                     output_timeout: float | None = None) -> None:
        if process.io is not None:
            wait = self.exit_output_timeout if output_timeout is None else output_timeout
            if not process.io.wait_output(wait):
                log.warning("%s exited but its output is still open after %.0f s; reporting the exit",
                            process.name, wait)
        with self._event_lock:
            if process.set_exited(exit_status, exited_at):
                self._publish(events_pb2.TaskExit(
                    container_id=process.container_id, id=process.exec_id or process.container_id,
                    pid=process.pid, exit_status=exit_status, exited_at=timestamp(exited_at)))

    def oom(self, container_id: str) -> None:
        self._publish(events_pb2.TaskOOM(container_id=container_id))

    def zone_stopped(self, reason: str) -> None:
        # on a thread of its own: a backend may report this from inside a call the service made while
        # holding its event lock (a zone dying under Start)
        threading.Thread(target=self._zone_stopped, args=(reason,), name="zone-stopped", daemon=True).start()

    def _zone_stopped(self, reason: str) -> None:
        with self._lock:
            if self.zone_stopped_reason is None:
                self.zone_stopped_reason = reason
                log.info("the zone stopped: %s", reason)
            processes = [p for c in self._containers.values() for p in c.all_processes() if not p.exited]
            kill_signal = self._zone_kill_signal or signals.SIGKILL
        now = datetime.now(UTC)
        for process in processes:
            self._record_exit(process, 128 + kill_signal, now, output_timeout=1.0)
