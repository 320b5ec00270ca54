"""Zone lifecycle on top of the backends and IDM: prepare + boot, run (stream + exit code), exec, stop, list.

``run`` writes a config disk naming one main container (the image's entrypoint/cmd or the override), boots
the zone, waits for the ``zone.ready`` event, follows the main container's output over IDM
(``container.logs`` with ``follow``) and exits with its exit code. The zone powers itself off when its main
container exits (config option ``poweroff_on_exit``); we wait for that and kill QEMU only after a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from host import images, progress
from host.bootplan import BootFiles, block_device, root_image_device
from host.connect import connect
from host.errors import BackendError, HostError
from host.state import ZoneDir, zone_dir
from host.zonebuild_import import ensure_zonebuild
from host.zonedef import NetworkDef, ZoneDef, parse_env

MAIN_CONTAINER = "main"
POWEROFF_WAIT = 30.0


def backend_for(zone: ZoneDir, definition: ZoneDef | None = None) -> Any:
    definition = definition or zone.load()
    if definition.backend == "xen":
        from host.xen import XenZone
        return XenZone(zone)
    from host.qemu import QemuZone
    return QemuZone(zone)


# --- building what a zone boots from ------------------------------------------------------------------------------

def zone_config_document(definition: ZoneDef, kernel: images.PreparedKernel, root: images.PreparedRoot,
                         disk_prefix: str = "vd") -> dict[str, Any]:
    """The zone config (zoneinit/zoneconfig.py schema) for one main container on root image 0."""
    ensure_zonebuild()
    from zonebuild.configdisk import container_from_image, disk_entry

    document: dict[str, Any] = {
        "version": 1,
        "name": definition.name,
        "hostname": definition.name.replace("_", "-").replace(".", "-"),
        "disks": [
            disk_entry("addons", "addons", block_device(0, disk_prefix), kernel.addons),
            disk_entry("root0", "root", root_image_device(0, disk_prefix), root.path, root.fstype,
                       root.owner_shift),
        ],
        "containers": [container_from_image(MAIN_CONTAINER, "root0", root.config, command=definition.command,
                                            env=definition.env, main=True)],
        "options": {"poweroff_on_exit": True},
    }
    if definition.network is not None and definition.network.address:
        document["network"] = network_document(definition.network)
    return document


def network_document(network: NetworkDef) -> dict[str, Any]:
    import ipaddress

    interface = ipaddress.ip_interface(network.address or "")
    family = "ipv4" if interface.version == 4 else "ipv6"
    address: dict[str, Any] = {"address": str(interface.ip), "prefix": interface.network.prefixlen}
    if network.gateway:
        address["gateway"] = network.gateway
    return {"interface": "eth0", family: address, "dns": list(network.dns)}


def write_config_disk(document: dict[str, Any], out: Path) -> None:
    """Validate the config exactly as the zone will (zoneinit.zoneconfig), then write the ``ZONECFG1`` disk
    (header + sha256 + canonical JSON; PID 1 reads it with two preads, nothing mounted)."""
    ensure_zonebuild()
    from zonebuild.configdisk import build_config
    from zonebuild.configdisk import write_config_disk as write_zonecfg

    write_zonecfg(build_config(document), out)


def prepare_boot(definition: ZoneDef, zone: ZoneDir, disk_prefix: str = "vd") -> BootFiles:

    kernel = images.prepare_kernel(definition.kernel_image)
    initrd = images.boot_initrd(Path(definition.initrd), kernel)
    root = images.prepare_root_image(images.resolve_app_image(definition.app_image),
                                     user_namespace=definition.user_namespace)
    document = zone_config_document(definition, kernel, root, disk_prefix)
    config_disk = zone.disks / "config.img"
    try:
        write_config_disk(document, config_disk)
    except Exception as e:   # ConfigError (bad env/user...) or ValueError from the builder
        raise HostError("zone config") from e
    (zone.disks / "config.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return BootFiles(kernel=kernel.image, initrd=initrd, addons=kernel.addons, config_disk=config_disk,
                     root_images=[root.path])


def definition_from_args(args: argparse.Namespace) -> ZoneDef:
    network = None
    if args.net or args.address:
        network = NetworkDef(address=args.address) if args.address else NetworkDef()
    definition = ZoneDef(
        name=args.name or f"zone-{uuid.uuid4().hex[:8]}",
        kernel_image=args.kernel or "",
        initrd=args.initrd or "",
        app_image=None if args.image in ("busybox", "default") else args.image,
        command=list(args.command) or None,
        env=parse_env(args.env),
        memory_mib=args.memory,
        vcpus=args.vcpus,
        network=network,
        backend=args.backend,
        remove_on_exit=args.rm,
        user_namespace=args.userns,
        cmdline_extra=list(args.kernel_arg),
    )
    if args.image not in ("busybox", "default") and not Path(args.image).exists():
        raise HostError(f"image {args.image!r}: no such OCI layout directory or archive (or use 'busybox')")
    if args.kernel and not Path(args.kernel).is_dir():
        raise HostError(f"kernel image {args.kernel!r}: no such OCI layout directory")
    if args.initrd and not Path(args.initrd).is_file():
        raise HostError(f"initrd {args.initrd!r}: no such file")
    # validate the user's input before the slow defaults are built
    probe = ZoneDef(**{**definition.__dict__, "kernel_image": definition.kernel_image or "-",
                       "initrd": definition.initrd or "-"})
    probe.validate()
    if not definition.kernel_image:
        definition.kernel_image = str(images.default_kernel_image())
    if not definition.initrd:
        definition.initrd = str(images.default_initrd(dev=os.environ.get("ZONE_DEV_INITRD") == "1"))
    return definition


def create_and_boot(definition: ZoneDef, *, daemonize: bool, root: Path | None = None) -> tuple[ZoneDir, Any]:
    """Claim the zone's state dir, prepare its disks and start the hypervisor; returns (zone, backend)."""
    zone = zone_dir(definition.name, root)
    zone.create(definition)
    try:
        boot = prepare_boot(definition, zone, "xvd" if definition.backend == "xen" else "vd")
        backend = backend_for(zone, definition)
        with progress.step(f"starting zone {definition.name} ({definition.backend})"):
            backend.start(definition, boot, daemonize=daemonize)
    except BaseException:
        with contextlib.suppress(Exception):
            backend_for(zone, definition).quit()
        zone.remove()
        raise
    return zone, backend


