import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from styrolite.syscalls.constants import MNT_DETACH, MS_RDONLY
from styrolite.syscalls.fake import RecordingSyscalls
from zoneinit.errors import DigestMismatch, ZoneInitError
from zoneinit.mounts.early import early_mounts, enable_cgroup_controllers
from zoneinit.mounts.images import detect_fstype, mount_image
from zoneinit.mounts.table import MountTable
from zoneinit.mounts.verify import sha256_of, verify_sha256


def test_early_mounts_order_and_already_mounted(tmp_path):
    fake = RecordingSyscalls()
    fake.fail_on("mount", errno.EBUSY, lambda args: args[1].endswith("/dev"))  # kernel automounted /dev
    table = MountTable(fake)
    done = early_mounts(table, root=str(tmp_path), mountinfo=str(tmp_path / "none"))
    targets = [args[1][len(str(tmp_path)):] for args in fake.of("mount")]
    assert targets == ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"]
    assert str(tmp_path / "dev") not in done and str(tmp_path / "proc") in done
    assert fake.of("mount")[-1][2] == "cgroup2"
    assert os.readlink(tmp_path / "dev/fd") == "/proc/self/fd"


def test_early_mounts_skip_what_stage0_already_mounted(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        f"22 1 0:21 / {tmp_path}/proc rw,nosuid shared:12 - proc proc rw\n"
        f"23 1 0:5 / {tmp_path}/dev rw,nosuid shared:2 - devtmpfs devtmpfs rw\n"
        f"24 1 0:6 / /with\\040space rw - tmpfs tmpfs rw\n"
    )
    fake = RecordingSyscalls()
    early_mounts(MountTable(fake), root=str(tmp_path), mountinfo=str(info))
    targets = [args[1][len(str(tmp_path)):] for args in fake.of("mount")]
    assert targets == ["/sys", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"]
    from zoneinit.mounts.early import mounted_targets

    assert "/with space" in mounted_targets(str(info))


def test_unmount_all_is_reverse_order_keeps_essentials_and_detaches_busy(tmp_path):
    fake = RecordingSyscalls()
    table = MountTable(fake)
    table.mount("proc", str(tmp_path / "proc"), "proc", essential=True)
    table.mount("/dev/vda", str(tmp_path / "addons"), "squashfs", MS_RDONLY)
    table.mount("/dev/vdc", str(tmp_path / "images/a"), "erofs", MS_RDONLY)
    table.mount("overlay", str(tmp_path / "bundles/a/rootfs"), "overlay")
    fake.fail_on("umount2", errno.EBUSY, lambda args: args[0].endswith("addons") and args[1] == 0)
    assert table.unmount_all() == []
    assert [(os.path.relpath(t, tmp_path), f) for t, f in fake.of("umount2")] == [
        ("bundles/a/rootfs", 0), ("images/a", 0), ("addons", 0), ("addons", MNT_DETACH),
    ]
    assert [r.target for r in table.records] == [str(tmp_path / "proc")]


def test_unmount_under_only_touches_that_subtree(tmp_path):
    fake = RecordingSyscalls()
    table = MountTable(fake)
    for path in ("b/a/rootfs", "b/a/rootfs/etc/hosts", "b/ab/rootfs"):
        table.mount(None, str(tmp_path / path), "tmpfs")
    table.unmount_under(str(tmp_path / "b/a"))
    assert [os.path.relpath(t, tmp_path) for t, _ in fake.of("umount2")] == ["b/a/rootfs/etc/hosts", "b/a/rootfs"]
    assert [os.path.relpath(r.target, tmp_path) for r in table.records] == ["b/ab/rootfs"]


def test_cgroup_controllers_enabled_one_by_one(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert enable_cgroup_controllers(str(tmp_path)) == ["cpu", "memory", "pids"]
    assert enable_cgroup_controllers(str(tmp_path / "missing")) == []


def test_digest_verification_fails_closed(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"x" * 5000 + b"padding")
    import hashlib

    good = hashlib.sha256(b"x" * 5000).hexdigest()
    assert verify_sha256(str(disk), "sha256:" + good.upper(), size=5000) == good
    assert sha256_of(str(disk)) == hashlib.sha256(disk.read_bytes()).hexdigest()
    with pytest.raises(DigestMismatch, match="refusing to mount"):
        verify_sha256(str(disk), good)
    with pytest.raises(DigestMismatch, match="shorter"):
        verify_sha256(str(disk), good, size=10**6)
    with pytest.raises(ZoneInitError, match="not a sha256"):
        verify_sha256(str(disk), "abc")


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs squashfs-tools")
def test_detect_fstype_of_a_real_squashfs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/hello").write_text("hi")
    image = tmp_path / "a.sqfs"
    subprocess.run(["mksquashfs", str(tmp_path / "src"), str(image), "-quiet", "-noappend"], check=True)
    assert detect_fstype(str(image)) == "squashfs"
    (tmp_path / "junk").write_bytes(b"\0" * 40000)
    assert detect_fstype(str(tmp_path / "junk")) is None
    with pytest.raises(ZoneInitError, match="no file system"):
        mount_image(MountTable(RecordingSyscalls()), str(tmp_path / "junk"), str(tmp_path / "mnt"))


REAL_EARLY = """
import json, sys
from zoneinit.mounts.early import early_mounts
from zoneinit.mounts.table import MountTable
root = sys.argv[1]
table = MountTable()
done = early_mounts(table, root=root)
with open("/proc/self/mountinfo") as f:
    seen = {line.split()[4]: line.split(" - ")[1].split()[0] for line in f}
failures = table.unmount_all(include_essential=True)
with open("/proc/self/mountinfo") as f:
    left = [line.split()[4] for line in f if line.split()[4].startswith(root)]
print(json.dumps({"done": done, "seen": seen, "failures": [str(f) for f in failures], "left": left}))
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_early_mounts_for_real_in_a_mount_namespace(tmp_path):
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", REAL_EARLY, str(tmp_path)],
        check=True, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    result = json.loads(out.stdout)
    expected = {"proc": "proc", "sys": "sysfs", "dev": "devtmpfs", "dev/pts": "devpts", "run": "tmpfs",
                "tmp": "tmpfs", "sys/fs/cgroup": "cgroup2"}
    for rel, fstype in expected.items():
        assert result["seen"].get(str(tmp_path / rel)) == fstype, rel
    assert result["failures"] == []
    assert result["left"] == []


def test_unknown_fstype_loads_its_module_and_retries(tmp_path):
    fake = RecordingSyscalls()
    attempts = []

    def unknown_until_loaded(args):
        attempts.append(args[2])
        return len(attempts) == 1

    fake.fail_on("mount", errno.ENODEV, unknown_until_loaded)
    table = MountTable(fake)
    loaded = []
    table.load_fstype = lambda fstype: loaded.append(fstype) or True
    table.mount("/dev/vdc", str(tmp_path / "img"), "erofs", MS_RDONLY)
    assert loaded == ["erofs"] and len(fake.of("mount")) == 2 and len(table.records) == 1
    table.load_fstype = lambda fstype: False  # no such module: the ENODEV stands
    fake.fail_on("mount", errno.ENODEV)
    with pytest.raises(OSError):
        table.mount("/dev/vdd", str(tmp_path / "img2"), "btrfs")


def test_root_is_rootfs_reads_the_first_mount_of_slash(tmp_path):
    from zoneinit.mounts.early import root_is_rootfs

    info = tmp_path / "mountinfo"
    info.write_text("1 1 0:1 / / rw - rootfs rootfs rw\n22 1 0:21 / /proc rw,nosuid - proc proc rw\n")
    assert root_is_rootfs(str(info))
    info.write_text("25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n")
    assert not root_is_rootfs(str(info))
    assert not root_is_rootfs(str(tmp_path / "missing"))


def test_a_containers_overlay_root_keeps_setuid_and_its_image_does_not(tmp_path):
    """The overlay is the container's root: setuid binaries work there as under runc (noNewPrivileges is what
    stops them); the read-only image under it stays nosuid and nodev (exec goes through the overlay)."""
    from styrolite.syscalls.constants import MS_NODEV, MS_NOSUID
    from zoneinit.mounts.images import mount_overlay

    fake = RecordingSyscalls()
    table = MountTable(fake)
    (tmp_path / "img").write_bytes(b"\0" * 1024 + (0xE0F5E1E2).to_bytes(4, "little") + b"\0" * 40000)
    mount_image(table, str(tmp_path / "img"), str(tmp_path / "images/root0"))
    (tmp_path / "images/root0").mkdir(parents=True, exist_ok=True)
    mount_overlay(table, [str(tmp_path / "images/root0")], str(tmp_path / "scratch/c1"), str(tmp_path / "rootfs"))
    (image, overlay) = fake.of("mount")
    assert image[2] == "erofs" and image[3] & MS_NOSUID and image[3] & MS_NODEV
    assert overlay[2] == "overlay" and not overlay[3] & MS_NOSUID
