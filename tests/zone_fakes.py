"""PID 1's container side with a fork/exec fake of styrolite.api.Runtime, for the zoneinit, IDM and host.link
tests: the real ContainerManager, ZoneHandlers (pods included), DiskStore and Pod, on a Supervisor loop.

The fake runs each container's process (its config.json's args and env) as a plain child process (no
isolation), so the manager, the reaper, the pipes, the attach buffer and the IDM streams are exercised for
real, in-process. Pause/resume stop and continue the process (SIGSTOP/SIGCONT); update and stats are
recorded; a container's cgroup directory is a temporary directory holding a memory.events the test writes.
``LoopThread`` runs the loop on a thread, as PID 1 runs it, for clients that block (IdmClient, ZoneLink).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import termios
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from idm.server import IdmServer
from styrolite.container.stdio import Stdio
from styrolite.exitstatus import exit_code_of
from zoneinit.config.plan import ContainerPlan
from zoneinit.console import ConsoleLog
from zoneinit.containers.bundle import check_plan, container_config
from zoneinit.containers.manager import ContainerManager
from zoneinit.containers.pod import Pod
from zoneinit.idm.handlers import ZoneHandlers
from zoneinit.mounts.disks import DiskStore
from zoneinit.mounts.table import MountTable
from zoneinit.supervisor.loop import Supervisor


def _spawn(args, env, stdio: Stdio | None, terminal: bool, gate: int | None):
    master = None
    if terminal:
        master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if terminal:
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for target in (0, 1, 2):
                    os.dup2(slave, target)
            elif stdio is not None:
                stdio.install()
            if gate is not None:
                os.read(gate, 1)
            os.execvpe(args[0], args, dict(e.split("=", 1) for e in env))
        finally:
            os._exit(127)
    if terminal:
        os.close(slave)
    return pid, master


class FakeRuntime:
    def __init__(self, cgroups: Path | None = None):
        self.pids: dict[str, int] = {}
        self.gates: dict[str, int] = {}
        self.owners: dict[int, str] = {}
        self.codes: dict[str, int] = {}
        self.calls: list[tuple] = []
        self.processes: list[Any] = []                # every exec'd Process, as the runtime got it
        self.cgroups = cgroups                        # per container: <cgroups>/<id>/memory.events
        self.record_error: Exception | None = None   # what child_exited raises, if set
        self.delete_error: Exception | None = None   # what delete raises, if set

    def create(self, cid, bundle, stdio=None, terminal=False):
        with open(os.path.join(bundle, "config.json")) as f:
            process = json.load(f)["process"]
        gate_r, gate_w = os.pipe()
        pid, master = _spawn(process["args"], process["env"], stdio, terminal, gate_r)
        os.close(gate_r)
        self.pids[cid], self.gates[cid], self.owners[pid] = pid, gate_w, cid
        if self.cgroups is not None:
            (self.cgroups / cid).mkdir(parents=True, exist_ok=True)
            (self.cgroups / cid / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
            (self.cgroups / cid / "memory.stat").write_text("anon 4096\nfile 8192\ninactive_file 1024\n")
        self.calls.append(("create", cid))
        return _Created(pid, master)

    def start(self, cid):
        self.calls.append(("start", cid))
        os.write(self.gates[cid], b"go")
        os.close(self.gates.pop(cid))

    def signal(self, cid, signum, all_processes=False):
        self.calls.append(("signal", cid, signum, all_processes))
        os.kill(self.pids[cid], signum)

    def exec(self, cid, process, stdio=None, terminal=False):
        self.calls.append(("exec", cid, process.args, process.terminal))
        self.processes.append(process)
        pid, master = _spawn(process.args, process.env, stdio, terminal, None)
        self.owners[pid] = f"{cid}/exec"
        return _Executed(pid, master)

    def pause(self, cid):
        self.calls.append(("pause", cid))
        os.kill(self.pids[cid], signal.SIGSTOP)

    def resume(self, cid):
        self.calls.append(("resume", cid))
        os.kill(self.pids[cid], signal.SIGCONT)

    def update(self, cid, resources):
        self.calls.append(("update", cid, resources))

    def child_exited(self, pid, status):
        owner = self.owners.pop(pid, None)
        if owner and not owner.endswith("/exec"):
            self.codes[owner] = exit_code_of(status)
        if self.record_error is not None:  # like styrolite's: the code is known, its state file not written
            raise self.record_error
        return owner

    def exit_code(self, cid):
        return self.codes.get(cid)

    def stats(self, cid):
        return {"memory": {"usage": 16384, "limit": None}, "pids": {"current": 1}}

    def cgroup_directory(self, cid):
        return str(self.cgroups / cid) if self.cgroups is not None else None

    def delete(self, cid, force=False):
        self.calls.append(("delete", cid, force))
        if self.delete_error is not None:
            raise self.delete_error


class _Created:
    def __init__(self, pid, master):
        self.state = _State(pid)
        self.console_fd = master


class _State:
    def __init__(self, pid):
        self.pid = pid


class _Executed:
    def __init__(self, pid, master):
        self.pid = pid
        self.console_fd = master


class ZoneSide:
    """PID 1's container side on ``supervisor`` and ``server``: manager, handlers, disks and pod under ``tmp``.

    Disks are files under ``tmp/dev`` found by ``/sys/block``-style entries under ``tmp/sys`` (set
    ``zoneinit.mounts.hotplug.SYS_BLOCK``/``DEV`` to them); nothing is mounted: bundles are written, not made."""

    def __init__(self, tmp: Path, supervisor: Supervisor, server: IdmServer, log: ConsoleLog,
                 emit: Callable[[str, dict[str, Any]], None]) -> None:
        self.tmp = tmp
        self.runtime = FakeRuntime(tmp / "cgroups")
        self.bundles: dict[str, dict] = {}   # container id -> the config.json written for it
        self.shutdowns: list[tuple[str, str]] = []
        self.cleanup_error: Exception | None = None   # what removing a bundle raises, if set
        self.disks = DiskStore([], MountTable(), str(tmp / "images"))
        self.pod = Pod(str(tmp / "pod"), "/run/zone/netns/workload", "web-0", MountTable())
        self.pod.shift = 65536   # as if the pod's namespaces existed (making them needs a real zone)
        self.containers = ContainerManager(supervisor, prepare_bundle=self._bundle, remove_bundle=self._remove_bundle,
                                           check=self._check, runtime_factory=lambda: self.runtime, emit=emit,
                                           log=log)
        ZoneHandlers(server, supervisor, self.containers, info=lambda: {"zone": "test", "ready": True},
                     request_shutdown=lambda action, reason: self.shutdowns.append((action, reason)),
                     disks=lambda: self.disks, pod=lambda: self.pod).register()

    def _check(self, plan: ContainerPlan) -> None:
        if plan.oci is not None or plan.volumes:
            check_plan(plan, self.disks, self.pod, hostname="web-0")

    def _bundle(self, plan: ContainerPlan) -> str:
        bundle = self.tmp / "bundles" / plan.id
        (bundle / "rootfs").mkdir(parents=True)
        shift = self.disks.owner_shift_of(plan.image) if plan.image in self.disks.disks else 0
        config, merged = container_config(plan, hostname="web-0", owner_shift=shift, pod=self.pod)
        if merged is not None:
            self.pod.prepare_volumes(plan.id, plan.volumes, os.getuid())
        self.bundles[plan.id] = config
        (bundle / "config.json").write_text(json.dumps(config))
        return str(bundle)

    def _remove_bundle(self, cid: str) -> None:
        if self.cleanup_error is not None:
            raise self.cleanup_error
        self.pod.remove_container(cid)

    def root_disk(self, name: str = "rootfs0", shift: int = 65536) -> None:
        """A root disk the zone knows, with nothing to verify (the harness never mounts it)."""
        from zoneinit.config.plan import DiskPlan

        self.disks.add(DiskPlan(name, f"/dev/fake-{name}", None, None, "erofs", shift, "root"))

    def add_disk_device(self, name: str, serial: str, data: bytes) -> Path:
        """A "block device" (a file) ``/dev/<name>`` whose sysfs entry says ``serial`` and its size."""
        (self.tmp / "dev").mkdir(exist_ok=True)
        device = self.tmp / "dev" / name
        device.write_bytes(data)
        entry = self.tmp / "sys" / name
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "serial").write_text(serial + "\n")
        (entry / "size").write_text(f"{(len(data) + 511) // 512}\n")
        return device


class LoopThread:
    """Runs ``server`` on a thread the way PID 1 runs it on its loop; ``on_loop`` runs code there."""

    def __init__(self, server: IdmServer, supervisor: Supervisor | None = None, *, reap: bool = False) -> None:
        self.server = server
        self.reap = reap   # PID 1's reaper (waitpid(-1)) on every turn: only for tests whose children it owns
        self.supervisor = supervisor or Supervisor(ConsoleLog())
        self.supervisor.add_reader(server.fileno(), lambda _fd: server.service())
        self.supervisor.timed_services.append((server.timeout, server.service))
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        def until() -> bool:
            if self.reap:   # no SIGCHLD wakeups off the main thread: reap on every turn
                self.supervisor.reap()
            return self._stop.is_set()

        self.supervisor.run(until=until, timeout=0.05)

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def on_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:
                box["error"] = e
            done.set()

        self.server.call_soon_threadsafe(run)
        assert done.wait(timeout), "loop did not run the call"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.server.close()
        self.supervisor.selector.close()
