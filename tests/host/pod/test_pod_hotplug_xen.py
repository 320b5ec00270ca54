"""host.backends.hotplug's Xen side: the xl disk spec, the choice of the next free xvd name, and that a failing
``xl`` (this machine is no dom0) leaves no loop device behind. The real block-attach runs on Xen in
qemu-tests/pv/test_pod_xen_hotplug.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from host.backends.hotplug import block_attach_spec, next_free_vdev, parse_block_list, xen_attach_disk, xvd_name
from host.errors import HotplugError

BLOCK_LIST = """Vdev  BE  handle state evt-ch ring-ref BE-path
51712 0   3      4     14     8        /local/domain/0/backend/vbd/3/51712
51728 0   3      4     15     9        /local/domain/0/backend/vbd/3/51728
51744 0   3      4     16     10       /local/domain/0/backend/vbd/3/51744
"""


def test_spec_and_names() -> None:
    assert block_attach_spec("xvdd", "/dev/loop7") == "format=raw,vdev=xvdd,access=ro,backendtype=phy,target=/dev/loop7"
    with pytest.raises(HotplugError, match=r"expected xvda\.\.xvdz"):
        block_attach_spec("sda", "/dev/loop7")
    with pytest.raises(HotplugError, match="comma, space or quote"):
        block_attach_spec("xvdd", "/dev/loop7,script=evil")
    assert parse_block_list(BLOCK_LIST) == [51712, 51728, 51744]
    assert next_free_vdev(parse_block_list(BLOCK_LIST)) == "xvdd"          # after addons, config, root0
    assert next_free_vdev([51712, 51744]) == "xvdb"
    assert xvd_name(25) == "xvdz"
    with pytest.raises(HotplugError, match="no free xvd"):
        next_free_vdev([51712 + 16 * i for i in range(26)])


@pytest.mark.root
def test_a_failing_xl_leaves_no_loop_device(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.img"
    image.write_bytes(b"\0" * 8192)

    def loops_on(path: Path) -> list[str]:
        out = subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True).stdout
        return [line.split(":")[0] for line in out.splitlines() if line.strip()]

    with pytest.raises(HotplugError, match=r"xl block-attach|xl not found"):
        xen_attach_disk("zone-nonexistent", image, vdev="xvdd")   # vdev given: straight to attach
    assert loops_on(image) == []
    with pytest.raises(HotplugError, match="no such file"):
        xen_attach_disk("zone-nonexistent", tmp_path / "missing.img")
    assert os.path.exists(image)
