"""The zone's IDM request handlers: PID 1's answers to the host (message names: docs/idm.md).

    zone.info        -> name, kernel, boot timeline, containers, PID 1's RSS
    zone.metrics     -> memory, CPU, load (from /proc) and per-container cgroup stats (rt.stats)
    zone.shutdown    -> accepted; the zone powers off cleanly (zone.reboot: reboots)
    container.list / create / start / signal / wait / delete / logs
    exec             -> a stream: stdin/stdout/stderr, tty with exec.resize, the exit code on close
    exec.resize / exec.signal

Handlers raise typed errors (NotFoundError, StateError, ValueError...) which the server turns into
error replies; nothing here may take PID 1 down.
"""

from __future__ import annotations

import os
import signal as signal_module
from collections.abc import Callable
from typing import Any

from zoneinit.config.parser import parse_container
from zoneinit.config.plan import container_plan
from zoneinit.containers.manager import ContainerManager, ManagedContainer
from zoneinit.idm.errors import translated
from zoneinit.idm.execs import ExecSession, LogFollower
from zoneinit.supervisor.loop import Supervisor


def _signal_number(value: Any) -> int:
    if isinstance(value, int) and 0 < value < 65:
        return value
    if isinstance(value, str):
        name = value.upper()
        if name.isdigit():
            return _signal_number(int(name))
        try:
            return int(signal_module.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            pass
    raise ValueError(f"not a signal: {value!r}")


def creation_definition(payload: Any) -> dict[str, Any]:
    """The container definition of a ``container.create`` payload: ``{container: {...}, start?}`` or the
    definition itself (``start`` beside it); ``id``, the name every other request uses, is taken for ``name``."""
    if not isinstance(payload, dict):
        raise ValueError("container.create: the payload must be a map describing the container")
    definition = payload["container"] if "container" in payload else {k: v for k, v in payload.items()
                                                                       if k != "start"}
    if isinstance(definition, dict) and "id" in definition and "name" not in definition:
        definition = {("name" if k == "id" else k): v for k, v in definition.items()}
    return definition


def _require(req: Any, key: str, kind: type = str) -> Any:
    value = req.arg(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ValueError(f"{req.type}: {key!r} is required ({kind.__name__})")
    return value


class ZoneAgent:
    def __init__(self, server: Any, supervisor: Supervisor, containers: ContainerManager, *,
                 info: Callable[[], dict[str, Any]], request_shutdown: Callable[[str, str], None]) -> None:
        self.server = server
        self.supervisor = supervisor
        self.containers = containers
        self.info = info
        self.request_shutdown = request_shutdown
        self.sessions: dict[int, ExecSession] = {}

    def register(self) -> None:
        handlers: dict[str, Callable[[Any], Any]] = {
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
            "exec": self.exec,
            "exec.resize": self.exec_resize,
            "exec.signal": self.exec_signal,
        }
        for name, handler in handlers.items():
            self.server.register(name, translated(name, handler, self.supervisor.log.info))

    # --- zone ----------------------------------------------------------------------------------------
    def zone_info(self, _req: Any) -> dict[str, Any]:
        return self.info()

    def zone_metrics(self, _req: Any) -> dict[str, Any]:
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

    def shutdown(self, req: Any, action: str) -> dict[str, Any]:
        reason = req.arg("reason") or f"{req.type} over IDM"
        # after this reply is on its way: the loop runs the shutdown on its next turn
        self.supervisor.call_later(0, lambda: self.request_shutdown(action, str(reason)))
        return {"accepted": True, "action": action}

    # --- containers ----------------------------------------------------------------------------------
    def container_list(self, _req: Any) -> dict[str, Any]:
        return {"containers": self.containers.list()}

    def container_create(self, req: Any) -> dict[str, Any]:
        plan = container_plan(parse_container(creation_definition(req.payload), "$.container"))
        container = self.containers.create(plan)
        if req.arg("start", False) is True:
            self.containers.start(plan.id)
        return container.summary()

    def container_start(self, req: Any) -> dict[str, Any]:
        return self.containers.start(_require(req, "id")).summary()

    def container_signal(self, req: Any) -> dict[str, Any]:
        cid = _require(req, "id")
        signum = _signal_number(req.arg("signal", "SIGTERM"))
        self.containers.signal(cid, signum, all_processes=req.arg("all", False) is True)
        return {"id": cid, "signal": signum}

    def container_wait(self, req: Any) -> None:
        cid = _require(req, "id")

        def done(container: ManagedContainer) -> None:
            if req.connected:
                req.reply({"id": cid, "exit_code": container.exit_code, "status": container.status,
                           "error": container.error})

        self.containers.wait(cid, done)

    def container_delete(self, req: Any) -> dict[str, Any]:
        cid = _require(req, "id")
        self.containers.delete(cid, force=req.arg("force", False) is True)
        return {"id": cid, "deleted": True}

    def container_logs(self, req: Any) -> dict[str, Any] | None:
        cid = _require(req, "id")
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

    # --- exec ----------------------------------------------------------------------------------------
    def exec(self, req: Any) -> None:
        cid = req.arg("id") if req.arg("id") is not None else req.arg("container")
        if cid is None:
            cid = self._default_container()
        if not isinstance(cid, str) or not cid:
            raise ValueError("exec: 'container' must be a container id")
        container = self.containers.get(cid)
        if container.status not in ("created", "running"):
            from styrolite.errors import StateError

            raise StateError(f"container {cid!r} is {container.status}: cannot exec into it")
        tty = req.arg("tty", False) is True
        process = self._exec_process(container, req, tty)
        size = None
        rows, cols = req.arg("rows"), req.arg("cols")
        if isinstance(rows, int) and isinstance(cols, int):
            size = (rows, cols)
        stream = req.open_stream()
        session = ExecSession(self.supervisor, self.containers, stream, tty=tty)
        try:
            pid = session.start(cid, process, size)
        except BaseException:
            req.conn.forget_stream(stream.id)
            raise
        self.sessions[stream.id] = session
        original_finish = stream.finish

        def finish(result: Any = None) -> None:
            self.sessions.pop(stream.id, None)
            original_finish(result)

        stream.finish = finish
        req.reply({"id": cid, "pid": pid, "stream": stream.id, "window": stream.window, "tty": tty})

    def _exec_process(self, container: ManagedContainer, req: Any, tty: bool) -> Any:
        """The exec'd process: the container's own process settings (capabilities, rlimits...) with the
        request's command, env, cwd, user and tty."""
        import json

        from styrolite.spec.parse import parse_process

        args = req.arg("args") or req.arg("command")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise ValueError("exec: 'args' must be a non-empty list of strings")
        try:
            with open(os.path.join(container.bundle, "config.json"), encoding="utf-8") as f:
                process: dict[str, Any] = dict(json.load(f).get("process", {}))
        except (OSError, ValueError):
            process = {"cwd": "/", "env": []}
        process["args"] = list(args)
        env = {e.split("=", 1)[0]: e for e in process.get("env", [])}
        extra = req.arg("env") or []
        if isinstance(extra, dict):
            extra = [f"{k}={v}" for k, v in extra.items()]
        for entry in extra:
            env[str(entry).split("=", 1)[0]] = str(entry)
        process["env"] = list(env.values())
        if isinstance(req.arg("cwd"), str):
            process["cwd"] = req.arg("cwd")
        user = req.arg("user")
        if isinstance(user, str) and user:  # "UID[:GID]", as the CLIs take it
            uid, _, gid = user.partition(":")
            user = {"uid": int(uid), "gid": int(gid or uid)}
        if isinstance(user, dict):
            process["user"] = {"uid": int(user.get("uid", 0)), "gid": int(user.get("gid", 0))}
        elif isinstance(user, int):
            process["user"] = {"uid": user, "gid": user}
        process["terminal"] = tty
        process.pop("consoleSize", None)
        return parse_process(process)

    def _default_container(self) -> str:
        """exec without a container: the zone's main container, or its only one."""
        candidates = [c for c in self.containers.containers.values() if c.plan.main]
        if not candidates and len(self.containers.containers) == 1:
            candidates = list(self.containers.containers.values())
        if not candidates:
            raise ValueError("exec: name the container (this zone has no main container)")
        return candidates[0].id

    def _session(self, req: Any) -> ExecSession:
        sid = req.arg("stream")
        session = self.sessions.get(sid) if isinstance(sid, int) else None
        if session is None:
            from styrolite.errors import NotFoundError

            raise NotFoundError(f"no exec session with stream id {sid!r}")
        return session

    def exec_resize(self, req: Any) -> dict[str, Any]:
        rows, cols = _require(req, "rows", int), _require(req, "cols", int)
        self._session(req).resize(rows, cols)
        return {"rows": rows, "cols": cols}

    def exec_signal(self, req: Any) -> dict[str, Any]:
        signum = _signal_number(req.arg("signal", "SIGTERM"))
        self._session(req).signal(signum)
        return {"signal": signum}
