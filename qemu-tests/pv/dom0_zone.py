"""Our host side inside the test dom0: boot one zone as a Xen PV domU and drive it over vchan IDM.

Bundled with PyInstaller (onedir) by zonebuild.dom0 and started by the dom0's /init. It reads the plan the
builder wrote (zone definition + the boot files: cloud kernel, our initrd, addons, config disk, root image),
then does what ``zonehost run`` + ``zonehost stop`` do with ``--backend xen``: ``xl create`` (host.backends.xen), wait
for ``zone.ready`` over the vchan, follow the main container's output, take its exit code, ask the zone to
shut down. Every step is one ``PV-STEP`` line on dom0's console (hvc0 -> QEMU's serial), which the test reads.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def step(name: str, detail: object = "") -> None:
    print(f"PV-STEP {name} {json.dumps(detail)}", flush=True)


def main(argv: list[str]) -> int:
    from host.backends.xen import XenBackend
    from host.bootplan import BootFiles
    from host.lifecycle import acknowledge_exit, follow_output, stop_zone, wait_ready
    from host.link import ZoneLink
    from host.state import zone_dir
    from host.zonedef import MAIN_CONTAINER, ZoneDef

    plan = json.loads(Path(argv[1]).read_text())
    definition = ZoneDef(**plan["definition"])
    boot = BootFiles(kernel=Path(plan["kernel"]), initrd=Path(plan["initrd"]), addons=Path(plan["addons"]),
                     config_disk=Path(plan["config_disk"]), root_images=[Path(p) for p in plan["root_images"]])
    zone = zone_dir(definition.name, Path(plan.get("state", "/run/zone-state")))
    zone.create(definition)
    started = time.monotonic()
    backend = XenBackend(zone)
    backend.boot(definition, boot)
    domid = backend.domid()
    step("created", {"domid": domid, "seconds": round(time.monotonic() - started, 2)})
    timeout = float(plan.get("timeout", 60))
    if plan.get("kill_first_client"):
        # fault: the first client sees the zone ready and the output start, then dies (SIGKILL, no goodbye);
        # a new client must still get the whole output, the exit code and the exit event
        first_client_killed(zone, started, timeout)
        client = ZoneLink.open(zone, timeout=timeout)
        step("reconnected", {"seconds": round(time.monotonic() - started, 2)})
        main_container = MAIN_CONTAINER
    else:
        client = ZoneLink.open(zone, timeout=timeout)
        step("connected", {"seconds": round(time.monotonic() - started, 2)})
        ready = wait_ready(client, zone, timeout)
        step("ready", {"boot": ready.get("boot"), "seconds": round(time.monotonic() - started, 2)})
        main_container = ready.get("main") or MAIN_CONTAINER
    chunks: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            chunks.append(bytes(data))

        def flush(self) -> None:
            pass

    code = follow_output(client, main_container, Sink(), Sink())
    acknowledge_exit(client, main_container)
    step("output", b"".join(chunks).decode(errors="replace"))
    step("exit", {"code": code})
    diagnose(domid)
    client.close()
    how = stop_zone(zone, timeout=30)
    step("shutdown", {"how": how, "seconds": round(time.monotonic() - started, 2)})
    return 0


def first_client_killed(zone: Any, started: float, timeout: float) -> None:
    """A child process connects, waits for zone.ready, reads the first output, then is SIGKILLed."""
    import os
    import select
    import signal

    from host.lifecycle import wait_ready
    from host.link import ZoneLink
    from host.zonedef import MAIN_CONTAINER

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            client = ZoneLink.open(zone, timeout=timeout)
            step("connected", {"seconds": round(time.monotonic() - started, 2)})
            ready = wait_ready(client, zone, timeout)
            step("ready", {"boot": ready.get("boot"), "seconds": round(time.monotonic() - started, 2)})
            item = next(iter(client.follow_logs(MAIN_CONTAINER)), None)
            os.write(write_end, json.dumps(item[1].decode(errors="replace") if item else None).encode())
            time.sleep(3600)   # until killed, mid-stream
        finally:
            os._exit(1)
    os.close(write_end)
    saw = None
    if select.select([read_end], [], [], timeout)[0]:
        saw = os.read(read_end, 65536).decode(errors="replace")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read_end)
    step("client-killed", {"saw": json.loads(saw) if saw else None, "seconds": round(time.monotonic() - started, 2)})


def diagnose(domid: int) -> None:
    """dom0's processes and the zone's console keys in xenstore, for a console that stays empty."""
    import subprocess

    for command in (["ps"], ["xenstore-ls", "-f", f"/local/domain/{domid}/console"]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        for line in (result.stdout + result.stderr).splitlines():
            print(f"DIAG {line}", flush=True)


def show_zone_console(state: Path, lines: int = 80) -> None:
    """The zone's console.log (``xl console``, as zonehost keeps it), so the test log shows its boot too;
    xenconsoled's own guest log if that is empty."""
    logs = sorted(state.rglob("console.log"))
    guest = sorted(Path("/var/log/xen/console").glob("guest-*.log"))
    step("console-files", {str(log): log.stat().st_size for log in logs + guest})
    if not any(log.stat().st_size for log in logs):
        logs = guest
    for log in logs:
        for line in log.read_text(errors="replace").splitlines()[-lines:]:
            print(f"ZONE-CONSOLE {log.name} {line}", flush=True)


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BaseException as e:  # the test reads the reason from the console
        from styrolite.errors import describe

        step("failed", describe(e) if isinstance(e, Exception) else repr(e))
        code = 1
    show_zone_console(Path("/run/zone-state"))
    sys.exit(code)
