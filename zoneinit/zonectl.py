"""``/bin/zone``: talk to the zone's PID 1 from inside the zone over /run/zone/idm.sock (the IDM protocol).

Subcommands: ``ping``, ``info``, ``ps``, ``exec [-t] [-e K=V] [-w DIR] [-u USER] [-c CONTAINER] -- CMD``,
``logs [-f] CONTAINER``. Thin on purpose: the client and terminal plumbing live in ``idm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from idm.errors import IdmError
from styrolite.errors import describe

DEFAULT_SOCKET = "/run/zone/idm.sock"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zone", description="Talk to this zone's init over IDM.")
    p.add_argument("--socket", default=os.environ.get("ZONE_IDM_SOCKET", DEFAULT_SOCKET), help="IDM socket path")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ping", help="check that init answers")
    sub.add_parser("info", help="zone information")
    sub.add_parser("ps", help="list containers")
    e = sub.add_parser("exec", help="run a command (in a container with -c)")
    e.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    e.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    e.add_argument("-w", "--workdir", help="working directory")
    e.add_argument("-u", "--user", help="user (name or uid[:gid])")
    e.add_argument("-c", "--container", help="container id")
    e.add_argument("cmd", nargs=argparse.REMAINDER)
    lg = sub.add_parser("logs", help="a container's output")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("container")
    return p


def _print(obj: Any, as_json: bool) -> None:
    if as_json or not isinstance(obj, dict):
        print(json.dumps(obj, indent=2, default=repr))
        return
    for key, value in obj.items():
        print(f"{key}: {json.dumps(value, default=repr) if isinstance(value, dict | list) else value}")


def _ps(containers: list[dict[str, Any]]) -> None:
    print(f"{'ID':<24} {'STATUS':<10} {'PID':>7}  COMMAND")
    for c in containers:
        command = " ".join(c.get("args") or c.get("command") or [])
        print(f"{c.get('id', '?'):<24} {c.get('status', '?'):<10} {c.get('pid') or '-':>7}  {command}")


def run(args: argparse.Namespace) -> int:
    from idm.attach import attach, terminal_size
    from idm.client import IdmClient

    with IdmClient.connect_unix(args.socket, events=False, name="zonectl") as client:
        if args.command == "ping":
            start = time.monotonic()
            client.call("ping")
            print(f"pong from {client.info.get('zone', 'zone')} in {(time.monotonic() - start) * 1000:.1f} ms")
        elif args.command == "info":
            _print(client.call("zone.info"), args.json)
        elif args.command == "ps":
            result = client.call("container.list")
            containers = result.get("containers", []) if isinstance(result, dict) else result
            if args.json:
                _print(containers, True)
            else:
                _ps(containers)
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                print("zone exec: no command given", file=sys.stderr)
                return 2
            size = terminal_size(0) if args.tty else None
            session = client.exec(
                cmd, container=args.container, cwd=args.workdir, user=args.user, tty=args.tty,
                env=dict(item.split("=", 1) for item in args.env) if args.env else None,
                rows=size[0] if size else None, cols=size[1] if size else None,
            )
            return attach(session, tty_mode=args.tty)
        elif args.command == "logs":
            if not args.follow:
                result = client.call("container.logs", {"id": args.container})
                sys.stdout.buffer.write(result.get("data") or b"")
                sys.stdout.buffer.flush()
                return 0
            stream, _info = client.open_stream("container.logs", {"id": args.container, "follow": True})
            for channel, data in iter(stream.read, None):
                target = sys.stderr.buffer if channel == "stderr" else sys.stdout.buffer
                target.write(data)
                target.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except IdmError as e:
        print(f"zone: {describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
