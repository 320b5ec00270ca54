"""The ``styrolite`` command line's grammar: the full argparse parser, and a quick reader for the calls a
client makes for every container.

podman, docker and containerd run ``create``, ``start``, ``state``, ``kill`` and ``delete`` (or ``run``)
once per container, always in the same few shapes (``--root R --log F --log-format json delete --force
ID``). ``quick_parse`` reads exactly those shapes without importing argparse (which brings ``re`` and
``gettext``: milliseconds of every call) and gives up on anything else, returning None; the full parser
then takes over, with its help, abbreviations and error messages. For every command line ``quick_parse``
accepts it returns what ``build_parser().parse_args`` would (tests/runtime/test_runtime_cli_args.py).
"""

from __future__ import annotations

import os

from styrolite import OCI_VERSION, __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

DEFAULT_ROOT = "/run/styrolite"
LOG_FORMATS = ("text", "json")


class Arguments:
    """The parsed command line, attribute for attribute what argparse's ``Namespace`` holds."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Arguments({', '.join(f'{k}={v!r}' for k, v in sorted(vars(self).items()))})"


def default_root() -> str:
    return os.environ.get("STYROLITE_ROOT", DEFAULT_ROOT)


# option -> (attribute, kind): "flag" (store_true), "text" or "int" (takes a value)
_GLOBAL = {"--root": ("root", "text"), "--log": ("log", "text"), "--log-format": ("log_format", "text"),
           "--debug": ("debug", "flag"), "--systemd-cgroup": ("systemd_cgroup", "flag")}
_CREATE = {"--bundle": ("bundle", "text"), "-b": ("bundle", "text"), "--pid-file": ("pid_file", "text"),
           "--console-socket": ("console_socket", "text"), "--preserve-fds": ("preserve_fds", "int"),
           "--no-pivot": ("no_pivot", "flag"), "--no-new-keyring": ("no_new_keyring", "flag")}
_CREATE_DEFAULTS = {"bundle": ".", "pid_file": None, "console_socket": None, "preserve_fds": 0, "no_pivot": False,
                    "no_new_keyring": False}
# subcommand -> (options, defaults, required positionals, optional positionals with their defaults)
_QUICK: dict[str, tuple[dict, dict, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "state": ({}, {}, ("id",), ()),
    "start": ({}, {}, ("id",), ()),
    "delete": ({"--force": ("force", "flag"), "-f": ("force", "flag")}, {"force": False}, ("id",), ()),
    "kill": ({"--all": ("all", "flag"), "-a": ("all", "flag")}, {"all": False}, ("id",), (("signal", "SIGTERM"),)),
    "create": (_CREATE, _CREATE_DEFAULTS, ("id",), ()),
    "run": ({**_CREATE, "--detach": ("detach", "flag"), "-d": ("detach", "flag"), "--keep": ("keep", "flag")},
            {**_CREATE_DEFAULTS, "detach": False, "keep": False}, ("id",), ()),
}


def quick_parse(argv: list[str]) -> Arguments | None:
    """The arguments of a per-container call in one of its usual shapes, or None (use the full parser)."""
    values: dict[str, object] = {"root": default_root(), "log": None, "log_format": "text", "debug": False,
                                 "systemd_cgroup": False}
    index = _read_options(argv, 0, _GLOBAL, values)
    if index is None or index >= len(argv) or argv[index] not in _QUICK:
        return None
    if values["log_format"] not in LOG_FORMATS:
        return None
    name = argv[index]
    options, defaults, required, optional = _QUICK[name]
    values["subcommand"] = name
    values.update(defaults)
    positionals: list[str] = []
    index += 1
    while index < len(argv):
        next_index = _read_options(argv, index, options, values)
        if next_index is None:
            return None
        if next_index < len(argv):
            positionals.append(argv[next_index])
            next_index += 1
        index = next_index
    if not len(required) <= len(positionals) <= len(required) + len(optional):
        return None
    for attribute, value in zip(required, positionals, strict=False):
        values[attribute] = value
    for (attribute, default), value in zip(optional, [*positionals[len(required):], *[None] * len(optional)],
                                           strict=False):
        values[attribute] = default if value is None else value
    return Arguments(**values)


def _read_options(argv: list[str], index: int, options: dict, values: dict) -> int | None:
    """Consume options from ``argv[index:]`` into ``values`` up to the next positional (returns its index), or
    None when a token is anything the quick reader does not handle exactly as argparse would."""
    while index < len(argv):
        token = argv[index]
        if not token or token == "-":
            return None
        if not token.startswith("-"):
            return index
        if token == "--":
            return None
        name, has_inline, inline = token.partition("=")
        if name not in options or (has_inline and not name.startswith("--")):
            return None
        attribute, kind = options[name]
        if kind == "flag":
            if has_inline:
                return None
            values[attribute] = True
            index += 1
            continue
        if has_inline:
            value = inline
            index += 1
        else:
            if index + 1 >= len(argv) or argv[index + 1].startswith("-"):
                return None  # argparse's rules for a value that looks like an option: leave them to it
            value = argv[index + 1]
            index += 2
        if kind == "int":
            try:
                values[attribute] = int(value)
            except ValueError:
                return None
        else:
            values[attribute] = value
    return index


def build_parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="styrolite", description="OCI container runtime of the zone")
    p.add_argument("--version", "-v", action="version",
                   version=f"styrolite version {__version__}\nspec: {OCI_VERSION}")
    p.add_argument("--root", default=default_root(), help=f"directory for container state (default {DEFAULT_ROOT})")
    p.add_argument("--log", help="also write log lines to this file")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text")
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
