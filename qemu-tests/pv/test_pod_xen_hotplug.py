"""host.backends.hotplug on real Xen: Xen + a Debian dom0 inside QEMU (TCG), a PV domU running the zone's cloud
kernel, and a pod rootfs image (host.pod.rootfs: erofs, owners shifted) hot-plugged into it with
``xl block-attach`` over a read-only loop device, mounted by the domU, then detached (dom0_pod_hotplug.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from test_xen_pv import boot, steps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests" / "host" / "pod"))

from podtest_guest import build_initrd  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None,
                                reason="PyInstaller not installed: zonebuild.dom0 bundles the dom0 side with it")
HELLO = "hello from a hot-plugged xen disk"
DOMU_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for dir in /lib/modules/*; do
  [ -f "$dir/modules.boot" ] || continue
  while read -r mod; do insmod "$dir/$mod" 2>/dev/null; done < "$dir/modules.boot"
done
echo DOMU-READY
for i in $(seq 900); do [ -e /sys/block/xvda ] && break; sleep 0.2; done
mkdir -p /mnt
if mount -t erofs -o ro /dev/xvda /mnt; then
  echo "DOMU-MOUNTED $(cat /mnt/etc/hello) owner=$(stat -c %u /mnt/etc/hello) ro=$(cat /sys/block/xvda/ro)"
  umount /mnt
else
  echo "DOMU-MOUNTED failed: $(ls /sys/block)"
fi
echo DOMU-UNMOUNTED
while true; do sleep 3600; done
"""


@pytest.fixture(scope="module")
def run(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    from host import images
    from host.pod.rootfs import rootfs_image
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.dom0 import build_dom0

    work = tmp_path_factory.mktemp("podxen")
    layer = work / "snapshots" / "1" / "fs"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "hello").write_text(HELLO)
    image = rootfs_image([{"type": "bind", "source": str(layer), "options": ["ro", "rbind"]}],
                         cache_dir=work / "cache")
    kernel = images.prepare_kernel(kernel_image)
    payload = work / "payload"
    payload.mkdir()
    shutil.copyfile(image.path, payload / "rootfs.img")
    shutil.copyfile(kernel.image, payload / "kernel")
    build_initrd(payload / "domu-initrd", boot_modules=kernel.boot_modules, init=DOMU_INIT)
    (payload / "plan.json").write_text(json.dumps({"kernel": "/zone/kernel", "initrd": "/zone/domu-initrd",
                                                   "image": "/zone/rootfs.img"}))
    dom0 = build_dom0(payload, HERE / "dom0_pod_hotplug.py", work)
    console, seconds = boot(dom0, work / "console.log")
    print(f"Xen hot-plug run: QEMU (Xen + dom0 + domU) {seconds:.1f} s; console {work / 'console.log'}")
    return steps(console), console


def test_image_attached_read_only_mounted_and_detached(run: tuple[dict[str, Any], str]) -> None:
    found, console = run
    tail = "\n".join(console.splitlines()[-40:])
    assert "failed" not in found, found.get("failed")
    attached = found.get("attached")
    assert attached and attached["vdev"] == "xvda" and attached["loop"].startswith("/dev/loop"), tail
    mounted = found.get("mounted") or {}
    assert mounted.get("line") == f"DOMU-MOUNTED {HELLO} owner=65536 ro=1", mounted
    # xvda (51712) connected (state 4) while the domU had it mounted
    assert any(row.split()[0] == "51712" and row.split()[3] == "4" for row in mounted["block_list"]), mounted
    assert found.get("detached") == {"block_list": [], "loop_released": True}, found.get("detached")
    assert found.get("dom0-done") == "driver exit 0", tail
