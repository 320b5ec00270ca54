"""``styrolite``: the standard OCI runtime command line (runtime-spec runtime.md, runc/crun conventions).

Every failure prints one line, ``styrolite: <what was being done>: <why>``, and exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from styrolite import OCI_VERSION, __version__
from styrolite.errors import StyroliteError, describe

log = logging.getLogger("styrolite")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="styrolite", description="OCI container runtime of the zone")
    p.add_argument("--version", "-v", action="version",
                   version=f"styrolite version {__version__}\nspec: {OCI_VERSION}")
    p.add_argument("--root", default=os.environ.get("STYROLITE_ROOT", "/run/styrolite"),
                   help="directory for container state (default /run/styrolite)")
    p.add_argument("--log", help="also write log lines to this file")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true", help="tracebacks for internal errors")
    p.add_argument("--systemd-cgroup", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text)

    def common_create(c: argparse.ArgumentParser) -> None:
        c.add_argument("--bundle", "-b", default=".")
        c.add_argument("--pid-file")
        c.add_argument("--console-socket")
        c.add_argument("--preserve-fds", type=int, default=0)
        c.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
        c.add_argument("--no-new-keyring", action="store_true", help=argparse.SUPPRESS)
        c.add_argument("id")

    common_create(cmd("create", "create a container (its process waits for start)"))
    run = cmd("run", "create and start a container, wait for it, delete it")
    common_create(run)
    run.add_argument("--detach", "-d", action="store_true")
    run.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    cmd("start", "start a created container").add_argument("id")
    cmd("state", "print the state of a container (JSON)").add_argument("id")
    k = cmd("kill", "send a signal (default SIGTERM) to a container")
    k.add_argument("--all", "-a", action="store_true", help="to every process of the container")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    d = cmd("delete", "delete a stopped container (--force: any)")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")
    e = cmd("exec", "run a process in a running container")
    e.add_argument("--process", "-p", help="process.json (runtime-spec process object)")
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--env", "-e", action="append", default=[])
    e.add_argument("--cwd")
    e.add_argument("--user", "-u", help="uid[:gid]")
    e.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    e.add_argument("--cap", "-c", action="append", default=[])
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file")
    e.add_argument("--console-socket")
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("id")
    e.add_argument("command", nargs=argparse.REMAINDER)
    ps = cmd("ps", "list the processes of a container")
    ps.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ps.add_argument("id")
    ls = cmd("list", "list containers")
    ls.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ls.add_argument("--quiet", "-q", action="store_true")
    cmd("pause", "freeze every process of a container").add_argument("id")
    cmd("resume", "thaw a paused container").add_argument("id")
    u = cmd("update", "change the resource limits of a container")
    u.add_argument("--resources", "-r", help="JSON file with a linux.resources object ('-' for stdin)")
    for flag in ("memory", "memory-reservation", "memory-swap", "cpu-shares", "cpu-quota", "cpu-period",
                 "pids-limit", "blkio-weight"):
        u.add_argument(f"--{flag}", type=int)
    u.add_argument("--cpuset-cpus")
    u.add_argument("--cpuset-mems")
    u.add_argument("id")
    ev = cmd("events", "print resource usage statistics (--stats)")
    ev.add_argument("--stats", action="store_true")
    ev.add_argument("id")
    cmd("features", "print the features this runtime supports (JSON)")
    sp = cmd("spec", "write a default config.json")
    sp.add_argument("--bundle", "-b", default=".")
    sp.add_argument("--rootless", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args)
    try:
        if args.systemd_cgroup:
            raise StyroliteError("--systemd-cgroup: the systemd cgroup driver is not supported")
        code = int(COMMANDS[args.subcommand](args) or 0)
        sys.stdout.flush()  # here, where a closed pipe can still be handled, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except (StyroliteError, OSError) as e:
        return _fail(describe(e))
    except Exception as e:  # an internal error still gets one clear line
        if args.debug:
            raise
        return _fail(f"internal error: {describe(e)} ({type(e).__name__}); rerun with --debug")


def _reader_went_away() -> int:
    """``styrolite features | head``: the reader closed the pipe. Not an error; say nothing, and point stdout
    at /dev/null so the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def _fail(message: str) -> int:
    log.error("%s", message)
    return 1


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname.lower(), "msg": record.getMessage(),
                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))})


