"""``create``: build the container's environment and leave its init waiting for ``start``.

Nothing half-made survives a failure: the processes are killed, the cgroup removed, the state
directory deleted, and the error says which step failed and why.
"""

from __future__ import annotations

import os
import time

from styrolite.container.children import (
    LaunchContext,
    direct_init_main,
    init_needs_state,
    preload,
    runs_hooks_before_pivot,
    setup_child_main,
)
from styrolite.container.stdio import Stdio
from styrolite.container.sync import SyncChannel
from styrolite.errors import ConfigError, ContainerError, suppress
from styrolite.lifecycle.common import CONFIG_SNAPSHOT, hook_phases
from styrolite.lifecycle.handoff import send_console, write_pid_file
from styrolite.logs import log
from styrolite.namespaces import NamespacePlan, plan_namespaces, write_id_mappings
from styrolite.records import record
from styrolite.security.capabilities import unknown_capability_warnings
from styrolite.spec.model import Spec
from styrolite.state import ContainerState, StateStore, process_start_time, validate_id
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn


@record
class Created:
    state: ContainerState
    console_fd: int | None = None


def create(
    store: StateStore,
    container_id: str,
    bundle: str,
    *,
    stdio: Stdio | None = None,
    terminal: bool | None = None,
    console_socket: str | None = None,
    preserve_fds: int = 0,
    pid_file: str | None = None,
    own_console: bool = False,
    sys: Syscalls = LINUX,
) -> Created:
    """``terminal``: None follows ``process.terminal`` (then a console socket is required, unless
    ``own_console``: the caller proxies the pty itself, ``styrolite run``, and gets it as ``console_fd``)."""
    validate_id(container_id)
    bundle = os.path.abspath(bundle)
    spec, config_bytes = _load_bundle(bundle)
    rootfs = os.path.join(bundle, spec.root.path) if spec.root else ""
    if not os.path.isdir(rootfs):
        raise ContainerError(f"rootfs {rootfs!r} (root.path in {bundle}/config.json) is not a directory")
    process = spec.process
    if process is None:
        raise ConfigError("process", "create needs a process to run")
    use_terminal = process.terminal if terminal is None else terminal
    if use_terminal and console_socket is None and terminal is None and not own_console:
        raise ContainerError("process.terminal is true: --console-socket is required")

    container_dir = store.reserve(container_id)
    state = ContainerState(container_id, bundle, created=time.time(), rootfs=rootfs,
                           annotations=dict(spec.annotations), hooks=hook_phases(spec),
                           own_mount_namespace=spec.namespace("mount") is not None)
    cleanup = _Cleanup(store, container_id)
    try:
        _write_snapshot(os.path.join(container_dir, CONFIG_SNAPSHOT), config_bytes)
        store.save(state)
        console_fd = _launch(store, state, spec, bundle, rootfs, cleanup, stdio or Stdio(), use_terminal,
                             preserve_fds, sys)
        if console_socket is not None and console_fd is not None:
            send_console(console_socket, console_fd)
            os.close(console_fd)
            console_fd = None
        if pid_file:
            write_pid_file(pid_file, state.pid)
    except BaseException as e:
        cleanup.run()
        raise ContainerError(f"create container {container_id!r}") from e
    return Created(state, console_fd)


def _load_bundle(bundle: str) -> tuple[Spec, bytes]:
    """The bundle's config, and the bytes it was parsed from (the snapshot later calls read)."""
    from styrolite.spec.parse import load_config_and_bytes

    if not os.path.isdir(bundle):
        raise ContainerError(f"bundle {bundle!r} is not a directory")
    spec, data = load_config_and_bytes(os.path.join(bundle, "config.json"))
    if spec.root is None:
        raise ConfigError("root", "create needs root.path")
    return spec, data


def _write_snapshot(path: str, data: bytes) -> None:
    """The config as parsed: a bundle edited after this point changes nothing for this container."""
    with open(path, "wb") as f:
        f.write(data)


class _Cleanup:
    """Undo a partial create, in reverse order."""

    def __init__(self, store: StateStore, container_id: str) -> None:
        self.store, self.container_id = store, container_id
        self.pids: list[int] = []
        self.cgroup = None

    def run(self) -> None:
        for pid in reversed(self.pids):
            with suppress(OSError):
                os.kill(pid, k.SIGKILL)
            with suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
        if self.cgroup is not None:
            with suppress(Exception):
                self.cgroup.destroy(kill=True)
        self.store.remove(self.container_id)


