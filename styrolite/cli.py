"""``styrolite``: the standard OCI runtime command line (runtime-spec runtime.md, runc/crun conventions).

Every failure prints one line, ``styrolite: <what was being done>: <why>``, and exits non-zero.
"""

from __future__ import annotations

import os
import sys

from styrolite.cliargs import Arguments, build_parser, quick_parse
from styrolite.errors import StyroliteError, describe
from styrolite.logs import DEBUG, INFO, LEVEL_NAMES, WARNING, log, set_sink

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = quick_parse(argv) or build_parser().parse_args(argv)
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


def run() -> None:
    """The installed entry (launcher, ``python -m styrolite``): ``main()``, then exit without the interpreter's
    teardown of every module and object (about a millisecond of each call). What must outlive us is written
    by then: files through ``with`` blocks or ``os.write``, and stdout/stderr are flushed here."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or _reader_went_away()
    sys.stderr.flush()
    os._exit(code)


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


class CliLog:
    """Where the CLI's log records go, in runc's formats: warnings and errors to stderr (``styrolite: msg``,
    or a JSON object per line with ``--log-format json``), everything from INFO (DEBUG with ``--debug``)
    to the ``--log`` file. Written directly, without the ``logging`` package (styrolite.logs)."""

    def __init__(self, log_format: str, debug: bool, log_fd: int | None) -> None:
        self.json = log_format == "json"
        self.threshold = DEBUG if debug else INFO
        self.log_fd = log_fd

    def __call__(self, level: int, message: str) -> None:
        if level < self.threshold:
            return
        import time

        now = time.time()
        name = LEVEL_NAMES.get(level, str(level))
        record = _json_record(name, message, now) if self.json else ""
        if level >= WARNING:
            sys.stderr.write(record or f"styrolite: {message}\n")
            sys.stderr.flush()
        if self.log_fd is not None:
            line = record or f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{int(now % 1 * 1000):03d} " \
                             f"{name} {message}\n"
            os.write(self.log_fd, line.encode(errors="replace"))


def _json_record(level_name: str, message: str, created: float) -> str:
    import time

    from styrolite import jsonio

    return jsonio.dumps({"level": level_name.lower(), "msg": message,
                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))}) + "\n"


def _setup_logging(args: argparse.Namespace | Arguments) -> None:
    log_fd = None
    if args.log:
        try:
            log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise SystemExit(f"styrolite: open --log {args.log!r}: {e.strerror}") from None
    set_sink(CliLog(args.log_format, args.debug, log_fd))


def _store(args: argparse.Namespace):
    from styrolite.state import StateStore

    return StateStore(args.root)


def _print_json(value: Any) -> None:
    from styrolite import jsonio

    print(jsonio.dumps(value, indent=2))


def cmd_create(args: argparse.Namespace) -> int:
    from styrolite.lifecycle.common import become_subreaper
    from styrolite.lifecycle.create import create

    become_subreaper()
    create(_store(args), args.id, args.bundle, console_socket=args.console_socket,
           preserve_fds=args.preserve_fds, pid_file=args.pid_file)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from styrolite.exitstatus import exit_code_of
    from styrolite.lifecycle.common import become_subreaper
    from styrolite.lifecycle.create import create
    from styrolite.lifecycle.delete import delete
    from styrolite.lifecycle.start import start

    become_subreaper()
    store = _store(args)
    # without --console-socket, run proxies a terminal itself (not when detached: nobody would be there)
    created = create(store, args.id, args.bundle, console_socket=args.console_socket,
                     preserve_fds=args.preserve_fds, pid_file=args.pid_file, own_console=not args.detach)
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


def _forward_signals(pid: int):
    """Forward the usual terminating signals to the container's init (runc does the same)."""
    import contextlib
    import signal

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
    from styrolite.exitstatus import exit_code_of
    from styrolite.lifecycle.common import become_subreaper, load_snapshot
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
        import json

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
        import time

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
        import json

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
    import json

    with open(path, "w") as f:
        json.dump(default_config(rootless=args.rootless), f, indent=2)
        f.write("\n")
    return 0


COMMANDS = {name[4:]: fn for name, fn in dict(globals()).items() if name.startswith("cmd_")}

if __name__ == "__main__":
    sys.exit(main())