def _setup_logging(args: argparse.Namespace) -> None:
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.DEBUG if args.debug else logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    stderr.setFormatter(logging.Formatter("styrolite: %(message)s" if args.log_format == "text" else None))
    if args.log_format == "json":
        stderr.setFormatter(_JsonFormatter())
    log.addHandler(stderr)
    if args.log:
        try:
            handler = logging.FileHandler(args.log)
        except OSError as e:
            raise SystemExit(f"styrolite: open --log {args.log!r}: {e.strerror}") from None
        handler.setFormatter(_JsonFormatter() if args.log_format == "json"
                             else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)


def _store(args: argparse.Namespace):
    from styrolite.state import StateStore

    return StateStore(args.root)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cmd_create(args: argparse.Namespace) -> int:
    from styrolite.api import become_subreaper
    from styrolite.lifecycle.create import create

    become_subreaper()
    create(_store(args), args.id, args.bundle, console_socket=args.console_socket,
           preserve_fds=args.preserve_fds, pid_file=args.pid_file)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from styrolite.api import become_subreaper, exit_code_of
    from styrolite.lifecycle.create import create
    from styrolite.lifecycle.delete import delete
    from styrolite.lifecycle.start import start

    become_subreaper()
    store = _store(args)
    terminal = None if args.console_socket else _wants_tty(args)
    if terminal and args.detach:
        raise StyroliteError("process.terminal with --detach needs --console-socket")
    created = create(store, args.id, args.bundle, console_socket=args.console_socket,
                     preserve_fds=args.preserve_fds, pid_file=args.pid_file, terminal=terminal)
    pid = created.state.pid
    forward = _forward_signals(pid)
    try:
        start(store, args.id)
        if args.detach:
            return 0
        if created.console_fd is not None:
            from styrolite.console_proxy import proxy

            proxy(created.console_fd)
        status = _wait_child(pid)
    finally:
        forward()
    if not args.keep:
        try:
            delete(store, args.id, force=True)
        except StyroliteError as e:
            log.warning("%s", describe(e))
    return exit_code_of(status)


def _wants_tty(args: argparse.Namespace) -> bool | None:
    """``run`` without --console-socket proxies a terminal itself when process.terminal is set."""
    from styrolite.spec import load_config

    try:
        spec = load_config(os.path.join(args.bundle, "config.json"))
    except StyroliteError:
        return None  # create reports it with its own context
    return bool(spec.process and spec.process.terminal)


def _forward_signals(pid: int):
    """Forward the usual terminating signals to the container's init (runc does the same)."""
    names = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in names}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore


