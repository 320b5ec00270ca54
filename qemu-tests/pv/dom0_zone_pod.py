"""In the test dom0: a pod's zone as a Xen PV domU, driven the way the containerd shim drives one.

Bundled with PyInstaller by zonebuild.dom0 and started by the dom0's /init with /zone/plan.json. The zone boots
from a pod's config (no containers, ``poweroff_on_exit`` off) with ``XenBackend``; over the vchan IDM link a
rootfs image is hot-plugged with ``XenBackend.attach_disk`` (``xl block-attach`` on a read-only loop device)
and announced with ``disk.attach`` by its ``/dev/xvdX``; a container is created from an OCI config, attached,
started and waited for; then it is deleted, the disk detached in the zone and unplugged, the zone shut down.
Each step is one ``PV-STEP`` line on dom0's console.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def step(name: str, detail: object = "") -> None:
    print(f"PV-STEP {name} {json.dumps(detail)}", flush=True)


def main(argv: list[str]) -> int:
    from host.backends.xen import XenBackend
    from host.bootplan import BootFiles
    from host.link import ZoneLink
    from host.state import zone_dir
    from host.zonedef import ZoneDef
    from styrolite.errors import describe

    plan = json.loads(Path(argv[1]).read_text())
    definition = ZoneDef(**plan["definition"])
    boot = BootFiles(kernel=Path(plan["kernel"]), initrd=Path(plan["initrd"]), addons=Path(plan["addons"]),
                     config_disk=Path(plan["config_disk"]))
    zone = zone_dir(definition.name, Path("/run/zone-state"))
    zone.create(definition)
    backend = XenBackend(zone)
    link = None
    started = time.monotonic()
    try:
        backend.boot(definition, boot)
        link = ZoneLink.open(zone, timeout=180)
        link.wait_event("zone.ready", timeout=180)
        step("ready", {"containers": link.info()["containers"], "seconds": round(time.monotonic() - started, 2)})
        image = plan["image"]
        attach_started = time.monotonic()
        disk = backend.attach_disk(Path(image["path"]), name="rootfs0")
        attached = link.attach_disk("rootfs0", sha256=image["sha256"], size=image["size"], fstype="erofs",
                                    owner_shift=image["owner_shift"], wait=30, **disk.zone_locator())
        step("disk", {"vdev": disk.vdev, "device": attached["device"],
                      "seconds": round(time.monotonic() - attach_started, 2)})
        link.create({"name": "app", "image": "rootfs0"}, oci=plan["oci"], attach=True)
        io = link.attach("app")
        link.start("app")
        out = bytearray()
        while chunk := io.stdout.read(65536):
            out += chunk
        result = io.wait(60)
        step("container", {"output": out.decode(errors="replace"), "exit_code": result["exit_code"]})
        link.delete("app")
        link.detach_disk("rootfs0")
        backend.detach_disk(disk)
        listed = subprocess.run(["xl", "block-list", backend.domain()], capture_output=True, text=True).stdout
        loop = disk.loop.rsplit("/", 1)[-1]
        step("detached", {"block_list": [line for line in listed.splitlines()[1:] if line.strip()],
                          "loop_released": not Path(f"/sys/block/{loop}/loop/backing_file").exists()})
        link.shutdown("pod stopped")
        step("shutdown", {"powered_off": backend.wait(60)})
        return 0
    except Exception as e:
        step("failed", describe(e))
        return 1
    finally:
        if link is not None:
            link.close()
        backend.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
