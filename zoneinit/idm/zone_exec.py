"""The zone-level debug exec (``exec`` with ``zone: true``, ``zonehost exec --zone``): a process in PID 1's own
namespaces — the zone's root, its PID 1 network namespace (``nsenter --net=/run/zone/netns/workload`` reaches
the containers' one), all of the zone's devices and mounts — for whoever holds the host end of IDM.

The zone's initramfs has no shell or tools of its own: they come from system extension images whose config
entry offers them (``tools``). Their ``bin/`` directories go first on ``PATH`` and their ``lib/`` on
``LD_LIBRARY_PATH``, in the config's order. Containers never get these: this is the only exec that sees
/run/zone/extensions.

The child is forked from PID 1 and execs at once; until it does, any failure ends it with 127 (not found)
or 126 (anything else) and one line on its stderr, the way a shell reports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import termios
from typing import Any

from zoneinit.idm.execs import ExecProcess, ExecRequest, set_window_size

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESET_SIGNALS = ("SIGPIPE", "SIGXFSZ", "SIGXFZ")   # ignored by the interpreter; exec keeps what is ignored


def zone_exec_env(extensions: list[dict[str, Any]], requested: list[str], tty: bool) -> dict[str, str]:
    """The exec'd process's environment: the extensions' tools first on PATH, their libraries on
    LD_LIBRARY_PATH, then what the request sets."""
    bins = [e["bin"] for e in extensions if e.get("tools") and e.get("bin")]
    libs = [e["lib"] for e in extensions if e.get("tools") and e.get("lib")]
    env = {"PATH": ":".join([*bins, BASE_PATH]), "HOME": "/root", "USER": "root"}
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join(libs)
    if tty:
        env["TERM"] = "xterm"
    for entry in requested:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def spawn_zone_exec(request: ExecRequest, extensions: list[dict[str, Any]]) -> ExecProcess:
    """Fork and exec ``request.command`` with PID 1's namespaces; pipes (or a pty) to PID 1 for its stdio."""
    env = zone_exec_env(extensions, request.env, request.tty)
    parent_fds: list[int] = []
    child_fds: list[int] = []
    try:
        if request.tty:
            master, slave = os.openpty()
            parent_fds.append(master)
            child_fds.append(slave)
            if request.size:
                set_window_size(master, *request.size)
            child_stdio = (slave, slave, slave)
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            parent_fds += [in_w, out_r, err_r]
            child_fds += [in_r, out_w, err_w]
            child_stdio = (in_r, out_w, err_w)
        hint = "" if any(e.get("tools") for e in extensions) else \
            " (the zone's initramfs has no tools: attach a system extension that offers some, e.g. debug-tools)"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, until exec
            _child(request, env, child_stdio, hint)
    except BaseException:
        for fd in parent_fds:
            os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)
    if request.tty:
        return ExecProcess(pid, {parent_fds[0]: "stdout"}, os.dup(parent_fds[0]))
    in_w, out_r, err_r = parent_fds
    return ExecProcess(pid, {out_r: "stdout", err_r: "stderr"}, in_w)


def _child(request: ExecRequest, env: dict[str, str], stdio: tuple[int, int, int], hint: str) -> None:
    """In the forked child: a session of its own, the stdio, the signal dispositions exec would keep, the
    user and directory asked for, then exec. Never returns."""
    code = 126
    try:
        signal.set_wakeup_fd(-1)   # PID 1's wakeup pipe is not ours
        os.setsid()
        if request.tty:
            fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target, inheritable=True)
        os.closerange(3, 65536)
        for name in RESET_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.chdir(request.cwd or "/")
        if request.user is not None:
            uid, gid = request.user
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        code = 127
        os.execvpe(request.command[0], request.command, env)
    except BaseException as e:
        missing = isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.ENOTDIR)
        if isinstance(e, OSError) and not missing:
            code = 126
        with contextlib.suppress(OSError):
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            os.write(2, f"zone exec: {request.command[0]}: {reason}{hint if missing else ''}\n"
                     .encode(errors="replace"))
    finally:
        os._exit(code)
