"""Code that runs in the forked processes of ``create``: the setup child, then the container's init.

Without a new user or time namespace there is no setup child: the runtime forks the init straight into
the new pid namespace (``direct_init_main``), saving a fork and a round trip. Otherwise:

runtime ──fork──> setup child: joins the given namespaces (after a given user namespace; before a new
                  one, whose processes would lack privilege over them), unshares a new user namespace
                  ("userns"), waits while the runtime writes the id maps and puts it in the cgroup
                  ("go"), unshares the other new namespaces, forks the init and reports its pid
                  ("pid"), exits.
          init:   pid 1 of the new pid namespace. Mounts the rootfs ("prepivot" -> runtime runs
                  prestart/createRuntime hooks -> "continue"), runs createContainer hooks, pivots,
                  finishes the rootfs, hostname, console, then sets the process up as far as it can be
                  before exec: rlimits, user, capabilities, the executable ("created"); blocks on the exec
                  fifo until ``start``; runs startContainer hooks; loads a late seccomp filter and execs.
The runtime is a child subreaper, so the init is reparented to it when the setup child exits.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys as python_sys
import termios

# Everything the children run must be imported before they fork: after pivot_root the host's Python
# files are out of reach, so a lazy import there fails. (It also keeps the fork path warm.) What only some
# configs need is imported by ``preload`` in the runtime, before the fork, when the config needs it.
from styrolite import rootfs, security
from styrolite.container import process_setup
from styrolite.container.network import loopback_up
from styrolite.container.stdio import Stdio
from styrolite.container.sync import SyncChannel
from styrolite.container.terminal import take_terminal
from styrolite.errors import ContainerError, describe
from styrolite.namespaces import NamespacePlan, join_before_user, join_namespaces, open_namespace_files
from styrolite.records import field, record
from styrolite.spec.model import Spec
from styrolite.syscalls import LINUX, Syscalls, linux
from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


@record
class LaunchContext:
    spec: Spec
    bundle: str
    rootfs: str
    plan: NamespacePlan
    seccomp_filter: Any = None
    exec_fifo_fd: int | None = None  # opened O_RDWR by the runtime: a user-namespaced init could not open it
    stdio: Stdio = field(default_factory=Stdio)
    terminal: bool = False
    preserve_fds: int = 0
    sys: Syscalls = LINUX
    bind_source_fds: dict[int, int] = field(default_factory=dict)  # mounts[index] -> detached copy of its source
    cgroup_files: list[str] = field(default_factory=list)  # written "0" to by the first child: CgroupManager.join_files


def preload(spec: Spec) -> None:
    """Import, before the fork, what the children will need for this config beyond the modules above: the
    hook runner (and subprocess) for createContainer/startContainer hooks, which run after pivot_root; cffi
    and the C library behind the syscall seam (loaded on first use otherwise)."""
    linux.load()
    if spec.hooks and (spec.hooks.create_container or spec.hooks.start_container):
        import styrolite.hooks  # noqa: F401


def init_needs_state(spec: Spec) -> bool:
    """createContainer/startContainer hooks read the state document (with the init's pid as the runtime
    sees it), so the init waits for it; otherwise it need not wait for the runtime at all."""
    return bool(spec.hooks and (spec.hooks.create_container or spec.hooks.start_container))


def join_cgroup(files: list[str]) -> None:
    """Move this process (single-threaded: just forked) into the container's cgroup, before it makes any
    namespace (the cgroup namespace is rooted where it stands then): "0" written to each file of
    ``CgroupManager.join_files``. On cgroup v1 this skips the RCU grace period a write of our pid by the
    runtime would wait for (bench/container_start.py: milliseconds of every create)."""
    for path in files:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise ContainerError(f"join the container's cgroup: write 0 to {path}: {e.strerror}") from e


def runs_hooks_before_pivot(spec: Spec) -> bool:
    """prestart/createRuntime hooks: the runtime runs them once the rootfs is mounted, before pivot_root, so
    the init stops there ("prepivot") until they are done ("continue"). Without them there is no stop."""
    return bool(spec.hooks and (spec.hooks.prestart or spec.hooks.create_runtime))


def setup_child_main(ctx: LaunchContext, channel: SyncChannel) -> NoReturn:
    try:
        security.set_dumpable(False)  # nothing in the container may open /proc/<us>/exe (CVE-2019-5736)
        join_cgroup(ctx.cgroup_files)  # while we are the host's root: inside a user namespace we may not
        process_setup.set_oom_score_adj_early(ctx.spec.process)
        # bind sources, while we may still look up every host path (a user namespace's root may not)
        ctx.bind_source_fds = rootfs.open_bind_sources(ctx.spec, ctx.bundle, ctx.sys)
        # what we may join now, while we still hold privilege over namespaces a user namespace will not own
        # (a network namespace shared with other containers): runc's order. `later` holds a given user
        # namespace and what only it lets us join.
        later = join_before_user(open_namespace_files(ctx.plan.join), ctx.sys)
        join_namespaces([item for item in later if item[0] == "user"], ctx.sys)
        if ctx.plan.new_user:
            ctx.sys.unshare(k.CLONE_NEWUSER)
        channel.send("userns")
        channel.receive("go", "wait for the runtime to map ids")
        if ctx.plan.new_user or ctx.plan.joins("user"):
            ctx.sys.setresgid(0)
            ctx.sys.setresuid(0)
        join_namespaces([item for item in later if item[0] != "user"], ctx.sys)
        if ctx.plan.unshare_flags:
            ctx.sys.unshare(ctx.plan.unshare_flags)
        if ctx.plan.creates("time"):
            _write_time_offsets(ctx.spec)
        pid = os.fork()
        if pid == 0:
            container_init_main(ctx, channel)
        channel.send("pid", pid=pid)
    except BaseException as e:
        channel.send_error(describe(e))
        os._exit(1)
    os._exit(0)


def direct_init_main(ctx: LaunchContext, channel: SyncChannel) -> NoReturn:
    """The single-fork path: the runtime forked us straight into the new pid namespace (we are its pid 1)."""
    try:
        security.set_dumpable(False)
        join_cgroup(ctx.cgroup_files)
        opened = open_namespace_files([item for item in ctx.plan.join if item[0] != "pid"])
        state = None
        if init_needs_state(ctx.spec):
            message, _ = channel.receive("go", "wait for the runtime to record the init's pid")
            state = message["state"]
        join_namespaces(opened, ctx.sys)
        flags = ctx.plan.unshare_flags & ~k.CLONE_NEWPID
        if flags:
            ctx.sys.unshare(flags)
    except BaseException as e:
        channel.send_error(describe(e))
        os._exit(1)
    container_init_main(ctx, channel, state=state, announced=True)


def _write_time_offsets(spec: Spec) -> None:
    offsets = spec.linux.time_offsets if spec.linux else {}
    if not offsets:
        return
    text = "".join(f"{clock} {o.secs} {o.nanosecs}\n" for clock, o in offsets.items())
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(text)


def container_init_main(ctx: LaunchContext, channel: SyncChannel, state: dict | None = None,
                        announced: bool = False) -> NoReturn:
    """``announced``: forked straight by the runtime (the direct path); ``state`` is then the state document
    hooks read, if they need one. Otherwise the runtime sends it with "init"."""
    created = False
    try:
        if not announced:
            # the setup child reports our pid on the shared channel first; wait for the runtime's go-ahead
            message, _ = channel.receive("init", "wait for the runtime to record the init's pid")
            state = message["state"]
        os.setsid()
        if not ctx.terminal:
            ctx.stdio.install()
        fifo_fd = ctx.exec_fifo_fd
        spec, process = ctx.spec, ctx.spec.process
        assert process is not None
        # a joined mount namespace gets the bundle's rootfs set up and pivoted into, like a new one (runc)
        mount_ns = ctx.plan.creates("mount") or ctx.plan.joins("mount")
        if ctx.plan.creates("network"):
            loopback_up()  # runc and crun bring lo up in a new network namespace
        prepared = rootfs.prepare_rootfs(spec, ctx.bundle, ctx.sys, own_namespace=mount_ns,
                                         source_fds=ctx.bind_source_fds)
        if runs_hooks_before_pivot(spec):
            channel.send("prepivot")
            channel.receive("continue", "wait for createRuntime hooks")
        if spec.hooks and spec.hooks.create_container:
            from styrolite.hooks import run_hooks  # loaded by preload() before the fork

            run_hooks("createContainer", spec.hooks.create_container, state)
        if mount_ns:
            rootfs.pivot_into(ctx.rootfs, ctx.sys)
        else:
            rootfs.chroot_into(ctx.rootfs, ctx.sys)
        rootfs.finalize_rootfs(spec, ctx.sys, prepared)
        if ctx.plan.creates("uts"):
            if spec.hostname:
                ctx.sys.sethostname(spec.hostname)
            if spec.domainname:
                ctx.sys.setdomainname(spec.domainname)
        if ctx.terminal:
            _attach_console(ctx, channel)
        keep = {channel.fileno()} | ({fifo_fd} if fifo_fd is not None else set())
        ready = process_setup.prepare_process(process, spec, ctx.seccomp_filter, preserve_fds=ctx.preserve_fds,
                                              keep_fds=keep, create_cwd=True, sys=ctx.sys)
        channel.send("created", warnings=ready.warnings)
        created = True
        channel.close()
        if fifo_fd is not None:
            os.read(fifo_fd, 1)  # blocks until `start` writes
            os.close(fifo_fd)
        if spec.hooks and spec.hooks.start_container:
            from styrolite.hooks import run_hooks  # loaded by preload() before the fork

            run_hooks("startContainer", spec.hooks.start_container, state)
        process_setup.execute(ready, ctx.sys)
    except BaseException as e:
        if created:
            print(f"styrolite: {describe(e)}", file=python_sys.stderr, flush=True)
            os._exit(getattr(e, "exit_code", 127))
        channel.send_error(describe(e))
        os._exit(1)
    os._exit(1)


def _attach_console(ctx: LaunchContext, channel: SyncChannel) -> None:
    """A pty from the container's own devpts: the slave becomes stdio, ctty and /dev/console."""
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    console = "/dev/console"
    if not os.path.exists(console):
        open(console, "a").close()
    ctx.sys.mount(slave_path, console, None, k.MS_BIND)
    size = ctx.spec.process.console_size if ctx.spec.process else None
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))
    channel.send("console", fds=[master])
    os.close(master)
    take_terminal(slave)