def _launch(store: StateStore, state: ContainerState, spec: Spec, bundle: str, rootfs: str, cleanup: _Cleanup,
            stdio: Stdio, terminal: bool, preserve_fds: int, sys: Syscalls) -> int | None:
    from styrolite.cgroups import open_cgroup, record_of

    linux = spec.linux
    plan = plan_namespaces(spec)
    if not (plan.creates("mount") or plan.joins("mount")) and spec.root is not None and spec.root.readonly:
        # without a mount namespace the rootfs is a path in the runtime's mounts: making it read-only would
        # remount the host's file system (runc silently ignores it; a container never gets less than asked)
        raise ConfigError("root.readonly", "a read-only root needs a mount namespace (add {\"type\": \"mount\"} "
                                           "to linux.namespaces)")
    for warning in unknown_capability_warnings(spec.process):
        log.warning("%s", warning)
    seccomp_filter = None
    if linux and linux.seccomp:
        from styrolite.security import compile_filter
        from styrolite.security.seccomp_cache import cache_dir_for

        seccomp_filter = compile_filter(linux.seccomp, cache_dir=cache_dir_for(store.root))
        for warning in seccomp_filter.warnings:
            log.warning("%s", warning)

    cgroup = open_cgroup(linux.cgroups_path if linux else None, state.id)
    cleanup.cgroup = cgroup
    cgroup.create()
    # the device policy also admits the nodes the container is given (linux.devices)
    cgroup.apply(linux.resources if linux else None, devices=linux.devices if linux else ())
    state.cgroup_path = cgroup.path
    state.cgroups_path_config = linux.cgroups_path if linux else None
    state.cgroup = record_of(cgroup)

    fifo = store.exec_fifo(state.id)
    os.mkfifo(fifo, 0o600)
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)  # read end for the init; never blocks
    preload(spec)
    ctx = LaunchContext(spec=spec, bundle=bundle, rootfs=rootfs, plan=plan, seccomp_filter=seccomp_filter,
                        exec_fifo_fd=fifo_fd, stdio=stdio, terminal=terminal, preserve_fds=preserve_fds, sys=sys,
                        cgroup_files=cgroup.join_files())
    parent, child = SyncChannel.pair()
    try:
        if _can_fork_directly(plan):
            def init_main() -> NoReturn:
                parent.close()
                direct_init_main(ctx, child)

            state.pid = _fork_into_pid_namespace(plan, sys, init_main)
            child.close()
            os.close(fifo_fd)
            cleanup.pids.append(state.pid)
            # the init joined its cgroup itself; it waits only when its hooks need the state document
            release = "go" if init_needs_state(spec) else None
        else:
            state.pid = _launch_through_setup_child(ctx, parent, child, fifo_fd, cleanup)
            release = "init"  # the init waits until its pid, reported by the setup child, is recorded
        state.pid_start_time = process_start_time(state.pid) or 0
        # the state hooks read: "created", as the spec and crun have it (the environment exists by now)
        hook_state = {**state.oci_state(), "status": "created", "pid": state.pid}
        if release is not None:
            parent.send(release, state=hook_state)
        store.save(state)  # while the init works
        if runs_hooks_before_pivot(spec):
            from styrolite.hooks import run_hooks

            assert spec.hooks is not None
            parent.receive("prepivot", "mount the container's root filesystem")
            run_hooks("prestart", spec.hooks.prestart, hook_state)
            run_hooks("createRuntime", spec.hooks.create_runtime, hook_state)
            parent.send("continue")
        console_fd = None
        if terminal:
            _, fds = parent.receive("console", "set up the console")
            console_fd = fds[0]
        message, _ = parent.receive("created", "prepare the container's process")
        for warning in message.get("warnings", []):
            log.warning("%s", warning)
    finally:
        parent.close()
    state.status = "created"
    store.save(state)
    return console_fd


def _can_fork_directly(plan: NamespacePlan) -> bool:
    """A user namespace must exist before the others (it owns them), and a time namespace needs its offsets
    written before any process enters it: both need the setup child. Everything else can be unshared by
    the init itself, with only the pid namespace entered at fork."""
    return not (plan.new_user or plan.joins("user") or plan.creates("time"))


def _fork_into_pid_namespace(plan: NamespacePlan, sys: Syscalls, child_main: Callable[[], NoReturn]) -> int:
    """Fork with the child in the container's (new or joined) pid namespace; ours stays as it was."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if plan.creates("pid"):
            sys.unshare(k.CLONE_NEWPID)  # affects only our children: pid_for_children
        elif plan.joins("pid"):
            target = os.open(dict(plan.join)["pid"], os.O_RDONLY | os.O_CLOEXEC)
            try:
                sys.setns(target, k.CLONE_NEWPID)
            finally:
                os.close(target)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            child_main()
        return pid
    finally:
        sys.setns(own, k.CLONE_NEWPID)
        os.close(own)


def _launch_through_setup_child(ctx: LaunchContext, parent: SyncChannel, child: SyncChannel, fifo_fd: int,
                                cleanup: _Cleanup) -> int:
    """User or time namespace: the setup child makes them, then forks the init; returns the init's pid."""
    setup_pid = os.fork()
    if setup_pid == 0:  # pragma: no cover - runs in the child
        parent.close()
        setup_child_main(ctx, child)
    child.close()
    os.close(fifo_fd)
    cleanup.pids.append(setup_pid)
    parent.receive("userns", "set up the user namespace")
    if ctx.plan.new_user:
        linux = ctx.spec.linux
        write_id_mappings(setup_pid, linux.uid_mappings, linux.gid_mappings)
    parent.send("go")
    message, _ = parent.receive("pid", "start the container's init")
    pid = int(message["pid"])
    cleanup.pids.append(pid)
    _reap(setup_pid)
    cleanup.pids.remove(setup_pid)
    return pid


def _reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ContainerError(f"setup process exited with {os.waitstatus_to_exitcode(status)}")
