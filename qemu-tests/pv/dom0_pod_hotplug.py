"""In the test dom0: hot-plug a pod rootfs image into a running PV domU with host.backends.hotplug and take it away.

Bundled with PyInstaller by zonebuild.dom0 and started by the dom0's /init with /zone/plan.json. It creates a
small PV domU (the zone's cloud kernel, a busybox /init that mounts whatever appears as /dev/xvda and reports
on its console), attaches the image with ``xen_attach_disk`` (a read-only loop device + ``xl block-attach``),
waits for the domU to mount and unmount it, detaches it with ``xen_detach_disk`` and destroys the domU.
Each step is one ``PV-STEP`` line on dom0's console; the domU's console is xenconsoled's guest log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

DOMAIN = "pod-hotplug"
GUEST_LOG = Path(f"/var/log/xen/console/guest-{DOMAIN}.log")


def step(name: str, detail: object = "") -> None:
    print(f"PV-STEP {name} {json.dumps(detail)}", flush=True)


def console_line(marker: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if GUEST_LOG.exists():
            for line in GUEST_LOG.read_text(errors="replace").replace("\r", "").splitlines():
                if line.startswith(marker):
                    return line
        time.sleep(0.5)
    return None


def guest_tail() -> str:
    return GUEST_LOG.read_text(errors="replace")[-1500:] if GUEST_LOG.exists() else "(no guest log)"


def block_list() -> list[str]:
    result = subprocess.run(["xl", "block-list", DOMAIN], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines()[1:] if line.strip()]


def main(argv: list[str]) -> int:
    from host.backends.hotplug import xen_attach_disk, xen_detach_disk
    from styrolite.errors import describe

    plan = json.loads(Path(argv[1]).read_text())
    config = Path("/run/pod-hotplug.cfg")
    config.write_text(f'name = "{DOMAIN}"\ntype = "pv"\nkernel = "{plan["kernel"]}"\nramdisk = "{plan["initrd"]}"\n'
                      'extra = "console=hvc0 quiet"\nmemory = 128\nvcpus = 1\non_poweroff = "destroy"\n'
                      'on_reboot = "destroy"\non_crash = "destroy"\n')
    try:
        result = subprocess.run(["xl", "create", str(config)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            step("failed", f"xl create: {result.stderr.strip()[-300:]}")
            return 1
        step("created")
        if console_line("DOMU-READY", 180) is None:
            step("failed", f"the domU did not come up: {guest_tail()}")
            return 1
        started = time.monotonic()
        disk = xen_attach_disk(DOMAIN, Path(plan["image"]))
        step("attached", {"vdev": disk.vdev, "loop": disk.loop, "seconds": round(time.monotonic() - started, 2)})
        mounted = console_line("DOMU-MOUNTED", 120)
        step("mounted", {"line": mounted or f"no mount: {guest_tail()}", "block_list": block_list()})
        console_line("DOMU-UNMOUNTED", 60)
        xen_detach_disk(disk)
        loop = disk.loop.rsplit("/", 1)[-1]
        step("detached", {"block_list": block_list(),
                          "loop_released": not Path(f"/sys/block/{loop}/loop/backing_file").exists()})
        return 0
    except Exception as e:
        step("failed", describe(e))
        return 1
    finally:
        subprocess.run(["xl", "destroy", DOMAIN], capture_output=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
