"""A pod's zone on real Xen: Xen + a Debian dom0 inside QEMU (TCG), our zone as a PV domU (the cloud kernel,
our initrd), driven from dom0 over the vchan as the containerd shim drives a pod (dom0_zone_pod.py): booted
with no containers, a rootfs image (host.pod.rootfs from the busybox layer: erofs, owners shifted)
hot-plugged with ``XenBackend.attach_disk`` (``xl block-attach``) and found by the zone at its ``/dev/xvdX``
(IDM ``disk.attach``), a container from an OCI config attached and run, the disk detached and unplugged, the
zone shut down. (A Xen pod in Kubernetes needs containerd in dom0, which is out of scope; these are the
primitives it would use.)
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_xen_pv import boot, steps

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None,
                                reason="PyInstaller not installed: zonebuild.dom0 bundles the dom0 side with it")
LINE = "hello from a pod on xen"


def _oci() -> dict[str, Any]:
    """An OCI config as containerd's CRI makes one for runc (host mounts left out, as a shim sends it)."""
    fixture = HERE.parent.parent / "tests" / "zoneinit" / "fixtures" / "containerd-1.6-cri-app.json"
    config = json.loads(fixture.read_text())
    config["mounts"] = [mount for mount in config["mounts"] if mount["type"] != "bind"]
    config["process"]["args"] = ["sh", "-c", f"echo {LINE}; id -u; cat /proc/self/uid_map"]
    return config


@pytest.fixture(scope="module")
def run(zone_inputs: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    from host import images
    from host.launch import given_config
    from host.pod.rootfs import rootfs_image
    from host.zonebuild_import import ensure_zonebuild
    from host.zonedef import ZoneDef

    ensure_zonebuild()
    from zonebuild.configdisk import write_config_disk
    from zonebuild.dom0 import build_dom0

    work = tmp_path_factory.mktemp("xenpod")
    layout = zone_inputs.busybox_image
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    layer = work / "snapshots/1/fs"
    layer.mkdir(parents=True)
    with tarfile.open(layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]) as tar:
        tar.extractall(layer, filter="fully_trusted")
    image = rootfs_image([{"type": "bind", "source": str(layer), "options": ["ro", "rbind"]}],
                         owner_shift=65536, cache_dir=work / "cache")
    kernel = images.prepare_kernel(zone_inputs.kernel_image)
    payload = work / "payload"
    payload.mkdir()
    definition = ZoneDef(name="xenpod", kernel_image="/zone", initrd="/zone/initrd", backend="xen", memory_mib=256)
    config = given_config({"version": 1, "name": "xenpod", "hostname": "web-0",
                           "options": {"poweroff_on_exit": False}}, kernel, "xvd")
    write_config_disk(config, payload / "config.img")
    for name, source in (("kernel", kernel.image), ("initrd", images.boot_initrd(zone_inputs.initrd, kernel)),
                         ("addons.squashfs", kernel.addons), ("rootfs.img", image.path)):
        shutil.copyfile(source, payload / name)
    definition_json = {k: v for k, v in definition.to_json().items()}
    (payload / "plan.json").write_text(json.dumps({
        "definition": definition_json, "kernel": "/zone/kernel", "initrd": "/zone/initrd",
        "addons": "/zone/addons.squashfs", "config_disk": "/zone/config.img", "oci": _oci(),
        "image": {"path": "/zone/rootfs.img", "sha256": image.sha256, "size": image.size, "owner_shift": 65536}}))
    dom0 = build_dom0(payload, HERE / "dom0_zone_pod.py", work)
    console, seconds = boot(dom0, work / "console.log")
    print(f"Xen pod run: QEMU (Xen + dom0 + zone) {seconds:.1f} s; console {work / 'console.log'}")
    return steps(console), console


def test_a_pod_on_xen(run: tuple[dict[str, Any], str]) -> None:
    found, console = run
    tail = "\n".join(console.splitlines()[-60:])
    assert "failed" not in found, found.get("failed")
    assert found.get("ready", {}).get("containers") == [], tail
    disk = found.get("disk") or {}
    assert disk.get("vdev") == "xvdc" and disk.get("device") == "/dev/xvdc", tail   # after addons and config
    container = found.get("container") or {}
    assert container.get("exit_code") == 0, container
    lines = container["output"].split("\n")
    assert lines[0] == LINE and lines[1] == "1000" and lines[2].split() == ["0", "65536", "65536"], lines
    detached = found.get("detached") or {}
    assert detached.get("loop_released") is True, detached
    assert [row.split()[0] for row in detached["block_list"]] == ["51712", "51728"], detached   # xvdc is gone
    assert found.get("shutdown") == {"powered_off": True}, tail
    assert found.get("dom0-done") == "driver exit 0", tail
