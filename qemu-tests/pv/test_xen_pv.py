"""A zone as a real Xen PV guest: Xen + a Debian dom0 + our zone, all inside QEMU (TCG).

zonebuild.dom0 builds the dom0 (Debian's Xen 4.17, the generic kernel, xl & co, busybox and our host side as a
PyInstaller bundle of ``dom0_zone.py``). The payload is what ``zonehost run --backend xen`` would boot: the
cloud kernel from the kernel OCI image, our Nuitka initrd (+ boot modules), addons.squashfs, the config disk
(one main container printing a line and exiting 7, ``poweroff_on_exit`` off so the host asks for the
shutdown) and the busybox root image. In dom0 our host side creates the PV domU with ``xl``, speaks IDM over
the vchan the zone serves, and prints one ``PV-STEP`` line per step on dom0's console (QEMU's serial).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
QEMU = "qemu-system-x86_64"
OUTPUT_LINE = "hello from a xen pv zone"
LAST_LINE = "still running after the first client died"
EXIT_CODE = 7
TIMEOUT = float(os.environ.get("ZONE_TEST_PV_TIMEOUT", "300"))
STEP = re.compile(r"^PV-STEP (\S+) (.*)$")


def prepare_payload(kernel_image: Path, initrd: Path, app_image: Path, payload: Path) -> Path:
    """The zone's boot files + plan.json (paths as dom0 sees them, under /zone)."""
    from host import images
    from host.launch import zone_config
    from host.zonebuild_import import ensure_zonebuild
    from host.zonedef import ZoneDef

    ensure_zonebuild()
    from zonebuild.configdisk import write_config_disk

    kernel = images.prepare_kernel(kernel_image)
    boot_initrd = images.boot_initrd(initrd, kernel)
    root = images.prepare_root_image(app_image)
    definition = ZoneDef(name="pv", kernel_image="/zone", initrd="/zone/initrd", backend="xen", memory_mib=256,
                         command=["sh", "-c", f"echo {OUTPUT_LINE}; sleep 2; echo {LAST_LINE}; exit {EXIT_CODE}"])
    config = zone_config(definition, kernel, root, "xvd")
    config.options.poweroff_on_exit = False   # the host asks for the shutdown (zone.shutdown)
    payload.mkdir(parents=True, exist_ok=True)
    write_config_disk(config, payload / "config.img")
    for name, source in (("kernel", kernel.image), ("initrd", boot_initrd), ("addons.squashfs", kernel.addons),
                         ("root0.img", root.path)):
        shutil.copyfile(source, payload / name)
    plan = {"definition": asdict(definition), "kernel": "/zone/kernel", "initrd": "/zone/initrd",
            "addons": "/zone/addons.squashfs", "config_disk": "/zone/config.img", "root_images": ["/zone/root0.img"],
            "timeout": 90, "kill_first_client": True}
    (payload / "plan.json").write_text(json.dumps(plan))
    return payload


def boot(image: Any, console_log: Path, timeout: float = TIMEOUT) -> tuple[str, float]:
    """Run QEMU until dom0 reboots (ends QEMU); returns (console text, seconds). The console goes to
    ``console_log`` as it comes (``tail -f`` it to watch)."""
    started = time.monotonic()
    with open(console_log, "wb") as log:
        subprocess.run([QEMU, *image.qemu_args()], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                       timeout=timeout)
    text = console_log.read_bytes().decode(errors="replace").replace("\r", "")
    return text, time.monotonic() - started


def steps(console: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in console.splitlines():
        match = STEP.match(line.strip())
        if match:
            try:
                found[match.group(1)] = json.loads(match.group(2))
            except ValueError:
                found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="module")
def pv_run(zone_inputs: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, float]:
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.dom0 import build_dom0

    work = tmp_path_factory.mktemp("pv")
    started = time.monotonic()
    payload = prepare_payload(zone_inputs.kernel_image, zone_inputs.initrd, zone_inputs.busybox_image,
                              work / "payload")
    image = build_dom0(payload, HERE / "dom0_zone.py", work)
    built = time.monotonic() - started
    console, seconds = boot(image, work / "console.log")
    print(f"PV: build {built:.1f} s, QEMU (Xen + dom0 + zone) {seconds:.1f} s; console {work / 'console.log'}")
    return steps(console), console, seconds


def _tail(console: str, lines: int = 40) -> str:
    return "\n".join(console.splitlines()[-lines:])


def test_dom0_boots_and_starts_xen_services(pv_run: tuple[dict[str, Any], str, float]) -> None:
    found, console, _ = pv_run
    assert "dom0-up" in found and "dom0-ready" in found, _tail(console)
    assert "dom0-failed" not in found, found.get("dom0-failed")


def test_zone_created_as_pv_domain(pv_run: tuple[dict[str, Any], str, float]) -> None:
    found, console, _ = pv_run
    assert "created" in found, found.get("failed") or _tail(console)
    assert found["created"]["domid"] > 0


def test_zone_ready_over_vchan(pv_run: tuple[dict[str, Any], str, float]) -> None:
    found, console, _ = pv_run
    assert "connected" in found and "ready" in found, found.get("failed") or _tail(console)
    phases = [phase["name"] for phase in (found["ready"]["boot"] or {}).get("phases", [])]
    assert "ready" in phases and "idm-retry" in phases, phases   # vchan served once addons gave its drivers


def test_container_output_and_exit_code(pv_run: tuple[dict[str, Any], str, float]) -> None:
    found, console, _ = pv_run
    assert found.get("output") == f"{OUTPUT_LINE}\n{LAST_LINE}\n", found.get("failed") or _tail(console)
    assert found.get("exit") == {"code": EXIT_CODE}


def test_zone_shuts_down_on_request(pv_run: tuple[dict[str, Any], str, float]) -> None:
    found, console, _ = pv_run
    assert found.get("shutdown", {}).get("how") == "clean shutdown", found.get("failed") or _tail(console)
    assert found.get("dom0-done") == "driver exit 0"



def test_killed_client_then_a_new_one_gets_output_and_exit(pv_run: tuple[dict[str, Any], str, float]) -> None:
    """The first IDM client dies mid-stream (SIGKILL); the zone and its container keep running, a new client
    connects to the same vchan and gets the whole output, the exit code and the exit event."""
    found, console, _ = pv_run
    assert (found.get("client-killed") or {}).get("saw") == f"{OUTPUT_LINE}\n", found.get("failed") or _tail(console)
    assert "reconnected" in found and found.get("exit") == {"code": EXIT_CODE}
