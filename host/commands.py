"""The CLI verbs. Each takes the parsed arguments and returns the process exit code; results go through
``host.output`` (text, or JSON with ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from host import output
from host.backends import backend_for
from host.errors import HostError
from host.state import ZoneDir, existing_zone, list_zones
from host.zonedef import parse_env
from idm.errors import IdmError


def dispatch(args: argparse.Namespace) -> int:
    handler = {
        "run": cmd_run, "ps": cmd_ps, "exec": cmd_exec, "logs": cmd_logs, "stop": cmd_stop, "rm": cmd_rm,
        "kill": cmd_kill, "inspect": cmd_inspect,
    }[args.verb]
    return handler(args)


# --- run / exec: boot and drive zones -------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from host.launch import run_zone

    return run_zone(args)


def cmd_exec(args: argparse.Namespace) -> int:
    from host.lifecycle import exec_in_zone

    zone = existing_zone(args.zone)
    if args.zone_level and args.container:
        raise HostError("exec: --zone runs in the zone itself, not in a container (drop --container)")
    return exec_in_zone(zone, list(args.command), container=args.container, env=parse_env(args.env),
                        cwd=args.workdir, user=args.user, interactive=args.interactive, tty=args.tty,
                        zone_level=args.zone_level)


# --- ps / logs / stop / kill / rm: state directory + backend + link ----------------------------------------------

def zone_summary(zone: ZoneDir, with_containers: bool = True) -> dict[str, Any]:
    definition = zone.load()
    runtime = zone.runtime()
    running = backend_for(zone, definition).alive()
    summary: dict[str, Any] = {
        "name": zone.name,
        "backend": definition.backend,
        "status": "running" if running else "stopped",
        "pid": runtime.get("pid"),
        "domid": runtime.get("domid"),
        "memory_mib": definition.memory_mib,
        "vcpus": definition.vcpus,
        "started_at": runtime.get("started_at"),
        "exit_code": runtime.get("exit_code"),
        "components": zone_components(zone),
        "containers": [],
    }
    if running and with_containers:
        from host.lifecycle import list_containers

        try:
            summary["containers"] = list_containers(zone)
        except (HostError, IdmError, OSError) as e:  # a zone that does not answer is still listed
            summary["containers_error"] = str(e)
    return summary


def zone_components(zone: ZoneDir) -> list[dict[str, Any]]:
    """What the zone was composed from (kind, ref, digest), as its config disk records it."""
    try:
        document = json.loads((zone.disks / "config.json").read_text())
    except (OSError, ValueError):
        return []
    components = document.get("components") if isinstance(document, dict) else None
    return components if isinstance(components, list) else []


def cmd_inspect(args: argparse.Namespace) -> int:
    """The zone's definition, runtime record, components and, while it runs, its zone.info."""
    zone = existing_zone(args.zone)
    summary = zone_summary(zone, with_containers=False)
    document: dict[str, Any] = {**summary, "definition": zone.load().to_json(), "runtime": zone.runtime()}
    if summary["status"] == "running":
        from host.link import ZoneLink

        try:
            with ZoneLink.open(zone, timeout=10, events=False) as link:
                document["info"] = link.info(timeout=10)
        except (HostError, IdmError, OSError) as e:
            document["info_error"] = str(e)
    lines = [f"zone {zone.name} ({summary['backend']}, {summary['status']})"]
    for component in document["components"]:
        name = f" {component['name']}" if component.get("name") and component["kind"] == "extension" else ""
        lines.append(f"  {component['kind']}{name}: {component.get('ref')} {component['digest']}")
    for extension in (document.get("info") or {}).get("extensions") or []:
        lines.append(f"  mounted extension {extension.get('name')} at {extension.get('path')}"
                     + (" (tools for zone exec)" if extension.get("tools") else ""))
    output.result(document, "\n".join(lines))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    rows = [zone_summary(zone) for zone in list_zones()]
    lines = [f"{'ZONE':<20} {'BACKEND':<7} {'STATUS':<11} {'PID':>7} {'UPTIME':>8}  CONTAINERS"]
    for row in rows:
        uptime = _uptime(row) if row["status"] == "running" else "-"
        containers = ", ".join(f"{c.get('id')}({c.get('status')})" for c in row["containers"]) or "-"
        status = row["status"]
        if status == "stopped" and isinstance(row.get("exit_code"), int):
            status = f"exited({row['exit_code']})"
        lines.append(f"{row['name']:<20} {row['backend']:<7} {status:<11} {row['pid'] or '-':>7} "
                     f"{uptime:>8}  {containers}")
    output.result(rows, "\n".join(lines))
    return 0


def _uptime(row: dict[str, Any]) -> str:
    started = row.get("started_at")
    if not isinstance(started, int | float):
        return "?"
    seconds = int(time.time() - started)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def cmd_logs(args: argparse.Namespace) -> int:
    zone = existing_zone(args.zone)
    if not args.console:
        from host.lifecycle import container_logs

        data = container_logs(zone)
        if data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return 0
    try:
        data = backend_for(zone).console_log.read_bytes()
    except FileNotFoundError:
        data = b""
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from host.lifecycle import stop_zone

    zone = existing_zone(args.zone)
    how = stop_zone(zone, timeout=args.timeout)
    output.result({"name": zone.name, "stopped": how}, f"{zone.name}: stopped ({how})")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from host.lifecycle import signal_container

    zone = existing_zone(args.zone)
    number = signal_container(zone, args.container, args.signal)
    output.result({"id": args.container, "signal": number}, f"{zone.name}/{args.container}: sent signal {number}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    zone = existing_zone(args.zone)
    if backend_for(zone).alive():
        if not args.force:
            raise HostError(f"zone {zone.name!r} is running (stop it first, or use rm -f)")
        from host.lifecycle import stop_zone

        stop_zone(zone, timeout=0)
    zone.remove()
    output.note(f"removed zone {zone.name}")
    output.result({"name": zone.name, "removed": True}, zone.name)
    return 0