# --- run ------------------------------------------------------------------------------------------------------

def format_timing(ready: dict[str, Any]) -> str:
    boot = ready.get("boot") or {}
    phases = boot.get("phases") or []
    parts = [f"{p['name']} {p.get('duration', 0) * 1000:.0f}ms" for p in phases if p.get("name") != "ready"]
    ready_at = next((p.get("start") for p in phases if p.get("name") == "ready"), None)
    head = f"zone ready at {ready_at:.3f}s after kernel start" if isinstance(ready_at, int | float) else "zone ready"
    init_started = boot.get("init_started")
    if isinstance(init_started, int | float):
        head += f" (PID 1 started at {init_started:.3f}s)"
    rss = ready.get("init_rss")
    if isinstance(rss, int):
        head += f", PID 1 RSS {rss / 1048576:.1f} MiB"   # VmRSS, in bytes
    return head + (": " + ", ".join(parts) if parts else "")


class ZoneExited(HostError):
    """The main container ended (or the zone shut down) before the zone reported ready."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def wait_ready(client: Any, zone: ZoneDir, timeout: float) -> dict[str, Any]:
    """The ``zone.ready`` payload. A main-container exit before it (a container that could not be created,
    or finished during boot) raises ZoneExited carrying the exit code; a lost link raises BackendError."""
    from host.idm import IdmError

    deadline = time.monotonic() + timeout
    early_exit: dict[str, Any] | None = None
    with progress.step(f"waiting for zone {zone.name} to be ready"):
        while True:
            remaining = deadline - time.monotonic()
            event = client.next_event(max(remaining, 0.0)) if remaining > 0 else None
            if event is None:
                show_console_tail(zone)
                reason = "the IDM link closed" if client.closed.is_set() else f"no ready event within {timeout:.0f} s"
                if early_exit is not None:
                    raise ZoneExited(_exit_message(early_exit), early_exit.get("exit_code"))
                raise BackendError(f"zone {zone.name!r} did not become ready ({reason}; console: {zone.console_log})")
            payload = event.payload if isinstance(event.payload, dict) else {}
            if event.type == "zone.ready":
                if early_exit is not None:   # e.g. the container could not be created: nothing to follow
                    raise ZoneExited(_exit_message(early_exit), early_exit.get("exit_code"))
                break
            if event.type == "container.exit" and payload.get("main"):
                early_exit = payload
            elif event.type == "zone.shutdown" and early_exit is not None:
                raise ZoneExited(_exit_message(early_exit), early_exit.get("exit_code"))
            elif event.type == "zone.error":
                progress.note(f"zone error: {payload}")
    with contextlib.suppress(IdmError, OSError):
        zone.update_runtime(ready=payload.get("boot"), ready_wall=time.time())
    for error in payload.get("errors") or []:
        progress.note(f"zone reported a boot error: {error}")
    return payload


def _exit_message(payload: dict[str, Any]) -> str:
    text = f"container {payload.get('id')!r} exited with {payload.get('exit_code')} during boot"
    return f"{text}: {payload['error']}" if payload.get("error") else text


def last_console_line(zone: ZoneDir) -> str:
    """What most likely says why a zone stopped: the last line PID 1 (or any program) printed, else the
    kernel's panic line, else the last line."""
    try:
        lines = [line.strip() for line in zone.console_log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no console output"
    for wanted in (lambda t: not t.startswith("["), lambda t: "Kernel panic" in t, lambda t: True):
        for text in reversed(lines):
            if wanted(text):
                return text[-300:]
    return "no console output"


def show_console_tail(zone: ZoneDir, lines: int = 8) -> None:
    """The last console lines, as progress notes: usually they say why a zone did not come up."""
    try:
        text = zone.console_log.read_text(errors="replace")
    except OSError:
        return
    for line in text.splitlines()[-lines:]:
        progress.note(f"console: {line}")


def follow_output(client: Any, container: str, out: Any = None, err: Any = None) -> int:
    """Stream the container's output to our stdout/stderr until it exits; returns its exit code."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    stream, _info = client.open_stream("container.logs", {"id": container, "follow": True})
    while (item := stream.read()) is not None:
        channel, data = item
        target = err if channel == "stderr" else out
        target.write(data)
        target.flush()
    result = stream.wait(30)
    if isinstance(result, dict) and result.get("error"):
        progress.note(f"container {container}: {result['error']}")
    code = result.get("exit_code") if isinstance(result, dict) else None
    if not isinstance(code, int):
        reply = client.call("container.wait", {"id": container}, timeout=None)
        code = reply.get("exit_code")
    if not isinstance(code, int):
        raise HostError(f"container {container!r} ended without an exit code ({result!r})")
    return code


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def acknowledge_exit(client: Any, container: str, timeout: float = 5.0) -> None:
    """Take (and so acknowledge) the main container's exit event: PID 1 holds the power-off until the host
    has acknowledged it (so a fast container's exit code is never lost), so this saves that wait."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        event = client.next_event(remaining)
        if event is None:
            return
        payload = event.payload if isinstance(event.payload, dict) else {}
        if event.type == "container.exit" and payload.get("id") == container:
            return


def run_zone(args: argparse.Namespace) -> int:
    definition = definition_from_args(args)
    zone, backend = create_and_boot(definition, daemonize=args.detach)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)   # `kill zonehost` stops the zone too
    client = None
    try:
        with progress.step(f"booting zone {zone.name} (until PID 1 answers on IDM)"):
            try:
                client = connect(zone, timeout=args.timeout)
            except BackendError as e:
                if backend.wait(2.0):   # the VM is gone: its console says why
                    raise BackendError(f"zone {zone.name!r} stopped during boot (console: "
                                       f"{last_console_line(zone)})") from e
                raise
        ready = wait_ready(client, zone, args.timeout)
        if args.timing:
            print(f"zonehost: {format_timing(ready)}", file=sys.stderr, flush=True)
        if args.detach:
            from host.cli import emit
            emit(args, {"name": zone.name, "ready": ready.get("boot")}, zone.name)
            return 0
        from host.callproxy import CallProxy
        proxy = CallProxy(client, zone.control_socket)   # ps/kill/stop/logs from other shells meanwhile
        main = ready.get("main") or MAIN_CONTAINER
        try:
            code = follow_output(client, main)
            acknowledge_exit(client, main)
        finally:
            proxy.close()
        zone.update_runtime(exit_code=code)
    except ZoneExited as e:
        _close(client)
        zone.update_runtime(exit_code=e.exit_code)
        print(f"zonehost: {e}", file=sys.stderr, flush=True)
        backend.wait(POWEROFF_WAIT) or stop_zone(zone, timeout=10)
        if definition.remove_on_exit:
            zone.remove()
        return e.exit_code if isinstance(e.exit_code, int) else 1
    except KeyboardInterrupt:
        progress.note(f"interrupted: stopping zone {zone.name}")
        _close(client)
        stop_zone(zone, timeout=10)
        if definition.remove_on_exit:
            zone.remove()
        return 130
    except BaseException:
        _close(client)
        if not args.detach or not backend.running():
            progress.note(f"zone {zone.name}: console log in {zone.console_log}")
        with contextlib.suppress(Exception):
            backend.quit()
        if definition.remove_on_exit:
            zone.remove()
        raise
    finally:
        _close(client)
        signal.signal(signal.SIGTERM, previous_term)
    if not backend.wait(POWEROFF_WAIT):
        progress.note(f"zone {zone.name} did not power off within {POWEROFF_WAIT:.0f} s: stopping it")
        stop_zone(zone, timeout=10)
    if definition.remove_on_exit:
        zone.remove()
    return code


def _close(client: Any) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


# --- exec -----------------------------------------------------------------------------------------------------

def exec_in_zone(zone: ZoneDir, args: argparse.Namespace) -> int:
    if not backend_for(zone).running():
        raise HostError(f"zone {zone.name!r} is not running")
    from host.execio import run_exec
    with connect(zone, timeout=10, events=False) as client:
        return run_exec(client, container=args.container or MAIN_CONTAINER, command=list(args.command),
                        env=parse_env(args.env), cwd=args.workdir, user=_user(args.user),
                        interactive=args.interactive, tty=args.tty)


def _user(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise HostError(f"user {text!r}: use numeric UID[:GID]")
    return {"uid": int(uid), "gid": int(gid or uid)}


# --- stop / list / logs -----------------------------------------------------------------------------------------

def stop_zone(zone: ZoneDir, timeout: float = 40.0) -> str:
    """IDM zone.shutdown, wait up to ``timeout`` for the hypervisor process to end, then kill. Returns how.

    The IDM client stays connected while the zone shuts down and takes its events, so PID 1's wait for the
    host to acknowledge the main container's exit ends at once."""
    backend = backend_for(zone)
    if not backend.running():
        return "already stopped"
    client = None
    if timeout > 0:
        try:
            client = connect(zone, timeout=min(timeout, 5.0), events=True)
            client.call("zone.shutdown", {"reason": "zonehost stop"}, timeout=min(timeout, 5.0))
        except Exception as e:   # a zone that does not answer is killed below
            progress.note(f"zone {zone.name} did not accept the shutdown request ({e})")
            _close(client)
            client = None
    if client is not None:
        progress.note(f"asked zone {zone.name} to shut down; waiting up to {timeout:.0f} s for it to power off")
        deadline = time.monotonic() + timeout
        try:
            while backend.running() and time.monotonic() < deadline:
                if hasattr(client, "next_event"):
                    client.next_event(0.2)
                else:
                    time.sleep(0.2)
        finally:
            _close(client)
        if backend.wait(1.0):
            return "clean shutdown"
        progress.note(f"zone {zone.name} still running after {timeout:.0f} s: killing it")
    backend.quit()
    return "killed"


def signal_container(zone: ZoneDir, container: str, signal_name: str) -> dict[str, Any]:
    from host.idm import IdmError

    if not backend_for(zone).running():
        raise HostError(f"zone {zone.name!r} is not running")
    signal_value: str | int = int(signal_name) if signal_name.isdigit() else signal_name
    try:
        with connect(zone, timeout=10, events=False) as client:
            reply = client.call("container.signal", {"id": container, "signal": signal_value}, timeout=10)
    except IdmError as e:
        raise HostError(f"signal {signal_name} to {zone.name}/{container}") from e
    return reply if isinstance(reply, dict) else {}


def list_containers(zone: ZoneDir) -> list[dict[str, Any]]:
    with connect(zone, timeout=3, events=False) as client:
        reply = client.call("container.list", {}, timeout=3)
    containers = reply.get("containers") if isinstance(reply, dict) else None
    return list(containers or [])


def container_logs(zone: ZoneDir, container: str = MAIN_CONTAINER) -> bytes | None:
    """The container's buffered output from the running zone; None if the zone is not running."""
    if not backend_for(zone).running():
        return None
    with connect(zone, timeout=5, events=False) as client:
        reply = client.call("container.logs", {"id": container}, timeout=5)
    data = reply.get("data") if isinstance(reply, dict) else None
    return bytes(data) if isinstance(data, bytes | bytearray) else b""
