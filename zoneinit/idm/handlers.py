"""The zone's IDM request handlers: PID 1's answers to the host (message names: docs/idm.md section 7).

    zone.info        -> name, kernel, boot timeline, containers, PID 1's RSS
    zone.metrics     -> memory, CPU, load (from /proc) and per-container cgroup stats (rt.stats)
    zone.shutdown    -> accepted; the zone powers off cleanly (zone.reboot: reboots)
    container.list / create / start / signal / wait / delete / logs
    exec             -> a stream: stdin/stdout/stderr, tty with exec.resize, the exit code on close
    exec.resize / exec.signal
    disk.attach / disk.detach, container.attach / resize / close_stdin / pause / resume / update / stats /
    read_file        -> a pod's containers (zoneinit.idm.pods)

Handlers raise what they raise (NotFoundError, StateError, ValueError, ZoneConfigError...);
``zoneinit.idm.errors`` turns that into the error reply's code. Nothing here may take PID 1 down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from idm.server import IdmServer, Request
from styrolite.errors import StateError
from zoneinit.containers.manager import ContainerManager, ManagedContainer
from zoneinit.idm.args import require, signal_number
from zoneinit.idm.errors import fail, translated
from zoneinit.idm.execs import ExecProcess, ExecRequest, ExecService, LogFollower
from zoneinit.supervisor.loop import Supervisor

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from zoneinit.config.plan import ContainerPlan
    from zoneinit.containers.pod import Pod
    from zoneinit.mounts.disks import DiskStore

# container.create with an OCI config: these come from it, never from the definition as well
OCI_OWNED = ("args", "env", "cwd", "user", "terminal", "hostname", "limits", "annotations", "readonly_root")


def creation_definition(payload: Any) -> dict[str, Any]:
    """The container definition of a ``container.create`` payload: ``{container: {...}, start?}`` or the
    definition itself (``start`` beside it); ``id``, the name every other request uses, is taken for ``name``."""
    if not isinstance(payload, dict):
        raise ValueError("container.create: the payload must be a map describing the container")
    definition = payload["container"] if "container" in payload else {k: v for k, v in payload.items()
                                                                       if k not in POD_FIELDS}
    if isinstance(definition, dict) and "id" in definition and "name" not in definition:
        definition = {("name" if k == "id" else k): v for k, v in definition.items()}
    return definition


POD_FIELDS = ("start", "oci", "volumes", "attach")


def pod_plan(payload: dict[str, Any], definition: dict[str, Any], log: Callable[[str], None]) -> ContainerPlan:
    """The plan of a ``container.create``: its definition (the zone config's parser) and, for a pod's container,
    the host's OCI config, volumes and attach (``podspec``); with an OCI config its process is the container's."""
    from zoneinit.config.parser import parse_container  # the parser (re, its schema) only when asked
    from zoneinit.config.plan import container_plan

    if not any(key in payload for key in POD_FIELDS[1:]):
        return container_plan(parse_container(definition, "$.container"))
    from zoneinit.containers.podspec import parse_pod_spec
    from zoneinit.errors import ZoneConfigError

    pod = parse_pod_spec(payload)
    if pod.oci is not None and isinstance(definition, dict):
        for key in OCI_OWNED:
            if key in definition:
                raise ZoneConfigError(f"$.container.{key}", "given by $.oci as well: say it once, in $.oci")
        process = pod.oci.get("process", {})
        args = process.get("args")
        definition = {**definition, "args": args if isinstance(args, list) and args else ["?"],
                      "terminal": process.get("terminal", False) is True}
        if not (isinstance(args, list) and args):
            raise ZoneConfigError("$.oci.process.args", "the container needs a program to run")
    plan = container_plan(parse_container(definition, "$.container"))
    plan.oci, plan.volumes, plan.attach = pod.oci, pod.volumes, pod.attach
    for warning in pod.warnings:
        log(f"container {plan.id}: {warning}")
    return plan


class ZoneHandlers:
    """PID 1's request handlers, registered on its IDM server."""

    def __init__(self, server: IdmServer, supervisor: Supervisor, containers: ContainerManager, *,
                 info: Callable[[], dict[str, Any]], request_shutdown: Callable[[str, str], None],
                 disks: Callable[[], DiskStore] | None = None, pod: Callable[[], Pod] | None = None) -> None:
        self.server = server
        self.supervisor = supervisor
        self.containers = containers
        self.info = info
        self.request_shutdown = request_shutdown
        self.disks = disks   # the zone's disk store (None: a test without disks)
        self.pod = pod
        self.execs = ExecService(supervisor, self.spawn_exec, containers.exec_exits.__setitem__,
                                 on_exit=lambda pid, code: containers.emit("exec.exit",
                                                                           {"pid": pid, "exit_code": code}))

    def register(self) -> None:
        handlers: dict[str, Callable[[Request], Any]] = {
            "zone.info": self.zone_info,
            "zone.metrics": self.zone_metrics,
            "zone.shutdown": lambda req: self.shutdown(req, "poweroff"),
            "zone.reboot": lambda req: self.shutdown(req, "reboot"),
            "container.list": self.container_list,
            "container.create": self.container_create,
            "container.start": self.container_start,
            "container.signal": self.container_signal,
            "container.wait": self.container_wait,
            "container.delete": self.container_delete,
            "container.logs": self.container_logs,
            **self.execs.handlers(),
        }
        from zoneinit.idm.pods import PodHandlers

        handlers.update(PodHandlers(self.supervisor, self.containers, disks=self.disks, pod=self.pod).handlers())
        for name, handler in handlers.items():
            self.server.register(name, translated(name, handler, self.supervisor.log.info))

    # --- zone ----------------------------------------------------------------------------------------
    def zone_info(self, _req: Request) -> dict[str, Any]:
        return self.info()

    def zone_metrics(self, _req: Request) -> dict[str, Any]:
        from zoneinit.metrics import zone_metrics

        result = zone_metrics()
        stats: dict[str, Any] = {}
        for cid in self.containers.running():
            try:
                stats[cid] = self.containers.runtime.stats(cid)
            except Exception as e:
                stats[cid] = {"error": str(e)}
        result["containers"] = stats
        return result

    def shutdown(self, req: Request, action: str) -> dict[str, Any]:
        reason = req.arg("reason") or f"{req.type} over IDM"
        # after this reply is on its way: the loop runs the shutdown on its next turn
        self.supervisor.call_later(0, lambda: self.request_shutdown(action, str(reason)))
        return {"accepted": True, "action": action}

    # --- containers ----------------------------------------------------------------------------------
    def container_list(self, _req: Request) -> dict[str, Any]:
        return {"containers": self.containers.list()}

    def container_create(self, req: Request) -> dict[str, Any] | None:
        plan = pod_plan(req.payload, creation_definition(req.payload), self.supervisor.log.warn)
        if plan.id in self.containers.containers:
            raise StateError(f"container {plan.id!r} already exists in this zone")
        start = req.arg("start", False) is True

        def create(error: BaseException | None = None) -> None:
            try:
                if error is not None:
                    raise error
                container = self.containers.create(plan)
                if start:
                    self.containers.start(plan.id)
            except Exception as e:
                fail(req, e, self.supervisor.log.info)
                return
            req.reply(container.summary())

        disks = self.disks() if self.disks is not None else None
        if disks is None or not plan.image or plan.image not in disks.disks:
            create()   # nothing to verify first (an unknown image is refused by the create itself)
        else:   # a disk's hash runs in a helper process; PID 1's loop goes on meanwhile
            disks.verify_async(plan.image, self.supervisor, create)
        return None

    def container_start(self, req: Request) -> dict[str, Any]:
        return self.containers.start(require(req, "id")).summary()

    def container_signal(self, req: Request) -> dict[str, Any]:
        cid = require(req, "id")
        signum = signal_number(req.arg("signal", "SIGTERM"))
        self.containers.signal(cid, signum, all_processes=req.arg("all", False) is True)
        return {"id": cid, "signal": signum}

    def container_wait(self, req: Request) -> None:
        cid = require(req, "id")

        def done(container: ManagedContainer) -> None:
            if req.connected:
                req.reply({"id": cid, "exit_code": container.exit_code, "status": container.status,
                           "error": container.error})

        self.containers.wait(cid, done)

    def container_delete(self, req: Request) -> dict[str, Any]:
        cid = require(req, "id")
        self.containers.delete(cid, force=req.arg("force", False) is True)
        return {"id": cid, "deleted": True}

    def container_logs(self, req: Request) -> dict[str, Any] | None:
        cid = require(req, "id")
        tail = req.arg("tail")
        tail = tail if isinstance(tail, int) and tail >= 0 else None
        container = self.containers.get(cid)
        if req.arg("follow", False) is not True:
            return {"id": cid, "data": container.output.snapshot(tail), "dropped": container.output.dropped,
                    "status": container.status, "exit_code": container.exit_code}
        stream = req.open_stream()
        req.reply({"id": cid, "stream": stream.id, "window": stream.window})
        LogFollower(stream, container, self.containers, tail)
        return None

    # --- exec: the process, started in its container by the runtime --------------------------------
    def spawn_exec(self, request: ExecRequest) -> ExecProcess:
        if request.zone:   # the zone-level debug exec: PID 1's namespaces, the extensions' tools
            from zoneinit.idm.zone_exec import spawn_zone_exec

            return spawn_zone_exec(request, self.info().get("extensions") or [])
        from styrolite.api import Stdio
        from styrolite.spec.parse import parse_process

        cid = request.container or self._default_container()
        container = self.containers.get(cid)
        if container.status not in ("created", "running"):
            raise StateError(f"container {cid!r} is {container.status}: cannot exec into it")
        process = parse_process(self._process_document(container, request))
        outputs: dict[int, str] = {}
        stdin: int | None = None
        child_fds: list[int] = []
        try:
            if request.tty:
                stdio = None
            else:
                in_r, stdin = os.pipe2(os.O_CLOEXEC)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                child_fds = [in_r, out_w, err_w]
                outputs = {out_r: "stdout", err_r: "stderr"}
                stdio = Stdio(stdin=in_r, stdout=out_w, stderr=err_w)
            executed = self.containers.runtime.exec(cid, process, stdio=stdio, terminal=request.tty)
        except BaseException:
            for fd in [*outputs, *([stdin] if stdin is not None else [])]:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        if executed.console_fd is not None:
            stdin = os.dup(executed.console_fd)
            outputs = {executed.console_fd: "stdout"}
        return ExecProcess(executed.pid, outputs, stdin, container=cid)

    @staticmethod
    def _process_document(container: ManagedContainer, request: ExecRequest) -> dict[str, Any]:
        """The exec'd process: containerd's OCI process if the request has one, else the container's own
        process settings (capabilities, rlimits...); then the request's command, env, cwd, user and tty."""
        try:
            with open(os.path.join(container.bundle, "config.json"), encoding="utf-8") as f:
                process: dict[str, Any] = dict(json.load(f).get("process", {}))
        except (OSError, ValueError):
            process = {"cwd": "/", "env": []}
        if request.process is not None:
            process = dict(request.process, cwd=request.process.get("cwd") or process.get("cwd") or "/")
        env = {e.split("=", 1)[0]: e for e in process.get("env", [])}
        for entry in request.env:
            env[entry.split("=", 1)[0]] = entry
        process["env"] = list(env.values())
        if request.cwd is not None:
            process["cwd"] = request.cwd
        if request.user is not None:
            user: dict[str, Any] = {"uid": request.user[0], "gid": request.user[1]}
            if request.additional_gids:
                user["additionalGids"] = list(request.additional_gids)
            process["user"] = user
        process["args"] = list(request.command)
        process["terminal"] = request.tty
        process.pop("consoleSize", None)
        if request.tty and request.size:
            process["consoleSize"] = {"height": request.size[0], "width": request.size[1]}
        return process

    def _default_container(self) -> str:
        """exec without a container: the zone's main container, or its only one."""
        candidates = [c for c in self.containers.containers.values() if c.plan.main]
        if not candidates and len(self.containers.containers) == 1:
            candidates = list(self.containers.containers.values())
        if not candidates:
            raise ValueError("exec: name the container (this zone has no main container)")
        return candidates[0].id
