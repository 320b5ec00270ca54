"""A zone that runs: wait until it is ready, follow its main container, exec into it, signal it, stop it.

Each function takes the zone's state directory (``host.state``) and works through its backend
(``host.backends``) and its IDM link (``host.link``), whatever the hypervisor.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from typing import BinaryIO, cast

from host import output
from host.backends import backend_for
from host.errors import BackendError, HostError
from host.link import BootTimeline, ContainerSummary, ZoneInfo, ZoneLink
from host.state import ZoneDir
from host.zonedef import MAIN_CONTAINER
from idm.errors import IdmError


class ZoneExited(HostError):
    """The main container ended (or the zone shut down) before the zone reported ready."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- becoming ready ----------------------------------------------------------------------------------------

def wait_ready(link: ZoneLink, zone: ZoneDir, timeout: float) -> ZoneInfo:
    """The ``zone.ready`` payload. A main-container exit before it (a container that could not be created,
    or finished during boot) raises ZoneExited carrying the exit code; a lost link raises BackendError."""
    deadline = time.monotonic() + timeout
    early_exit: dict[str, object] | None = None
    with output.step(f"waiting for zone {zone.name} to be ready"):
        while True:
            remaining = deadline - time.monotonic()
            event = link.next_event(max(remaining, 0.0)) if remaining > 0 else None
            if event is None:
                show_console_tail(zone)
                reason = "the IDM link closed" if link.closed else f"no ready event within {timeout:.0f} s"
                if early_exit is not None:
                    raise ZoneExited(_exit_message(early_exit), _exit_code(early_exit))
                raise BackendError(f"zone {zone.name!r} did not become ready ({reason}; console: {zone.console_log})")
            payload = event.payload
            if event.type == "zone.ready":
                if early_exit is not None:   # e.g. the container could not be created: nothing to follow
                    raise ZoneExited(_exit_message(early_exit), _exit_code(early_exit))
                break
            if event.type == "container.exit" and payload.get("main"):
                early_exit = payload
            elif event.type == "zone.shutdown" and early_exit is not None:
                raise ZoneExited(_exit_message(early_exit), _exit_code(early_exit))
            elif event.type == "zone.error":
                output.note(f"zone error: {payload}")
    ready = cast(ZoneInfo, payload)
    with contextlib.suppress(OSError):  # runtime.json is a convenience for `ps`; the zone runs regardless
        zone.update_runtime(ready=ready.get("boot"), ready_wall=time.time())
    for error in ready.get("errors") or []:
        output.note(f"zone reported a boot error: {error}")
    return ready


def _exit_code(payload: dict[str, object]) -> int | None:
    code = payload.get("exit_code")
    return code if isinstance(code, int) else None


def _exit_message(payload: dict[str, object]) -> str:
    text = f"container {payload.get('id')!r} exited with {payload.get('exit_code')} during boot"
    return f"{text}: {payload['error']}" if payload.get("error") else text


def format_timing(ready: ZoneInfo) -> str:
    boot: BootTimeline = ready.get("boot") or {}
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
        output.note(f"console: {line}")


# --- the main container --------------------------------------------------------------------------------