def _wait_child(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except InterruptedError:
            continue


def cmd_start(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.start import start

    start(_store(args), args.id)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.query import state

    _print_json(state(_store(args), args.id))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.kill import kill, parse_signal

    kill(_store(args), args.id, parse_signal(args.signal), args.all)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.delete import delete

    delete(_store(args), args.id, args.force)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from styrolite.api import become_subreaper, exit_code_of
    from styrolite.lifecycle.common import load_snapshot
    from styrolite.lifecycle.exec import exec_process

    store = _store(args)
    state = store.load(args.id)
    process = _exec_process_from_args(args, load_snapshot(store, state))
    become_subreaper()
    executed = exec_process(store, args.id, process, console_socket=args.console_socket,
                            preserve_fds=args.preserve_fds, pid_file=args.pid_file)
    if args.detach:
        return 0
    forward = _forward_signals(executed.pid)
    try:
        if executed.console_fd is not None:
            from styrolite.console_proxy import proxy

            proxy(executed.console_fd)
        status = _wait_child(executed.pid)
    finally:
        forward()
    return exit_code_of(status)


def _exec_process_from_args(args: argparse.Namespace, spec):
    import copy

    from styrolite.errors import ConfigError
    from styrolite.spec import load_process
    from styrolite.spec.model import Capabilities

    if args.process:
        return load_process(args.process)
    if not args.command:
        raise ConfigError("", "exec needs a command or --process")
    base = spec.process
    process = copy.deepcopy(base)
    process.args = list(args.command[1:] if args.command[0] == "--" else args.command)
    process.terminal = args.tty
    process.console_size = None
    env = {item.split("=", 1)[0]: item for item in process.env}
    for item in args.env:
        if "=" not in item:
            raise ConfigError("--env", f"{item!r} is not KEY=VALUE")
        env[item.split("=", 1)[0]] = item
    process.env = list(env.values())
    if args.cwd:
        process.cwd = args.cwd
    if args.user:
        uid, _, gid = args.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ConfigError("--user", f"{args.user!r} is not uid[:gid]")
        process.user.uid, process.user.gid = int(uid), int(gid or 0)
    if args.additional_gids:
        process.user.additional_gids = list(args.additional_gids)
    if args.cap:
        caps = process.capabilities or Capabilities()
        for cap in args.cap:
            name = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
            for group in (caps.bounding, caps.effective, caps.permitted):
                if name not in group:
                    group.append(name)
        process.capabilities = caps
    if args.no_new_privs:
        process.no_new_privileges = True
    if process.args == []:
        raise ConfigError("", "exec needs a command")
    if base is None:
        raise ConfigError("process", "the container has no process to base exec on; use --process")
    return process


def cmd_ps(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.query import processes

    pids = processes(_store(args), args.id)
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    print(f"{'PID':>8}  CMD")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmdline = "?"
        print(f"{pid:>8}  {cmdline}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.query import list_containers

    rows = list_containers(_store(args))
    if args.quiet:
        for row in rows:
            print(row["id"])
    elif args.format == "json":
        _print_json(rows)
    else:
        print(f"{'ID':<24} {'PID':>8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for row in rows:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["created"]))
            print(f"{row['id']:<24} {row['pid']:>8} {row['status']:<10} {row['bundle']:<40} {created}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.pause import pause

    pause(_store(args), args.id)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.pause import resume

    resume(_store(args), args.id)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.update import update
    from styrolite.spec.parse import decode_object, read_json

    raw: dict = {}
    if args.resources:
        raw = json.load(sys.stdin) if args.resources == "-" else read_json(args.resources)
    memory = {k: v for k, v in (("limit", args.memory), ("reservation", args.memory_reservation),
                                ("swap", args.memory_swap)) if v is not None}
    cpu = {k: v for k, v in (("shares", args.cpu_shares), ("quota", args.cpu_quota),
                             ("period", args.cpu_period), ("cpus", args.cpuset_cpus),
                             ("mems", args.cpuset_mems)) if v is not None}
    if memory:
        raw.setdefault("memory", {}).update(memory)
    if cpu:
        raw.setdefault("cpu", {}).update(cpu)
    if args.pids_limit is not None:
        raw["pids"] = {"limit": args.pids_limit}
    if args.blkio_weight is not None:
        raw.setdefault("blockIO", {})["weight"] = args.blkio_weight
    from styrolite.spec.model import Resources

    update(_store(args), args.id, decode_object(Resources, raw, "resources"))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.query import stats

    _print_json({"type": "stats", "id": args.id, "data": stats(_store(args), args.id)})
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from styrolite.spec import features

    _print_json(features())
    return 0


def cmd_spec(args: argparse.Namespace) -> int:
    from styrolite.spec import default_config

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise StyroliteError(f"{path} already exists")
    with open(path, "w") as f:
        json.dump(default_config(rootless=args.rootless), f, indent=2)
        f.write("\n")
    return 0


COMMANDS = {name[4:]: fn for name, fn in dict(globals()).items() if name.startswith("cmd_")}

if __name__ == "__main__":
    sys.exit(main())
