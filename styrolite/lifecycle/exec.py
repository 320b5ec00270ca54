"""``exec``: run another process inside a running container.

runtime ──fork──> exec child: non-dumpable, joins the container's cgroup (the runtime moves it), then
                  its namespaces (user first, mount last: that also makes the container's root our
                  root), forks the process (so it is inside the pid namespace), reports its pid, exits.
         process: pty (if asked), apply ``process`` (process_setup.prepare_process: rlimits, user,
                  capabilities, the executable), then a late seccomp filter and execve in one step. Its
                  copy of the sync channel is close-on-exec, so a clean EOF tells the runtime the exec
                  succeeded; an ``error`` message tells why it did not (``warnings`` may come first).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys as python_sys

from styrolite import security
from styrolite.container import process_setup
from styrolite.container.stdio import Stdio
from styrolite.container.sync import SyncChannel
from styrolite.container.terminal import take_terminal
from styrolite.errors import ContainerError, describe
from styrolite.lifecycle.common import cgroup_of, load_snapshot, require_status
from styrolite.lifecycle.handoff import send_console, write_pid_file
from styrolite.logs import log
from styrolite.namespaces import join_before_user, join_namespaces, open_namespace_files
from styrolite.namespaces.plan import JOIN_ORDER
from styrolite.records import record
from styrolite.spec.model import Process, Spec
from styrolite.state import StateStore
from styrolite.syscalls import LINUX, Syscalls, linux
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


@record
class Executed:
    pid: int
    console_fd: int | None = None


def exec_process(
    store: StateStore,
    container_id: str,
    process: Process,
    *,
    stdio: Stdio | None = None,
    terminal: bool | None = None,
    console_socket: str | None = None,
    preserve_fds: int = 0,
    pid_file: str | None = None,
    sys: Syscalls = LINUX,
) -> Executed:
    state = store.load(container_id)
    require_status(state, ("created", "running"), "exec into")
    spec = load_snapshot(store, state)
    use_terminal = process.terminal if terminal is None else terminal
    join = [(t, f"/proc/{state.pid}/ns/{k.NAMESPACE_PROC_NAMES[t]}") for t in JOIN_ORDER
            if spec.namespace(t) is not None]
    seccomp_filter = None
    if spec.linux and spec.linux.seccomp:
        from styrolite.security import compile_filter
        from styrolite.security.seccomp_cache import cache_dir_for

        seccomp_filter = compile_filter(spec.linux.seccomp, cache_dir=cache_dir_for(store.root))
    cgroup = cgroup_of(state)

    linux.load()  # the exec child joins the container's mount namespace: nothing may be loaded from disk after
    parent, child = SyncChannel.pair()
    exec_child = os.fork()
    if exec_child == 0:  # pragma: no cover - runs in the child
        parent.close()
        _exec_child_main(spec, process, join, seccomp_filter, stdio or Stdio(), use_terminal, preserve_fds,
                         child, sys)
    child.close()
    pid = None
    try:
        cgroup.add_process(exec_child)
        parent.send("go")
        message, _ = parent.receive("pid", "join the container")
        pid = int(message["pid"])
        os.waitpid(exec_child, 0)
        exec_child = 0
        console_fd = None
        if use_terminal:
            _, fds = parent.receive("console", "set up the console")
            console_fd = fds[0]
        _wait_for_exec(parent)
    except BaseException as e:
        for victim in (exec_child, pid):
            if victim:
                with contextlib.suppress(OSError):
                    os.kill(victim, 9)
                with contextlib.suppress(OSError):
                    os.waitpid(victim, 0)
        raise ContainerError(f"exec in container {container_id!r}") from e
    finally:
        parent.close()
    if console_socket is not None and console_fd is not None:
        send_console(console_socket, console_fd)
        os.close(console_fd)
        console_fd = None
    if pid_file:
        write_pid_file(pid_file, pid)
    return Executed(pid, console_fd)


def _wait_for_exec(channel: SyncChannel) -> None:
    """Until the process's end of the channel closes (execve succeeded); an error message raises."""
    while True:
        data = channel.sock.recv(65536)
        if not data:
            return
        message = json.loads(data)
        if message.get("type") != "warnings":
            raise ContainerError(message.get("message", "exec failed"))
        for warning in message.get("warnings", []):
            log.warning("%s", warning)


def _exec_child_main(spec: Spec, process: Process, join: list[tuple[str, str]], seccomp_filter: Any,
                     stdio: Stdio, terminal: bool, preserve_fds: int, channel: SyncChannel,
                     sys: Syscalls) -> NoReturn:
    try:
        security.set_dumpable(False)
        channel.receive("go", "wait to be placed in the container's cgroup")
        process_setup.set_oom_score_adj_early(process)
        later = join_before_user(open_namespace_files(join), sys)  # the user namespace, then EPERM'd ones
        join_namespaces([item for item in later if item[0] == "user"], sys)
        if any(t == "user" for t, _ in join):
            sys.setresgid(0)
            sys.setresuid(0)
        join_namespaces([item for item in later if item[0] != "user"], sys)
        pid = os.fork()
        if pid == 0:
            _exec_process_main(spec, process, seccomp_filter, stdio, terminal, preserve_fds, channel, sys)
        channel.send("pid", pid=pid)
    except BaseException as e:
        channel.send_error(describe(e))
        os._exit(1)
    os._exit(0)


def _exec_process_main(spec: Spec, process: Process, seccomp_filter: Any, stdio: Stdio, terminal: bool,
                       preserve_fds: int, channel: SyncChannel, sys: Syscalls) -> NoReturn:
    try:
        os.setsid()
        if terminal:
            master, slave = os.openpty()
            channel.send("console", fds=[master])
            os.close(master)
            take_terminal(slave)
        else:
            stdio.install()
        os.chdir("/")
        ready = process_setup.prepare_process(process, spec, seccomp_filter, preserve_fds=preserve_fds,
                                              keep_fds={channel.fileno()}, sys=sys)
        if ready.warnings:
            channel.send("warnings", warnings=ready.warnings)
        process_setup.execute(ready, sys)
    except BaseException as e:
        channel.send_error(describe(e))
        print(f"styrolite exec: {describe(e)}", file=python_sys.stderr, flush=True)
        os._exit(getattr(e, "exit_code", 127))
    os._exit(127)