def follow_output(link: ZoneLink, container: str, out: BinaryIO | None = None, err: BinaryIO | None = None) -> int:
    """Stream the container's output to our stdout/stderr until it exits; returns its exit code."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    stream = link.follow_logs(container)
    for channel, data in stream:
        target = err if channel == "stderr" else out
        target.write(data)
        target.flush()
    result = stream.result(30)
    if result.get("error"):
        output.note(f"container {container}: {result['error']}")
    code = result.get("exit_code")
    if not isinstance(code, int):
        code = link.wait(container)["exit_code"]
    if not isinstance(code, int):
        raise HostError(f"container {container!r} ended without an exit code ({result!r})")
    return code


def acknowledge_exit(link: ZoneLink, container: str, timeout: float = 5.0) -> None:
    """Take (and so acknowledge) the main container's exit event: PID 1 holds the power-off until the host
    has acknowledged it (so a fast container's exit code is never lost), so this saves that wait."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        event = link.next_event(remaining)
        if event is None:
            return
        if event.type == "container.exit" and event.payload.get("id") == container:
            return


# --- verbs on a running zone ---------------------------------------------------------------------------

def exec_in_zone(zone: ZoneDir, command: list[str], *, container: str | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None, user: str | None = None,
                 interactive: bool = False, tty: bool = False, zone_level: bool = False) -> int:
    """``zonehost exec``: our stdin (``interactive``), stdout, stderr and terminal (``tty``: raw mode, window
    size changes) wired to a process in the container (``zone_level``: in the zone itself, PID 1's namespaces,
    with the system extensions' tools); its exit code."""
    from idm.attach import attach

    if not backend_for(zone).alive():
        raise HostError(f"zone {zone.name!r} is not running")
    rows = cols = None
    if tty:
        size = shutil.get_terminal_size((80, 24))
        rows, cols = size.lines, size.columns
    with ZoneLink.open(zone, timeout=10, events=False) as link:
        session = link.exec(command, container=None if zone_level else container or MAIN_CONTAINER,
                            env=env or None, cwd=cwd, user=_user(user), tty=tty, rows=rows, cols=cols,
                            zone=zone_level)
        return attach(session, tty_mode=tty, stdin_fd=0 if interactive else None)


def _user(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise HostError(f"user {text!r}: use numeric UID[:GID]")
    return {"uid": int(uid), "gid": int(gid or uid)}


def stop_zone(zone: ZoneDir, timeout: float = 40.0) -> str:
    """IDM zone.shutdown, wait up to ``timeout`` for the zone to end, then kill it. Returns how it stopped.

    The link stays open while the zone shuts down and takes its events, so PID 1's wait for the host to
    acknowledge the main container's exit ends at once."""
    backend = backend_for(zone)
    if not backend.alive():
        return "already stopped"
    link = None
    if timeout > 0:
        try:
            link = ZoneLink.open(zone, timeout=min(timeout, 5.0), events=True)
            link.shutdown("zonehost stop", timeout=min(timeout, 5.0))
        except (HostError, IdmError, OSError) as e:   # a zone that does not answer is killed below
            output.note(f"zone {zone.name} did not accept the shutdown request ({e})")
            _close(link)
            link = None
    if link is not None:
        output.note(f"asked zone {zone.name} to shut down; waiting up to {timeout:.0f} s for it to power off")
        deadline = time.monotonic() + timeout
        try:
            while backend.alive() and time.monotonic() < deadline:
                try:
                    link.next_event(0.2)
                except BackendError:   # borrowed through a foreground run's proxy: no events here
                    time.sleep(0.2)
        finally:
            _close(link)
        if backend.wait(1.0):
            return "clean shutdown"
        output.note(f"zone {zone.name} still running after {timeout:.0f} s: killing it")
    backend.kill()
    return "killed"


def signal_container(zone: ZoneDir, container: str, signal_name: str) -> int:
    """The signal number the zone sent to ``container``."""
    if not backend_for(zone).alive():
        raise HostError(f"zone {zone.name!r} is not running")
    signal_value: str | int = int(signal_name) if signal_name.isdigit() else signal_name
    try:
        with ZoneLink.open(zone, timeout=10, events=False) as link:
            return link.signal(container, signal_value, timeout=10)
    except IdmError as e:
        raise HostError(f"signal {signal_name} to {zone.name}/{container}") from e


def list_containers(zone: ZoneDir) -> list[ContainerSummary]:
    with ZoneLink.open(zone, timeout=3, events=False) as link:
        return link.containers(timeout=3)


def container_logs(zone: ZoneDir, container: str = MAIN_CONTAINER) -> bytes | None:
    """The container's buffered output from the running zone; None if the zone is not running."""
    if not backend_for(zone).alive():
        return None
    with ZoneLink.open(zone, timeout=5, events=False) as link:
        return link.logs(container, timeout=5)["data"]


def _close(link: ZoneLink | None) -> None:
    if link is not None:
        with contextlib.suppress(IdmError, OSError):
            link.close()
